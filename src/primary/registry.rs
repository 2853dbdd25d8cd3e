//! Process-wide map from database path to its [`Database`], so every connection of the
//! process to one file shares one capture stream and one place in the replication
//! lock's queue.

use super::database::{Database, Tools};
use crate::config::Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

struct Entry {
    database: Arc<Database>,
    handles: usize,
}

static REGISTRY: Mutex<Option<HashMap<PathBuf, Entry>>> = Mutex::new(None);

fn registry() -> std::sync::MutexGuard<'static, Option<HashMap<PathBuf, Entry>>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Attaches one more main-database handle to `db_path`: the first one of the process
/// prepares the database (WAL mode) and replicates it if no other process does.
pub fn attach(
    db_path: &Path,
    config: Config,
    tools: Tools,
    prepare_db: &dyn Fn(&Path) -> Result<(), String>,
) -> Result<Arc<Database>, String> {
    let mut guard = registry();
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(entry) = map.get_mut(db_path) {
        entry.handles += 1;
        return Ok(Arc::clone(&entry.database));
    }
    let database = Arc::new(Database::new(db_path, config, tools)?);
    if !database.try_lead_with(prepare_db)? {
        prepare_db(db_path)?;
        tracing::info!(db = %db_path.display(), "another process replicates this database; its commits from here are picked up from the WAL");
        database.watch_leadership();
    }
    map.insert(
        db_path.to_path_buf(),
        Entry {
            database: Arc::clone(&database),
            handles: 1,
        },
    );
    Ok(database)
}

/// The database at `db_path` if this process has it open as a primary (for the
/// `-wal` file's open and deletion).
pub fn lookup(db_path: &Path) -> Option<Arc<Database>> {
    let guard = registry();
    guard.as_ref()?.get(db_path).map(|e| Arc::clone(&e.database))
}

/// Every database this process has open as a primary.
pub fn all() -> Vec<Arc<Database>> {
    let guard = registry();
    guard
        .as_ref()
        .map(|map| map.values().map(|e| Arc::clone(&e.database)).collect())
        .unwrap_or_default()
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
    let mut guard = registry();
    let Some(map) = guard.as_mut() else { return };
    let Some(entry) = map.get_mut(db_path) else { return };
    entry.handles -= 1;
    if entry.handles == 0 {
        let entry = map.remove(db_path).expect("present");
        // Closing holds the registry so a reopen cannot race the final upload.
        entry.database.close();
    }
}
