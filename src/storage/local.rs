//! `file:///abs/path` (a directory) and `memory://name/path` (in-process, for tests).
//!
//! Local files go through object_store's `LocalFileSystem`, whose puts are atomic: the data
//! is written to a staging file next to the target and then renamed over it (plain put) or
//! hard-linked to it (conditional create, which fails if the name exists), so a reader never
//! sees a half-written file under its final name. Staging files have a `#` in their name and
//! are invisible to listings. Every put is then fsynced, file and directories (see
//! `ObjectReplica::make_durable`): a TXID reported stored survives a power loss.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;

use super::error::{Error, Redactor, Result};
use super::layout::{Layout, LevelStyle};
use super::object::ObjectReplica;
use super::options::StoreOptions;
use super::s3::S3_TIMESTAMP_METADATA;
use super::target::Target;

pub(crate) fn open_file(t: &Target, opts: &StoreOptions) -> Result<ObjectReplica> {
    t.params.check_known("file", &[], &t.name)?;
    let ignored = cloud_options_set(opts);
    if !ignored.is_empty() {
        // Said, not refused: the URI parameters a replica URL nested in a SQLite URI takes
        // its options from may come from one template for several stores; in silence an
        // `endpoint=` meant for S3 let people believe a file:// replica went there.
        tracing::warn!(
            replica = %t.name,
            "{} ignored: a file:// replica is a local directory and uses no endpoint, region or \
             credentials (they are s3://, abs:// and gs:// settings)",
            ignored.iter().map(|k| format!("{k}=")).collect::<Vec<_>>().join(", ")
        );
    }
    if !t.host.is_empty() && t.host != "localhost" {
        return Err(Error::config(format!(
            "replica URL {} names host {:?}; file URLs are local: file:///absolute/path",
            t.name, t.host
        )));
    }
    let dir = t
        .url
        .to_file_path()
        .map_err(|()| Error::config(format!("replica URL {} is not an absolute file path", t.name)))?;
    if dir.parent().is_none() {
        return Err(Error::config(format!(
            "replica URL {} points at the filesystem root",
            t.name
        )));
    }
    let base = Path::from_absolute_path(&dir)
        .map_err(|e| Error::config(format!("replica URL {}: unusable path: {e}", t.name)))?;
    let layout = Layout::new(base, LevelStyle::LtxDecimal);
    // LocalFileSystem::new() is rooted at "/" so that the replica directory need not exist
    // yet: puts create it, and listing a missing level is an empty level.
    let store = Arc::new(LocalFileSystem::new());
    Ok(
        ObjectReplica::new(store, layout, None, t.name.clone(), Redactor::default())
            .with_fsync(std::path::PathBuf::from("/"))
            .with_file_modes(opts.file_modes),
    )
}

/// The store options of cloud stores set in `opts`, by their URI parameter names
/// (never their values, which may be secrets).
fn cloud_options_set(opts: &StoreOptions) -> Vec<&'static str> {
    [
        ("endpoint", opts.endpoint.is_some()),
        ("region", opts.region.is_some()),
        ("force-path-style", opts.force_path_style.is_some()),
        ("skip-verify", opts.skip_verify.is_some()),
        ("access-key-id", opts.access_key_id.is_some()),
        ("secret-access-key", opts.secret_access_key.is_some()),
        ("account-name", opts.account_name.is_some()),
        ("account-key", opts.account_key.is_some()),
        ("sas-token", opts.sas_token.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Removes the staging files (`<name>#<n>`) object_store's puts leave in `dirs` when the
/// writer is killed between writing and renaming, once none has been written to for
/// `idle`: a killed snapshot upload leaves a copy the size of the database that no
/// listing shows. A live put keeps writing its staging file, so an idle one is
/// abandoned. Missing directories are fine; returns how many files went.
pub(crate) fn sweep_abandoned_staging(dirs: &[std::path::PathBuf], idle: std::time::Duration) -> std::io::Result<u32> {
    let mut removed = 0;
    for dir in dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            if !entry.file_name().as_encoded_bytes().contains(&b'#') {
                continue;
            }
            let meta = match entry.metadata() {
                Ok(meta) => meta,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            let idle_for = meta.modified()?.elapsed().unwrap_or_default();
            if meta.is_file() && idle_for >= idle {
                match std::fs::remove_file(entry.path()) {
                    Ok(()) => {
                        removed += 1;
                        tracing::info!(
                            file = %entry.path().display(),
                            bytes = meta.len(),
                            "removed an upload's staging file abandoned by a killed writer"
                        );
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(removed)
}

/// In-memory stores by name, shared process-wide so that a primary and a replica opened
/// separately in one process see the same objects.
fn memory_stores() -> &'static Mutex<HashMap<String, Arc<InMemory>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

pub(crate) fn open_memory(t: &Target, _opts: &StoreOptions) -> Result<ObjectReplica> {
    t.params.check_known("memory", &[], &t.name)?;
    let store = {
        let mut stores = memory_stores().lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            stores
                .entry(t.host.clone())
                .or_insert_with(|| Arc::new(InMemory::new())),
        )
    };
    let layout = Layout::from_user_path(&t.path, LevelStyle::LtxDecimal)?;
    // InMemory keeps attributes, so it stores the timestamp metadata the way S3 does.
    Ok(ObjectReplica::new(
        store,
        layout,
        Some(S3_TIMESTAMP_METADATA),
        t.name.clone(),
        Redactor::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `endpoint=` beside a file:// replica (a top-level URI parameter) is named, as are
    /// the other cloud settings, and no value is: a secret key must not reach the log.
    #[test]
    fn cloud_options_given_to_a_file_replica_are_named_without_their_values() {
        let mut opts = StoreOptions::default();
        assert!(cloud_options_set(&opts).is_empty());
        opts.set("endpoint", "http://127.0.0.1:9000").unwrap();
        assert_eq!(cloud_options_set(&opts), ["endpoint"]);
        opts.set("secret-access-key", "s3cr3t").unwrap();
        opts.set("requests_per_second", "10").unwrap();
        let named = cloud_options_set(&opts);
        assert_eq!(named, ["endpoint", "secret-access-key"]);
        assert!(!named.concat().contains("s3cr3t"));
    }
}
