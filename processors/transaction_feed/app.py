"""Imports card transactions for existing customers; a transaction seen before is skipped."""
import re
from datetime import datetime

import ingot

AMOUNT = re.compile(r"^-?\d+(\.\d{1,2})?$")


class Processor(ingot.Processor):
    def process_item(self, item):
        row = ingot.data(item)
        email = str(row.get("email") or "").strip().lower()
        customer = ingot.query_scalar("SELECT id FROM customers WHERE email = $1", email)
        if customer is None:
            raise ingot.invalid(f"no customer has the email {email!r}", "unknown_customer", "email")
        amount = str(row.get("amount") or "").strip()
        if not AMOUNT.match(amount):
            raise ingot.invalid("amount must look like 123.45", "invalid_amount", "amount")
        currency = str(row.get("currency") or "")
        if not (len(currency) == 3 and currency.isascii() and currency.isalpha() and currency.isupper()):
            raise ingot.invalid("currency must be 3 capital letters", "invalid_currency", "currency")
        try:
            occurred_at = datetime.fromisoformat(str(row.get("occurred_at") or ""))
        except ValueError:
            raise ingot.invalid("occurred_at must be an ISO-8601 timestamp", "invalid_timestamp", "occurred_at")
        tx_id = str(row.get("tx_id") or "").strip()
        if not tx_id:
            raise ingot.invalid("tx_id is required", "missing_tx_id", "tx_id")
        inserted = ingot.execute(
            "INSERT INTO transactions (tx_id, customer_id, amount, currency, occurred_at)"
            " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tx_id) DO NOTHING",
            tx_id, customer, amount, currency, occurred_at,
        )
        if inserted == 0:
            raise ingot.skip(f"transaction {tx_id} was imported before", "duplicate", "tx_id")
        record = {"tx_id": tx_id, "customer_id": customer, "amount": amount, "currency": currency,
                  "occurred_at": occurred_at.isoformat()}
        return ingot.outcome("transactions", tx_id, record)
