//! Process-wide map from replica URL to its [`Replica`], so every connection to one
//! replica location shares one page cache and one poller; and the set of local names
//! replicas are opened under, so their `-journal`/`-wal` are never looked for.
//!
//! Opening a replica (network round trips) holds only its URL's gate, never a map: a
//! slow store stalls neither `xAccess` of unrelated databases (the name set) nor their
//! opens (the URL map).

use super::{Replica, ReplicaConfig};
use crate::vfs::sys::fork::ProcessMap;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

struct Entry {
    replica: Arc<Replica>,
    handles: usize,
    /// The database names it is open under, with their handles (for the metrics' `db`).
    paths: HashMap<PathBuf, usize>,
}

// Per process: a child of `fork()` starts with none of its parent's replicas (their
// pollers are the parent's threads), and opens its own.
static BY_URL: ProcessMap<String, Entry> = ProcessMap::new();
/// Database names opened as replicas, with how many handles use each.
static PATHS: ProcessMap<PathBuf, usize> = ProcessMap::new();

/// One gate per URL being opened: a second open of the same replica waits for the
/// first (and then shares it); opens of other URLs do not wait for either.
static OPENING: ProcessMap<String, Arc<Mutex<()>>> = ProcessMap::new();

/// One more handle on the replica at `config.url`, opened as the database `path`.
/// The first handle opens the replica (LIST and page indexes: errors surface here)
/// holding only its URL's gate, so a slow store delays no other database's open.
pub fn attach(path: &Path, config: &ReplicaConfig) -> Result<Arc<Replica>, String> {
    let gate = Arc::clone(OPENING.lock().entry(config.url.clone()).or_default());
    let opened = {
        let _one_open_per_url = gate.lock().unwrap_or_else(|p| p.into_inner());
        let shared = join(&config.url, path);
        match shared {
            Some(replica) => Ok(replica),
            None => Replica::open(config).map(|replica| {
                let mut map = BY_URL.lock();
                let entry = map.entry(config.url.clone());
                let entry = entry.or_insert(Entry {
                    replica,
                    handles: 0,
                    paths: HashMap::new(),
                });
                entry.handles += 1;
                *entry.paths.entry(path.to_path_buf()).or_insert(0) += 1;
                Arc::clone(&entry.replica)
            }),
        }
    };
    {
        let mut gates = OPENING.lock();
        // The map's and ours: nobody else waits at this gate.
        if Arc::strong_count(&gate) == 2 {
            gates.remove(&config.url);
        }
    }
    let replica = opened?;
    *PATHS.lock().entry(path.to_path_buf()).or_insert(0) += 1;
    Ok(replica)
}

/// One more handle on the replica already open at `url`, if it is.
fn join(url: &str, path: &Path) -> Option<Arc<Replica>> {
    let mut map = BY_URL.lock();
    let entry = map.get_mut(url)?;
    entry.handles += 1;
    *entry.paths.entry(path.to_path_buf()).or_insert(0) += 1;
    Some(Arc::clone(&entry.replica))
}

/// Releases a handle from [`attach`]; the last one of a replica stops its poller. A
/// replica this process does not have (one its parent opened before `fork()`) is left
/// alone.
pub fn detach(path: &Path, replica: &Arc<Replica>) {
    let mut map = BY_URL.lock();
    let Some(url) = map
        .iter()
        .find(|(_, e)| Arc::ptr_eq(&e.replica, replica))
        .map(|(url, _)| url.clone())
    else {
        return;
    };
    let entry = map.get_mut(&url).expect("found above");
    entry.handles -= 1;
    if let Some(n) = entry.paths.get_mut(path) {
        *n -= 1;
        if *n == 0 {
            entry.paths.remove(path);
        }
    }
    if entry.handles == 0 {
        map.remove(&url);
        replica.stop();
    }
    drop(map);
    let mut paths = PATHS.lock();
    if let Some(n) = paths.get_mut(path) {
        *n -= 1;
        if *n == 0 {
            paths.remove(path);
        }
    }
}

/// The status of every replica open in this process, once per database name it is open
/// under (`database`), at its newest TXID: for the metrics.
pub fn statuses() -> Vec<serde_json::Value> {
    let open: Vec<(Vec<PathBuf>, Arc<Replica>)> = BY_URL
        .lock()
        .values()
        .map(|e| (e.paths.keys().cloned().collect(), Arc::clone(&e.replica)))
        .collect();
    let mut out = Vec::new();
    for (paths, replica) in open {
        let status = replica.status(replica.current().txid);
        for path in paths {
            let mut status = status.clone();
            status["database"] = serde_json::Value::String(path.display().to_string());
            out.push(status);
        }
    }
    out
}

/// True when `path` is the name of a database open as a replica in this process.
pub fn is_replica_path(path: &Path) -> bool {
    PATHS.lock().contains_key(path)
}

/// A database other than `path` open as a replica in this process, if any.
pub fn other_path(path: &Path) -> Option<PathBuf> {
    PATHS.lock().keys().find(|p| p.as_path() != path).cloned()
}
