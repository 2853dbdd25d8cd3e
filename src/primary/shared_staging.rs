//! Which staging directory the processes writing one database share.
//!
//! The replication lock and `leader.json` live beside the database, in
//! `<db>-litestream/`, whatever `staging=` or `LITESTREAM_STAGING_DIR` say: that place
//! is named after the database, so every process that writes it finds them. Kept in the
//! staging directory, two processes whose settings named two directories (a web server
//! with `LITESTREAM_STAGING_DIR` in its unit file, a cron job or an admin's shell
//! without) each took a lock of its own and both replicated: into one replica, two
//! writers of one TXID sequence; into two, a snapshot at every WAL restart of the other
//! (neither saw the other's hand-off records), each logged as "a process outside the VFS".
//!
//! A process that opens the database while another replicates it uses the replicating
//! process's staging directory (with a warning), since that is where its hand-off records,
//! sync requests and a later takeover's saved state must be: but only when the path
//! names the same directory here (device and inode; one path in two containers can be
//! two directories). Otherwise the follower keeps its own and its `litestream_sync()`
//! fails saying why ([`StagingDir`] is part of the `Destination` followers compare).

use super::follower;
use crate::config::default_staging_dir;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the replication lock and `leader.json` of `db_path` live.
pub fn lock_dir(db_path: &Path) -> PathBuf {
    default_staging_dir(db_path)
}

/// A staging directory as another process can recognise it: its canonical path, and
/// its device and inode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagingDir {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

impl StagingDir {
    /// `None` when the directory does not exist (yet).
    pub fn of(dir: &Path) -> Option<StagingDir> {
        let path = std::fs::canonicalize(dir).ok()?;
        let meta = std::fs::metadata(&path).ok()?;
        Some(StagingDir {
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    pub fn is(&self, other: &StagingDir) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

/// The staging directory this process should use for `db_path`: `ours` (from its
/// settings), unless another process replicates the database (`someone_replicates`,
/// from the lock) from another directory that this process sees under the same path.
pub fn choose(db_path: &Path, ours: &Path, someone_replicates: bool) -> PathBuf {
    if !someone_replicates {
        return ours.to_path_buf();
    }
    let Some(leader) = follower::read_leader(&lock_dir(db_path)) else {
        return ours.to_path_buf();
    };
    let Some(theirs) = leader.destination.and_then(|d| d.staging) else {
        return ours.to_path_buf(); // a version that did not say
    };
    if StagingDir::of(ours).is_some_and(|o| o.is(&theirs)) {
        return ours.to_path_buf();
    }
    if !StagingDir::of(&theirs.path).is_some_and(|here| here.is(&theirs)) {
        return ours.to_path_buf(); // not visible from here: reported by the destination check
    }
    tracing::warn!(
        db = %db_path.display(),
        "the process replicating this database (pid {}) stages in {}, not {} as this connection's \
         settings (staging= or LITESTREAM_STAGING_DIR) say: using {}, where it reads this process's \
         hand-off records and sync requests; give every process that writes the database the same setting",
        leader.pid,
        theirs.path.display(),
        ours.display(),
        theirs.path.display()
    );
    theirs.path
}

/// Why a follower's hand-off records and sync requests cannot reach the replicating
/// process: it stages in another directory than `ours`. `None` when they agree or
/// either does not say.
pub fn differs(theirs: Option<&StagingDir>, ours: Option<&StagingDir>) -> Option<String> {
    let (theirs, ours) = (theirs?, ours?);
    if theirs.is(ours) {
        return None;
    }
    Some(format!(
        "stages in {}, not in this process's {} (a directory of that path was not found here, or \
         is another one: a container with its own filesystem?), so this process's sync requests \
         and hand-off records do not reach it: give every process that writes the database the \
         same staging= or LITESTREAM_STAGING_DIR, on a filesystem they share",
        theirs.path.display(),
        ours.path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_directory_under_two_paths_is_one_staging_directory() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (a, b) = (StagingDir::of(&real).unwrap(), StagingDir::of(&link).unwrap());
        assert_eq!(differs(Some(&a), Some(&b)), None);
        let other = root.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let c = StagingDir::of(&other).unwrap();
        let why = differs(Some(&a), Some(&c)).expect("two directories differ");
        assert!(why.contains("same staging="), "{why}");
        assert_eq!(differs(None, Some(&c)), None, "a leader that did not say is trusted");
        assert_eq!(StagingDir::of(&root.path().join("missing")), None);
    }
}
