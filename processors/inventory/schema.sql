-- The stock levels the inventory processor (C) imports, one row per SKU and warehouse. SKUs come
-- from products (product_catalog's table); the processor checks them, so this table may be
-- created first.
CREATE TABLE IF NOT EXISTS stock_levels (
    sku        text        NOT NULL,
    warehouse  text        NOT NULL,
    quantity   bigint      NOT NULL CHECK (quantity >= 0),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sku, warehouse)
);
