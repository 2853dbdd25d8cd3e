//! What an open learns from the replica, remembered for the next open in this process.
//!
//! An open with saved state lists every level of the replica (ten LISTs) and reads the
//! newest file's header, to find a replica ahead of the local state (another primary,
//! a database put back from a disk backup) and one encrypted differently. A
//! connection per request (PHP-FPM, CGI) opens for every request: on S3 that was eleven
//! requests and a round trip before each request's first statement. A long-lived
//! connection makes the same checks once, at its open, and never again; so here an open
//! in a process that made them for this database less than [`RECHECK_AFTER`] ago, whose
//! saved state has not gone back since, uses what they found instead: no request.
//! Between two listings a foreign writer is still stopped by the conditional create of
//! the next upload, as during an outage at open.
//!
//! "Not gone back": the saved state names the same node and a TXID no lower than any
//! this process saw saved for the database. A state put back from a disk backup is
//! older and is checked again; other processes of the machine committing to the
//! database only move it forward. And saved for this replica and key: an open of the
//! database on another replica (or with another key, or none) in between, in this
//! process or another, moved the state forward with TXIDs this replica never got, and
//! the check at the next open here is what finds them missing (an operations tester:
//! replica A, then B, then A again within a minute left A with a gap no restore
//! crosses and no error; a keyless open after a keyed one wrote plaintext after
//! encrypted files instead of being refused).

use crate::vfs::sys::fork::ProcessMap;
use std::collections::HashMap;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use crate::storage::LtxObject;

/// How long a check of the replica at open stands for the next opens of this process.
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// Past this many databases remembered, stale entries are dropped (a process with
/// thousands of databases keeps one small entry for each one opened within a minute).
const PRUNE_AT: usize = 4096;

/// The database, its replica and the key it is checked with (an open with another key
/// checks the replica's encryption again).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CheckKey(String);

impl CheckKey {
    pub fn new(db_path: &std::path::Path, config: &crate::config::Config) -> CheckKey {
        let key = config
            .encryption
            .as_ref()
            .map(|e| e.key().public_key().to_string())
            .unwrap_or_default();
        CheckKey(format!(
            "{}\0{}\0{:?}\0{key}",
            db_path.display(),
            config.replica_url,
            config.store_options.endpoint
        ))
    }
}

impl CheckKey {
    /// A digest of the key, saved with the state (`SavedState::stored_for`): a state
    /// saved by an open with another replica or key, in this process or another, is
    /// not vouched for by this key's check. Hashed: a replica URL may carry credentials.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(&Sha256::digest(self.0.as_bytes())[..16])
    }
}

#[derive(Debug)]
struct Checked {
    at: Instant,
    node_id: u64,
    /// The highest TXID this process saw in the saved state since the check.
    txid: u64,
    newest: Option<LtxObject>,
    /// The newest level-0 file this process uploaded since: its last TXID and page
    /// size, which the first upload of the next open needs (`upload.rs`: a changed page
    /// size is snapshotted first) and would otherwise list and read from the store.
    uploaded: Option<(u64, u32)>,
}

/// What this process last learned of a database's replica at an open.
#[derive(Debug)]
enum Entry {
    Passed(Checked),
    /// The store did not answer the check (down, or stalled past the open's wait).
    Unanswered(Instant),
}

impl Entry {
    fn at(&self) -> Instant {
        match self {
            Entry::Passed(c) => c.at,
            Entry::Unanswered(at) => *at,
        }
    }
}

fn entries() -> MutexGuard<'static, HashMap<CheckKey, Entry>> {
    // Per process (`vfs::sys::fork`): a child starts with no listing remembered.
    static ENTRIES: ProcessMap<CheckKey, Entry> = ProcessMap::new();
    ENTRIES.lock()
}

fn record(key: CheckKey, entry: Entry, now: Instant) {
    let mut entries = entries();
    if entries.len() >= PRUNE_AT {
        entries.retain(|_, e| now.saturating_duration_since(e.at()) < RECHECK_AFTER);
    }
    entries.insert(key, entry);
}

/// The check this process passed for `key`, if it is the last thing learned.
fn passed_check<'a>(entries: &'a mut HashMap<CheckKey, Entry>, key: &CheckKey) -> Option<&'a mut Checked> {
    match entries.get_mut(key)? {
        Entry::Passed(c) => Some(c),
        Entry::Unanswered(_) => None,
    }
}

/// The store did not answer this database's check at open: the opens of the next
/// [`RECHECK_AFTER`] go on from local state without asking, as that one did, instead
/// of each waiting for it.
pub fn unanswered(key: CheckKey, now: Instant) {
    record(key, Entry::Unanswered(now), now);
}

/// Whether the store failed to answer this database's check within [`RECHECK_AFTER`].
pub fn recently_unanswered(key: &CheckKey, now: Instant) -> bool {
    matches!(entries().get(key), Some(Entry::Unanswered(at)) if now.saturating_duration_since(*at) < RECHECK_AFTER)
}

/// The replica's newest file as a check within [`RECHECK_AFTER`] found it, if one
/// stands for a saved state of `node_id` at `txid`; `None`: check the replica.
pub fn recent(key: &CheckKey, node_id: u64, txid: u64, now: Instant) -> Option<Option<LtxObject>> {
    let mut entries = entries();
    let c = passed_check(&mut entries, key)?;
    let fresh = now.saturating_duration_since(c.at) < RECHECK_AFTER;
    (fresh && c.node_id == node_id && txid >= c.txid).then(|| c.newest.clone())
}

/// Records a check that found nothing to act on: the replica not ahead of the saved
/// state of `node_id` at `txid`, its encryption what this key expects.
pub fn passed(key: CheckKey, node_id: u64, txid: u64, newest: Option<LtxObject>, now: Instant) {
    let check = Checked {
        at: now,
        node_id,
        txid,
        newest,
        uploaded: None,
    };
    record(key, Entry::Passed(check), now);
}

/// This process saw something that says the replica may have changed under it (an
/// upload failed: a bucket deleted, a store put back; compaction found a gap): the next
/// open lists it again instead of trusting the last check.
pub fn doubt(key: &CheckKey) {
    entries().remove(key);
}

/// This process saved state at `txid`: a saved state below it is one put back.
pub fn saved(key: &CheckKey, txid: u64) {
    if let Some(c) = passed_check(&mut entries(), key) {
        c.txid = c.txid.max(txid);
    }
}

/// This process stored the level-0 file ending at `txid`, of pages of `page_size`.
pub fn uploaded(key: &CheckKey, txid: u64, page_size: u32) {
    if let Some(c) = passed_check(&mut entries(), key) {
        if c.uploaded.is_none_or(|(t, _)| txid >= t) {
            c.uploaded = Some((txid, page_size));
        }
    }
}

/// The page size of the replica's file ending at `txid`, if this process uploaded it
/// last (another process's later upload makes this `None`: it may have changed it).
pub fn page_size_through(key: &CheckKey, txid: u64) -> Option<u32> {
    let (t, page_size) = passed_check(&mut entries(), key)?.uploaded?;
    (t == txid).then_some(page_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> CheckKey {
        CheckKey(name.to_string())
    }

    #[test]
    fn a_check_stands_for_a_minute_for_the_same_node_and_a_state_that_did_not_go_back() {
        let t0 = Instant::now();
        let newest = LtxObject {
            level: 0,
            min_txid: 5,
            max_txid: 7,
            size: 100,
            last_modified: None,
        };
        passed(key("a"), 1, 7, Some(newest.clone()), t0);
        assert_eq!(recent(&key("a"), 1, 7, t0), Some(Some(newest.clone())));
        assert_eq!(
            recent(&key("a"), 1, 9, t0 + Duration::from_secs(59)),
            Some(Some(newest))
        );
        assert_eq!(recent(&key("a"), 1, 7, t0 + RECHECK_AFTER), None, "stale");
        assert_eq!(recent(&key("a"), 2, 7, t0), None, "another node's state");
        assert_eq!(recent(&key("a"), 1, 6, t0), None, "a state put back");
        assert_eq!(recent(&key("b"), 1, 7, t0), None, "another database");
        saved(&key("a"), 12);
        assert_eq!(
            recent(&key("a"), 1, 11, t0),
            None,
            "older than a state this process saved"
        );
        assert!(recent(&key("a"), 1, 12, t0).is_some());
        doubt(&key("a"));
        assert_eq!(recent(&key("a"), 1, 12, t0), None, "doubted");
    }

    #[test]
    fn an_unanswered_check_is_not_asked_again_for_a_minute() {
        let t0 = Instant::now();
        assert!(!recently_unanswered(&key("u"), t0));
        unanswered(key("u"), t0);
        assert!(recently_unanswered(&key("u"), t0 + Duration::from_secs(59)));
        assert!(!recently_unanswered(&key("u"), t0 + RECHECK_AFTER));
        assert!(!recently_unanswered(&key("v"), t0));

        // What was learned last holds: a silent store after a passed check, and back.
        passed(key("w"), 1, 7, None, t0);
        unanswered(key("w"), t0);
        assert_eq!(recent(&key("w"), 1, 7, t0), None);
        assert!(recently_unanswered(&key("w"), t0));
        passed(key("w"), 1, 7, None, t0);
        assert!(!recently_unanswered(&key("w"), t0));
        assert_eq!(recent(&key("w"), 1, 7, t0), Some(None));
    }

    #[test]
    fn the_page_size_uploaded_last_is_known_only_for_that_txid() {
        let t0 = Instant::now();
        uploaded(&key("p"), 3, 4096);
        assert_eq!(page_size_through(&key("p"), 3), None, "nothing recorded before a check");
        passed(key("p"), 1, 3, None, t0);
        uploaded(&key("p"), 4, 4096);
        uploaded(&key("p"), 5, 1024);
        assert_eq!(page_size_through(&key("p"), 5), Some(1024));
        assert_eq!(page_size_through(&key("p"), 4), None, "an older file");
        assert_eq!(page_size_through(&key("p"), 6), None, "uploaded by another process");
    }
}
