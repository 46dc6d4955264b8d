"""Imports orders like the Rust processor `orders`: the same rules, codes and table (see orders_py.toml)."""
import ingot

STATUSES = ["pending", "paid", "shipped", "cancelled", "refunded"]


def order(item):
    """The order an item holds; raises the first rule it breaks."""
    row = ingot.fields(item)
    return {
        "order_id": row.get("Order ID").upper().pattern("[A-Z0-9-]{3,20}").text(),
        "customer_email": row.get("Customer Email").email(),
        "order_date": row.get("Order Date").date(),
        "total": row.get("Total").min(0).decimal(2),
        "currency": row.get("Currency").upper().one_of(["EUR", "USD", "GBP"]),
        "status": row.get("Status").lower().one_of(STATUSES),
        "notes": row.get("Notes").max_len(500).optional().text(),
    }


class Processor(ingot.Processor):
    def process_item(self, item):
        record = order(item)
        row = ingot.upsert("orders", "order_id", record)
        return ingot.outcome("orders", row["id"], record)
