//! The on-disk cache of compiled components.
//!
//! Compiling a component with Cranelift takes from 0.1 s (a small Rust processor) to 10 s (an
//! 18 MB Python one); loading a serialized one takes about a millisecond. Entries are keyed by the
//! sha256 of the `.wasm` and a hash of everything in the engine's configuration that makes
//! compiled code incompatible (wasmtime version, fuel, epochs, target), so a stale entry is never
//! loaded.
//!
//! Cache files are loaded as native code, and wasmtime's deserialization is unsafe on bytes it
//! did not produce, so the host loads only what it wrote itself: each entry carries an HMAC under
//! a key kept in the cache directory (readable only by the host's user), and an entry is read only
//! if it is a regular file (not a symlink) inside the cache directory, owned by the host's user and
//! writable by nobody else. A digest read from the database is used as a key only if it is 64
//! lowercase hex characters, so it can never name a path.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime release this host is built with; part of every cache path so that old entries
/// are easy to recognise and delete.
const WASMTIME_RELEASE: &str = "wasmtime-48";

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache without compiling.
    Hit,
    /// Compiled, then written to the cache.
    Compiled,
    /// Compiled; there is no cache (or writing to it failed, which is only logged).
    Uncached,
}

impl ComponentCache {
    /// A cache in `dir` (created on first write), or no cache at all for `None`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        ComponentCache { dir }
    }

    fn entry_path(&self, engine: &Engine, digest: &str) -> Option<PathBuf> {
        let dir = self.dir.as_ref()?;
        if !is_digest(digest) {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let config = hasher.finish();
        Some(dir.join(WASMTIME_RELEASE).join(format!("{digest}-{config:016x}.cwasm")))
    }

    /// The cached component compiled from the `.wasm` whose sha256 is `digest`, if the cache has
    /// it — even when that file has since been replaced. `digest` may come from the database: it
    /// is looked up only if it is a sha256 in lowercase hex.
    pub fn load_by_digest(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let path = self.entry_path(engine, digest)?;
        if !path.exists() {
            return None;
        }
        match deserialize(engine, &path) {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}");
                None
            }
        }
    }

    /// Loads the component for `bytes` (whose sha256 is `digest`) from the cache, or compiles it
    /// and stores the result.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let Some(path) = self.entry_path(engine, digest) else {
            return Ok((Component::new(engine, bytes)?, CacheOutcome::Uncached));
        };
        if path.exists() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) if matches!(e.downcast_ref::<Untrusted>(), Some(Untrusted::Unsigned(_))) => {
                    tracing::debug!(path = %path.display(), "recompiling an entry an older Ingot wrote");
                }
                // A truncated or foreign file: recompile and overwrite it.
                Err(e) => {
                    tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}")
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        match store(&path, &component) {
            Ok(()) => Ok((component, CacheOutcome::Compiled)),
            Err(e) => {
                tracing::warn!(path = %path.display(), "could not write the compile cache: {e:#}");
                Ok((component, CacheOutcome::Uncached))
            }
        }
    }
}

/// Whether `digest` is a sha256 as this host writes it: 64 lowercase hex characters.
pub fn is_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a cache entry was not loaded.
#[derive(Debug, thiserror::Error)]
enum Untrusted {
    #[error("{0} is not a regular file owned by this user and writable by no one else")]
    NotOurs(PathBuf),
    #[error("{0} is outside the cache directory")]
    Outside(PathBuf),
    #[error("{0} was not written by this host (its HMAC does not match)")]
    Forged(PathBuf),
    #[error("{0} is not signed (an older Ingot wrote it)")]
    Unsigned(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Untrusted + '_ {
    move |source| Untrusted::Io { path: path.to_owned(), source }
}

/// The user this host runs as.
#[allow(unsafe_code)]
fn our_uid() -> u32 {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// `path` as it is on disk, refused unless it is a regular file of ours that no one else can
/// write.
fn check_ours(path: &Path) -> Result<std::fs::Metadata, Untrusted> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !meta.file_type().is_file() || meta.uid() != our_uid() || meta.mode() & 0o022 != 0 {
        return Err(Untrusted::NotOurs(path.to_owned()));
    }
    Ok(meta)
}

/// The key this cache's entries are signed with, made on first use (readable only by us).
fn cache_key(dir: &Path, create: bool) -> Result<Vec<u8>, Untrusted> {
    let path = dir.join(".key");
    if create && !path.exists() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let key = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        let tmp = dir.join(format!(".key.{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp))?;
        file.write_all(key.as_bytes()).map_err(io(&tmp))?;
        drop(file);
        // A hard link never replaces an existing key: of two hosts starting at once, one wins.
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        if let Err(e) = linked
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(Untrusted::Io { path, source: e });
        }
    }
    let meta = check_ours(&path)?;
    if meta.mode() & 0o077 != 0 {
        return Err(Untrusted::NotOurs(path));
    }
    std::fs::read(&path).map_err(io(&path))
}

fn mac_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".mac");
    PathBuf::from(name)
}

fn sign(key: &[u8], path: &Path, bytes: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    // The entry's name binds the MAC to the digest and engine configuration it was stored under.
    mac.update(path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default());
    mac.update(&[0]);
    mac.update(bytes);
    hex::encode(mac.finalize().into_bytes())
}

/// Reads a cache entry, refusing anything this host did not write itself.
fn read_trusted(path: &Path) -> Result<Vec<u8>, Untrusted> {
    let dir = path.parent().ok_or_else(|| Untrusted::Outside(path.to_owned()))?;
    let real_dir = dir.canonicalize().map_err(io(dir))?;
    let real = path.canonicalize().map_err(io(path))?;
    if real.parent() != Some(real_dir.as_path()) {
        return Err(Untrusted::Outside(path.to_owned()));
    }
    check_ours(path)?;
    let mac_file = mac_path(path);
    if !mac_file.exists() || !dir.join(".key").exists() {
        return Err(Untrusted::Unsigned(path.to_owned()));
    }
    let key = cache_key(dir, false)?;
    let bytes = std::fs::read(path).map_err(io(path))?;
    check_ours(&mac_file)?;
    let expected = std::fs::read_to_string(&mac_file).map_err(io(&mac_file))?;
    let actual = sign(&key, path, &bytes);
    // Compared as whole strings: the MAC is not a secret an attacker can probe for here.
    if expected.trim() != actual {
        return Err(Untrusted::Forged(path.to_owned()));
    }
    Ok(bytes)
}

#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = read_trusted(path)?;
    // SAFETY: the bytes are what `store` below wrote from `Component::serialize` of an engine
    // with the same compatibility hash (it is in the file name): `read_trusted` checked the HMAC
    // only this host's user can make. wasmtime re-checks the header and version on load.
    unsafe { Component::deserialize(engine, &bytes) }
}

/// Writes atomically (temporary file, then rename) so that concurrent hosts and tests sharing
/// the cache never load a half-written entry, and signs it.
fn store(path: &Path, component: &Component) -> wasmtime::Result<()> {
    let bytes = component.serialize()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    let key = cache_key(dir, true)?;
    write_atomically(dir, path, &bytes)?;
    write_atomically(dir, &mac_path(path), sign(&key, path, &bytes).as_bytes())?;
    Ok(())
}

fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> wasmtime::Result<()> {
    let tmp = dir.join(format!(".{}.{}.tmp", std::process::id(), uuid::Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(bytes)?;
    drop(file);
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_digest;

    #[test]
    fn only_a_lowercase_sha256_is_a_digest() {
        assert!(is_digest(&"ab".repeat(32)));
        assert!(!is_digest(&"AB".repeat(32)));
        assert!(!is_digest(&"ab".repeat(31)));
        assert!(!is_digest(&format!("../../{}", "a".repeat(58))));
        assert!(!is_digest(&format!("{}/", "a".repeat(63))));
    }
}
