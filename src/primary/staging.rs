//! The staging directory: LTX files written locally before upload, so that commits
//! never wait on the network and a crash loses nothing that was staged.

use crate::durable::sync_dir;
use crate::file_modes::FileModes;
use crate::ltx::{format_name, parse_name};
use crate::primary::level_cache::TempOutput;
use crate::primary::quiet_dir::QuietDir;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedFile {
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
    pub path: PathBuf,
}

/// Removes a database file and the journal/WAL/shm files SQLite may have left beside
/// it: a stale `-journal` from an interrupted copy would otherwise be rolled back into
/// the next copy made under the same name.
pub fn remove_with_companions(path: &Path) {
    let _ = fs::remove_file(path);
    for suffix in ["-journal", "-wal", "-shm"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        let _ = fs::remove_file(companion);
    }
}

pub struct Staging {
    dir: PathBuf,
    /// The database's permissions: a staged file holds its pages.
    modes: FileModes,
    /// An idle database's turns do not list an empty staging directory.
    quiet: QuietDir,
}

impl Staging {
    /// Opens (creating) `<dir>/ltx`, and removes temp files a crash left behind.
    pub fn open(dir: &Path, modes: FileModes) -> io::Result<Staging> {
        let ltx = dir.join("ltx");
        modes.create_dir_all(dir)?;
        modes.own_dir(&ltx)?;
        for entry in fs::read_dir(&ltx)? {
            let path = entry?.path();
            if TempOutput::is_leftover(&path) {
                fs::remove_file(&path)?;
            }
        }
        Ok(Staging {
            dir: ltx,
            modes,
            quiet: QuietDir::default(),
        })
    }

    /// Where staged files are (`<staging>/ltx`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the staging directory again, with the database's permissions, if it is gone:
    /// removed under a live primary by a temp cleaner or an operator, everything staged
    /// in it gone too. True when it was gone; the caller decides what covers the loss.
    pub fn recreate_if_gone(&self) -> io::Result<bool> {
        match fs::symlink_metadata(&self.dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Some(root) = self.dir.parent() {
                    self.modes.create_dir_all(root)?;
                }
                self.modes.own_dir(&self.dir)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Writes one LTX file durably under its final name.
    pub fn stage(&self, min_txid: u64, max_txid: u64, bytes: &[u8]) -> io::Result<StagedFile> {
        self.stage_with(min_txid, max_txid, |file| file.write_all(bytes))
    }

    /// Like [`Staging::stage`], with the file's bytes written by `write` to the temp
    /// file (a snapshot, encoded straight into it instead of into a buffer the size of
    /// the database). Only a file `write` finished is fsynced and named; after an error
    /// the temp file is removed, so no half file is left to upload or to sweep.
    pub fn stage_with<E: From<io::Error>>(
        &self,
        min_txid: u64,
        max_txid: u64,
        write: impl FnOnce(&mut fs::File) -> Result<(), E>,
    ) -> Result<StagedFile, E> {
        let path = self.dir.join(format_name(min_txid, max_txid));
        let tmp = path.with_extension("tmp");
        let written = self.modes.create_file(&tmp).map_err(E::from).and_then(|mut file| {
            write(&mut file)?;
            file.sync_all()?;
            Ok(file.metadata()?.len())
        });
        let size = match written.and_then(|size| Ok(fs::rename(&tmp, &path).map(|()| size)?)) {
            Ok(size) => size,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        sync_dir(&self.dir)?;
        Ok(StagedFile {
            min_txid,
            max_txid,
            size,
            path,
        })
    }

    /// A file of the staging directory that is not staged: an output on its way to the
    /// store (a reseed's level-9 snapshot), removed once dropped ([`TempOutput`]); one a
    /// crash left ends in `.tmp` and is swept by the next [`Staging::open`].
    pub fn scratch(&self, label: &str) -> io::Result<(TempOutput, fs::File)> {
        TempOutput::create(&self.dir, label, &self.modes)
    }

    /// Staged files in TXID order. Names we did not write are ignored.
    pub fn list(&self) -> io::Result<Vec<StagedFile>> {
        self.quiet.list(&self.dir, 0, || self.list_now())
    }

    fn list_now(&self) -> io::Result<Vec<StagedFile>> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some((min_txid, max_txid)) = name.to_str().and_then(|n| parse_name(n).ok()) else {
                continue;
            };
            files.push(StagedFile {
                min_txid,
                max_txid,
                size: entry.metadata()?.len(),
                path: entry.path(),
            });
        }
        files.sort_by_key(|f| f.min_txid);
        Ok(files)
    }

    pub fn remove(&self, file: &StagedFile) -> io::Result<()> {
        match fs::remove_file(&file.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    pub fn total_bytes(&self) -> io::Result<u64> {
        Ok(self.list()?.iter().map(|f| f.size).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_list_in_txid_order_and_temp_files_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        staging.stage(3, 4, b"b").unwrap();
        staging.stage(1, 2, b"aa").unwrap();
        fs::write(dir.path().join("ltx/junk.txt"), b"x").unwrap();
        fs::write(dir.path().join("ltx/0000000000000005-0000000000000005.tmp"), b"half").unwrap();
        let staging = Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        let listed: Vec<_> = staging
            .list()
            .unwrap()
            .iter()
            .map(|f| (f.min_txid, f.max_txid, f.size))
            .collect();
        assert_eq!(listed, vec![(1, 2, 2), (3, 4, 1)]);
        assert!(!dir.path().join("ltx/0000000000000005-0000000000000005.tmp").exists());
        assert_eq!(staging.total_bytes().unwrap(), 3);
    }

    #[test]
    fn opening_again_keeps_this_process_s_live_outputs_and_sweeps_a_dead_one_s() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        // A reseed's output still being written or uploaded when the database is
        // closed and opened again in the same process.
        let (live, mut file) = staging.scratch("reseed").unwrap();
        file.write_all(b"pages").unwrap();
        let dead = dir.path().join("ltx/reseed-4194305-0.tmp");
        fs::write(&dead, b"left by a crash").unwrap();
        Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        assert_eq!(fs::read(live.path()).unwrap(), b"pages");
        assert!(!dead.exists(), "another process's output is a leftover");
    }

    #[test]
    fn staged_files_and_their_directory_are_no_more_open_than_the_database() {
        use crate::file_modes::permission_bits;
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        fs::write(&db, b"").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o600)).unwrap();
        let staging_dir = dir.path().join("app.db-litestream");
        let staging = Staging::open(&staging_dir, FileModes::of_database(&db)).unwrap();
        let staged = staging.stage(1, 1, b"snapshot").unwrap();
        assert_eq!(permission_bits(&staged.path).unwrap(), 0o600);
        assert_eq!(permission_bits(&staging_dir).unwrap(), 0o700);
        assert_eq!(permission_bits(&staging_dir.join("ltx")).unwrap(), 0o700);
    }

    /// A full image of 40 pages of 512 bytes at TXID 5, with a fixed timestamp.
    fn image_header() -> crate::ltx::Header {
        crate::ltx::Header {
            timestamp_ms: 1_700_000_000_000,
            ..crate::primary::batch::full_header(512, 40, 5, 5, 7)
        }
    }

    fn read_page(pgno: u32, buf: &mut [u8]) -> io::Result<()> {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (pgno as usize * 31 + i / 7) as u8;
        }
        Ok(())
    }

    /// The encoder with every random byte fixed, so that two runs write the same bytes.
    fn encoder<W: Write>(w: W, encoding: &crate::ltx::Encoding) -> crate::ltx::Encoder<W> {
        use crate::ltx::crypto::FixedEntropy;
        crate::ltx::Encoder::with_entropy(w, image_header(), encoding, Box::new(FixedEntropy::new(&[]))).unwrap()
    }

    #[test]
    fn a_snapshot_encoded_into_its_staging_file_is_the_bytes_encoded_in_memory() {
        use crate::ltx::crypto::{OsEntropy, PrivateKey};
        use crate::ltx::{decode_file_with, Compression, Encoding};
        use crate::primary::batch::write_full;
        let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        let plain = Encoding::plain(Compression::Lz4);
        let sealed = Encoding::sealed(Compression::Lz4, &[key.public_key()]);
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        for (txid, encoding) in [(5, &plain), (6, &sealed)] {
            let in_memory = write_full(encoder(Vec::new(), encoding), read_page).unwrap();
            let staged = staging
                .stage_with(txid, txid, |file| {
                    let writer = io::BufWriter::with_capacity(1000, file);
                    write_full(encoder(writer, encoding), read_page).map_err(io::Error::other)?;
                    Ok::<_, io::Error>(())
                })
                .unwrap();
            let on_disk = fs::read(&staged.path).unwrap();
            assert!(on_disk == in_memory, "txid {txid}: staged bytes differ");
            assert_eq!(staged.size, in_memory.len() as u64);
            let decoded = decode_file_with(&on_disk, Some(&key)).unwrap();
            assert_eq!(decoded.pages.len(), 40);
            let mut page = vec![0; 512];
            read_page(40, &mut page).unwrap();
            assert_eq!(decoded.pages[39].1, page);
        }
        assert_eq!(staging.list().unwrap().len(), 2);
    }

    #[test]
    fn a_failed_write_leaves_neither_the_temp_file_nor_a_staged_file() {
        let dir = tempfile::tempdir().unwrap();
        let staging = Staging::open(dir.path(), FileModes::NewDatabase).unwrap();
        let failed = staging.stage_with(3, 3, |file| {
            file.write_all(b"half a snapshot")?;
            Err(io::Error::other("page 9: disk on fire"))
        });
        assert_eq!(failed.unwrap_err().to_string(), "page 9: disk on fire");
        let left: Vec<_> = fs::read_dir(dir.path().join("ltx")).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
        assert!(staging.list().unwrap().is_empty());
    }
}
