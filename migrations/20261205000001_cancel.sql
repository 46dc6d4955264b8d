-- Cancelling a batch (`ingot batch cancel`): the claim takes items only while their batch is
-- processing, so a cancelled (or failed) batch's pending items are never taken again, and a
-- cancelled batch is final. Both functions are replaced as the database wall wrote them
-- (`ingot_schema.` stands for this schema, the token expression is written in).

DO $migration$
DECLARE
    fw text := pg_catalog.quote_ident(pg_catalog.current_schema()) || '.';
    -- The token of the current transaction for p_batch: a MAC of the backend, the transaction
    -- (reading it assigns the transaction its id) and the batch, under the framework's key. It is
    -- written into each function below where `ingot_schema.ingot_token(p_batch)` stands, rather
    -- than called: it runs twice per item, and a call (with its own scan of the key) costs more
    -- than the whole expression.
    token text := $t$(SELECT pg_catalog.encode(pg_catalog.substring(pg_catalog.sha256(pg_catalog.convert_to(
               s.key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.txid_current()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_batch::text, 'UTF8')), 1, 16), 'hex')::pg_catalog.uuid
        FROM ingot_schema.ingot_secret s)$t$;
BEGIN

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Opens the transaction and claims the lowest-index pending item at or after p_floor that no
-- other transaction holds and that is not waiting out a retry backoff (the claim is the row
-- lock), while the batch is processing: once it is cancelled or failed, no item is claimed,
-- whatever the workers still believe. As a function, its plan is cached per session.
CREATE OR REPLACE FUNCTION ingot_schema.ingot_claim(p_batch uuid, p_batch_type text, p_floor bigint)
RETURNS TABLE (token uuid, id uuid, item_index bigint, data text, attempts integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_owner boolean := pg_catalog.pg_has_role(session_user, current_user, 'MEMBER');
BEGIN
    -- As ingot_open_transaction, written out: this runs once per item.
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
      -- The role/type checks: a login of another type claims nothing.
      AND (v_owner OR EXISTS (
          SELECT 1 FROM ingot_schema.ingot_processor_roles r
          JOIN ingot_schema.import_batches b ON b.batch_type OPERATOR(pg_catalog.=) r.batch_type
          WHERE r.role_name OPERATOR(pg_catalog.=) session_user::text
            AND r.batch_type OPERATOR(pg_catalog.=) p_batch_type
            AND b.id OPERATOR(pg_catalog.=) p_batch))
    ORDER BY i.item_index
    LIMIT 1
    FOR UPDATE OF i SKIP LOCKED;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Moves a batch along its life: to 'processing' from pending or failed (recording the
-- processor's digest), to 'completed' from processing, to 'failed' (with a reason) from pending
-- or processing, to 'cancelled' (with a reason) from pending, processing or failed. A cancelled
-- batch is final. False when the batch was in none of the states it may move from.
CREATE OR REPLACE FUNCTION ingot_schema.ingot_batch_transition(p_token uuid, p_batch uuid, p_to text, p_digest text, p_reason text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ingot_schema.ingot_check(p_token, p_batch);
    IF p_to OPERATOR(pg_catalog.=) 'processing' THEN
        UPDATE ingot_schema.import_batches
        SET status = 'processing', started_at = coalesce(started_at, pg_catalog.now()),
            processor_digest = p_digest, error_message = NULL, completed_at = NULL
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) ANY ('{pending,failed}');
    ELSIF p_to OPERATOR(pg_catalog.=) 'completed' THEN
        UPDATE ingot_schema.import_batches SET status = 'completed', completed_at = pg_catalog.now()
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) 'processing';
    ELSIF p_to OPERATOR(pg_catalog.=) 'failed' THEN
        UPDATE ingot_schema.import_batches
        SET status = 'failed', error_message = p_reason, completed_at = pg_catalog.now(),
            started_at = coalesce(started_at, pg_catalog.now())
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) ANY ('{pending,processing}');
    ELSIF p_to OPERATOR(pg_catalog.=) 'cancelled' THEN
        UPDATE ingot_schema.import_batches
        SET status = 'cancelled', error_message = p_reason, completed_at = pg_catalog.now()
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) ANY ('{pending,processing,failed}');
    ELSE
        RAISE EXCEPTION 'ingot: unknown batch transition %', p_to;
    END IF;
    RETURN FOUND;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);
END
$migration$;
