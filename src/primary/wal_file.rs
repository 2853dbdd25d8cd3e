//! Reading the WAL through an ordinary file handle (startup, snapshots).

use super::capture::WalSource;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The `-wal` file of a database, or an empty one when it does not exist.
pub struct WalFile(Option<File>);

impl WalFile {
    pub fn open(db_path: &Path) -> io::Result<WalFile> {
        let mut name = db_path.as_os_str().to_owned();
        name.push("-wal");
        match File::open(&name) {
            Ok(f) => Ok(WalFile(Some(f))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(WalFile(None)),
            Err(e) => Err(e),
        }
    }
}

impl WalSource for WalFile {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<bool> {
        let Some(file) = &self.0 else { return Ok(false) };
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }
}
