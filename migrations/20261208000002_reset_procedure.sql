-- The reset that ends every processor scope, as a procedure: the host runs it after every item,
-- and CALL is a utility statement, where SELECT is planned, and describes and sends a row, which
-- makes the reset cost the server about half as much. The body of ingot_reset_session (which now
-- calls it, for hosts of an earlier version), the same rights (the caller's, on the caller's own
-- session) and no SET clause, for the same reason: one would restore the processor's search_path
-- on exit.

DO $migration$
BEGIN
EXECUTE pg_catalog.replace($fn$
CREATE PROCEDURE ingot_schema.ingot_reset()
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    RESET ALL;
    -- (CLOSE alone would be PL/pgSQL's own statement.)
    EXECUTE 'CLOSE ALL';
    UNLISTEN *;
    DISCARD TEMP;
    PERFORM pg_catalog.pg_advisory_unlock_all();
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_prepared_statements s WHERE s.from_sql) THEN
        FOR r IN SELECT s.name FROM pg_catalog.pg_prepared_statements s WHERE s.from_sql LOOP
            EXECUTE pg_catalog.format('DEALLOCATE %I', r.name);
        END LOOP;
    END IF;
END
$$;
$fn$, 'ingot_schema.', pg_catalog.quote_ident(pg_catalog.current_schema()) || '.');

EXECUTE pg_catalog.replace($fn$
CREATE OR REPLACE FUNCTION ingot_schema.ingot_reset_session() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    CALL ingot_schema.ingot_reset();
END
$$;
$fn$, 'ingot_schema.', pg_catalog.quote_ident(pg_catalog.current_schema()) || '.');
END
$migration$;
