//! Whether a database a restore would replace is open somewhere. Replacing an open
//! database's file and deleting its `-wal` and `-shm` corrupts it: the processes that have
//! it open keep reading and writing the old file through their descriptors and write
//! their next commits into a new WAL that the new file then takes for its own (measured:
//! `litestream_restore(..., 'overwrite')` over the database of its own connection left a
//! database without its tables). SQLite holds a lock on the file (and its `-shm`) for as
//! long as a connection has it open, so the kernel's lock table (`/proc/locks`) tells,
//! read by path: no descriptor of ours on a file another connection of this process may
//! hold locks on (closing one would drop them).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A process holding a lock on one of a database's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// As `/proc/locks` gives it (`-1` where the holder is outside this PID namespace or
    /// the lock belongs to an open file description rather than a process).
    pub pid: i64,
    pub file: PathBuf,
}

/// The first lock `locks` (the text of `/proc/locks`) lists on any of `files` (path and
/// inode number). Matched on the inode number alone: `/proc/locks` names the device as
/// the kernel sees it, which is not always `st_dev` (btrfs subvolumes), and a refusal
/// for an unrelated file of the same inode number elsewhere costs a message, not data.
fn first_holder(locks: &str, files: &[(PathBuf, u64)]) -> Option<Holder> {
    locks.lines().find_map(|line| {
        // "1: POSIX  ADVISORY  READ 1234 fe:00:5678 1073741826 1073742335"; a waiter's
        // line has "->" after the number and holds nothing yet.
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 6 || fields[1] == "->" {
            return None;
        }
        let ino: u64 = fields[5].rsplit(':').next()?.parse().ok()?;
        let (file, _) = files.iter().find(|(_, i)| *i == ino)?;
        Some(Holder {
            pid: fields[4].parse().unwrap_or(-1),
            file: file.clone(),
        })
    })
}

/// A process holding a lock on `db` or its `-wal`/`-shm`, if any; `None` also when the
/// lock table cannot be read (not Linux), where nothing can be told.
pub fn holder(db: &Path, companions: &[PathBuf]) -> Option<Holder> {
    let files: Vec<(PathBuf, u64)> = std::iter::once(db.to_path_buf())
        .chain(companions.iter().cloned())
        .filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m.ino())))
        .collect();
    if files.is_empty() {
        return None;
    }
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    first_holder(&locks, &files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_on_the_database_or_its_shm_names_its_holder_and_waiters_do_not_count() {
        let files = vec![(PathBuf::from("app.db"), 5678), (PathBuf::from("app.db-shm"), 91)];
        let locks = "1: POSIX  ADVISORY  READ 1234 fe:00:1111 128 128\n\
                     2: -> POSIX  ADVISORY  WRITE 77 fe:00:5678 0 EOF\n\
                     3: OFDLCK ADVISORY  READ -1 fe:00:91 128 128\n";
        assert_eq!(
            first_holder(locks, &files),
            Some(Holder {
                pid: -1,
                file: PathBuf::from("app.db-shm")
            })
        );
        let db_locked = "4: POSIX  ADVISORY  READ 42 08:01:5678 1073741826 1073742335\n";
        assert_eq!(first_holder(db_locked, &files).map(|h| h.pid), Some(42));
        assert_eq!(
            first_holder("1: POSIX  ADVISORY  READ 1234 fe:00:1111 128 128\n", &files),
            None
        );
        assert_eq!(first_holder("", &files), None);
    }

    #[test]
    fn a_database_open_in_this_process_is_found_in_use() {
        let dir = std::env::temp_dir().join(format!("in-use-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("app.db");
        std::fs::write(&db, b"").unwrap();
        assert_eq!(holder(&db, &[]), None);
        // A lock on the file, as SQLite keeps one while a connection has it open.
        let file = std::fs::File::options().read(true).write(true).open(&db).unwrap();
        assert!(crate::vfs::sys::ofd_lock::try_write_lock(&file, 0, 1).unwrap());
        let found = holder(&db, &[]).expect("the lock is listed");
        assert_eq!(found.file, db);
        drop(file);
        assert_eq!(holder(&db, &[]), None, "closing the file released it");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
