-- Target table of the transaction_feed processor (needs customer_data's customers table first).
CREATE TABLE IF NOT EXISTS transactions (
    tx_id       text          PRIMARY KEY,
    customer_id uuid          NOT NULL REFERENCES customers (id),
    amount      numeric(12,2) NOT NULL,
    currency    char(3)       NOT NULL,
    occurred_at timestamptz   NOT NULL,
    created_at  timestamptz   NOT NULL DEFAULT now()
);
