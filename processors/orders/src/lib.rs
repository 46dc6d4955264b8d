//! Imports orders, a rule per column (first failure reported), upserted by Order ID (see orders.toml).
use ingot_guest::prelude::*;

const STATUSES: [&str; 5] = ["pending", "paid", "shipped", "cancelled", "refunded"];

#[derive(Debug, Serialize)]
#[serde(crate = "ingot_guest::serde")]
pub struct Order {
    order_id: String,
    customer_email: String,
    order_date: Date,
    total: Decimal,
    currency: String,
    status: String,
    notes: Option<String>,
}

/// The order an item holds, or the first rule it breaks.
pub fn order(item: &Item) -> Result<Order, ItemError> {
    Ok(Order {
        order_id: item.get("Order ID").upper().pattern("[A-Z0-9-]{3,20}").text()?,
        customer_email: item.get("Customer Email").email()?,
        order_date: item.get("Order Date").date()?,
        total: item.get("Total").min(0).decimal(2)?,
        currency: item.get("Currency").upper().one_of(&["EUR", "USD", "GBP"])?,
        status: item.get("Status").lower().one_of(&STATUSES)?,
        notes: item.get("Notes").max_len(500).optional().text()?,
    })
}

struct Orders;

#[ingot_guest::processor]
impl Processor for Orders {
    fn process_item(item: &Item) -> Result<Outcome, ItemError> {
        let order = order(item)?;
        let id: i64 = db::upsert("orders", "order_id", &order)?.get("id")?;
        Outcome::new("orders", id).with_data(&order)
    }
}
