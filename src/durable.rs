//! Durability of the files we write (staging, state, restores): a rename or a new file
//! survives a power loss only once its directory is synced too. Shared by the primary
//! and by restore, which serves both roles.

use std::fs;
use std::io;
use std::path::Path;

/// Makes a rename (or a file created) in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
