//! Process-wide map from database path to its [`Primary`], so every connection to
//! one file shares one capture stream, and a process lock so that only one process
//! replicates a database at a time.

use super::{Primary, Snapshotter};
use crate::config::Config;
use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What this process does for a database opened as primary.
#[derive(Clone)]
pub enum Attachment {
    /// This process captures and uploads.
    Leader(Arc<Primary>),
    /// Another process holds the replication lock; it picks up this process's
    /// commits from the WAL.
    Follower,
}

struct Entry {
    primary: Arc<Primary>,
    /// Held for the life of the entry: the cross-process replication lock.
    _lock: File,
    handles: usize,
}

static REGISTRY: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);

/// Attaches one more main-database handle to the primary for `db_path`, opening it
/// (and taking the process lock) on first use.
pub fn attach(
    db_path: &Path,
    config: Config,
    snapshotter: impl FnOnce() -> Box<dyn Snapshotter>,
    prepare_db: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<Attachment, String> {
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(entry) = map.get_mut(db_path) {
        entry.handles += 1;
        return Ok(Attachment::Leader(Arc::clone(&entry.primary)));
    }
    fs::create_dir_all(&config.staging_dir)
        .map_err(|e| format!("staging directory {}: {e}", config.staging_dir.display()))?;
    let lock_path = config.staging_dir.join("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is involved.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        prepare_db(db_path)?;
        tracing::info!(db = %db_path.display(), "another process replicates this database; its commits from here are picked up from the WAL");
        return Ok(Attachment::Follower);
    }
    let primary = Primary::open(db_path, config, snapshotter(), prepare_db)?;
    map.insert(
        db_path.to_path_buf(),
        Entry {
            primary: Arc::clone(&primary),
            _lock: lock,
            handles: 1,
        },
    );
    Ok(Attachment::Leader(primary))
}

/// True when no process holds the replication lock in `staging_dir` (checked by
/// taking and at once releasing it).
pub fn lock_is_free(staging_dir: &Path) -> bool {
    let Ok(file) = File::options().write(true).open(staging_dir.join("lock")) else {
        return false;
    };
    // SAFETY: flock on a descriptor we own; closing it releases the lock.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// The primary of `db_path` if this process leads it (for the `-wal` file's open).
pub fn lookup(db_path: &Path) -> Option<Arc<Primary>> {
    let guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_ref()?.get(db_path).map(|e| Arc::clone(&e.primary))
}

/// Detaches one main-database handle; the last one closes replication cleanly.
pub fn detach(db_path: &Path) {
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let Some(map) = guard.as_mut() else { return };
    let Some(entry) = map.get_mut(db_path) else { return };
    entry.handles -= 1;
    if entry.handles == 0 {
        let entry = map.remove(db_path).expect("present");
        // Closing holds the registry so a reopen cannot race the final upload.
        entry.primary.close();
    }
}
