-- All-or-nothing batches (`--atomic`, `[batch] atomic = true`): every item of the batch runs in
-- one transaction on the processor's connection, each in a savepoint, and the transaction
-- commits only if the batch's failures stay within its thresholds. Kept with the batch, so that
-- every resume and every host runs it the same way.
ALTER TABLE import_batches ADD COLUMN atomic boolean NOT NULL DEFAULT false;

DO $migration$
DECLARE
    fw text := pg_catalog.quote_ident(pg_catalog.current_schema()) || '.';
    token text := $t$(SELECT pg_catalog.encode(pg_catalog.substring(pg_catalog.sha256(pg_catalog.convert_to(
               s.key OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.pg_backend_pid()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) pg_catalog.txid_current()::text
               OPERATOR(pg_catalog.||) ':' OPERATOR(pg_catalog.||) p_batch::text, 'UTF8')), 1, 16), 'hex')::pg_catalog.uuid
        FROM ingot_schema.ingot_secret s)$t$;
BEGIN

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- ingot_claim inside a transaction the host already opened for p_batch (an atomic batch's one
-- transaction), presenting its token: the opening checked the role and the batch's type, and the
-- token is worth nothing in any other transaction, so a processor calling this itself is refused.
CREATE FUNCTION ingot_schema.ingot_claim_in(p_token uuid, p_batch uuid, p_floor bigint)
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
    ORDER BY i.item_index
    LIMIT 1
    FOR UPDATE OF i SKIP LOCKED;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);
END
$migration$;

REVOKE EXECUTE ON FUNCTION ingot_claim_in(uuid, uuid, bigint) FROM PUBLIC;
