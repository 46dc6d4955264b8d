//! Shared test helpers: built guests, a fresh PostgreSQL database per test, a processors folder
//! per test, and a way to run the `ingot` binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod peak_rss;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use ingot::batch::BatchManager;
use ingot::registry::Registry;
use ingot::runtime::{Runtime, RuntimeConfig};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Connection, Executor, PgConnection};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

/// A built test guest or example processor (`make test-guests` / `make processors`).
pub fn guest(name: &str) -> PathBuf {
    let path = root().join("target/wasm/wasm32-wasip2/release").join(format!("{name}.wasm"));
    assert!(path.exists(), "{} is not built: run `make test-guests` (or `make test`)", path.display());
    path
}

/// An example processor's operator manifest, `processors/<name>.toml`.
pub fn example_manifest(name: &str) -> String {
    std::fs::read_to_string(root().join("processors").join(format!("{name}.toml"))).expect("example manifest")
}

/// An example processor's tables, `processors/<name>/schema.sql`.
pub fn example_schema(name: &str) -> String {
    std::fs::read_to_string(root().join("processors").join(name).join("schema.sql")).expect("example schema")
}

/// An item as the host hands it to a processor, on its first attempt.
pub fn item(index: u64, data: serde_json::Value) -> ingot::runtime::bindings::Item {
    ingot::runtime::bindings::Item {
        id: uuid::Uuid::new_v4().to_string(),
        index,
        data: data.to_string(),
        attempt: 1,
    }
}

/// The compiled-component cache shared by all tests, so each component compiles once per run.
pub fn cache_dir() -> PathBuf {
    root().join("target/test-cache")
}

/// A runtime using the shared cache.
pub fn runtime() -> Arc<Runtime> {
    Arc::new(
        Runtime::new(RuntimeConfig { cache_dir: Some(cache_dir()), fuel_metering: false }).expect("runtime"),
    )
}

/// A batch manager over `db` running `processors`, with processor roles under the database's
/// own prefix so that they are dropped with it.
pub fn manager(db: &TestDb, processors: &Processors, runtime: Arc<Runtime>) -> BatchManager {
    BatchManager::new(db.pool.clone(), runtime, Registry::new(processors.path()))
        .with_role_prefix(db.role_prefix())
}

/// A processors folder of its own: `(batch_type, component, manifest)` entries.
pub struct Processors {
    pub dir: tempfile::TempDir,
}

impl Processors {
    pub fn new(entries: &[(&str, &Path, Option<&str>)]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        for (batch_type, wasm, manifest) in entries {
            std::fs::copy(wasm, dir.path().join(format!("{batch_type}.wasm"))).expect("copy wasm");
            if let Some(manifest) = manifest {
                std::fs::write(dir.path().join(format!("{batch_type}.toml")), manifest)
                    .expect("write manifest");
            }
        }
        Processors { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The server tests create their databases on.
pub fn admin_url() -> String {
    std::env::var("INGOT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let (server, _) = base.rsplit_once('/').expect("database URL has a path");
    match query {
        Some(q) => format!("{server}/{name}?{q}"),
        None => format!("{server}/{name}"),
    }
}

/// The processor-role prefix of a test database: roles are cluster-wide, so each test database
/// gets roles of its own, dropped with it.
pub fn role_prefix_for(database_url: &str) -> String {
    let name = database_url.rsplit('/').next().unwrap_or_default();
    let name = name.split('?').next().unwrap_or_default();
    format!("it_{}_", name.trim_start_matches("ingot_test_").chars().take(12).collect::<String>())
}

/// A fresh database with Ingot's schema, dropped when the test ends.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
    name: String,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let db = Self::empty().await;
        ingot::store::migrate(&db.pool).await.expect("migrate");
        db
    }

    /// A fresh database owned by a login of its own that is no superuser (it may only create
    /// roles), with Ingot's schema applied as that login: Ingot deployed with least privilege.
    /// `pool` and `url` are that login's.
    pub async fn with_owner() -> TestDb {
        let admin = Self::empty().await;
        let owner = format!("{}owner", admin.role_prefix());
        admin
            .pool
            .execute(
                format!(
                    "CREATE ROLE \"{owner}\" LOGIN NOSUPERUSER CREATEROLE; ALTER DATABASE {} OWNER TO \"{owner}\"",
                    admin.name
                )
                .as_str(),
            )
            .await
            .expect("create the owner");
        admin.pool.close().await;
        // The database lives on in the TestDb returned below, which drops it.
        let admin = std::mem::ManuallyDrop::new(admin);
        let url = admin.url.replacen("postgres@", &format!("{owner}@"), 1);
        assert_ne!(url, admin.url, "the test database URL must name the user postgres");
        let pool = PgPoolOptions::new().max_connections(8).connect_lazy(&url).expect("the owner's URL");
        let db = TestDb { url, pool, name: admin.name.clone() };
        ingot::store::migrate(&db.pool).await.expect("migrate as the owner");
        db
    }

    /// The login the host connects as.
    pub async fn login(&self) -> String {
        sqlx::query_scalar("SELECT session_user::text").fetch_one(&self.pool).await.expect("session_user")
    }

    /// A fresh database with Ingot's schema, created with `options` (e.g. another encoding).
    pub async fn created_with(options: &str) -> TestDb {
        let db = Self::empty_with(options).await;
        ingot::store::migrate(&db.pool).await.expect("migrate");
        db
    }

    /// A fresh database without Ingot's schema.
    pub async fn empty() -> TestDb {
        Self::empty_with("").await
    }

    async fn empty_with(options: &str) -> TestDb {
        let name = format!("ingot_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("PostgreSQL must run at INGOT_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres)");
        admin.execute(format!("CREATE DATABASE {name} {options}").as_str()).await.expect("create database");
        let url = with_database(&admin_url(), &name);
        let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.expect("connect");
        TestDb { url, pool, name }
    }

    /// Applies a SQL file (e.g. a processor's schema.sql).
    pub async fn apply(&self, sql: &str) {
        sqlx::raw_sql(sql).execute(&self.pool).await.expect("apply SQL");
    }

    /// The processor-role prefix for this database.
    pub fn role_prefix(&self) -> String {
        role_prefix_for(&self.name)
    }

    pub async fn scalar_i64(&self, sql: &str) -> i64 {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(&self.pool).await.expect(sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // The pool belongs to the test's runtime, which is blocked in this drop: leave it alone and
        // let FORCE end its connections, from a thread with a runtime of its own.
        let name = self.name.clone();
        let prefix = self.role_prefix();
        let _ = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let Ok(mut admin) = PgConnection::connect(&admin_url()).await else { return };
                let _ = admin.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await;
                // Processor roles are cluster-wide: drop this database's.
                let roles: Vec<String> =
                    sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE starts_with(rolname, $1)")
                        .bind(&prefix)
                        .fetch_all(&mut admin)
                        .await
                        .unwrap_or_default();
                for role in roles {
                    let _ = admin.execute(format!("DROP ROLE IF EXISTS \"{role}\"").as_str()).await;
                }
            });
        })
        .join();
    }
}

/// Runs the `ingot` binary in `cwd` against `database_url` with `processors`.
pub fn ingot(cwd: &Path, database_url: &str, processors: &Path, args: &[&str]) -> Output {
    ingot_command(cwd, database_url, processors, args).output().expect("run ingot")
}

/// The `ingot` command, ready to run or to feed stdin.
pub fn ingot_command(cwd: &Path, database_url: &str, processors: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ingot"));
    command
        .args(args)
        .current_dir(cwd)
        .env("DATABASE_URL", database_url)
        .env("INGOT_ROLE_PREFIX", role_prefix_for(database_url))
        .env("INGOT_PROCESSORS", processors)
        .env("INGOT_CACHE_DIR", cache_dir())
        .env("RUST_BACKTRACE", "0")
        .env_remove("INGOT_LOG");
    command
}

/// The `ingot` command without `DATABASE_URL`: it runs against the embedded cluster in `cwd`.
pub fn embedded_command(cwd: &Path, processors: &Path, args: &[&str]) -> Command {
    let mut command = ingot_command(cwd, "", processors, args);
    command.env_remove("DATABASE_URL");
    command
}

/// A folder for an embedded cluster: it may run as the `postgres` user, which must be able to
/// reach it.
pub fn cluster_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    dir
}

/// Stops the embedded cluster in `.0` (run with processors `.1`) when the test ends, whatever
/// happened.
pub struct StopCluster<'a>(pub &'a Path, pub &'a Path);

impl Drop for StopCluster<'_> {
    fn drop(&mut self) {
        let _ = embedded_command(self.0, self.1, &["db", "stop"]).output();
    }
}

/// Sends SIGTERM to a child process (a graceful stop request).
#[allow(unsafe_code)]
pub fn sigterm(child: &std::process::Child) {
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) }, 0);
}

/// stdout parsed as JSON, with stderr in the panic message when it is not JSON.
pub fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}).\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// The id of the batch an `ingot batch create --json` made, which must have succeeded.
pub fn created_batch(output: &Output) -> uuid::Uuid {
    assert!(output.status.success(), "{}", stderr_of(output));
    json_of(output)["batch_id"].as_str().expect("batch_id").parse().expect("batch_id is a uuid")
}

pub fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A private PostgreSQL server that demands a SCRAM password from every login (unlike the test
/// server, which trusts everyone), on a unix socket in a folder of its own; stopped when dropped.
/// Run as the `postgres` system user when the tests run as root, as PostgreSQL requires.
pub struct PasswordServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// The superuser of a [`PasswordServer`], and its password.
pub const PASSWORD_SERVER_USER: (&str, &str) = ("super", "s3cret-for-tests");

impl PasswordServer {
    pub fn start() -> PasswordServer {
        let bin = postgres_bin().expect("a PostgreSQL install (initdb, pg_ctl) for the password server");
        let dir = cluster_dir();
        let run_as = running_as_root().then(|| {
            let passwd = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
            let line = passwd.lines().find(|l| l.starts_with("postgres:")).expect("a postgres system user");
            let fields: Vec<&str> = line.split(':').collect();
            (fields[2].parse().unwrap(), fields[3].parse().unwrap())
        });
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD_SERVER_USER.1).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown");
        }
        let server = PasswordServer { dir, bin, run_as };
        let data = server.dir.path().join("data");
        let init = server
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                PASSWORD_SERVER_USER.0,
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(init.status.success(), "initdb: {}", String::from_utf8_lossy(&init.stderr));
        let options =
            format!("-c listen_addresses='' -c unix_socket_directories='{}'", server.dir.path().display());
        let start = server
            .command("pg_ctl")
            .arg("-D")
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(server.dir.path().join("log"))
            .args(["-w", "start"])
            .output()
            .expect("run pg_ctl");
        assert!(start.status.success(), "pg_ctl start: {}", String::from_utf8_lossy(&start.stderr));
        server
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        command.env("LC_ALL", "C.UTF-8").stdin(std::process::Stdio::null());
        command
    }

    /// Logging in as `user` with `password`, over the server's socket.
    pub fn options(&self, user: &str, password: Option<&str>) -> sqlx::postgres::PgConnectOptions {
        let options = sqlx::postgres::PgConnectOptions::new()
            .socket(self.dir.path())
            .username(user)
            .database("postgres");
        match password {
            Some(password) => options.password(password),
            None => options,
        }
    }
}

impl Drop for PasswordServer {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

#[allow(unsafe_code)]
fn running_as_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// initdb and pg_ctl: on PATH, else the newest /usr/lib/postgresql/<version>/bin.
fn postgres_bin() -> Option<PathBuf> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_tools(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
