//! Checks on a restore's destination that are made before anything is listed or
//! downloaded, and the entry point that makes them.
//!
//! A directory named as the destination passed every other check with `overwrite` (it
//! exists, nothing holds a lock on it), downloaded the whole plan and failed only at the
//! final rename ("Is a directory"), leaving `PATH.litestream-restore.tmp` beside it (a
//! documentation tester, t40). Refusing it first costs one `lstat` per path.

use std::path::Path;
use std::sync::Arc;

use super::run::{self, companions, RestoreOptions, Restored, Target};
use crate::storage::ReplicaStore;

/// Restores `store` at `target` into `dest` ([`run::restore`]), after refusing a
/// destination that is a directory, or that has a directory where its `-wal`, `-shm`
/// or `-journal` would be (an overwrite removes those with `remove_file`, which a
/// directory fails, again after the download).
pub fn restore(
    store: Arc<dyn ReplicaStore>,
    dest: &Path,
    target: Target,
    options: &RestoreOptions,
) -> Result<Restored, String> {
    refuse_directory(dest)?;
    run::restore(store, dest, target, options)
}

/// An error naming the first of `dest` and its companions that is a directory, if one
/// is. A symbolic link to a directory is not refused: the rename replaces the link,
/// and without overwrite it is refused as an existing path like any other.
pub fn refuse_directory(dest: &Path) -> Result<(), String> {
    let is_dir = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
    if is_dir(dest) {
        return Err(format!(
            "cannot restore to {}: it is a directory; name the database file to write, such as {}",
            dest.display(),
            dest.join("restored.db").display()
        ));
    }
    if let Some(c) = companions(dest).into_iter().find(|c| is_dir(c)) {
        return Err(format!(
            "cannot restore to {}: {} is a directory, where SQLite keeps a file beside the \
             database; move it away or restore to another path",
            dest.display(),
            c.display()
        ));
    }
    Ok(())
}
