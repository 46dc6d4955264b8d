//! The framework's own record of processor roles (`ingot_processor_roles`): which batch type each
//! role runs — the wall's functions refuse a role anything of another type — and the password the
//! host logs in with. Only the framework owner can read it.

use sqlx::{Executor, PgConnection};

use super::StoreError;

/// Every relation of the framework. No manifest may grant any of them to a processor.
pub const FRAMEWORK_RELATIONS: &[&str] = &[
    "import_batches",
    "import_batch_items",
    "import_batch_counters",
    "import_logs",
    "import_batch_summary",
    "import_failed_batches",
    "ingot_processor_roles",
    "ingot_secret",
    "ingot_processor_schemas",
    "_sqlx_migrations",
];

/// The wall's functions a processor role must be able to call, because the host calls them on
/// its connection. Each refuses every caller but the host.
pub const WALL_FUNCTIONS: &[&str] = &[
    "ingot_open(uuid, text)",
    "ingot_claim(uuid, text, bigint, integer)",
    "ingot_claim_in(uuid, uuid, bigint)",
    "ingot_finish_items(uuid, uuid, smallint, jsonb)",
    "ingot_batch_info(uuid, uuid)",
    "ingot_batch_transition(uuid, uuid, text, text, text)",
    "ingot_batch_record(uuid, uuid, jsonb)",
];

/// Serialises role syncs across hosts until the caller's transaction ends (concurrent GRANTs on
/// one object fail with "tuple concurrently updated"). A table lock rather than an advisory one:
/// a processor role has no privilege on the table, so it can never take this lock itself.
pub async fn lock(conn: &mut PgConnection) -> Result<(), StoreError> {
    conn.execute("LOCK TABLE ingot_processor_roles IN SHARE ROW EXCLUSIVE MODE").await?;
    Ok(())
}

/// Records that `role` runs `batch_type`, and returns the password the host logs in as it with:
/// the one recorded before, or `new_password` for a role seen for the first time. Commits on its
/// own (outside any transaction), so that a password handed to an administrator survives a sync
/// that then fails.
pub async fn register(
    conn: &mut PgConnection,
    role: &str,
    batch_type: &str,
    new_password: &str,
) -> Result<String, StoreError> {
    let password = sqlx::query_scalar(
        "INSERT INTO ingot_processor_roles (role_name, batch_type, password) VALUES ($1, $2, $3)
         ON CONFLICT (role_name) DO UPDATE SET batch_type = EXCLUDED.batch_type
         RETURNING password",
    )
    .bind(role)
    .bind(batch_type)
    .bind(new_password)
    .fetch_one(conn)
    .await?;
    Ok(password)
}

/// Forgets a role (dropped by the caller).
pub async fn forget(conn: &mut PgConnection, role: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM ingot_processor_roles WHERE role_name = $1").bind(role).execute(conn).await?;
    Ok(())
}

/// The framework's schema, quoted, as the host names it in every call on a processor connection.
pub async fn framework_schema(conn: &mut PgConnection) -> Result<String, StoreError> {
    let schema = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = to_regclass('import_batches')",
    )
    .fetch_optional(conn)
    .await?;
    schema.ok_or_else(|| StoreError::Corrupt("Ingot's tables are missing: run `ingot migrate`".into()))
}
