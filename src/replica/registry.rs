//! Process-wide map from replica URL to its [`Replica`], so every connection to one
//! replica location shares one page cache and one poller; and the set of local names
//! replicas are opened under, so their `-journal`/`-wal` are never looked for.
//!
//! Two locks: opening a replica (network round trips) holds only the URL map, so a slow
//! store never stalls `xAccess` of unrelated databases, which reads the name set.

use super::{Replica, ReplicaConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

struct Entry {
    replica: Arc<Replica>,
    handles: usize,
}

static BY_URL: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);
/// Database names opened as replicas, with how many handles use each.
static PATHS: Mutex<Option<HashMap<PathBuf, usize>>> = Mutex::new(None);

fn lock<K, V>(m: &'static Mutex<Option<HashMap<K, V>>>) -> MutexGuard<'static, Option<HashMap<K, V>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One more handle on the replica at `config.url`, opened as the database `path`.
/// The first handle opens the replica (LIST and page indexes: errors surface here).
pub fn attach(path: &Path, config: &ReplicaConfig) -> Result<Arc<Replica>, String> {
    let replica = {
        let mut guard = lock(&BY_URL);
        let map = guard.get_or_insert_with(HashMap::new);
        match map.get_mut(&config.url) {
            Some(entry) => {
                entry.handles += 1;
                Arc::clone(&entry.replica)
            }
            None => {
                let replica = Replica::open(config)?;
                map.insert(
                    config.url.clone(),
                    Entry {
                        replica: Arc::clone(&replica),
                        handles: 1,
                    },
                );
                replica
            }
        }
    };
    let mut paths = lock(&PATHS);
    *paths
        .get_or_insert_with(HashMap::new)
        .entry(path.to_path_buf())
        .or_insert(0) += 1;
    Ok(replica)
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
        if entry.handles == 0 {
            map.remove(&url);
            replica.stop();
        }
    }
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
