//! Which file a replica's hydration may take (`hydrate.rs`, [`super::hydrate::Hydration::take`]):
//! the marker written beside a file the replica made, the identity it records, and the
//! signs that a path names a database someone uses.

use crate::file_modes::FileModes;
use std::collections::HashMap;
use std::ffi::OsString;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The marker beside a hydration file: `<path>.litestream-hydration`.
pub(super) fn marker_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".litestream-hydration");
    PathBuf::from(name)
}

/// The first line of every marker.
pub(super) const MARKER_HEADER: &str = "litestream-vfs hydration file marker";

/// A hydration file's identity, as the marker records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Identity {
    pub(super) dev: u64,
    pub(super) ino: u64,
    /// Birth time in nanoseconds, where the file system keeps one (ext4, xfs, btrfs, tmpfs).
    pub(super) born_ns: Option<u128>,
}

impl Identity {
    pub(super) fn of(meta: &std::fs::Metadata) -> Identity {
        Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            born_ns: meta
                .created()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos()),
        }
    }

    /// Whether `now` is the file this identity was recorded of. An inode number alone is
    /// not enough: ext4 hands a freed one to the next file made in the directory, so
    /// `rm` of the hydration file then a database made at the path would pass for ours.
    /// The birth time tells them apart. The device is compared only without one: its
    /// number may change across reboots (device mapper, btrfs), which must not make
    /// our own file a stranger.
    pub(super) fn is(&self, now: &Identity) -> bool {
        self.ino == now.ino
            && match (self.born_ns, now.born_ns) {
                (Some(a), Some(b)) => a == b,
                _ => self.dev == now.dev,
            }
    }
}

/// Why [`Hydration::claim`] did not take the file.
#[derive(Debug)]
pub(super) enum NotTaken {
    /// Another process (or replica) holds it: taken once it lets go.
    Busy,
    /// The path names something that is not ours to overwrite.
    Refused(String),
    /// It could not be opened or made (a missing directory, no permission).
    Unopenable(String),
    /// It could not be locked, marked or emptied.
    Failed(String),
}

/// What is at a marker's path.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Marker {
    Absent,
    Ours(Identity),
    /// A file that is not a marker (or one unreadable as such): never overwritten.
    Foreign,
}

pub(super) fn read_marker(path: &Path) -> std::io::Result<Marker> {
    let text = match crate::file_modes::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Marker::Absent),
        Err(e) => return Err(e),
    };
    let Ok(text) = String::from_utf8(text) else {
        return Ok(Marker::Foreign);
    };
    let mut lines = text.lines();
    if lines.next() != Some(MARKER_HEADER) {
        return Ok(Marker::Foreign);
    }
    let fields: HashMap<&str, &str> = lines.filter_map(|l| l.split_once('=')).collect();
    let number = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    let (Some(dev), Some(ino)) = (number("dev"), number("ino")) else {
        return Ok(Marker::Foreign);
    };
    let born_ns = fields.get("born_ns").and_then(|v| v.parse::<u128>().ok());
    Ok(Marker::Ours(Identity { dev, ino, born_ns }))
}

/// Writes the marker naming `identity` as this replica's hydration file at `file`, whole
/// or not at all (a temporary file renamed over): a torn marker would refuse our own file.
pub(super) fn write_marker(marker: &Path, file: &Path, replica: &str, identity: &Identity) -> std::io::Result<()> {
    let text = format!(
        "{MARKER_HEADER}\n\
         # Beside the hydrate= file of a litestream-vfs read replica: says that file is the\n\
         # replica's own, which it may empty. Remove both to free the path.\n\
         file={}\nreplica={replica}\ndev={}\nino={}\nborn_ns={}\n",
        file.display(),
        identity.dev,
        identity.ino,
        identity.born_ns.map_or("-".to_string(), |b| b.to_string()),
    );
    let mut tmp = OsString::from(marker.as_os_str());
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let written = FileModes::owner_only().write_file(&tmp, text.as_bytes())?;
    written.sync_all()?;
    std::fs::rename(&tmp, marker)
}

/// Why the file at `path` looks like a database someone uses, if it does: SQLite's own
/// files beside it (`-wal` and `-shm` of a WAL database, a `-journal` mid-transaction),
/// or the staging directory this VFS keeps beside a primary's database.
pub(super) fn sqlite_in_use(path: &Path) -> Option<String> {
    // The path of the first one found.
    ["-wal", "-shm", "-journal", "-litestream"].iter().find_map(|suffix| {
        let mut beside = OsString::from(path.as_os_str());
        beside.push(suffix);
        let beside = PathBuf::from(beside);
        std::fs::symlink_metadata(&beside)
            .is_ok()
            .then(|| beside.display().to_string())
    })
}
