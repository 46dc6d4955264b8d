//! Every rule of the orders processor, natively (`cargo test`): what an item becomes, or the
//! code and field of the first rule it breaks.
use ingot_guest::Item;
use ingot_guest::serde_json::{Value, json};

fn valid() -> Value {
    json!({"Order ID": " ord-1001 ", "Customer Email": "Ada@Example.com", "Order Date": "2024-02-29",
           "Total": "12.50", "Currency": "eur", "Status": "Paid", "Notes": ""})
}

fn with(column: &str, value: Value) -> Item {
    let mut row = valid();
    row[column] = value;
    Item::from_json(&row)
}

fn broken(column: &str, value: Value) -> (String, String) {
    let e = orders::order(&with(column, value)).expect_err("the rule should refuse it");
    (e.code_str().unwrap_or_default().to_owned(), e.field_str().unwrap_or_default().to_owned())
}

#[test]
fn a_valid_order_is_normalised() {
    let order = orders::order(&Item::from_json(&valid())).expect("valid");
    let record = ingot_guest::serde_json::to_value(&order).expect("serializes");
    assert_eq!(
        record,
        json!({"order_id": "ORD-1001", "customer_email": "ada@example.com", "order_date": "2024-02-29",
               "total": "12.50", "currency": "EUR", "status": "paid", "notes": null})
    );
}

#[test]
fn each_rule_fails_with_its_code_and_field() {
    for (column, value, code) in [
        ("Order ID", json!(""), "missing_order_id"),
        ("Order ID", json!("AB"), "invalid_order_id"),
        ("Order ID", json!("ORD 1"), "invalid_order_id"),
        ("Customer Email", json!(null), "missing_customer_email"),
        ("Customer Email", json!("ada@example"), "invalid_customer_email"),
        ("Order Date", json!(" "), "missing_order_date"),
        ("Order Date", json!("2023-02-29"), "invalid_order_date"),
        ("Order Date", json!("01/03/2024"), "invalid_order_date"),
        ("Total", json!(""), "missing_total"),
        ("Total", json!("12,50"), "invalid_total"),
        ("Total", json!("12.505"), "invalid_total"),
        ("Total", json!("-1.00"), "invalid_total"),
        ("Currency", json!(""), "missing_currency"),
        ("Currency", json!("JPY"), "invalid_currency"),
        ("Status", json!(""), "missing_status"),
        ("Status", json!("lost"), "invalid_status"),
        ("Notes", json!("x".repeat(501)), "invalid_notes"),
    ] {
        assert_eq!(broken(column, value.clone()), (code.to_owned(), column.to_owned()), "{column} = {value}");
    }
}

#[test]
fn the_first_broken_rule_is_the_one_reported() {
    let mut row = valid();
    row["Customer Email"] = json!("nope");
    row["Total"] = json!("abc");
    let e = orders::order(&Item::from_json(&row)).expect_err("invalid");
    assert_eq!(e.code_str(), Some("invalid_customer_email"));
}

#[test]
fn columns_are_found_whatever_their_spelling() {
    let row = json!({"order_id": "ord-7", "customer email": "a@b.co", "ORDER-DATE": "2024-01-01",
                     "total": 0, "currency": "USD", "status": "pending"});
    let order = orders::order(&Item::from_json(&row)).expect("valid");
    let record = ingot_guest::serde_json::to_value(&order).expect("serializes");
    assert_eq!((record["order_id"].clone(), record["total"].clone()), (json!("ORD-7"), json!("0")));
}
