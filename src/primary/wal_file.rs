//! Reading the WAL through an ordinary file handle (startup, snapshots).

use super::capture::WalSource;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The `-wal` file of a database, or an empty one when it does not exist.
pub struct WalFile {
    path: PathBuf,
    file: Option<File>,
}

impl WalFile {
    pub fn open(db_path: &Path) -> io::Result<WalFile> {
        let mut name = db_path.as_os_str().to_owned();
        name.push("-wal");
        let path = PathBuf::from(name);
        let file = open_if_there(&path)?;
        Ok(WalFile { path, file })
    }
}

fn open_if_there(path: &Path) -> io::Result<Option<File>> {
    // As SQLite opens it: a link there is not followed.
    match crate::file_modes::open_read(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl WalSource for WalFile {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let Some(file) = &self.file else { return Ok(false) };
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A descriptor keeps a deleted WAL readable: a process whose last connection closed
    /// deletes it, and the next opener creates another at the path. Held across a
    /// follow's rounds (a takeover reading the records while other processes open and
    /// close the database in turn), the old file's header never changed, and capture,
    /// moved on by the records, was called apart from the WAL: a needless snapshot.
    fn look_again(&mut self) -> io::Result<bool> {
        let at_path = match fs::metadata(&self.path) {
            Ok(m) => Some((m.dev(), m.ino())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let held = match &self.file {
            Some(f) => {
                let m = f.metadata()?;
                Some((m.dev(), m.ino()))
            }
            None => None,
        };
        if at_path == held {
            return Ok(false);
        }
        self.file = open_if_there(&self.path)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(wal: &mut WalFile) -> Option<[u8; 4]> {
        let mut buf = [0u8; 4];
        wal.read_exact_at(0, &mut buf).unwrap().then_some(buf)
    }

    #[test]
    fn looking_again_reads_the_wal_created_after_the_one_opened_was_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let wal_path = dir.path().join("app.db-wal");
        fs::write(&wal_path, b"old!").unwrap();
        let mut wal = WalFile::open(&db).unwrap();
        assert!(!wal.look_again().unwrap(), "the same file");
        fs::remove_file(&wal_path).unwrap();
        assert_eq!(header(&mut wal), Some(*b"old!"), "a deleted file stays readable");
        assert!(wal.look_again().unwrap());
        assert_eq!(header(&mut wal), None, "no WAL at the path");
        fs::write(&wal_path, b"new!").unwrap();
        assert!(wal.look_again().unwrap());
        assert_eq!(header(&mut wal), Some(*b"new!"));
        assert!(!wal.look_again().unwrap());
    }
}
