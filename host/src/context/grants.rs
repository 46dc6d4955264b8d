//! Each processor's own PostgreSQL role, whose privileges are exactly its manifest's `[grants]`.
//!
//! The role is the *login* of the processor's connections (see [`login`](super::login)): LOGIN,
//! with no superuser, createrole, createdb, replication or bypassrls, and a member of no other
//! role. A session whose login is that role has no role to switch to, so no SQL path can give the
//! processor more than the role holds. The host logs in with a random password it keeps in
//! `ingot_processor_roles`, and is itself a member of the role (never the other way round), which
//! lets it cancel the role's statements. Syncing revokes what the manifest no longer grants, so
//! editing the manifest is all it takes to take a privilege away. A processor without a manifest
//! gets a role with no privileges at all. Ingot's own tables can never be granted.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::{Executor, PgConnection, Row};

use crate::registry::manifest::{Manifest, Privilege};
use crate::store::items::quote_ident;
use crate::store::roles::{self, FRAMEWORK_RELATIONS, WALL_FUNCTIONS};

/// The attributes of every processor role: it can log in, and do nothing but what its grants allow.
const LOWERED: &str = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT";

/// The default role name prefix: `ingot_p_customer_data` runs `customer_data`.
pub const DEFAULT_ROLE_PREFIX: &str = "ingot_p_";

/// Why a processor's role could not be made to match its manifest. Each names the admin step
/// that would fix it.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// The host's database user may not create (or change) the role, or join it.
    #[error(
        "the database user {user} may not {what} the role {role} that sandboxes processor {batch_type}; \
         run once as an administrator: {step}"
    )]
    CannotCreateRole {
        /// The processor.
        batch_type: String,
        /// The role.
        role: String,
        /// The host's database user.
        user: String,
        /// What it tried: create, change or join.
        what: &'static str,
        /// The statements that fix it.
        step: String,
    },
    /// The role is a member of another role, whose privileges it could then use.
    #[error(
        "the role {role} that sandboxes processor {batch_type} is a member of {group}, and the database user \
         {user} may not take that away; run once as an administrator: REVOKE {group} FROM {role};"
    )]
    RoleIsMember {
        /// The processor.
        batch_type: String,
        /// The role.
        role: String,
        /// The role it is a member of.
        group: String,
        /// The host's database user.
        user: String,
    },
    /// The host's user may not grant or revoke a privilege.
    #[error(
        "the database user {user} may not change the privileges of {role} ({statement}): make {user} the \
         object's owner, or run that statement once as its owner"
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
        "{manifest} grants {table:?}, but there is no such table in the database; create it first (`ingot \
         migrate` applies the schema.sql or migrations/ a processor's folder holds) or remove it from [grants]"
    )]
    NoSuchTable {
        /// The manifest file.
        manifest: String,
        /// The table as written in the manifest.
        table: String,
    },
    /// The manifest grants one of Ingot's own tables, or a system catalog.
    #[error(
        "{manifest} grants {table:?}, which is one of Ingot's own tables or a system catalog; processors never \
         get those (the host alone keeps item status, logs and counters): remove it from [grants]"
    )]
    FrameworkTable {
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

impl From<crate::store::StoreError> for GrantError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Database(source) => {
                GrantError::Database { role: String::new(), source }
            }
            other => {
                GrantError::Database { role: String::new(), source: sqlx::Error::Protocol(other.to_string()) }
            }
        }
    }
}

/// The role for a batch type under a prefix.
pub fn role_name(prefix: &str, batch_type: &str) -> String {
    format!("{prefix}{batch_type}")
}

/// What the host logs in as to run a processor's SQL.
#[derive(Clone)]
pub struct Login {
    /// The processor's role.
    pub role: String,
    /// Its password (also what makes the login work on servers with password authentication).
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login").field("role", &self.role).finish_non_exhaustive()
    }
}

fn sql_state(e: &sqlx::Error) -> Option<String> {
    e.as_database_error().and_then(|d| d.code()).map(|c| c.into_owned())
}

/// An identifier as an administrator would type it: bare when that reads the same.
fn shown(name: &str) -> String {
    let bare = name.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if bare { name.to_owned() } else { quote_ident(name) }
}

/// A privilege on a relation: (`TABLE` or `SEQUENCE`, qualified relation, privilege keyword).
type Privileges = BTreeSet<(&'static str, String, String)>;

/// Makes `role` exist as a processor login with no special attributes and no memberships, lets the
/// host cancel its statements, sets its privileges to exactly `manifest`'s grants (plus the wall's
/// functions), and returns how to log in as it. Runs in its own transaction, serialised across
/// hosts by a lock on `ingot_processor_roles`.
pub async fn sync(
    conn: &mut PgConnection,
    role: &str,
    batch_type: &str,
    manifest: &Manifest,
) -> Result<Login, GrantError> {
    let db = |source| GrantError::Database { role: role.to_owned(), source };
    let fresh = new_password();
    let password = roles::register(conn, role, batch_type, &fresh).await.map_err(|e| with_role(e, role))?;
    let login = Login { role: role.to_owned(), password };
    conn.execute("BEGIN").await.map_err(db)?;
    let result = sync_in_tx(conn, &login, batch_type, manifest).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute(end).await.map_err(db);
    result?;
    ended?;
    Ok(login)
}

fn with_role(e: crate::store::StoreError, role: &str) -> GrantError {
    match GrantError::from(e) {
        GrantError::Database { source, .. } => GrantError::Database { role: role.to_owned(), source },
        other => other,
    }
}

/// Drops a role the host made for one use (a dry run's): its privileges, the role, and the
/// framework's record of it, so that nothing of it is left.
pub async fn drop_role(conn: &mut PgConnection, role: &str) -> Result<(), GrantError> {
    let db = |source| GrantError::Database { role: role.to_owned(), source };
    let quoted = quote_ident(role);
    conn.execute("BEGIN").await.map_err(db)?;
    let dropped = async {
        roles::lock(conn).await.map_err(|e| with_role(e, role))?;
        let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
        if exists {
            conn.execute(format!("DROP OWNED BY {quoted}; DROP ROLE {quoted}").as_str()).await.map_err(db)?;
        }
        roles::forget(conn, role).await.map_err(|e| with_role(e, role))
    }
    .await;
    let end = if dropped.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn.execute(end).await.map_err(db);
    dropped?;
    ended?;
    Ok(())
}

/// Sets the role's password again (after a login with it was refused), when the host may.
pub async fn reset_password(conn: &mut PgConnection, login: &Login) -> Result<(), GrantError> {
    let statement =
        format!("ALTER ROLE {} PASSWORD '{}'", quote_ident(&login.role), scram_verifier(&login.password));
    conn.execute(statement.as_str())
        .await
        .map_err(|source| GrantError::Database { role: login.role.clone(), source })?;
    Ok(())
}

/// The statements an administrator runs to make `login` work when the host may not.
pub fn admin_step(login: &Login, user: &str) -> String {
    let role = shown(&login.role);
    format!(
        "CREATE ROLE {role} {LOWERED} PASSWORD '{}'; GRANT {role} TO {};",
        scram_verifier(&login.password),
        shown(user)
    )
}

async fn sync_in_tx(
    conn: &mut PgConnection,
    login: &Login,
    batch_type: &str,
    manifest: &Manifest,
) -> Result<(), GrantError> {
    let role = login.role.as_str();
    let db = |source| GrantError::Database { role: role.to_owned(), source };
    roles::lock(conn).await.map_err(|e| with_role(e, role))?;
    let framework = roles::framework_schema(conn).await.map_err(|e| with_role(e, role))?;
    let user: String =
        sqlx::query_scalar("SELECT current_user::text").fetch_one(&mut *conn).await.map_err(db)?;
    let quoted = quote_ident(role);
    let refused = |what: &'static str, step: String| GrantError::CannotCreateRole {
        batch_type: batch_type.to_owned(),
        role: role.to_owned(),
        user: user.clone(),
        what,
        step,
    };
    let denied = |e: &sqlx::Error| sql_state(e).as_deref() == Some("42501");

    // A login with no attributes. The password is set only when the role is made or repaired:
    // its verifier is computed here, so the password itself never crosses the wire.
    let attributes = sqlx::query(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR NOT rolcanlogin OR rolreplication OR rolbypassrls
                AS wrong
         FROM pg_roles WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    let verifier = scram_verifier(&login.password);
    match attributes {
        None => {
            let create = format!("CREATE ROLE {quoted} {LOWERED} PASSWORD '{verifier}'");
            if let Err(e) = conn.execute(create.as_str()).await {
                return Err(if denied(&e) { refused("create", admin_step(login, &user)) } else { db(e) });
            }
        }
        Some(row) if row.try_get::<bool, _>("wrong").map_err(db)? => {
            let alter = format!("ALTER ROLE {quoted} {LOWERED} PASSWORD '{verifier}'");
            if let Err(e) = conn.execute(alter.as_str()).await {
                let step = format!("ALTER ROLE {} {LOWERED} PASSWORD '{verifier}';", shown(role));
                return Err(if denied(&e) { refused("change", step) } else { db(e) });
            }
        }
        Some(_) => {}
    }

    // Member of nothing: a role it belongs to would be one it could switch to.
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT m.roleid::regrole::text FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member
         WHERE r.rolname = $1 ORDER BY 1",
    )
    .bind(role)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for group in groups {
        if let Err(e) = conn.execute(format!("REVOKE {group} FROM {quoted}").as_str()).await {
            return Err(if denied(&e) {
                GrantError::RoleIsMember {
                    batch_type: batch_type.to_owned(),
                    role: role.to_owned(),
                    group,
                    user: user.clone(),
                }
            } else {
                db(e)
            });
        }
    }

    // The host is a member of the role (so it may cancel the role's statements), never the
    // other way round.
    let member: bool = sqlx::query_scalar("SELECT pg_has_role(current_user, $1::text, 'USAGE')")
        .bind(role)
        .fetch_one(&mut *conn)
        .await
        .map_err(db)?;
    if !member {
        let grant = format!("GRANT {quoted} TO {}", quote_ident(&user));
        if let Err(e) = conn.execute(grant.as_str()).await {
            let step = format!("GRANT {} TO {};", shown(role), shown(&user));
            return Err(if denied(&e) { refused("join", step) } else { db(e) });
        }
    }

    // Defaults the role may have given itself (ALTER ROLE … SET) would apply to every new
    // session; the host's connections override the ones it relies on, and this removes the rest.
    let has_settings: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole WHERE r.rolname = $1)",
    )
    .bind(role)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    if has_settings {
        for statement in [
            format!("ALTER ROLE {quoted} RESET ALL"),
            format!("ALTER ROLE {quoted} IN DATABASE {} RESET ALL", current_database(conn, role).await?),
        ] {
            if let Err(e) = conn.execute(statement.as_str()).await {
                tracing::warn!(role, "could not remove the role's own session defaults ({statement}): {e}");
            }
        }
    }

    let mut statements = Vec::new();
    let can_connect: bool =
        sqlx::query_scalar("SELECT has_database_privilege($1::text, current_database(), 'CONNECT')")
            .bind(role)
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    if !can_connect {
        statements
            .push(format!("GRANT CONNECT ON DATABASE {} TO {quoted}", current_database(conn, role).await?));
    }
    let mut wanted = wanted_privileges(conn, role, manifest).await?;
    wanted.schemas.insert(framework.clone());
    let current = current_privileges(conn, role).await.map_err(db)?;
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
    // The wall's functions: the host calls them on the role's connection.
    for function in WALL_FUNCTIONS {
        let function = format!("{framework}.{function}");
        let granted: bool =
            sqlx::query_scalar("SELECT has_function_privilege($1::text, $2::text, 'EXECUTE')")
                .bind(role)
                .bind(&function)
                .fetch_one(&mut *conn)
                .await
                .map_err(db)?;
        if !granted {
            statements.push(format!("GRANT EXECUTE ON FUNCTION {function} TO {quoted}"));
        }
    }
    for statement in statements {
        if let Err(e) = conn.execute(statement.as_str()).await {
            return Err(if denied(&e) {
                GrantError::CannotGrant { role: role.to_owned(), user: user.clone(), statement }
            } else {
                db(e)
            });
        }
    }
    Ok(())
}

async fn current_database(conn: &mut PgConnection, role: &str) -> Result<String, GrantError> {
    sqlx::query_scalar("SELECT quote_ident(current_database())")
        .fetch_one(conn)
        .await
        .map_err(|source| GrantError::Database { role: role.to_owned(), source })
}

/// A fresh random password: 256 bits, hex.
fn new_password() -> String {
    format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, 4096 iterations), with a
/// random salt.
pub(crate) fn scram_verifier(password: &str) -> String {
    scram_verifier_with_salt(password, uuid::Uuid::new_v4().as_bytes())
}

fn scram_verifier_with_salt(password: &str, salt: &[u8]) -> String {
    const ITERATIONS: u32 = 4096;
    type HmacSha256 = Hmac<Sha256>;
    let mac = |key: &[u8], data: &[&[u8]]| {
        // HMAC takes keys of any length; this cannot fail.
        let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        for part in data {
            mac.update(part);
        }
        mac.finalize().into_bytes()
    };
    let mut u = mac(password.as_bytes(), &[salt, &1_u32.to_be_bytes()]);
    let mut salted = u;
    for _ in 1..ITERATIONS {
        u = mac(password.as_bytes(), &[&u]);
        salted.iter_mut().zip(u.iter()).for_each(|(s, x)| *s ^= x);
    }
    let client_key = mac(&salted, &[b"Client Key"]);
    let stored_key = Sha256::digest(client_key);
    let server_key = mac(&salted, &[b"Server Key"]);
    let b64 = base64::engine::general_purpose::STANDARD;
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64.encode(salt),
        b64.encode(stored_key),
        b64.encode(server_key)
    )
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
                    quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS relation,
                    (c.relnamespace = (SELECT f.relnamespace FROM pg_class f WHERE f.oid = to_regclass('import_batches'))
                     AND c.relname = ANY($2)) AS framework,
                    n.nspname IN ('pg_catalog', 'information_schema', 'pg_toast') AS system
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')",
        )
        .bind(table)
        .bind(FRAMEWORK_RELATIONS)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        let manifest_name =
            || manifest.path.as_ref().map_or_else(|| "the manifest".to_owned(), |p| p.display().to_string());
        let Some(row) = row else {
            return Err(GrantError::NoSuchTable { manifest: manifest_name(), table: table.clone() });
        };
        if row.try_get::<Option<bool>, _>("framework").map_err(db)?.unwrap_or(false)
            || row.try_get::<bool, _>("system").map_err(db)?
        {
            return Err(GrantError::FrameworkTable { manifest: manifest_name(), table: table.clone() });
        }
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

#[cfg(test)]
mod tests {
    use super::scram_verifier_with_salt;

    #[test]
    fn the_scram_verifier_is_what_postgresql_computes() {
        // The same password and salt through Python's hashlib.pbkdf2_hmac and hmac.
        assert_eq!(
            scram_verifier_with_salt("pencil", b"0123456789abcdef"),
            "SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$nQpbZ77WudtqufPwikHXGRt6g2QJ4zns8bZLw273DRM=:\
             jn2amWP1q1h+jgjy0YTO14S6/F02SV7taipOeB7ef20="
        );
    }
}
