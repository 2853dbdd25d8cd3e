//! Process-wide map from replica URL to its [`Replica`], so every connection to one
//! replica location shares one page cache and one poller; and the set of local names
//! replicas are opened under, so their `-journal`/`-wal` are never looked for.
//!
//! Opening a replica (network round trips) holds only its URL's gate, never a map: a
//! slow store stalls neither `xAccess` of unrelated databases (the name set) nor their
//! opens (the URL map).

use super::{Replica, ReplicaConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

struct Entry {
    replica: Arc<Replica>,
    handles: usize,
    /// The database names it is open under, with their handles (for the metrics' `db`).
    paths: HashMap<PathBuf, usize>,
}

static BY_URL: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);
/// Database names opened as replicas, with how many handles use each.
static PATHS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

fn lock<K, V>(m: &'static Mutex<Option<HashMap<K, V>>>) -> MutexGuard<'static, Option<HashMap<K, V>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One gate per URL being opened: a second open of the same replica waits for the
/// first (and then shares it); opens of other URLs do not wait for either.
static OPENING: Mutex<Option<HashMap<String, Arc<Mutex<()>>>>> = Mutex::new(None);

/// One more handle on the replica at `config.url`, opened as the database `path`.
/// The first handle opens the replica (LIST and page indexes: errors surface here)
/// holding only its URL's gate, so a slow store delays no other database's open.
pub fn attach(path: &Path, config: &ReplicaConfig) -> Result<Arc<Replica>, String> {
    let gate = Arc::clone(
        lock(&OPENING)
            .get_or_insert_with(HashMap::new)
            .entry(config.url.clone())
            .or_default(),
    );
    let opened = {
        let _one_open_per_url = gate.lock().unwrap_or_else(|p| p.into_inner());
        let shared = join(&config.url, path);
        match shared {
            Some(replica) => Ok(replica),
            None => Replica::open(config).map(|replica| {
                let mut guard = lock(&BY_URL);
                let entry = guard.get_or_insert_with(HashMap::new).entry(config.url.clone());
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
        let mut gates = lock(&OPENING);
        // The map's and ours: nobody else waits at this gate.
        if Arc::strong_count(&gate) == 2 {
            gates.as_mut().map(|g| g.remove(&config.url));
        }
    }
    let replica = opened?;
    let mut paths = lock(&PATHS);
    *paths
        .get_or_insert_with(HashMap::new)
        .entry(path.to_path_buf())
        .or_insert(0) += 1;
    Ok(replica)
}

/// One more handle on the replica already open at `url`, if it is.
fn join(url: &str, path: &Path) -> Option<Arc<Replica>> {
    let mut guard = lock(&BY_URL);
    let entry = guard.as_mut()?.get_mut(url)?;
    entry.handles += 1;
    *entry.paths.entry(path.to_path_buf()).or_insert(0) += 1;
    Some(Arc::clone(&entry.replica))
}

/// Releases a handle from [`attach`]; the last one of a replica stops its poller.
pub fn detach(path: &Path, replica: &Arc<Replica>) {
    {
        let mut guard = lock(&PATHS);
        if let Some(paths) = guard.as_mut() {
            if let Some(n) = paths.get_mut(path) {
                *n -= 1;
                if *n == 0 {
                    paths.remove(path);
                }
            }
        }
    }
    let mut guard = lock(&BY_URL);
    let Some(map) = guard.as_mut() else { return };
    let url = map
        .iter()
        .find(|(_, e)| Arc::ptr_eq(&e.replica, replica))
        .map(|(url, _)| url.clone());
    if let Some(url) = url {
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
    }
}

/// The status of every replica open in this process, once per database name it is open
/// under (`database`), at its newest TXID: for the metrics.
pub fn statuses() -> Vec<serde_json::Value> {
    let open: Vec<(Vec<PathBuf>, Arc<Replica>)> = lock(&BY_URL)
        .as_ref()
        .map(|map| {
            map.values()
                .map(|e| (e.paths.keys().cloned().collect(), Arc::clone(&e.replica)))
                .collect()
        })
        .unwrap_or_default();
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
    lock(&PATHS).as_ref().is_some_and(|paths| paths.contains_key(path))
}

/// A database other than `path` open as a replica in this process, if any.
pub fn other_path(path: &Path) -> Option<PathBuf> {
    lock(&PATHS)
        .as_ref()
        .and_then(|paths| paths.keys().find(|p| p.as_path() != path).cloned())
}
