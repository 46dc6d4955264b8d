//! The embedded default database: a private PostgreSQL cluster under `.ingot/pg`, made with the
//! local install's `initdb` and run with its `pg_ctl`, listening only on a unix socket inside that
//! folder. Started on demand and left running; `ingot db stop` stops it.
//!
//! PostgreSQL refuses to run as root. When Ingot runs as root it runs the cluster as the
//! `postgres` system user (the folder is handed to that user) and says so.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sqlx::postgres::PgConnectOptions;

/// The database name inside the embedded cluster.
const DATABASE: &str = "ingot";
/// The superuser initdb creates.
const SUPERUSER: &str = "ingot";
/// Unix socket paths are limited to 107 bytes; PostgreSQL adds `/.s.PGSQL.5432`.
const MAX_SOCKET_DIR: usize = 90;

/// Why the embedded cluster is not available.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// No PostgreSQL binaries.
    #[error(
        "no PostgreSQL installation found (looked for initdb and pg_ctl on PATH and in \
         /usr/lib/postgresql/*/bin): install PostgreSQL (e.g. `apt-get install postgresql`) so \
         Ingot can run its own database under .ingot/, or set DATABASE_URL to an existing database"
    )]
    NotInstalled,
    /// Running as root without a `postgres` user to run the cluster as.
    #[error(
        "PostgreSQL refuses to run as root and there is no `postgres` system user to run the \
         embedded database as: run ingot as an ordinary user, create a `postgres` user, or set DATABASE_URL"
    )]
    RootWithoutPostgresUser,
    /// The `postgres` user cannot reach the project folder.
    #[error(
        "the embedded database runs as the `postgres` system user, which cannot enter {0}: make it \
         traversable (chmod o+x) or set DATABASE_URL"
    )]
    Unreachable(PathBuf),
    /// The socket path would be too long.
    #[error(
        "the embedded database's socket folder {0} is too long for a unix socket path; run ingot from a shorter path or set DATABASE_URL"
    )]
    PathTooLong(PathBuf),
    /// A command failed.
    #[error("{what} failed: {detail} (see {log})")]
    Command {
        /// What was attempted.
        what: String,
        /// Its output or exit status.
        detail: String,
        /// The log to look at.
        log: PathBuf,
    },
    /// Filesystem trouble.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The private cluster under a project's `.ingot/pg`.
#[derive(Debug, Clone)]
pub struct EmbeddedCluster {
    root: PathBuf,
    bin: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// What `ingot db status` reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    /// The cluster's folder.
    pub path: PathBuf,
    /// Whether initdb has run.
    pub initialized: bool,
    /// Whether the server is running.
    pub running: bool,
    /// The folder holding its unix socket.
    pub socket_dir: PathBuf,
    /// The system user running it, when not the current user.
    pub run_as: Option<String>,
}

impl EmbeddedCluster {
    /// The cluster under `project_dir/.ingot/pg`, using the newest PostgreSQL found.
    pub fn new(project_dir: &Path) -> Result<Self, EmbeddedError> {
        let root = std::path::absolute(project_dir.join(".ingot").join("pg"))
            .map_err(|source| EmbeddedError::Io { path: project_dir.to_owned(), source })?;
        let bin = find_bin_dir(std::env::var_os("PATH"), Path::new(DISTRO_INSTALLS))
            .ok_or(EmbeddedError::NotInstalled)?;
        let run_as = if is_root() {
            Some(postgres_user().ok_or(EmbeddedError::RootWithoutPostgresUser)?)
        } else {
            None
        };
        let cluster = EmbeddedCluster { root, bin, run_as };
        if cluster.socket_dir().as_os_str().len() > MAX_SOCKET_DIR {
            return Err(EmbeddedError::PathTooLong(cluster.socket_dir()));
        }
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn socket_dir(&self) -> PathBuf {
        self.root.join("run")
    }

    fn log_file(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        command.stdin(Stdio::null()).env("LC_ALL", "C.UTF-8");
        command
    }

    /// Connection options for the cluster's `ingot` database.
    pub fn connect_options(&self) -> PgConnectOptions {
        PgConnectOptions::new().socket(self.socket_dir()).username(SUPERUSER).database(DATABASE)
    }

    /// A libpq URL of the cluster's `ingot` database, for psql and other clients:
    /// `postgresql://ingot@/ingot?host=<the socket folder>`.
    pub fn url(&self) -> String {
        let socket = self.socket_dir();
        let mut host = String::new();
        for b in socket.as_os_str().as_encoded_bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'_' | b'-' => {
                    host.push(char::from(*b))
                }
                other => host.push_str(&format!("%{other:02X}")),
            }
        }
        format!("postgresql://{SUPERUSER}@/{DATABASE}?host={host}")
    }

    /// Whether the server is up.
    pub fn is_running(&self) -> bool {
        self.data_dir().join("PG_VERSION").exists()
            && self
                .command("pg_ctl")
                .arg("status")
                .arg("-D")
                .arg(self.data_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
    }

    /// Where the cluster stands.
    pub fn status(&self) -> ClusterStatus {
        ClusterStatus {
            path: self.root.clone(),
            initialized: self.data_dir().join("PG_VERSION").exists(),
            running: self.is_running(),
            socket_dir: self.socket_dir(),
            run_as: self.run_as.map(|_| "postgres".to_owned()),
        }
    }

    /// Creates the cluster if needed and starts it if it is not running. Serialised across
    /// processes with a lock file, so two `ingot` commands starting at once do not collide.
    pub fn ensure_running(&self) -> Result<(), EmbeddedError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| EmbeddedError::Io { path, source }
        };
        std::fs::create_dir_all(&self.root).map_err(io(&self.root))?;
        let lock_path = self.root.with_file_name("pg.lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        lock.lock().map_err(io(&lock_path))?;
        if !self.data_dir().join("PG_VERSION").exists() {
            self.init()?;
        }
        if !self.is_running() {
            self.start()?;
        }
        Ok(())
    }

    fn init(&self) -> Result<(), EmbeddedError> {
        if let Some((uid, gid)) = self.run_as {
            // The postgres user must be able to walk down to the cluster's folder.
            for dir in self.root.ancestors().skip(1) {
                let mode =
                    std::fs::metadata(dir).map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()));
                if mode.is_ok_and(|mode| mode & 0o001 == 0) {
                    return Err(EmbeddedError::Unreachable(dir.to_owned()));
                }
            }
            eprintln!(
                "ingot: running as root, so the embedded PostgreSQL in {} runs as the `postgres` system user",
                self.root.display()
            );
            chown_tree(&self.root, uid, gid)?;
        }
        let _ = std::fs::remove_dir_all(self.data_dir());
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .output()
            .map_err(|source| EmbeddedError::Io { path: self.bin.join("initdb"), source })?;
        if !output.status.success() {
            return Err(EmbeddedError::Command {
                what: "initdb".into(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                log: self.root.clone(),
            });
        }
        Ok(())
    }

    fn start(&self) -> Result<(), EmbeddedError> {
        let socket_dir = self.socket_dir();
        std::fs::create_dir_all(&socket_dir)
            .map_err(|source| EmbeddedError::Io { path: socket_dir.clone(), source })?;
        if let Some((uid, gid)) = self.run_as {
            chown_tree(&socket_dir, uid, gid)?;
            let log = self.log_file();
            if !log.exists() {
                File::create(&log).map_err(|source| EmbeddedError::Io { path: log.clone(), source })?;
            }
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))
                .map_err(|source| EmbeddedError::Io { path: log, source })?;
        }
        let options = format!("-c listen_addresses='' -c unix_socket_directories='{}'", socket_dir.display());
        let status = self
            .command("pg_ctl")
            .arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-w", "-t", "60", "-o", &options])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|source| EmbeddedError::Io { path: self.bin.join("pg_ctl"), source })?;
        if !status.status.success() {
            return Err(EmbeddedError::Command {
                what: "starting the embedded PostgreSQL".into(),
                detail: String::from_utf8_lossy(&status.stderr).trim().to_owned(),
                log: self.log_file(),
            });
        }
        self.create_database()
    }

    fn create_database(&self) -> Result<(), EmbeddedError> {
        let exists = self
            .command("psql")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-U", SUPERUSER, "-d", "postgres", "-tAc"])
            .arg(format!("SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"))
            .output()
            .map_err(|source| EmbeddedError::Io { path: self.bin.join("psql"), source })?;
        if String::from_utf8_lossy(&exists.stdout).trim() == "1" {
            return Ok(());
        }
        let output = self
            .command("createdb")
            .arg("-h")
            .arg(self.socket_dir())
            .args(["-U", SUPERUSER, DATABASE])
            .output()
            .map_err(|source| EmbeddedError::Io { path: self.bin.join("createdb"), source })?;
        if !output.status.success() {
            return Err(EmbeddedError::Command {
                what: "creating the ingot database".into(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                log: self.log_file(),
            });
        }
        Ok(())
    }

    /// Stops the server if it runs. `false` when it was not running. `immediate`: without a
    /// checkpoint, as a crash would (the server replays its WAL at the next start).
    pub fn stop(&self, immediate: bool) -> Result<bool, EmbeddedError> {
        if !self.is_running() {
            return Ok(false);
        }
        let output = self
            .command("pg_ctl")
            .arg("stop")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", if immediate { "immediate" } else { "fast" }, "-w"])
            .output()
            .map_err(|source| EmbeddedError::Io { path: self.bin.join("pg_ctl"), source })?;
        if !output.status.success() {
            return Err(EmbeddedError::Command {
                what: "stopping the embedded PostgreSQL".into(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                log: self.log_file(),
            });
        }
        Ok(true)
    }
}

/// Where Debian and Ubuntu install each PostgreSQL major version, off PATH.
const DISTRO_INSTALLS: &str = "/usr/lib/postgresql";

/// The folder holding `initdb` and `pg_ctl`: the first on `path`, else the newest
/// `<distro_installs>/<version>/bin`.
fn find_bin_dir(path: Option<std::ffi::OsString>, distro_installs: &Path) -> Option<PathBuf> {
    let has_tools =
        |dir: &Path| ["initdb", "pg_ctl", "psql", "createdb"].iter().all(|t| dir.join(t).is_file());
    let on_path = path
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .find(|dir| has_tools(dir));
    if on_path.is_some() {
        return on_path;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(distro_installs)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<u32>().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| has_tools(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // The owner of /proc/self is the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The uid and gid of the `postgres` system user, from /etc/passwd.
fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.first() == Some(&"postgres") && fields.len() > 3)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
            .flatten()
    })
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<(), EmbeddedError> {
    let io = |source| EmbeddedError::Io { path: path.to_owned(), source };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io)?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io)? {
            chown_tree(&entry.map_err(io)?.path(), uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_install(bin: &Path) {
        std::fs::create_dir_all(bin).expect("mkdir");
        for tool in ["initdb", "pg_ctl", "psql", "createdb"] {
            std::fs::write(bin.join(tool), "").expect("write");
        }
    }

    #[test]
    fn without_postgresql_installed_the_cluster_is_refused_with_what_to_do() {
        let empty = tempfile::tempdir().expect("tempdir");
        let path = std::env::join_paths([empty.path()]).expect("path");
        assert_eq!(find_bin_dir(Some(path), &empty.path().join("none")), None);
        assert_eq!(find_bin_dir(None, empty.path()), None);
        let message = EmbeddedError::NotInstalled.to_string();
        assert!(message.contains("install PostgreSQL") && message.contains("DATABASE_URL"), "{message}");
    }

    #[test]
    fn binaries_on_path_win_over_the_newest_distribution_install() {
        let root = tempfile::tempdir().expect("tempdir");
        let installs = root.path().join("lib");
        fake_install(&installs.join("9").join("bin"));
        fake_install(&installs.join("15").join("bin"));
        // Half an install (no pg_ctl) does not count.
        std::fs::create_dir_all(installs.join("17").join("bin")).expect("mkdir");
        std::fs::write(installs.join("17").join("bin").join("initdb"), "").expect("write");
        assert_eq!(find_bin_dir(None, &installs), Some(installs.join("15").join("bin")));

        let on_path = root.path().join("opt-bin");
        fake_install(&on_path);
        let path = std::env::join_paths([root.path().join("missing"), on_path.clone()]).expect("path");
        assert_eq!(find_bin_dir(Some(path), &installs), Some(on_path));
    }
}
