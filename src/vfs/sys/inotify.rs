//! Linux inotify: noticing a file created in a directory (a follower's sync request)
//! without listing the directory again and again.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One inotify instance (non-blocking, closed on exec).
pub struct Inotify {
    fd: OwnedFd,
}

/// What a watch is called in the events of its instance.
pub type WatchId = i32;

impl Inotify {
    pub fn new() -> io::Result<Inotify> {
        // SAFETY: no pointers; the descriptor returned is new and ours alone.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor just opened that nothing else owns.
        Ok(Inotify {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Registers the instance with the current tokio runtime's reactor, for readability.
    pub fn into_async(self) -> io::Result<tokio::io::unix::AsyncFd<Inotify>> {
        // SAFETY: the descriptor is this value's `OwnedFd`, open until the value is
        // dropped (with the `AsyncFd`), and `as_raw_fd` always returns it.
        unsafe { tokio::io::unix::AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)
    }

    /// Watches directory `dir` for files created in it or moved into it. The same
    /// directory watched twice is one watch (the same id).
    pub fn watch_new_files(&self, dir: &Path) -> io::Result<WatchId> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))?;
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR;
        // SAFETY: `path` is NUL-terminated and outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Stops watch `wd` (one already gone, with its directory, is no error).
    pub fn unwatch(&self, wd: WatchId) {
        // SAFETY: no pointers; an unknown id gives EINVAL, which changes nothing.
        unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
    }

    /// Every event waiting (its watch and the name of the file), reading until none is
    /// left; empty when there was none.
    pub fn drain(&self) -> io::Result<Vec<(WatchId, Vec<u8>)>> {
        // Room for at least one event with the longest name (NAME_MAX + 1).
        let mut buf = [0u8; 4096];
        let header = std::mem::size_of::<libc::inotify_event>();
        let mut ids = Vec::new();
        loop {
            // SAFETY: read() writes at most `buf.len()` bytes into `buf`.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(ids),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            if n == 0 {
                return Ok(ids);
            }
            let mut at = 0;
            while at + header <= n {
                // SAFETY: the kernel wrote whole events; `header` bytes at `at` lie inside
                // the `n` bytes read. The buffer has no alignment: read unaligned.
                let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(buf.as_ptr().add(at).cast()) };
                let name = &buf[(at + header).min(n)..(at + header + event.len as usize).min(n)];
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                ids.push((event.wd, name.to_vec()));
                at += header + event.len as usize;
            }
        }
    }
}

impl AsRawFd for Inotify {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_created_or_moved_into_a_watched_directory_is_an_event_of_its_watch() {
        let root = tempfile::tempdir().unwrap();
        let (a, b) = (root.path().join("a"), root.path().join("b"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        let inotify = Inotify::new().unwrap();
        let wa = inotify.watch_new_files(&a).unwrap();
        let wb = inotify.watch_new_files(&b).unwrap();
        assert_eq!(inotify.watch_new_files(&a).unwrap(), wa, "one directory, one watch");
        assert!(inotify.drain().unwrap().is_empty());
        std::fs::write(a.join("x.req"), b"").unwrap();
        assert_eq!(inotify.drain().unwrap(), vec![(wa, b"x.req".to_vec())]);
        std::fs::write(root.path().join("y.tmp"), b"").unwrap();
        std::fs::rename(root.path().join("y.tmp"), b.join("a-longer-name.req")).unwrap();
        assert_eq!(inotify.drain().unwrap(), vec![(wb, b"a-longer-name.req".to_vec())]);
        std::fs::write(a.join("x.req"), b"again").unwrap();
        assert!(
            inotify.drain().unwrap().is_empty(),
            "a write to an existing file is not a new file"
        );
        inotify.unwatch(wa);
        std::fs::write(a.join("z.req"), b"").unwrap();
        // Only the kernel's notice that the watch went (IN_IGNORED, no name).
        assert_eq!(inotify.drain().unwrap(), vec![(wa, Vec::new())], "unwatched");
        assert!(inotify.watch_new_files(&root.path().join("missing")).is_err());
    }
}
