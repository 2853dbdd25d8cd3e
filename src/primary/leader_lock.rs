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
//!
//! The lock file can be removed under running processes (`rm -rf app.db-litestream`, a
//! clean-up script): each process then holds a lock on a file nobody else can open, and
//! the next process to open the database would make a new one and lead beside the
//! process replicating now. So every use compares the file held with the one at the
//! path; a changed one is opened again, the old one kept open (processes that have not
//! noticed yet still see it held), and the process that leads takes the new one too
//! ([`LeaderLock::keep`], each few seconds).
//!
//! Builds before 2026-12-04 04:43 took the same file with `flock`, which Linux keeps
//! apart from OFD locks: an old and a new process each held "the" lock and both
//! replicated into one replica during a rolling restart (a tester measured acknowledged
//! commits missing from every restore, and restores to acknowledged TXIDs malformed).
//! So the leader holds a `flock` on the file too, and a process finding no OFD holder
//! also asks `flock` before it concludes nobody leads.
//!
//! Builds before 2026-12-06 04:44 kept the lock file in the staging directory, which
//! `staging=` or `LITESTREAM_STAGING_DIR` can put elsewhere: such a process and this one,
//! with the same setting, each held a lock of their own. So a process whose settings name
//! another staging directory also holds `<staging>/lock` (OFD and `flock`, as those builds
//! took it) while it leads, and counts it as held when another holds it
//! ([`LeaderLock::also_guard`]; one more descriptor, only with such a setting).

use crate::file_modes::FileModes;
use crate::vfs::sys::fork;
use crate::vfs::sys::ofd_lock;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};

/// A child of `fork()` shares the parent's open file description, and so its lock: it
/// must never unlock it (the parent would replicate without it, beside a taker), nor
/// keep it open (it would outlive the parent, and nobody could take over). The first
/// use in a child closes the child's descriptors, which leaves the lock to the parent.
pub struct LeaderLock {
    files: Mutex<Files>,
    path: PathBuf,
    modes: FileModes,
    /// The fork epoch the lock file was opened in.
    epoch: u64,
}

#[derive(Default)]
struct Files {
    /// The file at the path when last looked; `None` once closed in a child.
    current: Option<File>,
    /// Files this process opened before that were removed or replaced since.
    replaced: Vec<File>,
    /// This process leads, but another holds the lock on the file at the path.
    lost: bool,
    /// This process holds the `flock` on `current` (it leads).
    flocked: bool,
    /// `<staging>/lock`, where builds before 2026-12-06 took the lock, when the staging
    /// settings name a directory other than the lock's.
    legacy: Option<File>,
    legacy_path: Option<PathBuf>,
}

impl Files {
    fn all(&self) -> impl Iterator<Item = &File> {
        self.current.iter().chain(&self.replaced)
    }

    /// The old builds' lock file in the staging directory, opened if it exists, or
    /// made (with the staging directory) when `create`.
    fn legacy(&mut self, modes: FileModes, create: bool) -> Result<Option<&File>, String> {
        if self.legacy.is_none() {
            let Some(path) = self.legacy_path.as_ref() else {
                return Ok(None);
            };
            let opened = match create {
                true => path
                    .parent()
                    .map_or(Ok(()), |dir| modes.create_dir_all(dir))
                    .and_then(|()| modes.open_or_create(path)),
                false => File::options().read(true).write(true).open(path),
            };
            match opened {
                Ok(file) => self.legacy = Some(file),
                Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(self.legacy.as_ref())
    }
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
            .map_err(|e| crate::file_modes::unwritable_hint(&e, &path))?;
        Ok(LeaderLock {
            files: Mutex::new(Files {
                current: Some(file),
                ..Files::default()
            }),
            path,
            modes,
            epoch: fork::epoch(),
        })
    }

    /// Opened by the parent of this process, before a `fork()`.
    #[inline]
    pub fn inherited(&self) -> bool {
        self.epoch != fork::epoch()
    }

    /// Also guards `<staging_dir>/lock`, where builds before 2026-12-06 took the lock
    /// with these settings, unless that is the lock file itself. Opened when this
    /// process takes the lock, or when it exists (an old build made it), so a follower
    /// of a process with other settings makes nothing in a directory it does not use.
    pub fn also_guard(&self, staging_dir: &Path) {
        let path = staging_dir.join("lock");
        let same = match (
            std::fs::metadata(staging_dir),
            self.path.parent().map(std::fs::metadata),
        ) {
            (Ok(a), Some(Ok(b))) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        if let (false, Some((mut files, _))) = (same, self.files()) {
            files.legacy_path = Some(path);
        }
    }

    /// The lock files, while this is the process that opened them, the one at the path
    /// opened again if it was removed or replaced (`true` then).
    fn files(&self) -> Option<(MutexGuard<'_, Files>, bool)> {
        if self.inherited() {
            self.forget_inherited();
            return None;
        }
        let mut files = self.files.lock().unwrap_or_else(|p| p.into_inner());
        let moved = match &files.current {
            Some(file) => self.is_replaced(file),
            None => return Some((files, false)),
        };
        if moved {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            match self
                .modes
                .create_dir_all(dir)
                .and_then(|()| self.modes.open_or_create(&self.path))
            {
                Ok(file) => {
                    tracing::warn!(
                        lock = %self.path.display(),
                        "the replication lock file was removed or replaced under this process: opened it again"
                    );
                    let old = files.current.replace(file).expect("checked");
                    files.replaced.push(old);
                }
                Err(e) => tracing::warn!("the replication lock file {} is gone: {e}", self.path.display()),
            }
        }
        Some((files, moved))
    }

    /// Whether the file at the path is not `file` any more.
    fn is_replaced(&self, file: &File) -> bool {
        match (file.metadata(), std::fs::metadata(&self.path)) {
            (Ok(held), Ok(now)) => (held.dev(), held.ino()) != (now.dev(), now.ino()),
            (Ok(_), Err(e)) => e.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// Takes the lock if no process holds it; true if this process holds it now, and is
    /// opening until [`LeaderLock::opened`] or [`LeaderLock::release`].
    pub fn try_acquire(&self) -> Result<bool, String> {
        let Some((mut files, _)) = self.files() else {
            return Ok(false);
        };
        let files = &mut *files;
        let Some(file) = files.current.as_ref() else {
            return Ok(false);
        };
        // A process still holding a removed file leads: it takes the new one at its
        // next `keep`.
        if files.replaced.iter().any(|old| conflicts(old, START, LEN)) {
            return Ok(false);
        }
        let err = |e: std::io::Error| format!("taking the replication lock: {e}");
        // Another process's try holds "opening" for a moment even when it then finds the
        // lock taken: a few short retries keep a takeover from waiting for a next turn.
        for attempt in 0..5 {
            if ofd_lock::try_write_lock(file, OPENING, 1).map_err(err)? {
                if ofd_lock::try_write_lock(file, START, LEN).map_err(err)? {
                    if !take_flock_held_for_good(file) {
                        tracing::warn!(
                            lock = %self.path.display(),
                            "a process of a build before 2026-12-04 replicates this database (it holds the lock \
                             file with flock): following it; restart every process of the database on this build"
                        );
                        let _ = ofd_lock::unlock(file, START, LEN + 1);
                        return Ok(false);
                    }
                    files.flocked = true;
                    // With `staging=`, also the file builds before 2026-12-06 took.
                    let legacy = files.legacy(self.modes, true).map(|l| l.is_none_or(take_legacy));
                    if legacy != Ok(true) {
                        let file = files.current.as_ref().expect("checked");
                        let _ = file.unlock();
                        files.flocked = false;
                        let _ = ofd_lock::unlock(file, START, LEN + 1);
                        if let Err(e) = legacy {
                            return Err(format!("taking the replication lock: {e}"));
                        }
                        tracing::warn!(
                            lock = %self.path.display(),
                            "a process of a build before 2026-12-06 replicates this database (it holds the lock \
                             file in the staging directory): following it; restart every process of the database \
                             on this build"
                        );
                        return Ok(false);
                    }
                    // Best effort: processes that still look at a removed file see it.
                    for old in &files.replaced {
                        let _ = ofd_lock::try_write_lock(old, START, LEN);
                    }
                    return Ok(true);
                }
                let _ = ofd_lock::unlock(file, OPENING, 1);
                return Ok(false);
            }
            if attempt == 4 || conflicts(file, START, LEN) {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Ok(false)
    }

    /// The leader's check, each few seconds: if the lock file was removed or replaced,
    /// take the new one as well. `Ok(true)` when it did (the caller says again that it
    /// leads); an error, once, when another process holds the new one.
    pub fn keep(&self) -> Result<bool, String> {
        let Some((mut files, moved)) = self.files() else {
            return Ok(false);
        };
        let Some(file) = files.current.as_ref() else {
            return Ok(false);
        };
        // Taking a lock this description holds again is a no-op that succeeds.
        match ofd_lock::try_write_lock(file, START, LEN) {
            Ok(true) => {
                if moved {
                    files.flocked = take_flock(file);
                }
                Ok(std::mem::replace(&mut files.lost, false) || moved)
            }
            Ok(false) if files.lost => Ok(false),
            Ok(false) => {
                files.lost = true;
                Err(format!(
                    "the replication lock file {} was removed under this process, which replicates the \
                     database, and another process took the new one: two processes may replicate it now (the \
                     replica's conditional writes stop the second); do not remove the -litestream directory \
                     while the database is open",
                    self.path.display()
                ))
            }
            Err(e) => Err(format!("taking the replication lock again: {e}")),
        }
    }

    /// This process's open of replication is done: processes waiting for it go on.
    pub fn opened(&self) {
        if let Some((files, _)) = self.files() {
            for file in files.current.iter() {
                if let Err(e) = ofd_lock::unlock(file, OPENING, 1) {
                    tracing::warn!("releasing the replication lock's opening byte: {e}");
                }
            }
        }
    }

    /// Lets another process take the lock. The `flock` goes first: let go after the
    /// range, a process taking the range in between found it still held and warned that
    /// a process of an old build replicated, telling the operator to restart every process
    /// (a tester, with processes opening and closing in turn).
    pub fn release(&self) {
        if let Some((mut files, _)) = self.files() {
            if std::mem::replace(&mut files.flocked, false) {
                if let Some(file) = files.current.as_ref() {
                    let _ = file.unlock();
                }
                if let Some(legacy) = files.legacy.as_ref() {
                    let _ = legacy.unlock();
                    let _ = ofd_lock::unlock(legacy, START, LEN);
                }
            }
            for file in files.all() {
                if let Err(e) = ofd_lock::unlock(file, START, LEN + 1) {
                    tracing::warn!("releasing the replication lock: {e}");
                }
            }
        }
    }

    /// True when another process (or another open of the lock file) holds it; false
    /// too when the kernel cannot say. In a child of the process that opened it: true
    /// (the parent's until it says otherwise).
    pub fn held_by_another(&self) -> bool {
        match self.files() {
            Some((mut files, _)) if files.current.is_some() => {
                let flocked = files.flocked;
                files.all().any(|f| conflicts(f, START, LEN))
                    || (!flocked && files.current.as_ref().is_some_and(flocked_by_another))
                    || files
                        .legacy(self.modes, false)
                        .ok()
                        .flatten()
                        .is_some_and(|f| conflicts(f, START, LEN) || (!flocked && flocked_by_another(f)))
            }
            Some(_) => true,
            // A child's descriptors were its parent's and are closed (`forget_inherited`):
            // asked through one opened for the question (the file is ours, not SQLite's,
            // and closing a descriptor drops no OFD or `flock` lock). Taken as held
            // before, a child whose parent had closed or died was told it followed it.
            None => match crate::file_modes::open_read(&self.path) {
                Ok(f) => conflicts(&f, START, LEN) || flocked_by_another(&f),
                Err(_) => false,
            },
        }
    }

    /// True while another process that holds (or is taking) the lock has not finished
    /// opening replication; false too when the kernel cannot say.
    pub fn opening_by_another(&self) -> bool {
        match self.files() {
            Some((files, _)) => files.current.as_ref().is_some_and(|f| conflicts(f, OPENING, 1)),
            _ => false,
        }
    }

    /// In a child of `fork()`: closes the child's descriptors of the lock files, unless
    /// a thread of the parent held their mutex at the fork (copied locked: then they stay).
    pub fn forget_inherited(&self) {
        let files = match self.files.try_lock() {
            Ok(files) => Some(files),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if let Some(mut files) = files {
            *files = Files::default();
        }
    }
}

/// Takes the `flock` a build before 2026-12-04 took as its lock; false only when another
/// holds it (a file system without `flock` counts as free).
fn take_flock(file: &File) -> bool {
    !matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}

/// [`take_flock`], tried for a few milliseconds: a follower's check for an old build
/// (`flocked_by_another`) holds the `flock` for an instant, and one refusal is not an old
/// build leading.
fn take_flock_held_for_good(file: &File) -> bool {
    for _ in 0..20 {
        if take_flock(file) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

/// Takes `<staging>/lock` as builds before 2026-12-06 took theirs (OFD lock on the first
/// byte, and `flock` before 2026-12-04); false, holding neither, when another holds one.
fn take_legacy(file: &File) -> bool {
    if !ofd_lock::try_write_lock(file, START, LEN).unwrap_or(true) {
        return false;
    }
    if take_flock(file) {
        return true;
    }
    let _ = ofd_lock::unlock(file, START, LEN);
    false
}

/// Whether another description holds the `flock` (an old build leading): asked by taking
/// it and letting it go at once, which only a process of such a build trying in that
/// instant notices (it follows for a turn).
fn flocked_by_another(file: &File) -> bool {
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(_) => false,
    }
}

/// Whether another open file description holds a lock on the range; false when the
/// kernel cannot say.
fn conflicts(file: &File, start: i64, len: i64) -> bool {
    ofd_lock::write_lock_conflicts(file, start, len).unwrap_or(false)
}

#[cfg(test)]
#[path = "leader_lock_tests.rs"]
mod tests;
