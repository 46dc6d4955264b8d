//! The SQL gate: every statement a processor sends is parsed with PostgreSQL's own parser
//! (libpg_query) before it reaches the server. Exactly one data statement passes — SELECT,
//! INSERT, UPDATE, DELETE or MERGE, with or without WITH — and no call to a function that
//! changes session state or reaches outside the database. Everything else is refused with the
//! rule that refused it.
//!
//! The gate is defence in depth. The wall is PostgreSQL's own authentication: the processor's
//! connection is logged in as its role, so no statement can switch to another (see
//! [`login`](super::login)). The gate keeps a processor from changing its session (settings,
//! transaction control, locks that outlive the item), from running SQL text it never sees
//! (`ts_stat`, `query_to_xml`, …), from calling the host's own functions, and from reaching
//! outside the database.
//!
//! The gate parses with PostgreSQL's defaults (`standard_conforming_strings = on`); the host
//! starts every processor connection with that setting and resets it after every scope, and the
//! gate refuses every way to change it within one (SET, `set_config`, writes to `pg_settings`),
//! so the gate and the server always read a statement the same way.

mod walk;

use pg_query::NodeEnum;
use pg_query::protobuf::node::Node;

use self::walk::{Target, walk};

/// Why the gate refused a statement: the rule, as a sentence the processor's author can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the SQL gate: {0}")]
pub struct Refusal(pub String);

/// Function names a processor may never call, matched against the unqualified, lowercased name.
/// Exact names first, then prefixes that cover families.
const DENIED_FUNCTIONS: &[&str] = &[
    // Session state: switching role, settings, reloading configuration.
    "set_config",
    "pg_reload_conf",
    "pg_rotate_logfile",
    // Other sessions and locks that outlive the item.
    "pg_terminate_backend",
    "pg_cancel_backend",
    // The server's files and large objects.
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_current_logfile",
    "loread",
    "lowrite",
    // Queries built from text, run outside the gate (with the caller's rights, inside the item).
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "ts_stat",
    "ts_rewrite",
    // Notifications and replication.
    "pg_notify",
    "pg_switch_wal",
    "pg_promote",
    "pg_import_system_collations",
    "pg_log_backend_memory_contexts",
];

const DENIED_PREFIXES: &[&str] = &[
    "pg_advisory",
    "pg_try_advisory",
    "lo_",
    "dblink",
    "pg_ls_",
    "pg_file_",
    "pg_logical_",
    "pg_replication_",
    "pg_create_",
    "pg_drop_replication",
    "pg_backup_",
    "table_to_xml",
    "schema_to_xml",
    "database_to_xml",
    "pg_stat_reset",
    "pg_stat_statements_reset",
    // The host's own functions: the wall refuses them too, but no processor has a reason to try.
    "ingot_",
];

/// Schemas whose relations a processor may never write (their views change server state through
/// rules: `UPDATE pg_settings` calls `set_config`).
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema", "pg_toast"];

/// Checks one processor statement.
pub fn check(sql: &str) -> Result<(), Refusal> {
    let parsed = pg_query::parse(sql, 0).map_err(|e| {
        let message = match e {
            pg_query::Error::Parse(message) => message,
            other => other.to_string(),
        };
        Refusal(format!("the statement does not parse: {message}"))
    })?;
    let statements = &parsed.protobuf.stmts;
    match statements.len() {
        0 => return Err(Refusal("the call holds no statement".into())),
        1 => {}
        n => {
            return Err(Refusal(format!(
                "the call holds {n} statements; send exactly one statement per call"
            )));
        }
    }
    let node = statements[0].stmt.as_ref().and_then(|s| s.node.as_ref());
    match node {
        Some(NodeEnum::SelectStmt(select)) if select.into_clause.is_some() => {
            return Err(Refusal("SELECT … INTO creates a table; processors may not run DDL".into()));
        }
        Some(
            NodeEnum::SelectStmt(_)
            | NodeEnum::InsertStmt(_)
            | NodeEnum::UpdateStmt(_)
            | NodeEnum::DeleteStmt(_)
            | NodeEnum::MergeStmt(_),
        ) => {}
        Some(other) => return Err(Refusal(statement_rule(other))),
        None => return Err(Refusal("the call holds no statement".into())),
    }
    let found = walk(&parsed.protobuf)
        .ok_or_else(|| Refusal("the statement cannot be inspected, so it is refused".into()))?;
    let named = found.relations.iter().chain(found.written.iter().map(|t| &t.name));
    if let Some(name) = named.into_iter().find(|name| is_framework_relation(name)) {
        return Err(Refusal(format!(
            "{name} is one of Ingot's own tables; processors never use them (the host records items, logs \
             and counters itself)"
        )));
    }
    if let Some(target) = found.written.iter().find(|t| is_system_relation(t)) {
        return Err(Refusal(format!(
            "{} is a system catalog or view; writing it changes the server (UPDATE pg_settings changes settings), \
             so processors may not",
            target.display()
        )));
    }
    for name in found.functions {
        let unqualified = name.rsplit('.').next().unwrap_or(&name).to_ascii_lowercase();
        if DENIED_FUNCTIONS.contains(&unqualified.as_str())
            || DENIED_PREFIXES.iter().any(|p| unqualified.starts_with(p))
        {
            return Err(Refusal(format!(
                "{unqualified}() changes session state or reaches outside the database, so processors may not call it"
            )));
        }
    }
    Ok(())
}

impl Target {
    fn display(&self) -> String {
        if self.schema.is_empty() { self.name.clone() } else { format!("{}.{}", self.schema, self.name) }
    }
}

/// An unqualified `pg_…` name resolves to pg_catalog first, whatever the search path says.
fn is_system_relation(target: &Target) -> bool {
    let schema = target.schema.to_ascii_lowercase();
    SYSTEM_SCHEMAS.contains(&schema.as_str())
        || (schema.is_empty() && target.name.to_ascii_lowercase().starts_with("pg_"))
}

/// A relation named like one of the framework's (in whatever schema: a processor has no reason
/// to touch any of them).
fn is_framework_relation(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    crate::store::roles::FRAMEWORK_RELATIONS.contains(&name.as_str()) || name.starts_with("ingot_")
}

/// The rule a non-data statement breaks, named by what it is.
fn statement_rule(node: &Node) -> String {
    let what = match node {
        NodeEnum::TransactionStmt(_) => {
            "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE) belongs to the host: each \
             item already runs in its own transaction"
        }
        NodeEnum::VariableSetStmt(_) | NodeEnum::VariableShowStmt(_) | NodeEnum::AlterSystemStmt(_) => {
            "SET, RESET and SHOW change or read session settings (including the role); processors may not"
        }
        NodeEnum::DiscardStmt(_) => "DISCARD resets the session; processors may not",
        NodeEnum::DoStmt(_) => "DO blocks run code outside the gate; processors may not",
        NodeEnum::CallStmt(_) => "CALL runs procedures that can control transactions; processors may not",
        NodeEnum::CopyStmt(_) => "COPY reads and writes files and programs; processors may not",
        NodeEnum::ListenStmt(_) | NodeEnum::NotifyStmt(_) | NodeEnum::UnlistenStmt(_) => {
            "LISTEN, NOTIFY and UNLISTEN reach other sessions; processors may not"
        }
        NodeEnum::PrepareStmt(_) | NodeEnum::ExecuteStmt(_) | NodeEnum::DeallocateStmt(_) => {
            "PREPARE, EXECUTE and DEALLOCATE manage session statements; processors may not"
        }
        NodeEnum::LockStmt(_) => "LOCK TABLE holds locks beyond the statement; processors may not",
        NodeEnum::VacuumStmt(_) => "VACUUM and ANALYZE are maintenance; processors may not",
        NodeEnum::ExplainStmt(_) => "EXPLAIN can execute its statement outside the gate; processors may not",
        NodeEnum::GrantStmt(_) | NodeEnum::GrantRoleStmt(_) | NodeEnum::AlterDefaultPrivilegesStmt(_) => {
            "GRANT and REVOKE change privileges; the manifest's [grants] decide them"
        }
        NodeEnum::TruncateStmt(_) => "TRUNCATE is DDL-like and bypasses row privileges; use DELETE",
        _ => "DDL and other utility statements change the schema or the server; processors may not",
    };
    format!("{what} (allowed: one SELECT, INSERT, UPDATE, DELETE or MERGE, with or without WITH)")
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn data_statements_pass() {
        for sql in [
            "SELECT * FROM customers WHERE email = $1",
            "INSERT INTO customers (email) VALUES ($1) ON CONFLICT (email) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            "UPDATE stock SET qty = qty - $1 WHERE sku = $2",
            "DELETE FROM stock WHERE qty = 0",
            "WITH moved AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM moved",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET v = s.v",
            "VALUES (1), (2)",
            "SELECT lower($1), now(), current_setting('TimeZone')",
            "SELECT * FROM customers FOR UPDATE",
        ] {
            assert_eq!(check(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn session_and_transaction_control_is_refused() {
        for sql in [
            "RESET ROLE",
            "SET ROLE postgres",
            "SET LOCAL ROLE postgres",
            "SET SESSION AUTHORIZATION postgres",
            "SET statement_timeout = 0",
            "RESET ALL",
            "COMMIT",
            "ROLLBACK",
            "BEGIN",
            "SAVEPOINT s",
            "RELEASE SAVEPOINT s",
            "DISCARD ALL",
            "SHOW data_directory",
        ] {
            assert!(check(sql).is_err(), "{sql} passed");
        }
    }

    #[test]
    fn functions_that_touch_the_session_or_the_server_are_refused_wherever_they_hide() {
        for sql in [
            "SELECT set_config('role', 'postgres', true)",
            "SELECT pg_catalog.set_config('role', 'postgres', false)",
            "SELECT \"set_config\"('role', 'postgres', false)",
            "INSERT INTO t (v) VALUES ((SELECT set_config('role', 'x', true)))",
            "SELECT * FROM customers WHERE pg_read_file('/etc/passwd') IS NOT NULL",
            "SELECT pg_advisory_lock(1)",
            "SELECT pg_try_advisory_xact_lock(1)",
            "SELECT lo_import('/etc/passwd')",
            "SELECT dblink('host=x', 'select 1')",
            "SELECT pg_terminate_backend(1)",
            "SELECT query_to_xml('select * from import_logs', true, false, '')",
            "WITH x AS (SELECT pg_reload_conf()) SELECT * FROM x",
            "SELECT * FROM ROWS FROM (pg_ls_dir('/'))",
            "SELECT * FROM ts_stat($$SELECT set_config('role', 'postgres', true)::tsvector$$)",
            "SELECT ts_rewrite('a'::tsquery, 'SELECT set_config(''role'', ''postgres'', true)::tsquery, ''b''::tsquery')",
            "SELECT cursor_to_xml('c', 1, false, false, '')",
            "SELECT table_to_xml('import_batches', false, false, '')",
            "SELECT database_to_xmlschema(false, false, '')",
            "SELECT pg_cancel_backend(pg_backend_pid())",
            "SELECT pg_terminate_backend(pg_backend_pid())",
            "SELECT lo_create(0)",
            "SELECT pg_notify('ingot_batches', 'x')",
            "SELECT pg_advisory_xact_lock(hashtext('ingot:processor-roles'))",
            "SELECT * FROM ingot_claim(gen_random_uuid(), 'probe', 0)",
            "SELECT public.ingot_finish_item(NULL, NULL, NULL, 0::smallint, '{}')",
        ] {
            let refusal = check(sql).expect_err(sql);
            assert!(refusal.to_string().contains("()"), "{sql}: {refusal}");
        }
    }

    #[test]
    fn everything_that_is_not_one_data_statement_is_refused() {
        for sql in [
            "SELECT 1; DELETE FROM customers",
            "",
            ";",
            "DO $$ BEGIN PERFORM 1; END $$",
            "CALL p()",
            "COPY customers TO PROGRAM 'cat /etc/passwd'",
            "COPY customers FROM '/etc/passwd'",
            "LISTEN x",
            "NOTIFY x",
            "PREPARE p AS SELECT 1",
            "EXECUTE p",
            "DEALLOCATE ALL",
            "LOCK TABLE customers",
            "VACUUM customers",
            "ANALYZE customers",
            "CREATE TABLE x (a int)",
            "DROP TABLE customers",
            "ALTER TABLE customers ADD COLUMN x int",
            "TRUNCATE customers",
            "GRANT ALL ON customers TO public",
            "SELECT * INTO copy FROM customers",
            "EXPLAIN ANALYZE DELETE FROM customers",
            "SELEC 1",
        ] {
            assert!(check(sql).is_err(), "{sql:?} passed");
        }
    }

    #[test]
    fn ingots_own_tables_are_refused_wherever_they_are_named() {
        for sql in [
            "SELECT source_data FROM import_batch_items",
            "SELECT * FROM public.import_batches",
            "SELECT key FROM ingot_secret",
            "SELECT password FROM ingot_processor_roles",
            "INSERT INTO probe_rows (label) SELECT message FROM import_logs",
            "UPDATE import_batch_counters SET completed = completed + 1",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM \"IMPORT_BATCHES\")",
        ] {
            let refusal = check(sql).expect_err(sql);
            assert!(refusal.to_string().contains("Ingot's own tables"), "{sql}: {refusal}");
        }
    }

    #[test]
    fn writes_to_system_catalogs_and_views_are_refused() {
        for sql in [
            "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
            "UPDATE pg_catalog.pg_settings SET setting = 'x'",
            "UPDATE PG_SETTINGS SET setting = 'x'",
            "WITH s AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT * FROM s",
            "INSERT INTO information_schema.sql_features VALUES ('x')",
            "DELETE FROM pg_catalog.pg_largeobject",
            "MERGE INTO pg_settings s USING (VALUES (1)) v(a) ON true WHEN MATCHED THEN UPDATE SET setting = 'x'",
        ] {
            let refusal = check(sql).expect_err(sql);
            assert!(refusal.to_string().contains("system catalog"), "{sql}: {refusal}");
        }
        // Reading them is fine; so is writing an ordinary table.
        assert_eq!(check("SELECT setting FROM pg_settings WHERE name = 'TimeZone'"), Ok(()));
        assert_eq!(check("UPDATE settings SET v = 1"), Ok(()));
    }

    #[test]
    fn string_literals_are_read_as_the_server_reads_them() {
        // Under standard_conforming_strings = off the server would read a set_config call here.
        // The setting is never off while a processor runs (see the module docs), so the gate and
        // the server agree: two string literals.
        let sql = r"SELECT 'a\' , ' , set_config($$role$$, $$none$$, true) AS c, ' || ' -- '";
        assert_eq!(check(sql), Ok(()), "under the default setting this is two string literals");
    }
}
