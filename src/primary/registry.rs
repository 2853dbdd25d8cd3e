//! Process-wide map from database path to its [`Database`], so every connection of the
//! process to one file shares one capture stream and one place in the replication
//! lock's queue.

use super::database::{Database, Tools};
use crate::config::Config;
use crate::vfs::sys::fork::{ProcessMap, ProcessMapGuard};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

struct Entry {
    database: Arc<Database>,
    handles: usize,
}

/// One path's place in the map. Its own lock is held while the path's first handle
/// opens replication (store round trips) and while its last one closes it (the final
/// upload): another open of the same path waits for that, an open of any other path
/// does not (the map's lock is held only to find or add a slot).
#[derive(Default)]
struct Slot(Mutex<Option<Entry>>);

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Entry>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static REGISTRY: ProcessMap<PathBuf, Arc<Slot>> = ProcessMap::new();

/// This process's map. In a child of `fork()` the parent's databases are the parent's
/// (`Database::inherited`): the child starts an empty map and closes its descriptors of
/// their replication locks, which must not outlive the parent.
fn registry() -> ProcessMapGuard<'static, PathBuf, Arc<Slot>> {
    REGISTRY.lock_leaving(|parents| {
        for slot in parents.values() {
            if let Ok(Some(entry)) = slot.0.try_lock().as_deref() {
                entry.database.forget_inherited();
            }
        }
    })
}

/// The slot of `db_path`, added if `add` and missing.
fn slot(db_path: &Path, add: bool) -> Option<Arc<Slot>> {
    let mut map = registry();
    if add {
        Some(Arc::clone(map.entry(db_path.to_path_buf()).or_default()))
    } else {
        map.get(db_path).cloned()
    }
}

/// Removes `slot` from the map if it is empty and nobody else holds it (an open of the
/// same path waiting for its lock keeps it).
fn remove_if_unused(db_path: &Path, slot: &Arc<Slot>) {
    let mut map = registry();
    // Only the map and the caller hold it, and nobody can take it from the map while
    // the map's lock is held.
    let unused = map.get(db_path).is_some_and(|s| Arc::ptr_eq(s, slot))
        && Arc::strong_count(slot) == 2
        && slot.0.try_lock().is_ok_and(|entry| entry.is_none());
    if unused {
        map.remove(db_path);
    }
}

/// Attaches one more main-database handle to `db_path`: the first one of the process
/// prepares the database (WAL mode) and replicates it if no other process does.
pub fn attach(
    db_path: &Path,
    config: Config,
    tools: Tools,
    prepare_db: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<Arc<Database>, String> {
    let slot = slot(db_path, true).expect("added");
    let mut entry = slot.lock();
    if let Some(entry) = entry.as_mut() {
        entry.database.check_another_open(&config)?;
        entry.handles += 1;
        return Ok(Arc::clone(&entry.database));
    }
    let opened = Database::new(db_path, config, tools).and_then(|database| {
        let database = Arc::new(database);
        if !database.try_lead_with(prepare_db)? && !database.wait_for_the_leaders_open(prepare_db)? {
            prepare_db(db_path)?;
            tracing::info!(db = %db_path.display(), "another process replicates this database; its commits from here are picked up from the WAL");
            if let Some(why) = database.destination_differs() {
                tracing::warn!(db = %db_path.display(), "{why}");
            }
        }
        database.watch_leadership();
        Ok(database)
    });
    match opened {
        Ok(database) => {
            *entry = Some(Entry {
                database: Arc::clone(&database),
                handles: 1,
            });
            Ok(database)
        }
        Err(e) => {
            drop(entry);
            remove_if_unused(db_path, &slot);
            Err(e)
        }
    }
}

/// The database at `db_path` if this process has it open as a primary (for the
/// `-wal` file's open and deletion).
pub fn lookup(db_path: &Path) -> Option<Arc<Database>> {
    let slot = slot(db_path, false)?;
    let entry = slot.lock();
    entry.as_ref().map(|e| Arc::clone(&e.database))
}

/// Every database this process has open as a primary, leaving out one being opened or
/// closed at this moment (its slot is busy with store round trips: nobody waits for them).
pub fn all() -> Vec<Arc<Database>> {
    let slots: Vec<Arc<Slot>> = registry().values().cloned().collect();
    slots
        .iter()
        .filter_map(|slot| match slot.0.try_lock() {
            Ok(entry) => entry.as_ref().map(|e| Arc::clone(&e.database)),
            Err(TryLockError::Poisoned(p)) => p.into_inner().as_ref().map(|e| Arc::clone(&e.database)),
            Err(TryLockError::WouldBlock) => None,
        })
        .collect()
}

/// `litestream_status()` of every database this process replicates (leads), for the
/// metrics.
pub fn statuses() -> Vec<serde_json::Value> {
    // `all()` releases the registry first: a status waits for the primary's own mutex.
    all().iter().filter_map(|d| d.leader()).map(|p| p.status()).collect()
}

/// [`Primary::backlog`](super::Primary::backlog) of every database this process
/// replicates, for the engine's status.
pub fn backlogs() -> Vec<(String, u64, u64)> {
    all().iter().filter_map(|d| d.leader()).map(|p| p.backlog()).collect()
}

/// Detaches one main-database handle; the last one closes replication cleanly.
pub fn detach(db_path: &Path) {
    let Some(slot) = slot(db_path, false) else { return };
    let mut entry = slot.lock();
    let Some(open) = entry.as_mut() else { return };
    open.handles -= 1;
    if open.handles == 0 {
        let open = entry.take().expect("present");
        // Closing holds the slot so a reopen of this path cannot race the final upload.
        open.database.close();
        drop(entry);
        remove_if_unused(db_path, &slot);
    }
}
