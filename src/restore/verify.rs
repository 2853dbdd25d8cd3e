//! Checking a replica's files without restoring them (`litestream-vfs verify`): each is
//! streamed with ranged GETs as a restore downloads it ([`RemoteReader`]: a few chunks
//! in memory, whatever the file's size) and decoded to its end: header, every page
//! frame, index, trailer, file checksum, a snapshot's database checksum, and with the
//! key the authentication of every sealed page. Without the key an encrypted file's
//! structure and file checksum are checked, its pages are not opened.

use super::damaged::restorable_without;
use super::download::RemoteReader;
use super::plan::Listing;
use crate::ltx::crypto::PrivateKey;
use crate::ltx::{Decoder, Error};
use crate::storage::{LtxObject, ReplicaStore};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// How to verify.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// Size of one ranged GET.
    pub chunk_bytes: u64,
    /// Ranged GETs in flight per file.
    pub chunks_ahead: usize,
    /// Files checked at once: a plan of many small files is round trips, not bytes.
    pub files_at_once: usize,
    /// Opens (and so authenticates) encrypted files' pages.
    pub key: Option<Arc<PrivateKey>>,
}

impl Default for VerifyOptions {
    /// At most 4 files × 3 chunks of 4 MiB in memory.
    fn default() -> Self {
        VerifyOptions {
            chunk_bytes: 4 << 20,
            chunks_ahead: 2,
            files_at_once: 4,
            key: None,
        }
    }
}

/// What checking one file found.
#[derive(Debug)]
pub struct Verdict {
    pub file: LtxObject,
    /// Encrypted, read without the key: its pages were not authenticated.
    pub locked: bool,
    /// `None`: every check passed.
    pub error: Option<Error>,
}

impl Verdict {
    /// The file's bytes are wrong (not merely unreadable now).
    pub fn damaged(&self) -> bool {
        self.error.as_ref().is_some_and(Error::is_damage)
    }
}

/// Checks every file of `files`, `options.files_at_once` at a time; the verdicts come
/// back in the order of `files`. `downloaded` counts the bytes received.
pub fn verify_files(
    store: &Arc<dyn ReplicaStore>,
    files: &[LtxObject],
    options: &VerifyOptions,
    downloaded: &Arc<AtomicU64>,
) -> Vec<Verdict> {
    let next = AtomicUsize::new(0);
    let found: Mutex<Vec<Option<Verdict>>> = Mutex::new(files.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..options.files_at_once.clamp(1, files.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(f) = files.get(i) else { break };
                let verdict = verify_file(store, f, options, downloaded);
                found.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(verdict);
            });
        }
    });
    found
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Downloads and decodes one file to its end.
fn verify_file(
    store: &Arc<dyn ReplicaStore>,
    f: &LtxObject,
    options: &VerifyOptions,
    downloaded: &Arc<AtomicU64>,
) -> Verdict {
    let reader = RemoteReader::spawn(
        Arc::clone(store),
        f.clone(),
        options.chunk_bytes,
        options.chunks_ahead,
        Arc::clone(downloaded),
    );
    let mut locked = false;
    let result = Decoder::with_key(reader, options.key.as_deref()).and_then(|dec| {
        let h = *dec.header();
        // The name is what a plan trusts: a file whose header says other TXIDs is applied
        // in the wrong place.
        if (h.min_txid, h.max_txid) != (f.min_txid, f.max_txid) {
            return Err(Error::header(
                "TXIDs",
                format!(
                    "the header says {}-{}, the file's name {}-{}",
                    h.min_txid, h.max_txid, f.min_txid, f.max_txid
                ),
            ));
        }
        locked = dec.is_locked();
        dec.finish().map(|_| ())
    });
    Verdict {
        file: f.clone(),
        locked,
        error: result.err(),
    }
}

/// The newest TXID a restore reaches without the files of `verdicts` that did not
/// check (damaged, or unreadable now): see [`restorable_without`]. `None` when none.
pub fn newest_restorable(listing: &Listing, verdicts: &[Verdict]) -> Option<u64> {
    let failed: Vec<LtxObject> = verdicts
        .iter()
        .filter(|v| v.error.is_some())
        .map(|v| v.file.clone())
        .collect();
    restorable_without(listing, &failed, u64::MAX)
}
