//! The rules of {{name}}, natively and without a database: `cargo test`. (`ingot test {{name}}`
//! runs tests.ndjson through the built component, against the database.)
use ingot_guest::Item;
use ingot_guest::serde_json::json;

#[test]
fn a_valid_item_is_normalised() {
    let item = Item::from_json(&json!({"name": " Ada Lovelace ", "email": "Ada@Example.com"}));
    let record = {{name}}::record(&item).expect("valid");
    let record = ingot_guest::serde_json::to_value(&record).expect("serializes");
    assert_eq!(record, json!({"name": "Ada Lovelace", "email": "ada@example.com"}));
}

#[test]
fn an_item_without_an_email_is_refused_with_the_fields_code() {
    let item = Item::from_json(&json!({"name": "Grace Hopper"}));
    let error = {{name}}::record(&item).expect_err("invalid");
    assert_eq!((error.code_str(), error.field_str()), (Some("missing_email"), Some("email")));
}
