//! The cross-process lock that says which process replicates a database:
//! `<db>-litestream/lock` (beside the database whatever the staging settings:
//! `shared_staging.rs`), held with an open-file-description lock (`F_OFD_SETLK`, through
//! `crate::vfs::sys::ofd_lock`) on its first byte. The kernel releases it when the holder dies, so a process that still has
//! the database open can take replication over; unlike a POSIX lock, no other
//! descriptor of the file closing anywhere in the process drops it, and unlike `flock`,
//! another process can ask whether it is held without taking it (`F_OFD_GETLK`).
//!
//! The file stays open for the life of the database in the process: that is the one
//! descriptor replication adds to SQLite's own.
//!
//! The second byte says "opening": a process takes it *before* the first byte and lets
//! it go once its open of replication is done (the database restored if it was
//! missing). A process that finds the database missing waits while both are held
//! rather than let its SQLite make an empty database beside a restore. `leader.json`
//! said this before, but what it says is written after the lock is taken, so a process
//! reading it in between read the previous leader's finished open and went on: an
//! empty database in WAL mode, which the restoring process then took for the database
//! and snapshotted over the replica (found 2026-12-07, 1 run in 4 with three workers).

use crate::file_modes::FileModes;
use crate::vfs::sys::fork;
use crate::vfs::sys::ofd_lock;
use std::fs::File;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, TryLockError};

/// A child of `fork()` shares the parent's open file description, and so its lock: it
/// must never unlock it (the parent would replicate without it, beside a taker), nor
/// keep it open (it would outlive the parent, and nobody could take over). The first
/// use in a child closes the child's descriptor, which leaves the lock to the parent.
pub struct LeaderLock {
    /// `None` once closed in a child.
    file: Mutex<Option<File>>,
    /// The fork epoch the lock file was opened in.
    epoch: u64,
}

/// The range locked: the file's first byte.
const START: i64 = 0;
const LEN: i64 = 1;
/// Held, with the first, while the holder opens replication.
const OPENING: i64 = 1;

impl LeaderLock {
    /// Opens (creating, with the database's permissions `modes`) the lock file in `dir`.
    pub fn open(dir: &Path, modes: FileModes) -> Result<LeaderLock, String> {
        let path = dir.join("lock");
        let file = modes
            .open_or_create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(LeaderLock {
            file: Mutex::new(Some(file)),
            epoch: fork::epoch(),
        })
    }

    /// Opened by the parent of this process, before a `fork()`.
    #[inline]
    pub fn inherited(&self) -> bool {
        self.epoch != fork::epoch()
    }

    /// The lock file, while this is the process that opened it.
    fn file(&self) -> Option<MutexGuard<'_, Option<File>>> {
        if self.inherited() {
            self.forget_inherited();
            return None;
        }
        Some(self.file.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Takes the lock if no process holds it; true if this process holds it now, and is
    /// opening until [`LeaderLock::opened`] or [`LeaderLock::release`].
    pub fn try_acquire(&self) -> Result<bool, String> {
        let guard = self.file();
        let Some(Some(file)) = guard.as_deref() else {
            return Ok(false);
        };
        let err = |e: std::io::Error| format!("taking the replication lock: {e}");
        // Another process's try holds "opening" for a moment even when it then finds the
        // lock taken: a few short retries keep a takeover from waiting for a next turn.
        for attempt in 0..5 {
            if ofd_lock::try_write_lock(file, OPENING, 1).map_err(err)? {
                if ofd_lock::try_write_lock(file, START, LEN).map_err(err)? {
                    return Ok(true);
                }
                let _ = ofd_lock::unlock(file, OPENING, 1);
                return Ok(false);
            }
            if attempt == 4 || ofd_lock::write_lock_conflicts(file, START, LEN).unwrap_or(true) {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(false)
    }

    /// This process's open of replication is done: processes waiting for it go on.
    pub fn opened(&self) {
        if let Some(Some(file)) = self.file().as_deref() {
            if let Err(e) = ofd_lock::unlock(file, OPENING, 1) {
                tracing::warn!("releasing the replication lock's opening byte: {e}");
            }
        }
    }

    /// Lets another process take the lock.
    pub fn release(&self) {
        if let Some(Some(file)) = self.file().as_deref() {
            if let Err(e) = ofd_lock::unlock(file, START, LEN + 1) {
                tracing::warn!("releasing the replication lock: {e}");
            }
        }
    }

    /// True when another process (or another open of the lock file) holds it; false
    /// too when the kernel cannot say. In a child of the process that opened it: true
    /// (the parent's until it says otherwise).
    pub fn held_by_another(&self) -> bool {
        match self.file().as_deref() {
            Some(Some(file)) => ofd_lock::write_lock_conflicts(file, START, LEN).unwrap_or(false),
            _ => true,
        }
    }

    /// True while another process that holds (or is taking) the lock has not finished
    /// opening replication; false too when the kernel cannot say.
    pub fn opening_by_another(&self) -> bool {
        match self.file().as_deref() {
            Some(Some(file)) => ofd_lock::write_lock_conflicts(file, OPENING, 1).unwrap_or(false),
            _ => false,
        }
    }

    /// In a child of `fork()`: closes the child's descriptor of the lock file, unless a
    /// thread of the parent held its mutex at the fork (copied locked: then it stays).
    pub fn forget_inherited(&self) {
        let file = match self.file.try_lock() {
            Ok(file) => Some(file),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut file) = file {
            *file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_others_can_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
        let b = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
        assert!(!b.held_by_another());
        assert!(a.try_acquire().unwrap());
        assert!(b.held_by_another());
        assert!(!b.try_acquire().unwrap());
        // Another descriptor of the file closing does not drop it.
        drop(File::open(dir.path().join("lock")).unwrap());
        assert!(!b.try_acquire().unwrap());
        a.release();
        assert!(b.try_acquire().unwrap());
        assert!(a.held_by_another());
        drop(b); // closing the holder's description releases it
        assert!(a.try_acquire().unwrap());
    }

    #[test]
    fn the_holder_is_opening_from_its_acquire_until_it_says_it_opened() {
        let dir = tempfile::tempdir().unwrap();
        let a = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
        let b = LeaderLock::open(dir.path(), FileModes::NewDatabase).unwrap();
        assert!(!b.opening_by_another());
        assert!(a.try_acquire().unwrap());
        assert!(b.held_by_another() && b.opening_by_another());
        // A try that fails leaves nothing held: a's opening stays a's alone.
        assert!(!b.try_acquire().unwrap());
        a.opened();
        assert!(b.held_by_another());
        assert!(!b.opening_by_another());
        assert!(!b.try_acquire().unwrap());
        assert!(!a.opening_by_another(), "b's failed try let its opening byte go");
        a.release();
        assert!(!b.held_by_another() && !b.opening_by_another());
        assert!(b.try_acquire().unwrap());
        assert!(a.opening_by_another());
    }
}
