//! A keyed primary and the replica it writes to: refuse a replica it could not read,
//! start encrypted history with a full snapshot, and keep count of the plaintext files
//! that remain until retention deletes them (`litestream_status()`).

use crate::ltx::crypto::{unwrap_content_key, Encryption, PrivateKey};
use crate::ltx::{Error, Header, HEADER_SIZE};
use crate::primary::staging::StagedFile;
use crate::restore::{Listing, SNAPSHOT_LEVEL};
use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the newest stored file says about how this primary may continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuation {
    /// Same encryption as the stored files: go on.
    Continue,
    /// The replica holds plaintext and this primary is keyed: the next file must be a
    /// full snapshot, encrypted; the plaintext ages out by retention.
    SnapshotOverPlaintext,
}

/// Checks the newest stored file (`newest`, from the listing at open) against this primary's
/// encryption: a keyed primary must be able to open it if it is encrypted, and a primary
/// without a key must not continue an encrypted replica (its files would mix, and
/// compaction could not read them).
pub fn check_replica(
    store: &dyn ReplicaStore,
    file: &LtxObject,
    encryption: Option<&Encryption>,
) -> Result<Continuation, String> {
    let head = get(store, file, 0..HEADER_SIZE as u64)?;
    let header = Header::decode(&head).map_err(|e| format!("the newest replica file: {e}"))?;
    match (header.is_encrypted(), encryption) {
        (false, None) => Ok(Continuation::Continue),
        (false, Some(_)) => Ok(Continuation::SnapshotOverPlaintext),
        (true, None) => Err(format!(
            "replica {} is encrypted (LTX v4, {} recipient(s)) and this database has no encryption key: \
             open it with encryption_key=, encryption_key_file= or LITESTREAM_ENCRYPTION_KEY",
            store.describe(),
            header.recipients
        )),
        (true, Some(e)) => {
            let block = get(
                store,
                file,
                header.frames_offset() - header.recipient_block_size() as u64..header.frames_offset(),
            )?;
            match unwrap_content_key(&block, e.key()) {
                Ok(_) => Ok(Continuation::Continue),
                Err(Error::NotARecipient { recipients }) => Err(format!(
                    "replica {} is encrypted to {recipients} other key(s), not to this database's key \
                     (public key {}): refusing to write files it could not compact or restore",
                    store.describe(),
                    e.key().public_key()
                )),
                Err(err) => Err(format!("the newest replica file: {err}")),
            }
        }
    }
}

/// Why staged files must not go up, when one is encrypted to keys this database's does
/// not open (or this database has none): the key changed while they waited for their
/// upload (a store outage, a close past `sync_timeout`). Uploaded, they were history
/// only the old key restores after files only the new one does, and the documented
/// rotation (`rekey` of the replica, then the new key) does not reach them: no one key
/// restored the newest state while `litestream_sync()` acknowledged it (a keys tester,
/// 3 of 3). The database holds what they did; a snapshot to this key replaces them.
pub fn staged_to_another_key(staged: &[StagedFile], encryption: Option<&Encryption>) -> Option<String> {
    staged.iter().find_map(|file| {
        let why = |e: String| format!("staged file {}: {e}", file.path.display());
        let opened = crate::file_modes::open_read(&file.path).map_err(|e| why(e.to_string()));
        let read = |f: &std::fs::File, range: std::ops::Range<u64>| {
            let mut bytes = vec![0u8; (range.end - range.start) as usize];
            std::os::unix::fs::FileExt::read_exact_at(f, &mut bytes, range.start).map(|()| bytes)
        };
        let header = opened.as_ref().ok().and_then(|f| read(f, 0..HEADER_SIZE as u64).ok());
        let header = header.and_then(|h| Header::decode(&h).ok())?;
        if !header.is_encrypted() {
            return None; // plaintext under a key now: the next file is a snapshot anyway
        }
        let reason = |whose: &str| {
            Some(format!(
                "staged TXIDs {}-{} are encrypted to {} key(s), {whose}: the key changed while they waited for                  their upload; they are dropped (restores cannot reach those TXIDs) and a snapshot to this                  database's key continues the replica",
                file.min_txid, file.max_txid, header.recipients
            ))
        };
        let Some(e) = encryption else {
            return reason("and this database has no key");
        };
        let range = header.frames_offset() - header.recipient_block_size() as u64..header.frames_offset();
        let block = read(opened.as_ref().ok()?, range).ok()?;
        match unwrap_content_key(&block, e.key()) {
            Err(Error::NotARecipient { .. }) => reason("none of them this database's"),
            _ => None,
        }
    })
}

fn get(store: &dyn ReplicaStore, f: &LtxObject, range: std::ops::Range<u64>) -> Result<Vec<u8>, String> {
    // At open, where the application waits: bounded and retried as the open's listing is.
    // Not retried, a connection lost during this one request failed the open (a NATS
    // server restarting under a workload that reopened, once in CI).
    let policy = crate::storage::RetryPolicy::at_open();
    let read = crate::storage::retry(
        || store.get_range(f.level, f.min_txid, f.max_txid, range.clone()),
        &policy,
    );
    crate::storage::while_application_waits(store, "GET", read)
        .map(|b| b.to_vec())
        .map_err(|e| e.to_string())
}

/// What a census found.
#[derive(Debug)]
pub struct KeyCensus {
    pub plaintext_files: u64,
    /// Why this primary's key does not open the file a restore of the newest state
    /// starts from, when it does not.
    pub base_not_ours: Option<String>,
}

/// Whether this primary's key opens the first file of the newest state's restore plan.
/// Another tool can rewrite stored files while the primary writes: a `rekey` to other
/// recipients run during writes left a replica whose old files only the new key opened
/// and whose new ones only the primary's, which no key restored, while the primary's
/// compaction (from its local copies) never noticed (an operations tester). The base is
/// checked when it changes and every [`BASE_RECHECK`] while compaction runs (two ranged
/// GETs); an idle database's census does not run.
#[derive(Debug, Default)]
struct BaseCheck {
    /// The base last checked, and what the check found.
    last: Mutex<Option<(LtxObject, Instant, Option<String>)>>,
}

/// How long a base found openable is trusted: `rekey` rewrites a file under its name,
/// size and (`file://` keeps the header's time) store time.
const BASE_RECHECK: Duration = Duration::from_secs(30);

impl BaseCheck {
    fn check(&self, store: &dyn ReplicaStore, listing: &Listing, key: &PrivateKey) -> Result<Option<String>, String> {
        let Some(base) = crate::restore::plan_reachable(listing)
            .ok()
            .and_then(|(plan, _)| plan.into_iter().next())
        else {
            return Ok(None);
        };
        if let Some((checked, at, found)) = &*self.last.lock().unwrap_or_else(|p| p.into_inner()) {
            if *checked == base && at.elapsed() < BASE_RECHECK {
                return Ok(found.clone());
            }
        }
        let head = get(store, &base, 0..HEADER_SIZE as u64)?;
        let header = Header::decode(&head).map_err(|e| format!("{}: {e}", describe(&base)))?;
        let found = if header.is_encrypted() {
            let block = get(
                store,
                &base,
                header.frames_offset() - header.recipient_block_size() as u64..header.frames_offset(),
            )?;
            match unwrap_content_key(&block, key) {
                Ok(_) => None,
                Err(Error::NotARecipient { recipients }) => Some(format!(
                    "{} (where a restore of the newest state starts) is encrypted to {recipients} other key(s), \
                     not to this database's key (public key {}): rewritten by another tool (a rekey while this \
                     primary writes?); files written from now on are to this key only, so no one key restores \
                     the replica. A snapshot to this key follows; to rotate keys see docs/encryption.md \
                     (\"Rotating keys\")",
                    describe(&base),
                    key.public_key()
                )),
                Err(e) => return Err(format!("{}: {e}", describe(&base))),
            }
        } else {
            None
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((base, Instant::now(), found.clone()));
        Ok(found)
    }
}

fn describe(f: &LtxObject) -> String {
    format!("level {} file {:016x}-{:016x}", f.level, f.min_txid, f.max_txid)
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

/// The encryption part of `litestream_status()`, and the census behind it: which stored
/// files are plaintext, learnt once per file from its first four bytes.
#[derive(Debug, Default)]
pub struct EncryptionStatus {
    recipients: usize,
    plaintext_history: AtomicU8,
    plaintext_files: AtomicU64,
    /// (level, min, max) → plaintext?
    seen: Mutex<HashMap<(u8, u64, u64), bool>>,
    base: BaseCheck,
}

impl EncryptionStatus {
    /// Status of a primary encrypting to `recipients` keys.
    pub fn new(recipients: usize) -> Self {
        EncryptionStatus {
            recipients,
            ..Default::default()
        }
    }

    /// Records that plaintext files are known to remain (the replica was plaintext when
    /// encryption was turned on).
    pub fn mark_plaintext_history(&self) {
        self.plaintext_history.store(YES, Ordering::Relaxed);
    }

    /// Lists every level and reads the magic of each file not seen before (one 4-byte
    /// ranged GET each): how many plaintext files remain. Run after retention. With
    /// `key`, also checks that it opens the file a restore of the newest state starts
    /// from ([`BaseCheck`]).
    pub fn census(&self, store: &dyn ReplicaStore, key: Option<&PrivateKey>) -> Result<KeyCensus, String> {
        // A copy: `litestream_status()` must not wait for the requests below.
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut live = HashMap::new();
        let mut listing = Listing::default();
        for level in crate::restore::EVERY_LEVEL {
            let files = block_on(store.list(level)).map_err(|e| e.to_string())?;
            for f in &files {
                let key = (f.level, f.min_txid, f.max_txid);
                let plain = match seen.get(&key) {
                    Some(&p) => p,
                    None => get(store, f, 0..4)? == crate::ltx::MAGIC,
                };
                live.insert(key, plain);
            }
            match level {
                SNAPSHOT_LEVEL => listing.snapshots = files,
                _ => listing.incremental.push(files),
            }
        }
        // Listed from level 0 up: the plan wants levels 8 to 0.
        listing.incremental.reverse();
        let count = live.values().filter(|p| **p).count() as u64;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = live;
        self.plaintext_files.store(count, Ordering::Relaxed);
        self.plaintext_history
            .store(if count > 0 { YES } else { NO }, Ordering::Relaxed);
        let base = match key {
            Some(key) => self.base.check(store, &listing, key)?,
            None => None,
        };
        Ok(KeyCensus {
            plaintext_files: count,
            base_not_ours: base,
        })
    }

    /// `{"recipients": n, "plaintext_history": true|false|null, "plaintext_files": n|null}`:
    /// null until a census ran (and no plaintext was seen at open).
    pub fn json(&self) -> serde_json::Value {
        let history = self.plaintext_history.load(Ordering::Relaxed);
        json!({
            "encrypted": true,
            "recipients": self.recipients,
            "plaintext_history": match history { YES => json!(true), NO => json!(false), _ => json!(null) },
            "plaintext_files": if history == UNKNOWN || self.seen.lock().map(|s| s.is_empty()).unwrap_or(true) {
                json!(null)
            } else {
                json!(self.plaintext_files.load(Ordering::Relaxed))
            },
        })
    }
}
