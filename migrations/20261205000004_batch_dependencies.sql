-- Dependencies (`--after ID`): a batch that starts only once another has completed, and is
-- failed with the reason if that one fails or is cancelled. Pruning the other drops the link.
ALTER TABLE import_batches ADD COLUMN after_batch_id uuid REFERENCES import_batches (id) ON DELETE SET NULL;
