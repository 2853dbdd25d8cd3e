//! Durability of a put to a local directory store: object_store's local store writes a
//! staging file and renames or links it into place without any fsync, so a TXID
//! `litestream_sync()` reported stored would not survive a power loss. Here the file is
//! synced, then its directory (the new name), then, the first time this process puts
//! into that directory, every directory above it up to the one holding the replica's
//! (the put may have created them).
//!
//! Directories whose chain is known durable are remembered process-wide by identity
//! (device, inode, birth time), not by path: a connection per request opens a new store
//! at every open, and a level directory deleted and created again by someone else is
//! a new directory whose chain is synced again. Two directory fsyncs fewer per upload,
//! of four (a file in `<replica>/ltx/0/`), beside the application's own fsyncs.

use crate::vfs::sys::fork::ProcessMutex;
use std::collections::HashSet;
use std::fs::{File, Metadata};
use std::io;
use std::path::Path;
use std::sync::MutexGuard;
use std::time::{Duration, UNIX_EPOCH};

use crate::file_modes::FileModes;

/// Bounds the set: one entry per level directory of each replica this process writes
/// (eleven at most per database). Past this it starts over, which costs only syncs.
const MAX_REMEMBERED: usize = 1 << 16;

/// (device, inode, birth time in ns or 0 where the filesystem keeps none).
type DirIdentity = (u64, u64, i128);

fn durable_chains() -> MutexGuard<'static, HashSet<DirIdentity>> {
    // Per process (`vfs::sys::fork`): made again in a child.
    static DIRS: ProcessMutex<HashSet<DirIdentity>> = ProcessMutex::new();
    DIRS.lock()
}

fn identity(meta: &Metadata) -> DirIdentity {
    use std::os::unix::fs::MetadataExt;
    let born = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128);
    (meta.dev(), meta.ino(), born)
}

/// Makes the file at `file`, put under the replica directory `base`, durable: gives it
/// `modes` and the modification time `timestamp_ms` (when positive), syncs it, its
/// directory, and the directories up to `base` unless this process already synced that
/// chain for this very directory.
pub(crate) fn make_put_durable(
    file: &Path,
    base: &Path,
    modes: Option<FileModes>,
    timestamp_ms: i64,
) -> io::Result<()> {
    let opened = File::open(file)?;
    if let Some(modes) = modes {
        modes.settle_file(&opened)?;
    }
    if timestamp_ms > 0 {
        opened.set_modified(UNIX_EPOCH + Duration::from_millis(timestamp_ms as u64))?;
    }
    opened.sync_all()?;
    let Some(parent) = file.parent() else {
        return Ok(());
    };
    let dir = File::open(parent)?;
    dir.sync_all()?;
    let id = identity(&dir.metadata()?);
    let known = durable_chains().contains(&id);
    if known || !parent.starts_with(base) {
        return Ok(());
    }
    // The directories above, up to the replica's: the put may have created each. Then
    // the one holding the replica's, for the replica directory's own name (the first
    // put creates it). That one is not ours and may refuse to be opened for reading:
    // then the name is as durable as its creator made it, and the put still stands.
    for d in parent.ancestors().skip(1) {
        if !d.starts_with(base) {
            let _ = File::open(d).and_then(|d| d.sync_all());
            break;
        }
        File::open(d)?.sync_all()?;
    }
    let mut chains = durable_chains();
    if chains.len() >= MAX_REMEMBERED {
        chains.clear();
    }
    chains.insert(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Whether this process has synced the chain above the directory at `dir`.
    fn chain_known(dir: &Path) -> bool {
        let id = identity(&fs::metadata(dir).unwrap());
        durable_chains().contains(&id)
    }

    #[test]
    fn a_directory_s_chain_is_synced_once_and_again_when_it_is_made_anew() {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().join("replica");
        let level = base.join("ltx/0");
        fs::create_dir_all(&level).unwrap();
        let file = level.join("a.ltx");
        fs::write(&file, b"x").unwrap();
        assert!(!chain_known(&level));
        make_put_durable(&file, &base, None, 1_000).unwrap();
        assert!(chain_known(&level), "the chain above ltx/0 is synced at the first put");
        assert_eq!(
            fs::metadata(&file).unwrap().modified().unwrap(),
            UNIX_EPOCH + Duration::from_millis(1_000)
        );
        // Deleted and made again (another process, an operator): a new directory.
        fs::remove_dir_all(base.join("ltx")).unwrap();
        fs::create_dir_all(&level).unwrap();
        fs::write(&file, b"y").unwrap();
        if chain_known(&level) {
            // The filesystem reused the inode and keeps no birth time: nothing to tell.
            return;
        }
        make_put_durable(&file, &base, None, 0).unwrap();
        assert!(chain_known(&level));
    }
}
