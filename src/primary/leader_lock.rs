//! The cross-process lock that says which process replicates a database:
//! `<staging>/lock`, held with an open-file-description lock (`F_OFD_SETLK`) on its
//! first byte. The kernel releases it when the holder dies, so a process that still has
//! the database open can take replication over; unlike a POSIX lock, no other
//! descriptor of the file closing anywhere in the process drops it, and unlike `flock`,
//! another process can ask whether it is held without taking it (`F_OFD_GETLK`).
//!
//! The file stays open for the life of the database in the process: that is the one
//! descriptor replication adds to SQLite's own.

use crate::file_modes::FileModes;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub struct LeaderLock {
    file: File,
}

impl LeaderLock {
    /// Opens (creating, with the database's permissions `modes`) the lock file.
    pub fn open(staging_dir: &Path, modes: FileModes) -> Result<LeaderLock, String> {
        let path = staging_dir.join("lock");
        let file = modes
            .open_or_create(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(LeaderLock { file })
    }

    /// Takes the lock if no process holds it; true if this process holds it now.
    pub fn try_acquire(&self) -> Result<bool, String> {
        match self.set(libc::F_WRLCK as libc::c_short) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
            Err(e) => Err(format!("taking the replication lock: {e}")),
        }
    }

    /// Lets another process take the lock.
    pub fn release(&self) {
        if let Err(e) = self.set(libc::F_UNLCK as libc::c_short) {
            tracing::warn!("releasing the replication lock: {e}");
        }
    }

    /// True when another process (or another open of the lock file) holds it.
    pub fn held_by_another(&self) -> bool {
        let mut lock = whole_first_byte(libc::F_WRLCK as libc::c_short);
        // SAFETY: fcntl on a descriptor we own with a properly initialised flock struct.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
        rc == 0 && lock.l_type != libc::F_UNLCK as libc::c_short
    }

    fn set(&self, kind: libc::c_short) -> std::io::Result<()> {
        let lock = whole_first_byte(kind);
        // SAFETY: fcntl on a descriptor we own with a properly initialised flock struct.
        let rc = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

fn whole_first_byte(kind: libc::c_short) -> libc::flock {
    // SAFETY: flock is plain data; zero is a valid value for every field.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 1;
    lock
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
}
