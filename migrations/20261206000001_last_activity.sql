-- When a batch last made progress: each counter slot records the time of the last item its
-- worker finished, so a batch that nobody is working on any more (`interrupted`) reports the
-- duration it actually ran, not the time since it started, in a read of a handful of rows.
ALTER TABLE import_batch_counters ADD COLUMN updated_at timestamptz;

DO $migration$
DECLARE
    fw text := pg_catalog.quote_ident(pg_catalog.current_schema()) || '.';
    -- As in the database wall's migration: the token expression, written into the function.
    token text := $t$(SELECT pg_catalog.encode(pg_catalog.substring(pg_catalog.sha256(pg_catalog.convert_to(
               s.key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.txid_current()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_batch::text, 'UTF8')), 1, 16), 'hex')::pg_catalog.uuid
        FROM ingot_schema.ingot_secret s)$t$;
BEGIN

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- An item's final state (or its return to pending for a retry), its log lines, its counter slot
-- (with the time) and its batch-metadata changes, in one call. p holds: status, processed_data,
-- target_table, target_id, error_message, error_code, error_field, started_at, duration_ms,
-- fuel_used, available_at, metadata (changes to merge) and logs (level, source, message,
-- details, at).
CREATE OR REPLACE FUNCTION ingot_schema.ingot_finish_item(p_token uuid, p_batch uuid, p_item uuid, p_slot smallint, p jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_status text := p OPERATOR(pg_catalog.->>) 'status';
    v_owner boolean := p_token IS NULL AND pg_catalog.pg_has_role(session_user, current_user, 'MEMBER');
    v_updated bigint;
BEGIN
    -- The host check (as in ingot_check) is part of the statement: one statement per item.
    WITH host AS (
        SELECT 1 WHERE v_owner
            OR (pg_catalog.txid_current_if_assigned() IS NOT NULL
                AND p_token OPERATOR(pg_catalog.=) ingot_schema.ingot_token(p_batch))
    ), item AS (
        UPDATE ingot_schema.import_batch_items
        SET status = v_status,
            processed_data = p OPERATOR(pg_catalog.->) 'processed_data',
            target_table = p OPERATOR(pg_catalog.->>) 'target_table',
            target_id = p OPERATOR(pg_catalog.->>) 'target_id',
            error_message = p OPERATOR(pg_catalog.->>) 'error_message',
            error_code = p OPERATOR(pg_catalog.->>) 'error_code',
            error_field = p OPERATOR(pg_catalog.->>) 'error_field',
            attempts = attempts OPERATOR(pg_catalog.+) 1,
            started_at = (p OPERATOR(pg_catalog.->>) 'started_at')::timestamptz,
            finished_at = CASE WHEN v_status OPERATOR(pg_catalog.=) 'pending' THEN NULL ELSE pg_catalog.now() END,
            duration_ms = (p OPERATOR(pg_catalog.->>) 'duration_ms')::double precision,
            fuel_used = (p OPERATOR(pg_catalog.->>) 'fuel_used')::bigint,
            available_at = (p OPERATOR(pg_catalog.->>) 'available_at')::timestamptz
        WHERE id OPERATOR(pg_catalog.=) p_item AND batch_id OPERATOR(pg_catalog.=) p_batch
          AND (v_owner OR EXISTS (SELECT 1 FROM host))
        RETURNING item_index
    ), logs AS (
        INSERT INTO ingot_schema.import_logs (batch_id, item_id, item_index, log_level, source, message, details, created_at)
        SELECT p_batch, p_item, item.item_index, l.level, l.source, l.message, l.details, l.at
        FROM item, pg_catalog.jsonb_to_recordset(coalesce(p OPERATOR(pg_catalog.->) 'logs', '[]'))
             AS l(level text, source text, message text, details jsonb, at timestamptz)
    ), counter AS (
        INSERT INTO ingot_schema.import_batch_counters AS c (batch_id, slot, completed, failed, skipped, updated_at)
        SELECT p_batch, p_slot, (v_status OPERATOR(pg_catalog.=) 'completed')::int,
               (v_status OPERATOR(pg_catalog.=) 'failed')::int, (v_status OPERATOR(pg_catalog.=) 'skipped')::int,
               pg_catalog.now()
        FROM item
        ON CONFLICT (batch_id, slot) DO UPDATE
        SET completed = c.completed OPERATOR(pg_catalog.+) EXCLUDED.completed,
            failed = c.failed OPERATOR(pg_catalog.+) EXCLUDED.failed,
            skipped = c.skipped OPERATOR(pg_catalog.+) EXCLUDED.skipped,
            updated_at = EXCLUDED.updated_at
    )
    SELECT pg_catalog.count(*) INTO v_updated FROM item;
    IF v_updated OPERATOR(pg_catalog.<>) 1 THEN
        -- Refused (this raises the reason), or the item is gone.
        PERFORM ingot_schema.ingot_check(p_token, p_batch);
        RAISE EXCEPTION 'ingot: item % of batch % disappeared while it was being processed', p_item, p_batch;
    END IF;
    IF p OPERATOR(pg_catalog.?) 'metadata' THEN
        UPDATE ingot_schema.import_batches
        SET metadata = metadata OPERATOR(pg_catalog.||) (p OPERATOR(pg_catalog.->) 'metadata')
        WHERE id OPERATOR(pg_catalog.=) p_batch;
    END IF;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);
END
$migration$;
