//! Each processor's own PostgreSQL role, whose privileges are exactly its manifest's `[grants]`.
//!
//! The role is `NOLOGIN` with no superuser, createrole, createdb, replication or bypassrls; the
//! host connects as itself and switches to the role with `SET LOCAL ROLE` inside each item's
//! savepoint, so the processor's SQL runs with the role's privileges and the host's own writes
//! with the host's. Syncing revokes what the manifest no longer grants, so editing the manifest
//! is all it takes to take a privilege away. A processor without a manifest gets a role with no
//! privileges at all.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Executor, PgConnection, Row};

use crate::registry::manifest::{Manifest, Privilege};
use crate::store::items::quote_ident;

/// The attributes of every processor role: it can do nothing but what its grants allow.
const LOWERED: &str = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT";

/// The default role name prefix: `ingot_p_customer_data` runs `customer_data`.
pub const DEFAULT_ROLE_PREFIX: &str = "ingot_p_";

/// Why a processor's role could not be made to match its manifest. Each names the admin step
/// that would fix it.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The host's database user may not create roles.
    #[error(
        "the database user {user} may not create the role {role} that sandboxes processor {batch_type}; \
         run once as an administrator: CREATE ROLE {role} NOLOGIN; GRANT {role} TO {user};"
    )]
    CannotCreateRole {
        /// The processor.
        batch_type: String,
        /// The role.
        role: String,
        /// The host's database user.
        user: String,
    },
    /// The host's user may not grant or revoke a privilege.
    #[error(
        "the database user {user} may not change the privileges of {role} ({statement}): make {user} the \
         table's owner, or run that statement once as the table's owner"
    )]
    CannotGrant {
        /// The role.
        role: String,
        /// The host's database user.
        user: String,
        /// The statement that failed.
        statement: String,
    },
    /// The manifest grants a table that does not exist.
    #[error(
        "{manifest} grants {table:?}, but there is no such table in the database; create it first (e.g. apply the \
         processor's schema.sql) or remove it from [grants]"
    )]
    NoSuchTable {
        /// The manifest file.
        manifest: String,
        /// The table as written in the manifest.
        table: String,
    },
    /// Any other database failure.
    #[error("syncing the role {role}: {source}")]
    Database {
        /// The role.
        role: String,
        /// The failure.
        source: sqlx::Error,
    },
}

/// The role for a batch type under a prefix.
pub fn role_name(prefix: &str, batch_type: &str) -> String {
    format!("{prefix}{batch_type}")
}

fn sql_state(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

/// A privilege on a relation: (`TABLE` or `SEQUENCE`, qualified relation, privilege keyword).
type Privileges = BTreeSet<(&'static str, String, String)>;

/// Makes `role` exist with no special attributes, lets the host switch to it, and sets its
/// privileges to exactly `manifest`'s grants. Runs in its own transaction, serialised across
/// hosts by an advisory lock (concurrent GRANTs on one table can fail with "tuple concurrently
/// updated").
pub async fn sync(
    conn: &mut PgConnection,
    role: &str,
    batch_type: &str,
    manifest: &Manifest,
) -> Result<(), GrantError> {
    let db = |source| GrantError::Database { role: role.to_owned(), source };
    conn.execute("BEGIN").await.map_err(db)?;
    let result = sync_in_tx(conn, role, batch_type, manifest).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute(end).await.map_err(db);
    result?;
    ended.map(drop)
}

async fn sync_in_tx(
    conn: &mut PgConnection,
    role: &str,
    batch_type: &str,
    manifest: &Manifest,
) -> Result<(), GrantError> {
    let db = |source| GrantError::Database { role: role.to_owned(), source };
    conn.execute("SELECT pg_advisory_xact_lock(hashtext('ingot:processor-roles'))").await.map_err(db)?;
    let user: String =
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut *conn).await.map_err(db)?;
    let quoted = quote_ident(role);
    // Creating the role and joining it need the same privilege, so they fail the same way.
    let cannot_create_role = |e: sqlx::Error| match sql_state(&e).as_deref() {
        Some("42501") => GrantError::CannotCreateRole {
            batch_type: batch_type.to_owned(),
            role: role.to_owned(),
            user: user.clone(),
        },
        _ => db(e),
    };

    let attributes = sqlx::query(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolcanlogin OR rolreplication OR rolbypassrls AS elevated
         FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    match attributes {
        None => {
            conn.execute(format!("CREATE ROLE {quoted} {LOWERED}").as_str())
                .await
                .map_err(cannot_create_role)?;
        }
        Some(row) if row.try_get::<bool, _>("elevated").map_err(db)? => {
            conn.execute(format!("ALTER ROLE {quoted} {LOWERED}").as_str()).await.map_err(db)?;
        }
        Some(_) => {}
    }
    let member: bool = sqlx::query_scalar("SELECT pg_has_role(current_user, $1::text, 'MEMBER')")
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if !member {
        let grant = format!("GRANT {quoted} TO {}", quote_ident(&user));
        conn.execute(grant.as_str()).await.map_err(cannot_create_role)?;
    }

    let wanted = wanted_privileges(conn, role, manifest).await?;
    let current = current_privileges(conn, role).await.map_err(db)?;
    let mut statements = Vec::new();
    for (kind, relation, privilege) in current.relations.difference(&wanted.relations) {
        statements.push(format!("REVOKE {privilege} ON {kind} {relation} FROM {quoted}"));
    }
    for schema in current.schemas.difference(&wanted.schemas) {
        statements.push(format!("REVOKE USAGE ON SCHEMA {schema} FROM {quoted}"));
    }
    for schema in wanted.schemas.difference(&current.schemas) {
        statements.push(format!("GRANT USAGE ON SCHEMA {schema} TO {quoted}"));
    }
    for (kind, relation, privilege) in wanted.relations.difference(&current.relations) {
        statements.push(format!("GRANT {privilege} ON {kind} {relation} TO {quoted}"));
    }
    for statement in statements {
        if let Err(e) = conn.execute(statement.as_str()).await {
            return Err(match sql_state(&e).as_deref() {
                Some("42501") => {
                    GrantError::CannotGrant { role: role.to_owned(), user: user.clone(), statement }
                }
                _ => db(e),
            });
        }
    }
    Ok(())
}

/// Relation and schema privileges, with relations and schemas quoted and qualified.
#[derive(Debug, Default)]
struct Held {
    relations: Privileges,
    schemas: BTreeSet<String>,
}

/// What the manifest grants, resolved against the database: each table's privileges, USAGE on
/// the sequences its columns draw from when it may be written, USAGE on its schema.
async fn wanted_privileges(
    conn: &mut PgConnection,
    role: &str,
    manifest: &Manifest,
) -> Result<Held, GrantError> {
    let db = |source| GrantError::Database { role: role.to_owned(), source };
    let mut held = Held::default();
    let by_table: BTreeMap<&String, &Vec<Privilege>> = manifest.grants.iter().collect();
    for (table, privileges) in by_table {
        let row = sqlx::query(
            "SELECT c.oid::bigint AS oid, quote_ident(n.nspname) AS schema,
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS relation
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        )
        .bind(table)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            let manifest =
                manifest.path.as_ref().map_or_else(|| "the manifest".to_owned(), |p| p.display().to_string());
            return Err(GrantError::NoSuchTable { manifest, table: table.clone() });
        };
        let relation: String = row.try_get("relation").map_err(db)?;
        held.schemas.insert(row.try_get("schema").map_err(db)?);
        for privilege in privileges {
            held.relations.insert(("TABLE", relation.clone(), privilege.as_sql().to_owned()));
        }
        if privileges.iter().any(|p| matches!(p, Privilege::Insert | Privilege::Update)) {
            let sequences: Vec<String> = sqlx::query_scalar(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(s.relname)
                 FROM pg_depend d
                 JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_namespace n ON n.oid = s.relnamespace
                 WHERE d.refobjid = $1::bigint::oid AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')",
            )
            .bind(row.try_get::<i64, _>("oid").map_err(db)?)
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?;
            for sequence in sequences {
                held.relations.insert(("SEQUENCE", sequence, "USAGE".to_owned()));
            }
        }
    }
    Ok(held)
}

/// What the role holds now in this database, as granted directly to it.
async fn current_privileges(conn: &mut PgConnection, role: &str) -> Result<Held, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS relation, a.privilege_type,
                c.relkind = 'S' AS sequence
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         CROSS JOIN LATERAL aclexplode(c.relacl) a
         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await?;
    let mut held = Held::default();
    for row in rows {
        let kind = if row.try_get("sequence")? { "SEQUENCE" } else { "TABLE" };
        held.relations.insert((kind, row.try_get("relation")?, row.try_get("privilege_type")?));
    }
    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(n.nspname) FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1) AND a.privilege_type = 'USAGE'",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await?;
    held.schemas = schemas.into_iter().collect();
    Ok(held)
}
