//! The level cache: local copies of the LTX files this process wrote (level-0 uploads,
//! compaction outputs), so that the next level's merge reads them from disk instead of
//! downloading them.

use crate::file_modes::FileModes;
use crate::ltx::{format_name, parse_name};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Local copies of files this process wrote, kept until the next level has consumed
/// them: `<staging>/levels/<level>/<name>`, for level 0 and every level below the top of
/// the ladder.
pub struct LevelCache {
    dir: PathBuf,
    /// The database's permissions: cached files hold its pages.
    modes: FileModes,
}

impl LevelCache {
    /// Opens the cache for a ladder of `levels` levels (level 0 to `levels - 1` cached).
    pub fn open(staging_dir: &Path, modes: FileModes, levels: usize) -> io::Result<LevelCache> {
        let dir = staging_dir.join("levels");
        modes.create_dir_all(staging_dir)?;
        modes.own_dir(&dir)?;
        for level in 0..levels.max(1) as u8 {
            let d = dir.join(level.to_string());
            modes.own_dir(&d)?;
            for entry in fs::read_dir(&d)? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "tmp") {
                    fs::remove_file(&path)?;
                }
            }
        }
        Ok(LevelCache { dir, modes })
    }

    fn path(&self, level: u8, min_txid: u64, max_txid: u64) -> PathBuf {
        self.dir.join(level.to_string()).join(format_name(min_txid, max_txid))
    }

    /// Moves a file that was just uploaded at `level` into the cache (a rename: the
    /// staged file is on the same filesystem).
    pub fn adopt(&self, level: u8, min_txid: u64, max_txid: u64, file: &Path) -> io::Result<()> {
        fs::rename(file, self.path(level, min_txid, max_txid))
    }

    /// Writes a copy durably enough for a cache: temp file, then rename. A crash leaves
    /// either the whole file or none (and the store has it anyway).
    pub fn write(&self, level: u8, min_txid: u64, max_txid: u64, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(level, min_txid, max_txid);
        let tmp = path.with_extension("tmp");
        self.modes.write_file(&tmp, bytes)?;
        fs::rename(&tmp, &path)
    }

    pub fn read(&self, level: u8, min_txid: u64, max_txid: u64) -> Option<Vec<u8>> {
        fs::read(self.path(level, min_txid, max_txid)).ok()
    }

    /// The first 100 bytes (the header) of a cached file.
    pub fn read_head(&self, level: u8, min_txid: u64, max_txid: u64) -> Option<Vec<u8>> {
        let mut head = vec![0u8; 100];
        self.open_file(level, min_txid, max_txid)?.read_exact(&mut head).ok()?;
        Some(head)
    }

    pub fn open_file(&self, level: u8, min_txid: u64, max_txid: u64) -> Option<fs::File> {
        fs::File::open(self.path(level, min_txid, max_txid)).ok()
    }

    /// Removes cached files of `level` that end at or before `txid`.
    pub fn prune(&self, level: u8, txid: u64) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.dir.join(level.to_string()))? {
            let entry = entry?;
            let Some((_, max)) = entry.file_name().to_str().and_then(|n| parse_name(n).ok()) else {
                continue;
            };
            if max <= txid {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_files_and_level_directories_are_no_more_open_than_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LevelCache::open(dir.path(), FileModes::bits(0o600), 3).unwrap();
        cache.write(1, 1, 4, b"ltx").unwrap();
        let mode = |p: PathBuf| crate::file_modes::permission_bits(&p).unwrap();
        assert_eq!(mode(dir.path().join("levels")), 0o700);
        assert_eq!(mode(dir.path().join("levels/1")), 0o700);
        assert_eq!(mode(cache.path(1, 1, 4)), 0o600);
    }
}
