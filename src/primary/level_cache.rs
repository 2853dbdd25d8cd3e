//! The level cache: local copies of the LTX files this process wrote (level-0 uploads,
//! compaction outputs), so that the next level's merge reads them from disk instead of
//! downloading them. Also where a merge writes its output before the PUT, and how a
//! large file goes to the store without a heap copy ([`file_bytes`]).

use crate::file_modes::FileModes;
use crate::ltx::{format_name, parse_name};
use crate::vfs::sys::file_map::map_unchanging;
use bytes::Bytes;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Files at least this big are mapped by [`file_bytes`] rather than read: a level-0 batch
/// is usually far smaller, and reading it is one system call where a mapping is two and
/// a page fault per page.
const MAP_AT_LEAST: u64 = 1 << 20;

/// The bytes of a file this process wrote and no one changes any more (a staged file, a
/// merge's output), for a PUT, which takes its whole body. Large files are mapped: the
/// body is then page cache the kernel can drop and read again, not anonymous memory the
/// size of the file (a snapshot is the size of the database).
pub fn file_bytes(path: &Path) -> io::Result<Bytes> {
    let mut file = crate::file_modes::open_read(path)?;
    let len = file.metadata()?.len();
    if len < MAP_AT_LEAST {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        return Ok(Bytes::from(buf));
    }
    // Mapping is sound only while no one writes or truncates the file: these are
    // immutable once named (the reasons are at `map_unchanging`, with its `unsafe`).
    let map = map_unchanging(&file)?;
    Ok(Bytes::from_owner(map))
}

/// A file this process writes once and then hands to a PUT (a merge's output, a
/// reseed's snapshot): removed when dropped (errors and panics too) unless
/// [`TempOutput::rename_to`] moved it where it is kept. Its name,
/// `<label>-<pid>-<n>.tmp`, is unique in the process, so a new one never replaces a file
/// an earlier PUT may still map; one a crash left is swept by the `open` of its
/// directory ([`LevelCache::open`], `Staging::open`).
pub struct TempOutput {
    path: PathBuf,
    kept: bool,
}

impl TempOutput {
    /// A new one in `dir`, with `modes`' permissions (it holds the database's pages).
    pub fn create(dir: &Path, label: &str, modes: &FileModes) -> io::Result<(TempOutput, fs::File)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{label}-{}-{n}.tmp", std::process::id()));
        let file = modes.create_file(&path)?;
        Ok((TempOutput { path, kept: false }, file))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` is a temporary file a crash left: any `.tmp` but a [`TempOutput`]
    /// of this process, which may be alive (a database closed and opened again while its
    /// last turn still writes or uploads one). What `open`s of its directories sweep.
    pub fn is_leftover(path: &Path) -> bool {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let Some(stem) = name.strip_suffix(".tmp") else {
            return false;
        };
        let mut parts = stem.rsplitn(3, '-');
        let (_n, pid, label) = (parts.next(), parts.next(), parts.next());
        !(label.is_some() && pid == Some(std::process::id().to_string().as_str()))
    }

    /// Its bytes for the PUT ([`file_bytes`]).
    pub fn bytes(&self) -> io::Result<Bytes> {
        file_bytes(&self.path)
    }

    /// Moves it to `dest`, where it is kept (a rename: a mapping of it stays valid).
    pub fn rename_to(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.kept = true;
        Ok(())
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.kept {
            if let Err(e) = fs::remove_file(&self.path) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!("removing {}: {e}", self.path.display());
                }
            }
        }
    }
}

/// Local copies of files this process wrote, kept until the next level has consumed
/// them: `<staging>/levels/<level>/<name>`, for level 0 and every level below the top of
/// the ladder. A clone is another handle on the same directories (no sweep).
#[derive(Clone)]
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
        // Merge outputs a crash left (`TempOutput`), then each level's cache writes.
        let mut dirs = vec![dir.clone()];
        for level in 0..levels.max(1) as u8 {
            let d = dir.join(level.to_string());
            modes.own_dir(&d)?;
            dirs.push(d);
        }
        for d in dirs {
            for entry in fs::read_dir(&d)? {
                let path = entry?.path();
                if TempOutput::is_leftover(&path) {
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

    /// A new file for a merge's output ([`TempOutput`]).
    pub fn merge_output(&self) -> io::Result<(TempOutput, fs::File)> {
        TempOutput::create(&self.dir, "merge", &self.modes)
    }

    /// Moves a merge's output into the cache as the file of `level` for this range.
    pub fn keep(&self, output: TempOutput, level: u8, min_txid: u64, max_txid: u64) -> io::Result<()> {
        output.rename_to(&self.path(level, min_txid, max_txid))
    }

    pub fn read(&self, level: u8, min_txid: u64, max_txid: u64) -> Option<Vec<u8>> {
        crate::file_modes::read(&self.path(level, min_txid, max_txid)).ok()
    }

    /// The first 100 bytes (the header) of a cached file.
    pub fn read_head(&self, level: u8, min_txid: u64, max_txid: u64) -> Option<Vec<u8>> {
        let mut head = vec![0u8; 100];
        self.open_file(level, min_txid, max_txid)?.read_exact(&mut head).ok()?;
        Some(head)
    }

    pub fn open_file(&self, level: u8, min_txid: u64, max_txid: u64) -> Option<fs::File> {
        crate::file_modes::open_read(&self.path(level, min_txid, max_txid)).ok()
    }

    /// Removes the cached files of `level` for these ranges; how many there were.
    pub fn forget(&self, level: u8, ranges: impl Iterator<Item = (u64, u64)>) -> usize {
        ranges
            .filter(|&(min, max)| fs::remove_file(self.path(level, min, max)).is_ok())
            .count()
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
        let (output, _) = cache.merge_output().unwrap();
        assert_eq!(mode(output.path().to_path_buf()), 0o600);
    }

    /// A PUT may still hold the bytes of a file that was renamed into the cache and
    /// pruned since: a mapping outlives both, with the bytes it had.
    #[test]
    fn a_large_file_is_mapped_and_its_bytes_outlive_its_rename_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LevelCache::open(dir.path(), FileModes::NewDatabase, 3).unwrap();
        let content: Vec<u8> = (0..(MAP_AT_LEAST as usize + 12_345)).map(|i| (i % 251) as u8).collect();
        let (output, mut file) = cache.merge_output().unwrap();
        io::Write::write_all(&mut file, &content).unwrap();
        drop(file);
        let bytes = output.bytes().unwrap();
        cache.keep(output, 1, 1, 4).unwrap();
        assert!(cache.path(1, 1, 4).exists());
        assert_eq!(cache.prune(1, 4).unwrap(), 1);
        assert!(bytes[..] == content[..]);
        // Small files are read (the common level-0 batch).
        fs::write(dir.path().join("small"), b"ltx").unwrap();
        assert_eq!(file_bytes(&dir.path().join("small")).unwrap(), &b"ltx"[..]);
    }

    #[test]
    fn a_merge_output_goes_when_dropped_and_a_dead_process_leftover_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LevelCache::open(dir.path(), FileModes::NewDatabase, 3).unwrap();
        let (output, _) = cache.merge_output().unwrap();
        let path = output.path().to_path_buf();
        assert!(path.exists());
        drop(output);
        assert!(!path.exists(), "an output not kept is removed");
        // One a crash left (another pid) is swept at open; a live one of ours is not.
        let (live, _) = cache.merge_output().unwrap();
        let dead = dir.path().join("levels/merge-4194305-0.tmp");
        fs::write(&dead, b"half").unwrap();
        LevelCache::open(dir.path(), FileModes::NewDatabase, 3).unwrap();
        assert!(!dead.exists());
        assert!(live.path().exists());
    }
}
