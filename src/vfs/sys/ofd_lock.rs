//! Open-file-description locks (`F_OFD_SETLK`, `F_OFD_GETLK`; Linux 3.15+) on a byte
//! range of a file: a write lock only, which is all the leader lock needs.
//!
//! Why these and not the alternatives: a POSIX lock (`F_SETLK`) belongs to the process,
//! so two opens in one process do not exclude each other, and closing *any* descriptor
//! of the file drops it; `flock` (what `File::try_lock` uses) cannot be asked who holds
//! it without taking it. An OFD lock belongs to the open file description: it excludes
//! every other description, in this process or another, lasts until the last
//! descriptor of its own description closes (or the process dies), and `F_OFD_GETLK`
//! reports a conflict without taking anything. Neither rustix (its `fcntl_lock` is
//! POSIX `F_SETLK`) nor std has them, hence libc.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Takes a write lock on `len` bytes at `start`; `Ok(false)` when another open file
/// description holds a lock on any of them.
pub fn try_write_lock(file: &File, start: i64, len: i64) -> io::Result<bool> {
    match set(file, libc::F_WRLCK, start, len) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases this description's lock on `len` bytes at `start` (none held is no error).
pub fn unlock(file: &File, start: i64, len: i64) -> io::Result<()> {
    set(file, libc::F_UNLCK, start, len)
}

/// True when another open file description holds a lock that a write lock on `len`
/// bytes at `start` would conflict with; this description's own lock is no conflict.
pub fn write_lock_conflicts(file: &File, start: i64, len: i64) -> io::Result<bool> {
    let mut lock = range(libc::F_WRLCK, start, len);
    // SAFETY: `file` is an open descriptor for the call's duration and `lock` a whole
    // `flock` that F_OFD_GETLK reads and overwrites, nothing more.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

fn set(file: &File, kind: libc::c_int, start: i64, len: i64) -> io::Result<()> {
    let lock = range(kind, start, len);
    // SAFETY: `file` is an open descriptor for the call's duration and `lock` a whole
    // `flock` that F_OFD_SETLK only reads.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn range(kind: libc::c_int, start: i64, len: i64) -> libc::flock {
    // SAFETY: flock is plain data; zero is a valid value for every field (OFD locks
    // require `l_pid` to be zero, and some targets have padding fields).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start as libc::off_t;
    lock.l_len = len as libc::off_t;
    lock
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    /// What makes it an OFD lock: a POSIX lock (same process: no conflict; any close
    /// drops it) or flock (no query) fails this.
    #[test]
    fn the_lock_belongs_to_the_open_file_description_not_to_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap()
        };
        let (a, b) = (open(), open());
        assert!(!write_lock_conflicts(&b, 0, 1).unwrap());
        assert!(try_write_lock(&a, 0, 1).unwrap());
        assert!(
            !write_lock_conflicts(&a, 0, 1).unwrap(),
            "the holder's own lock is no conflict"
        );
        // Another open in the same process is excluded and sees the lock.
        assert!(write_lock_conflicts(&b, 0, 1).unwrap());
        assert!(!try_write_lock(&b, 0, 1).unwrap());
        assert!(try_write_lock(&b, 1, 1).unwrap(), "only the range is locked");
        // Closing another descriptor of the file does not drop it.
        drop(File::open(&path).unwrap());
        assert!(!try_write_lock(&b, 0, 1).unwrap());
        // A duplicate shares the description: the lock lasts until the last one closes.
        let dup = a.try_clone().unwrap();
        drop(a);
        assert!(write_lock_conflicts(&b, 0, 1).unwrap());
        unlock(&dup, 0, 1).unwrap();
        assert!(!write_lock_conflicts(&b, 0, 1).unwrap());
        assert!(try_write_lock(&dup, 0, 1).unwrap());
        drop(dup);
        assert!(
            try_write_lock(&b, 0, 1).unwrap(),
            "released when its description closed"
        );
    }
}
