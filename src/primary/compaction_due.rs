//! When the compaction ladder's levels (and the level-9 snapshot) are next due, kept in
//! the staging directory across opens.
//!
//! The clock counts from the open: each level is due at its next wall-clock boundary.
//! A database used through short-lived connections (a connection per request, cron)
//! closes before any boundary comes, every time, so it was never compacted: a tester's
//! 373 opens left 374 level-0 files, no level-1 file, no snapshot and no retention, the
//! replica and the staging directory growing by a file per commit without bound. Saved,
//! a boundary a previous open waited for is still due at the next open, which then runs
//! the turn at once. Losing the file only delays compaction: it is written without fsync.

use crate::file_modes::FileModes;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The boundaries an open left due, wall-clock ms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDue {
    /// Level `i + 1`'s next turn.
    pub levels: Vec<i64>,
    /// The next level-9 snapshot.
    pub snapshot: i64,
}

fn path(staging_dir: &Path) -> PathBuf {
    staging_dir.join("compaction_due.json")
}

/// What an earlier open saved, if anything readable.
pub fn load(staging_dir: &Path) -> Option<SavedDue> {
    serde_json::from_slice(&crate::file_modes::read(&path(staging_dir)).ok()?).ok()
}

/// Saves `due` (a temp file renamed over, so a reader never sees half of one).
pub fn save(staging_dir: &Path, modes: FileModes, due: &SavedDue) {
    let tmp = staging_dir.join("compaction_due.json.tmp");
    let written = modes
        .write_file(&tmp, &serde_json::to_vec(due).expect("serialises"))
        .and_then(|_| std::fs::rename(&tmp, path(staging_dir)));
    if let Err(e) = written {
        tracing::debug!("saving the compaction clock in {}: {e}", staging_dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_saved_is_loaded_and_a_damaged_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), None);
        let due = SavedDue {
            levels: vec![30_000, 180_000],
            snapshot: 86_400_000,
        };
        save(dir.path(), FileModes::NewDatabase, &due);
        assert_eq!(load(dir.path()), Some(due));
        std::fs::write(path(dir.path()), b"{\"lev").unwrap();
        assert_eq!(load(dir.path()), None);
    }
}
