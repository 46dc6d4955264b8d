//! {{name}}: an Ingot processor. It logs each item and returns it unchanged; replace
//! `process_item` with your logic (see https://docs.rs/ingot-guest for the helpers).
use ingot_guest::prelude::*;

struct {{type_name}};

#[ingot_guest::processor]
impl Processor for {{type_name}} {
    fn process_item(item: &Item) -> Result<Outcome, ItemError> {
        let data = item.json()?;
        let fields = data.as_object().map_or(0, |object| object.len());
        log::info(format!("item {} has {fields} fields", item.index()));
        Outcome::empty().with_data(data)
    }
}
