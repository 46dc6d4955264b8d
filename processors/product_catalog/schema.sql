-- Target table of the product_catalog processor.
CREATE TABLE IF NOT EXISTS products (
    sku         text        PRIMARY KEY,
    title       text        NOT NULL,
    price_cents bigint      NOT NULL CHECK (price_cents >= 0),
    tags        text[]      NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
