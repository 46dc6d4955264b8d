-- Retention (`ingot batch purge-source`): when an item's source data was removed. Its status,
-- target and log lines stay; a reprocess of every item leaves such items out, since there is
-- nothing left to run them on.
ALTER TABLE import_batch_items ADD COLUMN source_purged_at timestamptz;

-- A reprocess keeps its items when its parent is pruned; only the link goes.
ALTER TABLE import_batches DROP CONSTRAINT import_batches_parent_batch_id_fkey,
    ADD CONSTRAINT import_batches_parent_batch_id_fkey FOREIGN KEY (parent_batch_id)
        REFERENCES import_batches (id) ON DELETE SET NULL;
