-- Target table of the customer_data processor. Apply once per database:
--   psql "$DATABASE_URL" -f processors/customer_data/schema.sql
CREATE TABLE IF NOT EXISTS customers (
    id          uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    email       text        NOT NULL UNIQUE,
    name        text        NOT NULL,
    country     char(2),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
