//! The one interface the rest of the crate uses to talk to a replica location.

use std::fmt::Debug;
use std::ops::Range;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::error::Result;

/// LTX header bytes that hold the timestamp: the magic at 0..4, the timestamp (i64 BE) at
/// 32..40, in v3 and v4 (encrypted) headers alike (v4 does not seal it).
pub(crate) const TIMESTAMP_PREFIX: u64 = 40;

/// The timestamp in an LTX file's first [`TIMESTAMP_PREFIX`] bytes. Only the magic is
/// checked: listing a replica's times (`info`, retention, a restore by time) reads no
/// more of each file than this, and a file whose header is damaged elsewhere fails where
/// it is read whole, with the reason, instead of failing every listing.
pub(crate) fn header_timestamp(head: &[u8]) -> std::result::Result<i64, String> {
    let magic = head.get(..4).ok_or("not an LTX file (too short)")?;
    if magic != crate::ltx::MAGIC && magic != crate::ltx::MAGIC_V4 {
        return Err("not an LTX file (bad magic)".into());
    }
    let ts: [u8; 8] = head
        .get(32..40)
        .and_then(|b| b.try_into().ok())
        .ok_or("not an LTX file (too short)")?;
    Ok(i64::from_be_bytes(ts))
}

/// One LTX file found in a replica: which level, which TXIDs, how big.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxObject {
    /// Compaction level (0 = raw per-sync files, 9 = snapshots).
    pub level: u8,
    /// First TXID covered.
    pub min_txid: u64,
    /// Last TXID covered (`>= min_txid`).
    pub max_txid: u64,
    /// Object size in bytes.
    pub size: u64,
    /// When the store last wrote the object, if it says. This is NOT the LTX header
    /// timestamp; use [`ReplicaStore::timestamp`] for that.
    pub last_modified: Option<SystemTime>,
}

/// A replica location holding LTX files, addressed by (level, min TXID, max TXID).
///
/// Implementations map these to keys in Litestream 0.5's layout, so a replica written
/// through this trait is readable by `litestream restore`, and the other way round.
/// Object-safe: the crate holds it as `Arc<dyn ReplicaStore>`.
#[async_trait]
pub trait ReplicaStore: Send + Sync + Debug {
    /// The replica URL with secrets removed, for messages and `litestream_status()`.
    fn describe(&self) -> &str;

    /// What the store's request budget covers (`pacing.rs`), for the engine's
    /// per-store figures; stores opened through [`open_store`](super::open_store) say.
    fn endpoint(&self) -> Option<&str> {
        None
    }

    /// Where the file of (level, TXIDs) is, for messages that send a user to it: its
    /// path on disk for a local replica, else its key in the bucket. The default is the
    /// key Litestream's layout gives it under the replica's path.
    fn file_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        format!("ltx/{level}/{}", crate::ltx::format_name(min_txid, max_txid))
    }

    /// The LTX files at `level`, sorted by min TXID (then max TXID). Objects whose names are
    /// not exactly `%016x-%016x.ltx` are skipped with a warning. A level that does not exist
    /// yet is empty, not an error.
    async fn list(&self, level: u8) -> Result<Vec<LtxObject>>;

    /// The whole file.
    async fn get(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<Bytes>;

    /// Bytes `range` of the file, fetched with a ranged request. Returns exactly
    /// `range.end - range.start` bytes or an error (a range past the end is an error).
    async fn get_range(&self, level: u8, min_txid: u64, max_txid: u64, range: Range<u64>) -> Result<Bytes>;

    /// Size and modification time of one file.
    async fn head(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<LtxObject>;

    /// The LTX header timestamp of one file, in milliseconds since the Unix epoch: from the
    /// `litestream-timestamp` metadata where the store keeps it, else from the header itself.
    /// One request per file, so callers use it only where they need it (timestamp restores).
    async fn timestamp(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<i64>;

    /// Creates the file only if nothing is there yet (S3 `If-None-Match: *`). If a different
    /// object already exists the result is [`Error::AlreadyExists`](super::Error::AlreadyExists):
    /// another writer owns this TXID. An identical object (our own earlier attempt whose
    /// response was lost) counts as success, so retrying `put_new` is safe.
    /// `timestamp_ms` is the LTX header timestamp, stored as object metadata where supported.
    async fn put_new(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()>;

    /// Writes the file, replacing any existing one (compaction outputs, which are
    /// deterministic for a given input range).
    async fn put(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()>;

    /// How many requests a [`put`](Self::put) (or, `create`, a [`put_new`](Self::put_new))
    /// of `bytes` makes: one, unless the store uploads large files in parts
    /// (`multipart.rs`). The request budget (`pacing.rs`) charges that many.
    fn put_requests(&self, bytes: u64, create: bool) -> u32 {
        let _ = (bytes, create);
        1
    }

    /// Removes what uploads killed half-way left behind where nothing else will (a
    /// `file://` replica's staging files, `<name>#<n>`, which listings skip) once nothing
    /// has written to them for `idle`; returns how many. Stores that keep nothing of an
    /// unfinished upload, or clean up by themselves, do nothing (the default).
    async fn sweep_abandoned(&self, idle: std::time::Duration) -> Result<u32> {
        let _ = idle;
        Ok(0)
    }

    /// Deletes the file. Deleting a file that does not exist succeeds.
    async fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<()>;

    /// Creates the object `name` directly under the replica's path (not an LTX file: the
    /// fencing probe's marker, see `fencing.rs`) only if nothing is there, and reports the
    /// store's answer: an object already there with other bytes is
    /// [`Error::AlreadyExists`](super::Error::AlreadyExists). Nothing is made durable.
    async fn create_marker(&self, name: &str, data: Bytes) -> Result<()>;

    /// Deletes the object `name` directly under the replica's path; a missing one is fine.
    async fn delete_marker(&self, name: &str) -> Result<()>;
}
