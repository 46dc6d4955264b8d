#!/usr/bin/env python3
"""Writes an orders CSV for the orders processors, and what each row must become.

    python3 processors/orders/generate.py --rows 500 --seed 1 --out orders.csv --expect expected.ndjson

Most rows are valid but untidy (spacing, case); about one in six breaks exactly one rule; some
Order IDs repeat, so with `[batch] key` the last valid row of an ID is what the table keeps. Each
line of the --expect file is {"row", "status", "code", "field", "record"}: the row's item index,
its status, its error code and field when it fails, its normalised record when it completes.
"""

import argparse
import csv
import json
import random
import sys
from datetime import date, timedelta

STATUSES = ["pending", "paid", "shipped", "cancelled", "refunded"]
CURRENCIES = ["EUR", "USD", "GBP"]
HEADER = ["Order ID", "Customer Email", "Order Date", "Total", "Currency", "Status", "Notes"]

# One broken rule per bad row: (code, field, how the cell is spoiled).
BROKEN = [
    ("missing_order_id", "Order ID", lambda r: " "),
    ("invalid_order_id", "Order ID", lambda r: "OR"),
    ("invalid_order_id", "Order ID", lambda r: "ORD 7"),
    ("missing_customer_email", "Customer Email", lambda r: ""),
    ("invalid_customer_email", "Customer Email", lambda r: "someone@localhost"),
    ("invalid_order_date", "Order Date", lambda r: "2023-02-29"),
    ("invalid_order_date", "Order Date", lambda r: "03/01/2024"),
    ("missing_order_date", "Order Date", lambda r: ""),
    ("invalid_total", "Total", lambda r: "12,50"),
    ("invalid_total", "Total", lambda r: "9.999"),
    ("invalid_total", "Total", lambda r: "-1.00"),
    ("missing_total", "Total", lambda r: ""),
    ("invalid_currency", "Currency", lambda r: "JPY"),
    ("invalid_status", "Status", lambda r: "lost"),
    ("invalid_notes", "Notes", lambda r: "x" * 501),
]


def untidy(rng, text):
    """The same value as a person's spreadsheet has it."""
    pad = " " * rng.randint(0, 2)
    return f"{pad}{text}{pad}" if rng.random() < 0.3 else text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", required=True, help="the CSV to write")
    parser.add_argument("--expect", help="where to write each row's expected result (NDJSON)")
    args = parser.parse_args()
    if args.rows < 1:
        sys.exit("generate.py: --rows must be at least 1")
    rng = random.Random(args.seed)
    ids = []
    expected = []
    with open(args.out, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for row in range(args.rows):
            # One row in ten names an order seen before: the key keeps them in file order.
            if ids and rng.random() < 0.1:
                order_id = rng.choice(ids)
            else:
                order_id = f"ORD-{100000 + row}"
                ids.append(order_id)
            day = date(2023, 1, 1) + timedelta(days=rng.randint(0, 800))
            cents = rng.randint(0, 250000)
            total = f"{cents // 100}.{cents % 100:02d}" if rng.random() < 0.8 else str(cents // 100)
            record = {
                "order_id": order_id,
                "customer_email": f"customer{rng.randint(1, 300)}@example.com",
                "order_date": day.isoformat(),
                "total": total,
                "currency": rng.choice(CURRENCIES),
                "status": rng.choice(STATUSES),
                "notes": rng.choice([None, "gift wrap", "leave at the door", "fragile"]),
            }
            cells = {
                "Order ID": untidy(rng, order_id.lower() if rng.random() < 0.2 else order_id),
                "Customer Email": untidy(rng, record["customer_email"].title() if rng.random() < 0.2 else record["customer_email"]),
                "Order Date": record["order_date"],
                "Total": untidy(rng, total),
                "Currency": record["currency"].lower() if rng.random() < 0.3 else record["currency"],
                "Status": record["status"].upper() if rng.random() < 0.3 else record["status"],
                "Notes": untidy(rng, record["notes"] or ""),
            }
            result = {"row": row, "status": "completed", "code": None, "field": None, "record": record}
            if rng.random() < 1 / 6:
                code, field, spoil = rng.choice(BROKEN)
                cells[field] = spoil(record)
                result = {"row": row, "status": "failed", "code": code, "field": field, "record": None}
            writer.writerow([cells[h] for h in HEADER])
            expected.append(result)
    if args.expect:
        with open(args.expect, "w", encoding="utf-8") as out:
            for result in expected:
                out.write(json.dumps(result) + "\n")
    failed = sum(r["status"] == "failed" for r in expected)
    print(f"wrote {args.rows} orders to {args.out} ({failed} with a broken rule)", file=sys.stderr)


if __name__ == "__main__":
    main()
