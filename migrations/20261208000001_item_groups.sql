-- Items that share a transaction (`[batch] items_per_commit`, README "Guarantees"). Under batch
-- durability a worker claims several items at once and commits them together: each item still
-- runs in its own savepoint, and its writes commit with its status or not at all, but the claim,
-- the final write and the commit are paid once per group instead of once per item.
--
-- ingot_claim gains a limit; ingot_finish_items writes the final state of every item of a group
-- in one statement. The one-item forms stay, for hosts of an earlier version, and now call these.
-- Both pin plan_cache_mode: a LIMIT or a JSON argument makes every custom plan look cheaper than
-- the generic one, and a plan made per call costs more than the call's own work.

DO $migration$
DECLARE
    fw text := pg_catalog.quote_ident(pg_catalog.current_schema()) || '.';
    -- As in the database wall's migration: the token expression, written into each function.
    token text := $t$(SELECT pg_catalog.encode(pg_catalog.substring(pg_catalog.sha256(pg_catalog.convert_to(
               s.key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.txid_current()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_batch::text, 'UTF8')), 1, 16), 'hex')::pg_catalog.uuid
        FROM ingot_schema.ingot_secret s)$t$;
    -- As in the keyed-order migration: an item waits while an earlier item of its key is pending.
    key_free text := $k$(i.key_hash IS NULL OR NOT EXISTS (
              SELECT 1 FROM ingot_schema.import_batch_items e
              WHERE e.batch_id OPERATOR(pg_catalog.=) p_batch AND e.key_hash OPERATOR(pg_catalog.=) i.key_hash
                AND e.status OPERATOR(pg_catalog.=) 'pending'
                AND e.item_index OPERATOR(pg_catalog.<) i.item_index))$k$;
BEGIN

EXECUTE pg_catalog.replace(pg_catalog.replace(pg_catalog.replace($fn$
-- Opens the transaction and claims up to p_limit pending items, lowest index first from p_floor,
-- that no other transaction holds, that are not waiting out a retry backoff, and whose key no
-- earlier pending item has (two items of one key are never claimed together: the later one waits
-- for the earlier's commit), while the batch is processing. Every row carries the transaction's
-- token (NULL for the framework owner).
CREATE FUNCTION ingot_schema.ingot_claim(p_batch uuid, p_batch_type text, p_floor bigint, p_limit integer)
RETURNS TABLE (token uuid, id uuid, item_index bigint, data text, attempts integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_owner boolean := pg_catalog.pg_has_role(session_user, current_user, 'MEMBER');
BEGIN
    IF NOT v_owner AND pg_catalog.txid_current_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'ingot: this transaction is already open; only the host opens transactions'
            USING ERRCODE = '42501';
    END IF;
    RETURN QUERY
    SELECT CASE WHEN v_owner THEN NULL ELSE ingot_schema.ingot_token(p_batch) END,
           i.id, i.item_index, i.source_data::text, i.attempts
    FROM ingot_schema.import_batch_items i
    WHERE i.batch_id OPERATOR(pg_catalog.=) p_batch
      AND i.status OPERATOR(pg_catalog.=) 'pending'
      AND EXISTS (SELECT 1 FROM ingot_schema.import_batches s
                  WHERE s.id OPERATOR(pg_catalog.=) p_batch AND s.status OPERATOR(pg_catalog.=) 'processing')
      AND i.item_index OPERATOR(pg_catalog.>=) p_floor
      AND (i.available_at IS NULL OR i.available_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())
      AND ingot_schema.ingot_key_free
      -- The role/type checks: a login of another type claims nothing.
      AND (v_owner OR EXISTS (
          SELECT 1 FROM ingot_schema.ingot_processor_roles r
          JOIN ingot_schema.import_batches b ON b.batch_type OPERATOR(pg_catalog.=) r.batch_type
          WHERE r.role_name OPERATOR(pg_catalog.=) session_user::text
            AND r.batch_type OPERATOR(pg_catalog.=) p_batch_type
            AND b.id OPERATOR(pg_catalog.=) p_batch))
    ORDER BY i.item_index
    LIMIT pg_catalog.int4larger(p_limit, 1)
    FOR UPDATE OF i SKIP LOCKED;
END
$$;
$fn$, 'ingot_schema.ingot_key_free', key_free), 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace($fn$
-- The one-item claim of earlier hosts.
CREATE OR REPLACE FUNCTION ingot_schema.ingot_claim(p_batch uuid, p_batch_type text, p_floor bigint)
RETURNS TABLE (token uuid, id uuid, item_index bigint, data text, attempts integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT * FROM ingot_schema.ingot_claim(p_batch, p_batch_type, p_floor, 1);
END
$$;
$fn$, 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- The final state of the items of one transaction (or their return to pending for a retry),
-- their log lines, the counter slot (with the time) and their batch-metadata changes, in one
-- call. p is a JSON array, in the order the items ran, of objects holding: id, status,
-- processed_data, target_table, target_id, error_message, error_code, error_field, started_at,
-- duration_ms, fuel_used, available_at, metadata (changes to merge; a later item's win) and logs
-- (level, source, message, details, at).
CREATE FUNCTION ingot_schema.ingot_finish_items(p_token uuid, p_batch uuid, p_slot smallint, p jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    v_owner boolean := p_token IS NULL AND pg_catalog.pg_has_role(session_user, current_user, 'MEMBER');
    -- The items' ids, so that the plan (made once, for any argument) looks each one up by its key
    -- rather than joining the whole batch (the batch is checked on the rows found).
    v_ids uuid[] := ARRAY(SELECT (e OPERATOR(pg_catalog.->>) 'id')::uuid FROM pg_catalog.jsonb_array_elements(p) AS e);
    v_updated bigint;
    v_elsewhere boolean;
BEGIN
    IF NOT v_owner AND (pg_catalog.txid_current_if_assigned() IS NULL
                        OR p_token IS DISTINCT FROM ingot_schema.ingot_token(p_batch)) THEN
        RAISE EXCEPTION 'ingot: only the host may change batch %', p_batch USING ERRCODE = '42501';
    END IF;
    WITH x AS (
        SELECT * FROM pg_catalog.jsonb_to_recordset(p) AS x(
            id uuid, status text, processed_data jsonb, target_table text, target_id text,
            error_message text, error_code text, error_field text, started_at timestamptz,
            duration_ms double precision, fuel_used bigint, available_at timestamptz, logs jsonb)
    ), item AS (
        UPDATE ingot_schema.import_batch_items i
        SET status = x.status,
            processed_data = x.processed_data,
            target_table = x.target_table,
            target_id = x.target_id,
            error_message = x.error_message,
            error_code = x.error_code,
            error_field = x.error_field,
            attempts = i.attempts OPERATOR(pg_catalog.+) 1,
            started_at = x.started_at,
            finished_at = CASE WHEN x.status OPERATOR(pg_catalog.=) 'pending' THEN NULL ELSE pg_catalog.now() END,
            duration_ms = x.duration_ms,
            fuel_used = x.fuel_used,
            available_at = x.available_at
        FROM x
        WHERE i.id OPERATOR(pg_catalog.=) ANY (v_ids) AND i.id OPERATOR(pg_catalog.=) x.id
        RETURNING i.id, i.batch_id, i.item_index, x.status, x.logs
    ), logs AS (
        INSERT INTO ingot_schema.import_logs (batch_id, item_id, item_index, log_level, source, message, details, created_at)
        SELECT p_batch, item.id, item.item_index, l.level, l.source, l.message, l.details, l.at
        FROM item, pg_catalog.jsonb_to_recordset(coalesce(item.logs, '[]'))
             AS l(level text, source text, message text, details jsonb, at timestamptz)
    ), counter AS (
        INSERT INTO ingot_schema.import_batch_counters AS c (batch_id, slot, completed, failed, skipped, updated_at)
        SELECT p_batch, p_slot,
               pg_catalog.count(*) FILTER (WHERE item.status OPERATOR(pg_catalog.=) 'completed'),
               pg_catalog.count(*) FILTER (WHERE item.status OPERATOR(pg_catalog.=) 'failed'),
               pg_catalog.count(*) FILTER (WHERE item.status OPERATOR(pg_catalog.=) 'skipped'),
               pg_catalog.now()
        FROM item
        HAVING pg_catalog.count(*) OPERATOR(pg_catalog.>) 0
        ON CONFLICT (batch_id, slot) DO UPDATE
        SET completed = c.completed OPERATOR(pg_catalog.+) EXCLUDED.completed,
            failed = c.failed OPERATOR(pg_catalog.+) EXCLUDED.failed,
            skipped = c.skipped OPERATOR(pg_catalog.+) EXCLUDED.skipped,
            updated_at = EXCLUDED.updated_at
    )
    SELECT pg_catalog.count(*), pg_catalog.bool_or(item.batch_id OPERATOR(pg_catalog.<>) p_batch)
    INTO v_updated, v_elsewhere FROM item;
    IF v_elsewhere THEN
        -- (Raising undoes the statement: nothing of another batch is written.)
        RAISE EXCEPTION 'ingot: an item written with batch % belongs to another batch', p_batch;
    END IF;
    IF v_updated OPERATOR(pg_catalog.<>) pg_catalog.cardinality(v_ids) THEN
        RAISE EXCEPTION 'ingot: % of the % items of batch % written together disappeared while they were being processed',
            pg_catalog.cardinality(v_ids) OPERATOR(pg_catalog.-) v_updated, pg_catalog.cardinality(v_ids), p_batch;
    END IF;
    -- Metadata changes, merged in the order the items ran.
    UPDATE ingot_schema.import_batches b
    SET metadata = b.metadata OPERATOR(pg_catalog.||) m.changes
    FROM (SELECT pg_catalog.jsonb_object_agg(e.key, e.value ORDER BY x.n) AS changes
          FROM pg_catalog.jsonb_array_elements(p) WITH ORDINALITY AS x(v, n),
               pg_catalog.jsonb_each(x.v OPERATOR(pg_catalog.->) 'metadata') AS e
          WHERE pg_catalog.jsonb_typeof(x.v OPERATOR(pg_catalog.->) 'metadata') OPERATOR(pg_catalog.=) 'object') m
    WHERE b.id OPERATOR(pg_catalog.=) p_batch AND m.changes IS NOT NULL;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace($fn$
-- The one-item form of earlier hosts.
CREATE OR REPLACE FUNCTION ingot_schema.ingot_finish_item(p_token uuid, p_batch uuid, p_item uuid, p_slot smallint, p jsonb)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ingot_schema.ingot_finish_items(p_token, p_batch, p_slot,
        pg_catalog.jsonb_build_array(p OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object('id', p_item)));
END
$$;
$fn$, 'ingot_schema.', fw);

END
$migration$;

REVOKE EXECUTE ON FUNCTION ingot_claim(uuid, text, bigint, integer), ingot_finish_items(uuid, uuid, smallint, jsonb)
    FROM PUBLIC;
