-- The SQL files that processors ship (`processors/<type>/schema.sql`, then
-- `processors/<type>/migrations/*.sql` in name order) and `ingot migrate` applied: each runs
-- once, in the transaction that records it here; a recorded file that changed is refused.
CREATE TABLE ingot_processor_schemas (
    batch_type text        NOT NULL,
    file       text        NOT NULL,
    sha256     text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_type, file)
);
REVOKE ALL ON ingot_processor_schemas FROM PUBLIC;
