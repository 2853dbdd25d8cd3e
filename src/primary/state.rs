//! What a primary remembers across restarts, in `<staging>/state.json`: the last
//! staged TXID and the WAL position it corresponds to. On open this decides between
//! resuming from the WAL and taking a snapshot.

use super::capture::WalPosition;
use crate::durable::sync_dir;
use crate::file_modes::FileModes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedWal {
    pub salt1: u32,
    pub salt2: u32,
    pub page_size: u32,
    pub next_frame: u64,
    pub checksum: (u32, u32),
    /// The generation ended there (see `WalPosition::ended`).
    #[serde(default)]
    pub ended: bool,
}

impl From<WalPosition> for SavedWal {
    fn from(p: WalPosition) -> Self {
        SavedWal {
            salt1: p.salt1,
            salt2: p.salt2,
            page_size: p.page_size,
            next_frame: p.next_frame,
            checksum: p.checksum,
            ended: p.ended,
        }
    }
}

impl From<&SavedWal> for WalPosition {
    fn from(s: &SavedWal) -> Self {
        WalPosition {
            salt1: s.salt1,
            salt2: s.salt2,
            page_size: s.page_size,
            next_frame: s.next_frame,
            checksum: s.checksum,
            ended: s.ended,
        }
    }
}

/// Identity of the database file when it was last closed cleanly with everything
/// staged: if it is unchanged at the next open, nothing happened in between.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileIdentity {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl FileIdentity {
    pub fn of(path: &Path) -> io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = fs::metadata(path)?;
        Ok(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_ns: crate::provenance::mtime_ns(&m),
        })
    }

    /// The identity of the file at `path`, taken so that no later write can share it:
    /// when this returns, the clock file times come from has moved past its mtime (a
    /// scheduler tick at most; see `vfs::sys::file_clock`). Taken while SQLite holds the
    /// lock that keeps writers out, every write after that lock is released changes the
    /// mtime, a same-size one too; otherwise a tool's update within the tick of a
    /// checkpoint's truncation or of the last close would look like no change at all.
    pub fn pinned(path: &Path) -> io::Result<FileIdentity> {
        let identity = FileIdentity::of(path)?;
        let deadline = Instant::now() + PIN_WAIT_MAX;
        while crate::vfs::sys::file_clock::coarse_now_ns() <= identity.mtime_ns && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(250));
        }
        Ok(identity)
    }
}

/// The longest [`FileIdentity::pinned`] waits: a tick is 10 ms at most (HZ=100). A file
/// with a future mtime, or on a filesystem with coarser times (FAT's 2 s), is not
/// waited out.
const PIN_WAIT_MAX: Duration = Duration::from_millis(20);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    /// Random id of this primary, written into every LTX header it produces.
    pub node_id: u64,
    /// Highest TXID staged (and so recoverable after a crash).
    pub txid: u64,
    /// WAL position right after `txid`; None when `txid` came from a snapshot taken
    /// with no WAL, or after a clean close.
    pub wal: Option<SavedWal>,
    /// Set at a clean close, when the WAL was checkpointed away.
    pub closed_clean: Option<FileIdentity>,
    /// Hand-off records (`handoff.rs`) up to this sequence number are reflected in
    /// `txid`/`wal`: a restart follows only the later ones, and these may be deleted.
    #[serde(default)]
    pub handoff_seq: u64,
    /// When `wal` is the start of a generation a hand-off record began, or the end of one
    /// a record ended (capture holds nothing after it): where capture ended the generation
    /// before. If the record's writer died before the WAL write it announced, the WAL
    /// still shows that generation, and a restart goes on in it from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_before: Option<SavedWal>,
    /// When `wal` is an ended position (the WAL truncated or deleted after a
    /// checkpoint): the database file as that left it. A restart that finds the file
    /// changed and the WAL still empty takes a snapshot (`Capture::left_database`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_left: Option<FileIdentity>,
    /// The replica and key the state was saved for (`CheckKey::fingerprint`): an open
    /// trusts its process's recent check of the replica only for a state saved for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_for: Option<String>,
    /// While a snapshot is owed for commits dropped from staging (full or failing): the
    /// last TXID `litestream_txid()` handed out. The next open's snapshot spans up to it,
    /// so that no TXID names two states (`Shared::drop_pending`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub numbered_txid: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The database file the WAL was left empty with (`Capture::database_left`), worth saving
/// beside `wal`: when the saved position is an ended one, or absent because capture has
/// no generation (a snapshot of a database without a WAL). Never while a snapshot is owed
/// (the state must make a restart take it) or beside a clean close (which says it).
pub fn database_left_to_save(
    left: Option<FileIdentity>,
    wal: Option<&SavedWal>,
    snapshot_owed: bool,
    closed_clean: bool,
) -> Option<FileIdentity> {
    left.filter(|_| !snapshot_owed && !closed_clean && wal.is_none_or(|w| w.ended))
}

pub struct StateFile {
    path: PathBuf,
    /// The database's permissions.
    modes: FileModes,
}

impl StateFile {
    pub fn new(staging_dir: &Path, modes: FileModes) -> Self {
        StateFile {
            path: staging_dir.join("state.json"),
            modes,
        }
    }

    pub fn load(&self) -> io::Result<Option<SavedState>> {
        match crate::file_modes::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the state atomically and durably (temp file, fsync, rename).
    pub fn save(&self, state: &SavedState) -> io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let file = self
            .modes
            .write_file(&tmp, &serde_json::to_vec_pretty(state).expect("state serialises"))?;
        file.sync_all()?;
        fs::rename(&tmp, &self.path)?;
        sync_dir(self.path.parent().expect("state file has a directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_identity_leaves_the_file_clock_past_its_mtime_so_a_same_size_write_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        for round in 0..20 {
            fs::write(&path, [round as u8; 4096]).unwrap();
            let pinned = FileIdentity::pinned(&path).unwrap();
            assert!(
                crate::vfs::sys::file_clock::coarse_now_ns() > pinned.mtime_ns,
                "round {round}: the file clock has not passed the pinned mtime"
            );
            fs::write(&path, [round as u8 + 1; 4096]).unwrap();
            assert_ne!(FileIdentity::of(&path).unwrap(), pinned, "round {round}");
        }
    }

    #[test]
    fn state_round_trips_and_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path(), FileModes::NewDatabase);
        assert_eq!(file.load().unwrap(), None);
        let state = SavedState {
            numbered_txid: 77,
            node_id: 7,
            txid: 42,
            wal: Some(SavedWal {
                salt1: 1,
                salt2: 2,
                page_size: 4096,
                next_frame: 9,
                checksum: (3, 4),
                ended: true,
            }),
            closed_clean: None,
            database_left: Some(FileIdentity {
                dev: 1,
                ino: 2,
                size: 4096,
                mtime_ns: 1_700_000_000_123_456_789,
            }),
            handoff_seq: 5,
            ended_before: Some(SavedWal {
                salt1: 0,
                salt2: 2,
                page_size: 4096,
                next_frame: 12,
                checksum: (5, 6),
                ended: false,
            }),
            stored_for: Some("0123456789abcdef0123456789abcdef".into()),
        };
        file.save(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
    }

    #[test]
    fn state_saved_before_hand_offs_existed_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("state.json"),
            br#"{"node_id":1,"txid":2,"wal":{"salt1":1,"salt2":2,"page_size":4096,"next_frame":3,"checksum":[0,0]},"closed_clean":null}"#,
        )
        .unwrap();
        let state = StateFile::new(dir.path(), FileModes::NewDatabase)
            .load()
            .unwrap()
            .unwrap();
        assert_eq!((state.handoff_seq, state.wal.unwrap().ended), (0, false));
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        assert!(StateFile::new(dir.path(), FileModes::NewDatabase).load().is_err());
    }

    #[test]
    fn the_state_file_is_no_more_open_than_the_database() {
        let dir = tempfile::tempdir().unwrap();
        StateFile::new(dir.path(), FileModes::bits(0o600))
            .save(&SavedState::default())
            .unwrap();
        let bits = crate::file_modes::permission_bits(&dir.path().join("state.json")).unwrap();
        assert_eq!(bits, 0o600);
    }
}
