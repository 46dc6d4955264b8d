//! The trait every processor implements.

use crate::{Batch, Item, ItemError, Outcome};

/// The per-item logic of one import type. Only [`process_item`](Processor::process_item) is
/// required; every hook has a default that accepts.
///
/// The host calls these functions; a processor never calls them itself. One instance serves many
/// items, so statics survive from item to item, but an instance is replaced after a trap: keep
/// anything that must last in the database or in [`metadata`](crate::metadata).
pub trait Processor {
    /// Accepts or rejects a whole batch before any item runs; an error fails the batch.
    fn validate_batch(_batch: &Batch) -> Result<(), String> {
        Ok(())
    }

    /// Checks one item's data without writing anything. Runs before
    /// [`process_item`](Processor::process_item) in the same transaction.
    fn validate_item(_item: &Item) -> Result<(), ItemError> {
        Ok(())
    }

    /// Imports one item. Its database writes commit together with the item's `completed` mark,
    /// or not at all.
    fn process_item(item: &Item) -> Result<Outcome, ItemError>;

    /// Runs once before the first item of a batch; an error fails the batch.
    fn on_batch_start(_batch: &Batch) -> Result<(), String> {
        Ok(())
    }

    /// Runs once after the last item; `success` is false when the batch failed. An error is
    /// logged and does not change the batch's status.
    fn on_batch_complete(_batch: &Batch, _success: bool) -> Result<(), String> {
        Ok(())
    }

    /// Runs after an item failed and its writes were rolled back. It cannot change the item's
    /// recorded error.
    fn on_item_error(_item: &Item, _error: &ItemError) {}
}

/// Bridges the generated WIT exports to a [`Processor`]; `#[processor]` calls these.
pub(crate) mod adapter {
    use super::Processor;
    use crate::__private::wit;
    use crate::{Batch, Item, ItemError};

    /// The exported `validate-batch`.
    pub fn validate_batch<P: Processor>(batch: wit::BatchInfo) -> Result<(), String> {
        P::validate_batch(&Batch::from_wit(batch))
    }

    /// The exported `validate-item`.
    pub fn validate_item<P: Processor>(item: wit::Item) -> Result<(), wit::ItemError> {
        P::validate_item(&Item::from_wit(item)).map_err(ItemError::into_wit)
    }

    /// The exported `process-item`.
    pub fn process_item<P: Processor>(item: wit::Item) -> Result<wit::Outcome, wit::ItemError> {
        P::process_item(&Item::from_wit(item)).map(crate::Outcome::into_wit).map_err(ItemError::into_wit)
    }

    /// The exported `on-batch-start`.
    pub fn on_batch_start<P: Processor>(batch: wit::BatchInfo) -> Result<(), String> {
        P::on_batch_start(&Batch::from_wit(batch))
    }

    /// The exported `on-batch-complete`.
    pub fn on_batch_complete<P: Processor>(batch: wit::BatchInfo, success: bool) -> Result<(), String> {
        P::on_batch_complete(&Batch::from_wit(batch), success)
    }

    /// The exported `on-item-error`.
    pub fn on_item_error<P: Processor>(item: wit::Item, error: wit::ItemError) {
        P::on_item_error(&Item::from_wit(item), &ItemError::from_wit(error));
    }
}
