-- The database wall (README, "Security"). Each processor logs in as its own role, so PostgreSQL
-- itself keeps it from becoming anyone else: there is no role to switch back to. The host's
-- per-item framework statements run on that same connection, in the item's one transaction,
-- through the functions below. They run with the framework owner's rights (SECURITY DEFINER) and
-- refuse every caller but the host:
--
-- * the host opens each transaction on a processor connection (ingot_open, or ingot_claim which
--   opens and claims) with its first statement, before any processor code runs in it. Opening
--   gives the transaction its id, and is refused once it has one: a processor calling these
--   functions itself is always too late.
-- * opening returns a token, a MAC of the backend, the transaction and the batch under a key
--   only the framework owner can read; every later call must present it. It never appears in a
--   statement the processor can see, and it is worth nothing in any other transaction.
--
-- Nothing is written to open a transaction. The framework owner's own sessions (the host's pool)
-- need no token. Every function pins search_path to pg_catalog with pg_temp last, and names every
-- framework object with its schema: `ingot_schema.` below is replaced by the schema this migration
-- runs in.

-- Each processor role, the batch type it runs, and the password the host logs in with. Only the
-- framework owner can read it.
CREATE TABLE ingot_processor_roles (
    role_name  text        PRIMARY KEY,
    batch_type text        NOT NULL,
    password   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON ingot_processor_roles FROM PUBLIC;

-- The key of the host's transaction tokens: one row, made here, readable by the owner only.
CREATE TABLE ingot_secret (
    key text NOT NULL
);
CREATE UNIQUE INDEX ingot_secret_one_row ON ingot_secret ((true));
INSERT INTO ingot_secret (key) SELECT gen_random_uuid()::text || gen_random_uuid()::text;
REVOKE ALL ON ingot_secret FROM PUBLIC;

-- Attempts that ended with the item's connection lost (a crashed server, a terminated backend, a
-- processor that killed its own session): counted apart from `attempts`, which counts recorded
-- outcomes, so that an item that keeps losing its connection fails instead of running forever.
ALTER TABLE import_batch_items ADD COLUMN interruptions integer NOT NULL DEFAULT 0;

-- The claim moves into the wall: it now opens the transaction too.
DROP FUNCTION ingot_claim(uuid, bigint);

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
-- Opens the current transaction for the host and returns its token (NULL for the framework
-- owner, who needs none). Refused when the transaction already has an id (it is open, or ran
-- something: either way the host's first statement is past), and, with p_check, when the login
-- is not the processor role registered for p_batch_type or p_batch is of another type.
--
-- This and ingot_check are internal: no role but the owner may call them, and they are called
-- only from the wall's SECURITY DEFINER functions, so they run with those functions' identity
-- and pinned search_path (a SET clause of their own would only repeat it, per call).
CREATE FUNCTION ingot_schema.ingot_open_transaction(p_batch uuid, p_batch_type text, p_check boolean)
RETURNS uuid
LANGUAGE plpgsql AS $$
BEGIN
    IF pg_catalog.pg_has_role(session_user, current_user, 'MEMBER') THEN
        RETURN NULL;
    END IF;
    IF pg_catalog.txid_current_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'ingot: this transaction is already open; only the host opens transactions'
            USING ERRCODE = '42501';
    END IF;
    IF p_check THEN
        PERFORM 1 FROM ingot_schema.ingot_processor_roles r
        WHERE r.role_name OPERATOR(pg_catalog.=) session_user::text
          AND r.batch_type OPERATOR(pg_catalog.=) p_batch_type;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ingot: the role % does not run batches of type %', session_user, p_batch_type
                USING ERRCODE = '42501';
        END IF;
        PERFORM 1 FROM ingot_schema.import_batches b
        WHERE b.id OPERATOR(pg_catalog.=) p_batch AND b.batch_type OPERATOR(pg_catalog.<>) p_batch_type;
        IF FOUND THEN
            RAISE EXCEPTION 'ingot: batch % is not of type %', p_batch, p_batch_type USING ERRCODE = '42501';
        END IF;
    END IF;
    RETURN ingot_schema.ingot_token(p_batch);
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- ingot_open_transaction for the host's own calls (batch hooks, dry-run items).
CREATE FUNCTION ingot_schema.ingot_open(p_batch uuid, p_batch_type text) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN ingot_schema.ingot_open_transaction(p_batch, p_batch_type, true);
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Passes when the caller is the host: the framework owner without a token, or a processor
-- connection presenting the token of the transaction it is in, for the batch it was opened for.
-- Internal (see ingot_open_transaction).
CREATE FUNCTION ingot_schema.ingot_check(p_token uuid, p_batch uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_token IS NULL AND pg_catalog.pg_has_role(session_user, current_user, 'MEMBER') THEN
        RETURN;
    END IF;
    PERFORM 1 WHERE pg_catalog.txid_current_if_assigned() IS NOT NULL
                AND p_token OPERATOR(pg_catalog.=) ingot_schema.ingot_token(p_batch);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ingot: only the host may change batch %', p_batch USING ERRCODE = '42501';
    END IF;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Opens the transaction and claims the lowest-index pending item at or after p_floor that no
-- other transaction holds and that is not waiting out a retry backoff (the claim is the row
-- lock). As a function, its plan is cached per session.
CREATE FUNCTION ingot_schema.ingot_claim(p_batch uuid, p_batch_type text, p_floor bigint)
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
-- An item's final state (or its return to pending for a retry), its log lines, its counter slot
-- and its batch-metadata changes, in one call. p holds: status, processed_data, target_table,
-- target_id, error_message, error_code, error_field, started_at, duration_ms, fuel_used,
-- available_at, metadata (changes to merge) and logs (level, source, message, details, at).
CREATE FUNCTION ingot_schema.ingot_finish_item(p_token uuid, p_batch uuid, p_item uuid, p_slot smallint, p jsonb)
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
        INSERT INTO ingot_schema.import_batch_counters AS c (batch_id, slot, completed, failed, skipped)
        SELECT p_batch, p_slot, (v_status OPERATOR(pg_catalog.=) 'completed')::int,
               (v_status OPERATOR(pg_catalog.=) 'failed')::int, (v_status OPERATOR(pg_catalog.=) 'skipped')::int
        FROM item
        ON CONFLICT (batch_id, slot) DO UPDATE
        SET completed = c.completed OPERATOR(pg_catalog.+) EXCLUDED.completed,
            failed = c.failed OPERATOR(pg_catalog.+) EXCLUDED.failed,
            skipped = c.skipped OPERATOR(pg_catalog.+) EXCLUDED.skipped
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

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- What the batch hooks are told about their batch.
CREATE FUNCTION ingot_schema.ingot_batch_info(p_token uuid, p_batch uuid)
RETURNS TABLE (batch_type text, total_items bigint, completed bigint, failed bigint, skipped bigint,
               metadata text, source_info text, retry_count integer, parent_batch_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ingot_schema.ingot_check(p_token, p_batch);
    RETURN QUERY
    SELECT b.batch_type, b.total_items,
           coalesce(pg_catalog.sum(c.completed), 0)::bigint,
           coalesce(pg_catalog.sum(c.failed), 0)::bigint,
           coalesce(pg_catalog.sum(c.skipped), 0)::bigint,
           b.metadata::text, b.source_info::text, b.retry_count, b.parent_batch_id
    FROM ingot_schema.import_batches b
    LEFT JOIN ingot_schema.import_batch_counters c ON c.batch_id OPERATOR(pg_catalog.=) b.id
    WHERE b.id OPERATOR(pg_catalog.=) p_batch
    GROUP BY b.id;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Moves a batch along its life: to 'processing' from pending, failed or cancelled (recording the
-- processor's digest), to 'completed' from processing, to 'failed' (with a reason) unless it
-- completed. False when the batch was in none of the states it may move from.
CREATE FUNCTION ingot_schema.ingot_batch_transition(p_token uuid, p_batch uuid, p_to text, p_digest text, p_reason text)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ingot_schema.ingot_check(p_token, p_batch);
    IF p_to OPERATOR(pg_catalog.=) 'processing' THEN
        UPDATE ingot_schema.import_batches
        SET status = 'processing', started_at = coalesce(started_at, pg_catalog.now()),
            processor_digest = p_digest, error_message = NULL, completed_at = NULL
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) ANY ('{pending,failed,cancelled}');
    ELSIF p_to OPERATOR(pg_catalog.=) 'completed' THEN
        UPDATE ingot_schema.import_batches SET status = 'completed', completed_at = pg_catalog.now()
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) 'processing';
    ELSIF p_to OPERATOR(pg_catalog.=) 'failed' THEN
        UPDATE ingot_schema.import_batches
        SET status = 'failed', error_message = p_reason, completed_at = pg_catalog.now(),
            started_at = coalesce(started_at, pg_catalog.now())
        WHERE id OPERATOR(pg_catalog.=) p_batch AND status OPERATOR(pg_catalog.=) ANY ('{pending,processing}');
    ELSE
        RAISE EXCEPTION 'ingot: unknown batch transition %', p_to;
    END IF;
    RETURN FOUND;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- What a batch hook leaves: metadata changes to merge (p->'metadata', if present) and log lines
-- about the batch (p->'logs', as for ingot_finish_item).
CREATE FUNCTION ingot_schema.ingot_batch_record(p_token uuid, p_batch uuid, p jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM ingot_schema.ingot_check(p_token, p_batch);
    IF p OPERATOR(pg_catalog.?) 'metadata' THEN
        UPDATE ingot_schema.import_batches
        SET metadata = metadata OPERATOR(pg_catalog.||) (p OPERATOR(pg_catalog.->) 'metadata')
        WHERE id OPERATOR(pg_catalog.=) p_batch;
    END IF;
    INSERT INTO ingot_schema.import_logs (batch_id, log_level, source, message, details, created_at)
    SELECT p_batch, l.level, l.source, l.message, l.details, l.at
    FROM pg_catalog.jsonb_to_recordset(coalesce(p OPERATOR(pg_catalog.->) 'logs', '[]'))
         AS l(level text, source text, message text, details jsonb, at timestamptz);
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Undoes whatever a processor left in its session: every setting back to what the connection
-- started with (RESET ALL), then session advisory locks, cursors, LISTENs, temporary objects and
-- prepared statements made with PREPARE (large objects: see ingot_drop_large_objects). Runs with
-- the caller's rights on the caller's own session, and without a SET clause (one would restore
-- the processor's search_path on exit); it settles the settings first and names everything with
-- its schema.
CREATE FUNCTION ingot_schema.ingot_reset_session() RETURNS void
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
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

EXECUTE pg_catalog.replace(pg_catalog.replace($fn$
-- Unlinks the large objects the caller's role owns. A large object cannot touch the host's
-- statements, and finding them takes a catalog scan, so the host runs this when a worker is done
-- with a batch rather than after every item.
CREATE FUNCTION ingot_schema.ingot_drop_large_objects() RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT d.objid FROM pg_catalog.pg_shdepend d
        WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass
          AND d.refobjid OPERATOR(pg_catalog.=) session_user::pg_catalog.regrole
          AND d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_largeobject'::pg_catalog.regclass
          AND d.deptype OPERATOR(pg_catalog.=) 'o'
    LOOP
        PERFORM pg_catalog.lo_unlink(r.objid);
    END LOOP;
END
$$;
$fn$, 'ingot_schema.ingot_token(p_batch)', token), 'ingot_schema.', fw);

END
$migration$;

-- Only the host (and the processor roles it grants them to, one by one) may call the wall's
-- functions; anyone may reset their own session.
REVOKE EXECUTE ON FUNCTION ingot_open_transaction(uuid, text, boolean), ingot_open(uuid, text),
    ingot_check(uuid, uuid),
    ingot_claim(uuid, text, bigint),
    ingot_finish_item(uuid, uuid, uuid, smallint, jsonb), ingot_batch_info(uuid, uuid),
    ingot_batch_transition(uuid, uuid, text, text, text), ingot_batch_record(uuid, uuid, jsonb)
    FROM PUBLIC;
