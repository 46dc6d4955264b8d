-- Keyed order (`[batch] key = "<field>"`): items whose key has the same value run one at a time,
-- in file order, whatever the number of workers, so that "the last row wins" holds for repeated
-- keys; items with other keys stay parallel. The batch keeps the field's name, each item a hash
-- of its value (normalised: a hash collision only serialises two keys that need not be, and a
-- long value costs the index nothing).
ALTER TABLE import_batches ADD COLUMN item_key text;
ALTER TABLE import_batch_items ADD COLUMN key_hash bigint;

-- The claim's look for an earlier pending item of the same key.
CREATE INDEX import_batch_items_pending_key ON import_batch_items (batch_id, key_hash, item_index)
    WHERE status = 'pending' AND key_hash IS NOT NULL;

DO $migration$
DECLARE
    fw text := pg_catalog.quote_ident(pg_catalog.current_schema()) || '.';
    token text := $t$(SELECT pg_catalog.encode(pg_catalog.substring(pg_catalog.sha256(pg_catalog.convert_to(
               s.key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.txid_current()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_batch::text, 'UTF8')), 1, 16), 'hex')::pg_catalog.uuid
        FROM ingot_schema.ingot_secret s)$t$;
    -- An item waits while an earlier item of its key is still pending: not finished, in flight on
    -- another worker (its claim is a lock, its committed status still pending), or waiting out a
    -- retry. Both claims below say it this way, written in where `ingot_schema.ingot_key_free`
    -- stands.
    key_free text := $k$(i.key_hash IS NULL OR NOT EXISTS (
              SELECT 1 FROM ingot_schema.import_batch_items e
              WHERE e.batch_id OPERATOR(pg_catalog.=) p_batch AND e.key_hash OPERATOR(pg_catalog.=) i.key_hash
                AND e.status OPERATOR(pg_catalog.=) 'pending'
                AND e.item_index OPERATOR(pg_catalog.<) i.item_index))$k$;
BEGIN

EXECUTE pg_catalog.replace(pg_catalog.replace(pg_catalog.replace($fn$
-- Opens the transaction and claims the lowest-index pending item at or after p_floor that no
-- other transaction holds, that is not waiting out a retry backoff, and whose key no earlier
-- pending item has (the claim is the row lock), while the batch is processing.
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
      AND ingot_schema.ingot_key_free
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
$fn$, 'ingot_schema.ingot_key_free', key_free), 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace(pg_catalog.replace($fn$
-- ingot_claim inside a transaction the host already opened for p_batch (an atomic batch's one
-- transaction), presenting its token.
CREATE OR REPLACE FUNCTION ingot_schema.ingot_claim_in(p_token uuid, p_batch uuid, p_floor bigint)
RETURNS TABLE (token uuid, id uuid, item_index bigint, data text, attempts integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ingot_schema.ingot_check(p_token, p_batch);
    RETURN QUERY
    SELECT p_token, i.id, i.item_index, i.source_data::text, i.attempts
    FROM ingot_schema.import_batch_items i
    WHERE i.batch_id OPERATOR(pg_catalog.=) p_batch
      AND i.status OPERATOR(pg_catalog.=) 'pending'
      AND EXISTS (SELECT 1 FROM ingot_schema.import_batches s
                  WHERE s.id OPERATOR(pg_catalog.=) p_batch AND s.status OPERATOR(pg_catalog.=) 'processing')
      AND i.item_index OPERATOR(pg_catalog.>=) p_floor
      AND (i.available_at IS NULL OR i.available_at OPERATOR(pg_catalog.<=) pg_catalog.clock_timestamp())
      AND ingot_schema.ingot_key_free
    ORDER BY i.item_index
    LIMIT 1
    FOR UPDATE OF i SKIP LOCKED;
END
$$;
$fn$, 'ingot_schema.ingot_key_free', key_free), 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);
END
$migration$;
