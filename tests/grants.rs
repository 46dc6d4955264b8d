//! Per-processor database roles: created with no special attributes, privileges exactly the
//! manifest's grants (revoked when removed), and a clear admin step when Ingot may not create
//! roles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use ingot::batch::{BatchError, BatchManager, CreateOptions, ProcessOptions};
use ingot::context::grants::{self, GrantError};
use ingot::input::InputSource;
use ingot::registry::Registry;
use serde_json::{Value, json};
use sqlx::Executor;
use support::{Processors, TestDb, guest};

const SCHEMA: &str = "CREATE TABLE probe_rows (id serial PRIMARY KEY, label text UNIQUE NOT NULL);
                      CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int PRIMARY KEY)";

async fn run(manager: &BatchManager, items: &[Value]) -> Result<ingot::store::batches::Summary, BatchError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("items.ndjson");
    std::fs::write(&path, items.iter().map(|i| format!("{i}\n")).collect::<String>()).unwrap();
    manager
        .run(
            "probe",
            InputSource::from_arg(path.to_str().unwrap(), None).unwrap(),
            &CreateOptions::default(),
            &ProcessOptions::workers(1),
            None,
        )
        .await
}

/// Ingot's schema and the test tables, applied through `pool`, and a probe that may select and
/// insert `probe_rows`.
async fn prepare(pool: &sqlx::PgPool) -> Processors {
    ingot::store::migrate(pool).await.unwrap();
    sqlx::raw_sql(SCHEMA).execute(pool).await.unwrap();
    Processors::new(&[("probe", &guest("probe"), Some("[grants]\nprobe_rows = [\"select\", \"insert\"]\n"))])
}

fn manager(db: &TestDb, processors: &Processors) -> BatchManager {
    support::manager(db, processors, support::runtime())
}

async fn privileges(db: &TestDb, role: &str) -> BTreeSet<String> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT table_schema || '.' || table_name || ':' || privilege_type FROM information_schema.role_table_grants WHERE grantee = $1",
    )
    .bind(role)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

#[tokio::test]
async fn a_processor_role_has_exactly_the_manifests_grants_and_loses_removed_ones() {
    let db = TestDb::new().await;
    db.apply(SCHEMA).await;
    let role = grants::role_name(&db.role_prefix(), "probe");
    let wide = "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\", \"delete\"]\n\"billing.invoices\" = [\"select\"]\n";
    let processors = Processors::new(&[("probe", &guest("probe"), Some(wide))]);
    let summary = run(&manager(&db, &processors), &[json!({"mode": "ok"})]).await.unwrap();
    assert_eq!(summary.completed, 1);
    let expected: BTreeSet<String> = [
        "public.probe_rows:SELECT",
        "public.probe_rows:INSERT",
        "public.probe_rows:UPDATE",
        "public.probe_rows:DELETE",
        "billing.invoices:SELECT",
    ]
    .map(String::from)
    .into();
    assert_eq!(privileges(&db, &role).await, expected);

    // A login (the processor's connections log in as it) with no other attribute, a member of
    // nothing.
    let attributes: (bool, bool, bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(attributes, (false, false, false, true, false, false));
    let memberships: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = $1",
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(memberships, 0);

    // The operator narrows the manifest; the next run revokes the rest.
    std::fs::write(processors.path().join("probe.toml"), "[grants]\nprobe_rows = [\"select\", \"insert\"]\n")
        .unwrap();
    let insert = json!({"mode": "sql", "sql": "INSERT INTO probe_rows (label) VALUES ('x')"});
    let delete = json!({"mode": "sql", "sql": "DELETE FROM probe_rows"});
    let summary = run(&manager(&db, &processors), &[insert, delete]).await.unwrap();
    assert_eq!((summary.completed, summary.failed), (1, 1), "{:?}", summary.top_errors);
    let narrowed: BTreeSet<String> =
        ["public.probe_rows:SELECT", "public.probe_rows:INSERT"].map(String::from).into();
    assert_eq!(privileges(&db, &role).await, narrowed);
    assert!(summary.top_errors[0].message.contains("permission denied for table probe_rows"));
}

#[tokio::test]
async fn a_processor_without_a_manifest_may_touch_no_table() {
    let db = TestDb::new().await;
    db.apply(SCHEMA).await;
    let processors = Processors::new(&[("probe", &guest("probe"), None)]);
    let items =
        [json!({"mode": "sql", "sql": "SELECT * FROM probe_rows", "query": true}), json!({"mode": "ok"})];
    let summary = run(&manager(&db, &processors), &items).await.unwrap();
    assert_eq!((summary.completed, summary.failed), (1, 1));
    let message = &summary.top_errors[0].message;
    assert!(message.contains("permission denied for table probe_rows"), "{message}");
    assert!(message.contains("processor probe has no manifest, so it may use no table"), "{message}");
    assert!(privileges(&db, &grants::role_name(&db.role_prefix(), "probe")).await.is_empty());
}

#[tokio::test]
async fn a_manifest_granting_a_missing_table_is_a_clear_error() {
    let db = TestDb::new().await;
    let processors =
        Processors::new(&[("probe", &guest("probe"), Some("[grants]\nnowhere = [\"select\"]\n"))]);
    let error = run(&manager(&db, &processors), &[json!({"mode": "ok"})]).await.unwrap_err();
    assert!(matches!(error, BatchError::Grant(GrantError::NoSuchTable { .. })), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("probe.toml grants \"nowhere\"") && message.contains("no such table"),
        "{message}"
    );
}

#[tokio::test]
async fn a_manifest_may_never_grant_ingots_own_tables_or_a_system_catalog() {
    let db = TestDb::new().await;
    for table in [
        "import_batch_items",
        "public.import_logs",
        "ingot_processor_roles",
        "pg_authid",
        "pg_catalog.pg_settings",
    ] {
        let manifest = format!("[grants]\n\"{table}\" = [\"select\"]\n");
        let processors = Processors::new(&[("probe", &guest("probe"), Some(&manifest))]);
        let error = run(&manager(&db, &processors), &[json!({"mode": "ok"})]).await.unwrap_err();
        // Refused as the manifest is read, before anything reaches the database.
        let message = error.to_string();
        assert!(
            message.contains(&format!("probe.toml: line 2: [grants] {table:?} is one of Ingot's own tables"))
                && message.contains("remove the line"),
            "{table}: {message}"
        );
        let granted: i64 = db
            .scalar_i64(&format!(
                "SELECT count(*) FROM information_schema.role_table_grants WHERE grantee = '{}'",
                grants::role_name(&db.role_prefix(), "probe")
            ))
            .await;
        assert_eq!(granted, 0, "{table}: nothing was granted");
    }
}

#[tokio::test]
async fn when_ingot_may_not_create_roles_the_error_names_the_admin_step_that_fixes_it() {
    let admin = TestDb::empty().await;
    let prefix = admin.role_prefix();
    let host = format!("{prefix}host");
    let database = admin.url.rsplit('/').next().unwrap().to_owned();
    admin
        .pool
        .execute(format!("CREATE ROLE \"{host}\" LOGIN NOSUPERUSER NOCREATEROLE; ALTER DATABASE {database} OWNER TO \"{host}\"; GRANT CREATE ON SCHEMA public TO \"{host}\"").as_str())
        .await
        .unwrap();
    // Ingot connects as an ordinary user that owns its tables but may not create roles.
    let url = admin.url.replacen("postgres@", &format!("{host}@"), 1);
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await.unwrap();
    let processors = prepare(&pool).await;
    let manager = BatchManager::new(pool.clone(), support::runtime(), Registry::new(processors.path()))
        .with_role_prefix(&prefix);
    let items = [json!({"mode": "sql", "sql": "INSERT INTO probe_rows (label) VALUES ('ok')"})];

    let error = run(&manager, &items).await.unwrap_err();
    let message = error.to_string();
    let role = grants::role_name(&prefix, "probe");
    assert!(matches!(error, BatchError::Grant(GrantError::CannotCreateRole { .. })), "{message}");
    let step = message.split("run once as an administrator: ").nth(1).expect("an admin step").to_owned();
    assert!(step.starts_with(&format!("CREATE ROLE {role} LOGIN NOSUPERUSER")), "{message}");
    assert!(step.contains("PASSWORD 'SCRAM-SHA-256$4096:"), "only the verifier is shown: {message}");
    assert!(step.ends_with(&format!("GRANT {role} TO {host};")), "{message}");

    // The administrator runs exactly that, once; from then on Ingot manages the privileges itself
    // and logs in with the password the verifier was made from.
    admin.pool.execute(step.as_str()).await.unwrap();
    let summary = run(&manager, &items).await.unwrap();
    assert_eq!(summary.completed, 1, "{:?}", summary.top_errors);
    pool.close().await;
}

#[tokio::test]
async fn ingot_grant_syncs_roles_from_the_command_line() {
    let db = TestDb::new().await;
    db.apply(SCHEMA).await;
    let processors =
        Processors::new(&[("probe", &guest("probe"), Some("[grants]\nprobe_rows = [\"select\"]\n"))]);
    let cwd = tempfile::tempdir().unwrap();
    let output = support::ingot(cwd.path(), &db.url, processors.path(), &["grant"]);
    assert!(output.status.success(), "{}", support::stderr_of(&output));
    let role = grants::role_name(&db.role_prefix(), "probe");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), format!("{role}: may use probe_rows"));
    assert_eq!(privileges(&db, &role).await, ["public.probe_rows:SELECT".to_owned()].into());
    let unknown = support::ingot(cwd.path(), &db.url, processors.path(), &["grant", "orders"]);
    assert_eq!(unknown.status.code(), Some(1));
}

#[tokio::test]
async fn processors_log_in_with_their_own_password_where_the_server_demands_one() {
    let server = support::PasswordServer::start();
    let (user, password) = support::PASSWORD_SERVER_USER;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(server.options(user, Some(password)))
        .await
        .unwrap();
    let processors = prepare(&pool).await;
    let manager = BatchManager::new(pool.clone(), support::runtime(), Registry::new(processors.path()));
    let items = [
        json!({"mode": "sql", "sql": "INSERT INTO probe_rows (label) VALUES ('with a password')"}),
        json!({"mode": "sql", "sql": "SELECT session_user::text AS login", "query": true}),
    ];
    let summary = run(&manager, &items).await.unwrap();
    assert_eq!(summary.completed, 2, "{:?}", summary.top_errors);
    let login: Value =
        sqlx::query_scalar("SELECT processed_data FROM import_batch_items WHERE item_index = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(login, json!([{"login": "ingot_p_probe"}]), "the processor's SQL ran as its own login");

    // The server really demands the password: without it, the role cannot log in.
    let refused = sqlx::ConnectOptions::connect(&server.options("ingot_p_probe", None)).await;
    assert!(refused.is_err(), "a login without the password must be refused");

    // An administrator changed the role's password: the host sets it again and logs in.
    pool.execute("ALTER ROLE ingot_p_probe PASSWORD 'changed by someone'").await.unwrap();
    let summary = run(&manager, &items[1..]).await.unwrap();
    assert_eq!(summary.completed, 1, "{:?}", summary.top_errors);
    pool.close().await;
}

/// Everything `role` holds on relations (tables and sequences) and schemas, as
/// `schema.relation:PRIVILEGE` and `schema NAME:USAGE`, read from the ACLs themselves.
async fn held(db: &TestDb, role: &str) -> BTreeSet<String> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname || ':' || a.privilege_type
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace CROSS JOIN LATERAL aclexplode(c.relacl) a
         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)
         UNION ALL
         SELECT 'schema ' || n.nspname || ':' || a.privilege_type
         FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a
         WHERE a.grantee = (SELECT oid FROM pg_roles WHERE rolname = $1)",
    )
    .bind(role)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter().collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Three processor types running the probe: `alpha` may write probe_rows and read
/// billing.invoices, `beta` may read probe_rows, `gamma` may read billing.invoices.
const ALPHA: &str =
    "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\"]\n\"billing.invoices\" = [\"select\"]\n";
const BETA: &str = "[grants]\nprobe_rows = [\"select\"]\n";

fn three_types() -> Processors {
    let probe = guest("probe");
    Processors::new(&[
        ("alpha", &probe, Some(ALPHA)),
        ("beta", &probe, Some(BETA)),
        ("gamma", &probe, Some("[grants]\n\"billing.invoices\" = [\"select\"]\n")),
    ])
}

/// What `alpha` holds with the ALPHA manifest: its tables, the sequence its inserts draw from,
/// and USAGE on the tables' schemas (public is also Ingot's own schema).
fn alpha_privileges() -> BTreeSet<String> {
    set(&[
        "public.probe_rows:SELECT",
        "public.probe_rows:INSERT",
        "public.probe_rows:UPDATE",
        "public.probe_rows_id_seq:USAGE",
        "billing.invoices:SELECT",
        "schema billing:USAGE",
        "schema public:USAGE",
    ])
}

fn beta_privileges() -> BTreeSet<String> {
    set(&["public.probe_rows:SELECT", "schema public:USAGE"])
}

/// Whether PostgreSQL lets `role` use `table` for `privilege`.
async fn may(db: &TestDb, role: &str, table: &str, privilege: &str) -> bool {
    sqlx::query_scalar("SELECT has_table_privilege($1, $2, $3)")
        .bind(role)
        .bind(table)
        .bind(privilege)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn role_exists(db: &TestDb, role: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
        .bind(role)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

// `ingot grant a b` makes the role of each type it names, before any batch ran, with exactly
// that type's manifest (no more, none of the other's), and leaves types it was not given alone.
#[tokio::test]
async fn ingot_grant_with_two_types_gives_each_role_exactly_its_own_manifests_privileges() {
    let db = TestDb::new().await;
    db.apply(SCHEMA).await;
    let processors = three_types();
    let cwd = tempfile::tempdir().unwrap();
    let output = support::ingot_command(cwd.path(), &db.url, processors.path(), &["grant", "alpha", "beta"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::stderr_of(&output));
    let [alpha, beta, gamma] = ["alpha", "beta", "gamma"].map(|t| grants::role_name(&db.role_prefix(), t));
    assert_eq!(held(&db, &alpha).await, alpha_privileges());
    assert_eq!(held(&db, &beta).await, beta_privileges());
    assert!(!role_exists(&db, &gamma).await, "gamma was not named");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).lines().collect::<Vec<_>>(),
        [format!("{alpha}: may use billing.invoices, probe_rows"), format!("{beta}: may use probe_rows")]
    );
    // Each is a login the processor's connections can use, with no other attribute.
    for role in [&alpha, &beta] {
        let attributes: (bool, bool, bool, bool, bool, bool) = sqlx::query_as(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
        )
        .bind(role)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(attributes, (false, false, false, true, false, false), "{role}");
    }
    // What the roles hold is what PostgreSQL enforces.
    assert!(may(&db, &alpha, "billing.invoices", "SELECT").await);
    assert!(!may(&db, &beta, "billing.invoices", "SELECT").await);
    assert!(!may(&db, &beta, "probe_rows", "INSERT").await);
}

// Syncing one type on demand takes away a privilege whose line left its manifest (and the
// schema USAGE that came with it), and touches no other type's role, even one whose manifest
// changed too.
#[tokio::test]
async fn ingot_grant_of_one_type_revokes_a_removed_line_and_leaves_the_other_role_unchanged() {
    let db = TestDb::new().await;
    db.apply(SCHEMA).await;
    let processors = three_types();
    let cwd = tempfile::tempdir().unwrap();
    let grant = |types: &[&str]| {
        let args: Vec<&str> = std::iter::once("grant").chain(types.iter().copied()).collect();
        let output = support::ingot_command(cwd.path(), &db.url, processors.path(), &args).output().unwrap();
        assert!(output.status.success(), "{}", support::stderr_of(&output));
    };
    grant(&["alpha", "beta"]);
    let [alpha, beta] = ["alpha", "beta"].map(|t| grants::role_name(&db.role_prefix(), t));
    assert_eq!(held(&db, &alpha).await, alpha_privileges());

    std::fs::write(
        processors.path().join("alpha.toml"),
        "[grants]\nprobe_rows = [\"select\", \"insert\", \"update\"]\n",
    )
    .unwrap();
    std::fs::write(processors.path().join("beta.toml"), "[grants]\nprobe_rows = [\"select\", \"delete\"]\n")
        .unwrap();
    grant(&["alpha"]);
    let mut narrowed = alpha_privileges();
    narrowed.remove("billing.invoices:SELECT");
    narrowed.remove("schema billing:USAGE");
    assert_eq!(held(&db, &alpha).await, narrowed);
    assert!(!may(&db, &alpha, "billing.invoices", "SELECT").await, "PostgreSQL no longer lets alpha read it");
    assert_eq!(held(&db, &beta).await, beta_privileges(), "beta was not named: its new line waits");
}
