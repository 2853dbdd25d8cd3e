//! A staging directory belongs to one database.
//!
//! Everything in it is that database's: the saved state, the WAL hand-off records, the
//! sync requests of followers. Two databases given one directory (`staging=` on both,
//! or `LITESTREAM_STAGING_DIR` set for every process of a machine) shared the
//! replication lock when it lived there, so the second was taken for a follower of the
//! first: never replicated, its
//! `litestream_sync()` answered with the first one's TXIDs, and its hand-off records
//! read as the first one's (a snapshot of the first). The directory now names its
//! database in `database`, written by the first open: its path and its file's device and
//! inode. An open of a database that matches neither is refused: the path alone would
//! refuse the same file seen through another mount (two containers sharing a volume),
//! the inode alone a database restored into a new file.
//!
//! The default directory (`<db>-litestream`, beside the database) is not checked: it is
//! named after its database, and moving the two together must keep working.

use crate::config::default_staging_dir;
use crate::file_modes::FileModes;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

const OWNER_FILE: &str = "database";

/// Records `db_path` as the owner of `dir` (already created), or checks that it is.
pub fn claim(dir: &Path, db_path: &Path, modes: FileModes) -> Result<(), String> {
    if dir == default_staging_dir(db_path) {
        return Ok(());
    }
    let ours = Owner::of(db_path);
    let path = dir.join(OWNER_FILE);
    // Created exclusively: of two first opens of two databases, one names itself.
    match write_new(&path, &ours, modes) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("staging directory {}: {e}", dir.display())),
    }
    let owner = read_owner(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if owner.path == ours.path || (owner.file.is_some() && owner.file == ours.file) {
        return Ok(());
    }
    Err(format!(
        "staging directory {} belongs to the database {}, not {}: every database needs a \
         staging directory of its own (give each its own staging=, or leave staging and \
         LITESTREAM_STAGING_DIR unset for <database>-litestream beside each); if {} is that \
         database moved, remove {}",
        dir.display(),
        owner.path,
        ours.path,
        ours.path,
        path.display()
    ))
}

/// A database as `<dir>/database` names it: its canonical path, then its file's device
/// and inode (`-` when unknown), one per line.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    path: String,
    file: Option<(u64, u64)>,
}

impl Owner {
    fn of(db_path: &Path) -> Owner {
        use std::os::unix::fs::MetadataExt;
        let path = fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
        Owner {
            path: path.to_string_lossy().into_owned(),
            file: fs::metadata(db_path).ok().map(|m| (m.dev(), m.ino())),
        }
    }

    fn text(&self) -> String {
        match self.file {
            Some((dev, ino)) => format!("{}\n{dev} {ino}\n", self.path),
            None => format!("{}\n-\n", self.path),
        }
    }

    /// `None` until both lines are there.
    fn parse(text: &str) -> Option<Owner> {
        let (path, rest) = text.split_once('\n')?;
        let file = rest.strip_suffix('\n')?;
        let file = file
            .split_once(' ')
            .and_then(|(d, i)| Some((d.parse().ok()?, i.parse().ok()?)));
        Some(Owner {
            path: path.to_string(),
            file,
        })
    }
}

/// The owner; a file being written by a concurrent first open is waited for.
fn read_owner(path: &Path) -> io::Result<Owner> {
    for _ in 0..100 {
        if let Some(owner) = Owner::parse(&crate::file_modes::read_to_string(path)?) {
            return Ok(owner);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(io::Error::other("unfinished (not two lines after a second)"))
}

fn write_new(path: &Path, owner: &Owner, modes: FileModes) -> io::Result<()> {
    let mut file = modes.create_new(path)?;
    file.write_all(owner.text().as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_staging_directory_serves_the_database_that_first_used_it_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("stage");
        fs::create_dir(&staging).unwrap();
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        fs::write(&a, b"").unwrap();
        fs::write(&b, b"").unwrap();
        claim(&staging, &a, FileModes::NewDatabase).unwrap();
        claim(&staging, &a, FileModes::NewDatabase).unwrap();
        let err = claim(&staging, &b, FileModes::NewDatabase).unwrap_err();
        assert!(err.contains("belongs to the database") && err.contains("a.db"), "{err}");
        assert!(err.contains("b.db"), "{err}");
    }

    #[test]
    fn the_same_database_file_under_another_path_is_its_owner() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().join("stage");
        fs::create_dir(&staging).unwrap();
        let a = dir.path().join("a.db");
        fs::write(&a, b"").unwrap();
        claim(&staging, &a, FileModes::NewDatabase).unwrap();
        // Another mount of the same file system shows another path for the same file: a
        // hard link stands in for it here.
        let elsewhere = dir.path().join("mnt");
        fs::create_dir(&elsewhere).unwrap();
        fs::hard_link(&a, elsewhere.join("a.db")).unwrap();
        claim(&staging, &elsewhere.join("a.db"), FileModes::NewDatabase).unwrap();
        // The same path holding a new file (a restore) is its owner too.
        fs::remove_file(&a).unwrap();
        fs::write(&a, b"restored").unwrap();
        claim(&staging, &a, FileModes::NewDatabase).unwrap();
    }

    #[test]
    fn the_default_staging_directory_is_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let staging = default_staging_dir(&db);
        fs::create_dir(&staging).unwrap();
        claim(&staging, &db, FileModes::NewDatabase).unwrap();
        assert!(!staging.join(OWNER_FILE).exists());
    }
}
