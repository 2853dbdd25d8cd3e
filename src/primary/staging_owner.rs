//! A staging directory belongs to one database.
//!
//! Everything in it is that database's: the replication lock, the saved state, the WAL
//! hand-off records, `leader.json`. Two databases given one directory (`staging=` on
//! both, or `LITESTREAM_STAGING_DIR` set for every process of a machine) shared the
//! lock, so the second was taken for a follower of the first: never replicated, its
//! `litestream_sync()` answered with the first one's TXIDs, and its hand-off records
//! read as the first one's (a snapshot of the first). The directory now names its
//! database in `database`, written by the first open; an open of another database
//! there is refused.
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
    let ours = fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
    let ours = ours.to_string_lossy().into_owned();
    let path = dir.join(OWNER_FILE);
    // Created exclusively: of two first opens of two databases, one names itself.
    match write_new(&path, &ours, modes) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("staging directory {}: {e}", dir.display())),
    }
    let owner = read_owner(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if owner == ours {
        return Ok(());
    }
    Err(format!(
        "staging directory {} belongs to the database {owner}, not {ours}: every database needs a \
         staging directory of its own (give each its own staging=, or leave staging and \
         LITESTREAM_STAGING_DIR unset for <database>-litestream beside each); if {ours} is that \
         database moved, remove {}",
        dir.display(),
        path.display()
    ))
}

/// The owner's path; a file being written by a concurrent first open is waited for.
fn read_owner(path: &Path) -> io::Result<String> {
    for _ in 0..100 {
        let text = fs::read_to_string(path)?;
        if let Some(owner) = text.strip_suffix('\n') {
            return Ok(owner.to_string());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Err(io::Error::other("unfinished (no newline after a second)"))
}

fn write_new(path: &Path, owner: &str, modes: FileModes) -> io::Result<()> {
    let mut file = modes.create_new(path)?;
    file.write_all(format!("{owner}\n").as_bytes())?;
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
    fn the_default_staging_directory_is_not_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let staging = default_staging_dir(&db);
        fs::create_dir(&staging).unwrap();
        claim(&staging, &db, FileModes::NewDatabase).unwrap();
        assert!(!staging.join(OWNER_FILE).exists());
    }
}
