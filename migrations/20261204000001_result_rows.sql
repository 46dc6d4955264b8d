-- The server's check of each row a processor's statement returns (host/src/context/results.rs):
-- a statement whose rows may be of any size runs as
--   WITH ..., ingot_rows AS (<statement>) SELECT ingot_rows.* FROM ingot_rows
--   WHERE <schema>.ingot_row_fits(ingot_rows, <cap>)
-- so that a row larger than the cap on query results is refused before it is sent: the host
-- never has to hold it. It runs with the caller's rights on data the caller could read anyway;
-- everything in it is schema-qualified, operators included, so nothing the caller puts on its
-- search path can stand in for what it uses.
CREATE FUNCTION ingot_row_fits(r anyelement, cap bigint) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
    -- The row as one value: every field fetched and decompressed, as it will be sent.
    size bigint := pg_catalog.pg_column_size(r);
BEGIN
    IF size OPERATOR(pg_catalog.>) cap THEN
        RAISE EXCEPTION 'ingot: a result row of % bytes passes the cap on query results per item (% bytes)', size, cap
            USING ERRCODE = '54000';
    END IF;
    RETURN true;
END
$$;
GRANT EXECUTE ON FUNCTION ingot_row_fits(anyelement, bigint) TO PUBLIC;
