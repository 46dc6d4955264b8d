-- Retries: an item whose attempt failed with a transient error waits here until it may be
-- claimed again (exponential backoff with jitter). NULL: claimable now.
ALTER TABLE import_batch_items ADD COLUMN available_at timestamptz;
