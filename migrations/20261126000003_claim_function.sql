-- The claim, as a function so that its plan is cached per session: the worker sends it in one
-- simple-protocol round trip together with BEGIN and the processor scope, where a plain SELECT
-- would be planned again for every item. Only the host calls it; a processor's role could not
-- read the items table through it anyway (it runs with the caller's privileges).
CREATE FUNCTION ingot_claim(p_batch uuid, p_floor bigint)
RETURNS TABLE (id uuid, item_index bigint, data text, attempts integer)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    SELECT i.id, i.item_index, i.source_data::text, i.attempts
    FROM import_batch_items i
    WHERE i.batch_id = p_batch
      AND i.status = 'pending'
      AND i.item_index >= p_floor
      AND (i.available_at IS NULL OR i.available_at <= clock_timestamp())
    ORDER BY i.item_index
    LIMIT 1
    FOR UPDATE SKIP LOCKED;
END
$$;

REVOKE EXECUTE ON FUNCTION ingot_claim(uuid, bigint) FROM PUBLIC;
