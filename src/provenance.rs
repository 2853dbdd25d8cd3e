//! Which replica state a database file holds, noted on the file itself (an extended
//! attribute): a restore notes the replica and TXID it wrote, a primary's clean close the
//! TXID it left staged. An open that finds no staging state beside the database (the
//! database was restored with the CLI, or moved, or its `staging=` directory was on
//! storage that did not survive a restart) but a replica that holds TXIDs would otherwise
//! have to refuse: nothing proves the file is that replica's database. The note proves it
//! while the file is unchanged since (its size and modification time), and the open then
//! continues the replica instead of asking for `takeover=1`.
//!
//! A note that is missing (a plain `cp`, a file system without user attributes) or stale
//! changes nothing: the open refuses as before, saying why.

use serde::{Deserialize, Serialize};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The attribute's name; `user.` is the namespace any file owner may write.
const ATTRIBUTE: &str = "user.litestream.replica";

/// "This file, at this size and modification time, is `replica` at TXID `txid`."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaNote {
    /// The replica as messages name it (its URL without secrets).
    pub replica: String,
    pub txid: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

/// A file's modification time in nanoseconds since the epoch.
pub fn mtime_ns(m: &std::fs::Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// The size and modification time of the file at `path` (by path: no descriptor).
pub fn size_and_mtime(path: &Path) -> io::Result<(u64, i128)> {
    let m = std::fs::metadata(path)?;
    Ok((m.size(), mtime_ns(&m)))
}

impl ReplicaNote {
    /// A note of the file at `path` as it is now.
    pub fn of(path: &Path, replica: &str, txid: u64) -> io::Result<ReplicaNote> {
        let (size, mtime_ns) = size_and_mtime(path)?;
        Ok(ReplicaNote {
            replica: replica.to_string(),
            txid,
            size,
            mtime_ns,
        })
    }

    /// Writes the note on the file at `path`. A file system that keeps no user attributes
    /// is no error worth more than a debug line: the note only ever saves a refusal.
    pub fn save(&self, path: &Path) {
        let value = serde_json::to_vec(self).expect("a note serialises");
        if let Err(e) = crate::vfs::sys::xattr::set(path, ATTRIBUTE, &value) {
            tracing::debug!(db = %path.display(), "cannot note the replica state on the database file: {e}");
        }
    }

    /// The note on the file at `path`, if any (an unreadable one is none).
    pub fn read(path: &Path) -> Option<ReplicaNote> {
        let value = crate::vfs::sys::xattr::get(path, ATTRIBUTE).ok()??;
        serde_json::from_slice(&value).ok()
    }

    /// Why the file at `path` is not (or no longer provably) `replica` at its newest TXID
    /// `max`; `None` when it is.
    pub fn mismatch(&self, path: &Path, replica: &str, max: u64) -> Option<String> {
        let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
        // Builds before a security tester's report noted an endpoint's password as it was
        // given (`?endpoint=http://user:password@proxy`); stores describe themselves redacted
        // now. Redacted again here, such a note still matches, and its error shows no secret.
        let noted = crate::storage::redact_url(&self.replica);
        if !same(&noted, replica) {
            return Some(format!(
                "the database holds {noted} at TXID {}, not this replica",
                self.txid
            ));
        }
        if size_and_mtime(path).ok() != Some((self.size, self.mtime_ns)) {
            return Some(format!(
                "the database held this replica's TXID {} but was written since without the litestream VFS",
                self.txid
            ));
        }
        if self.txid != max {
            return Some(format!(
                "the database holds this replica's TXID {} and the replica is at TXID {max}: another \
                 database wrote it since, or the database was restored to an earlier point",
                self.txid
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("note-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("app.db");
        std::fs::write(&path, vec![7u8; 4096]).unwrap();
        path
    }

    #[test]
    fn a_note_holds_for_the_same_replica_and_txid_of_an_unchanged_file_only() {
        let db = file("holds");
        ReplicaNote::of(&db, "file:///r", 5).unwrap().save(&db);
        let Some(note) = ReplicaNote::read(&db) else {
            return; // no user attributes on this file system: nothing noted, nothing to check
        };
        assert_eq!(note.txid, 5);
        assert_eq!(note.mismatch(&db, "file:///r/", 5), None);
        let other = note.mismatch(&db, "file:///elsewhere", 5).unwrap();
        assert!(other.contains("not this replica"), "{other}");
        let ahead = note.mismatch(&db, "file:///r", 6).unwrap();
        assert!(ahead.contains("replica is at TXID 6"), "{ahead}");
        // Any write changes the modification time (set explicitly: two writes within one
        // clock tick could share it).
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(2);
        std::fs::File::options()
            .write(true)
            .open(&db)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let written = note.mismatch(&db, "file:///r", 5).unwrap();
        assert!(written.contains("written since"), "{written}");
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_note_naming_an_endpoint_password_still_holds_and_is_shown_without_it() {
        let db = file("endpoint-password");
        let raw = "s3://b/app?endpoint=http://u:CanaryEndpointPw@127.0.0.1:9000&region=x";
        let note = ReplicaNote::of(&db, raw, 5).unwrap();
        let described = crate::storage::redact_url(raw);
        assert_eq!(note.mismatch(&db, &described, 5), None);
        let other = note.mismatch(&db, "s3://b/elsewhere", 5).unwrap();
        assert!(
            other.contains("not this replica") && !other.contains("Canary"),
            "{other}"
        );
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_file_without_a_note_reads_none() {
        let db = file("none");
        assert_eq!(ReplicaNote::read(&db), None);
        std::fs::remove_dir_all(db.parent().unwrap()).unwrap();
    }
}
