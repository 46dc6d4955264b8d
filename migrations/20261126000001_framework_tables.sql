-- Ingot's framework tables. Only the host writes them; processors never see them (their database
-- role has no privilege on any of these).

-- One import run: a file of items, processed by one processor.
CREATE TABLE import_batches (
    id               uuid        PRIMARY KEY,
    batch_type       text        NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    -- File name, format, bytes and sha256 of the input.
    source_info      jsonb       NOT NULL DEFAULT '{}',
    metadata         jsonb       NOT NULL DEFAULT '{}',
    stop_on_error    boolean     NOT NULL DEFAULT false,
    -- sha256 of the .wasm that processed the batch, recorded when processing starts.
    processor_digest text,
    -- Fixed at creation. The completed/failed/skipped counts live in import_batch_counters.
    total_items      bigint      NOT NULL DEFAULT 0,
    error_message    text,
    retry_count      integer     NOT NULL DEFAULT 0,
    parent_batch_id  uuid        REFERENCES import_batches (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    completed_at     timestamptz
);

CREATE INDEX import_batches_created ON import_batches (created_at DESC);
CREATE INDEX import_batches_type_created ON import_batches (batch_type, created_at DESC);
CREATE INDEX import_batches_unfinished ON import_batches (created_at)
    WHERE status IN ('pending', 'processing');
CREATE INDEX import_batches_parent ON import_batches (parent_batch_id)
    WHERE parent_batch_id IS NOT NULL;

-- Item counts by outcome, split over slots: each worker adds to its own slot in the same
-- transaction as the item, so concurrent workers never queue on one hot row, and a status read
-- sums at most a few dozen rows whatever the batch size.
CREATE TABLE import_batch_counters (
    batch_id  uuid     NOT NULL REFERENCES import_batches (id) ON DELETE CASCADE,
    slot      smallint NOT NULL,
    completed bigint   NOT NULL DEFAULT 0,
    failed    bigint   NOT NULL DEFAULT 0,
    skipped   bigint   NOT NULL DEFAULT 0,
    PRIMARY KEY (batch_id, slot)
);

-- One source item. Items reference their batch without a foreign key: a per-row foreign-key
-- check would slow the COPY that creates a batch, and the host creates a batch and its items in
-- one transaction, so no item ever exists without its batch.
CREATE TABLE import_batch_items (
    id             uuid        PRIMARY KEY,
    batch_id       uuid        NOT NULL,
    item_index     bigint      NOT NULL,
    status         text        NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'skipped')),
    -- Kept forever: it is what makes reprocessing possible.
    source_data    jsonb       NOT NULL,
    processed_data jsonb,
    target_table   text,
    target_id      text,
    error_message  text,
    error_code     text,
    error_field    text,
    attempts       integer     NOT NULL DEFAULT 0,
    duration_ms    double precision,
    fuel_used      bigint,
    created_at     timestamptz NOT NULL DEFAULT now(),
    -- When the last attempt began, and when the item reached its final status.
    started_at     timestamptz,
    finished_at    timestamptz,
    UNIQUE (batch_id, item_index)
);

-- The claim query's index: only pending items, so claiming stays fast however far a batch has
-- progressed.
CREATE INDEX import_batch_items_pending ON import_batch_items (batch_id, item_index)
    WHERE status = 'pending';
-- Failure summaries and `reprocess --failed-only`.
CREATE INDEX import_batch_items_failed ON import_batch_items (batch_id, error_code)
    WHERE status = 'failed';

-- What processors logged (and the host noted) per batch and item. Written in the item's
-- transaction after the processor's writes were kept or rolled back, so lines survive failures.
CREATE TABLE import_logs (
    id         bigserial   PRIMARY KEY,
    batch_id   uuid        NOT NULL,
    item_id    uuid,
    item_index bigint,
    log_level  text        NOT NULL CHECK (log_level IN ('debug', 'info', 'warning', 'error')),
    source     text        NOT NULL DEFAULT 'processor'
               CHECK (source IN ('processor', 'stdout', 'stderr', 'host')),
    message    text        NOT NULL,
    details    jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX import_logs_batch ON import_logs (batch_id, item_index, id);

-- One row per batch with its counts, duration and throughput.
CREATE VIEW import_batch_summary AS
SELECT b.id,
       b.batch_type,
       b.status,
       b.total_items                                            AS total,
       coalesce(c.completed, 0)                                 AS completed,
       coalesce(c.failed, 0)                                    AS failed,
       coalesce(c.skipped, 0)                                   AS skipped,
       b.total_items - coalesce(c.completed + c.failed + c.skipped, 0) AS pending,
       b.parent_batch_id,
       b.retry_count,
       b.processor_digest,
       b.error_message,
       b.created_at,
       b.started_at,
       b.completed_at,
       extract(epoch FROM coalesce(b.completed_at, now()) - b.started_at) * 1000 AS duration_ms,
       CASE WHEN b.started_at IS NULL OR coalesce(b.completed_at, now()) = b.started_at THEN NULL
            ELSE coalesce(c.completed + c.failed + c.skipped, 0)
                 / extract(epoch FROM coalesce(b.completed_at, now()) - b.started_at)
       END                                                      AS items_per_second
FROM import_batches b
LEFT JOIN LATERAL (
    SELECT sum(completed) AS completed, sum(failed) AS failed, sum(skipped) AS skipped
    FROM import_batch_counters
    WHERE batch_id = b.id
) c ON true;

-- Batches that need attention: the batch failed, or some of its items did.
CREATE VIEW import_failed_batches AS
SELECT *
FROM import_batch_summary
WHERE status = 'failed' OR failed > 0;
