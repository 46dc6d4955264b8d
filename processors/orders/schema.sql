-- The orders the orders processors (Rust: orders, Python: orders_py) import, one row per Order ID.
CREATE TABLE IF NOT EXISTS orders (
    id             bigserial     PRIMARY KEY,
    order_id       text          NOT NULL UNIQUE,
    customer_email text          NOT NULL,
    order_date     date          NOT NULL,
    total          numeric(12,2) NOT NULL,
    currency       char(3)       NOT NULL,
    status         text          NOT NULL,
    notes          text
);
