//! {{name}}: an Ingot processor. It checks each item with the validation kit and keeps the
//! normalised record; replace the rules and add your database write (`db::upsert`, `db::query`).
use ingot_guest::prelude::*;

/// What an item becomes.
#[derive(Debug, Serialize)]
#[serde(crate = "ingot_guest::serde")]
pub struct Record {
    name: String,
    email: String,
}

/// The record an item holds, or the first rule it breaks (code `missing_<field>` or
/// `invalid_<field>`, with the field's name).
pub fn record(item: &Item) -> Result<Record, ItemError> {
    Ok(Record { name: item.get("name").max_len(200).text()?, email: item.get("email").email()? })
}

struct {{type_name}};

#[ingot_guest::processor]
impl Processor for {{type_name}} {
    fn process_item(item: &Item) -> Result<Outcome, ItemError> {
        let record = record(item)?;
        log::info(format!("item {} is {}", item.index(), record.email));
        Outcome::empty().with_data(&record)
    }
}
