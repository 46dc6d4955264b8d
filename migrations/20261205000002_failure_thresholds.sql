-- Error thresholds (`--max-failures`, `--max-failure-rate`, or the manifest's [batch]): kept with
-- the batch, so that every worker of every host, and every resume, applies the same ones.
ALTER TABLE import_batches
    ADD COLUMN max_failures bigint CHECK (max_failures >= 0),
    ADD COLUMN max_failure_rate double precision CHECK (max_failure_rate > 0 AND max_failure_rate <= 1);
