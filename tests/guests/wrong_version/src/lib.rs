//! What this proves: a processor built against another contract version (ingot:processor@0.2.0)
//! is refused at load time with a message that names the version and what to do.

wit_bindgen::generate!({ path: "processor-0.2.0.wit", world: "import-processor" });

use exports::ingot::processor::processor::{BatchInfo, Guest, Item, ItemError, Outcome};

struct Future;

impl Guest for Future {
    fn validate_batch(_: BatchInfo) -> Result<(), String> {
        Ok(())
    }
    fn validate_item(_: Item) -> Result<(), ItemError> {
        Ok(())
    }
    fn process_item(_: Item) -> Result<Outcome, ItemError> {
        Ok(Outcome { target_table: None, target_id: None, processed_data: None })
    }
    fn on_batch_start(_: BatchInfo) -> Result<(), String> {
        Ok(())
    }
    fn on_batch_complete(_: BatchInfo, _: bool) -> Result<(), String> {
        Ok(())
    }
    fn on_item_error(_: Item, _: ItemError) {}
}

export!(Future);
