//! Counts every operation a store performs, per replica type and operation, for the
//! Prometheus metrics (`crate::metrics`): how many, how many bytes, how long, and which
//! failed. [`open_store`](super::open_store) wraps every store in [`Metered`], so no
//! backend counts anything itself.
//!
//! The counters are process-wide, like Litestream's `litestream_replica_operation_*`
//! families, and lock-free: a fixed table of atomics indexed by (type, operation). One
//! operation is one call of the [`ReplicaStore`] trait; retries a client library makes
//! inside one call (object_store's HTTP retries) are not seen here.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::error::{Error, Result};
use super::store::{LtxObject, ReplicaStore};

/// Replica types as Litestream labels them (`replica_type`), plus our `memory`.
const TYPES: [&str; 6] = ["file", "s3", "gs", "abs", "nats", "memory"];

/// Operations as Litestream labels them (`operation`). `HEAD` covers size and timestamp
/// look-ups, whatever request the backend makes for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Get,
    Put,
    Delete,
    List,
    Head,
}

const OPS: [Op; 5] = [Op::Get, Op::Put, Op::Delete, Op::List, Op::Head];

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Get => "GET",
            Op::Put => "PUT",
            Op::Delete => "DELETE",
            Op::List => "LIST",
            Op::Head => "HEAD",
        }
    }
}

/// Error kinds, the `code` label of failed operations.
const CODES: [&str; 7] = [
    "NotFound",
    "AlreadyExists",
    "Config",
    "Transient",
    "Denied",
    "InvalidData",
    "Other",
];

fn code_index(error: &Error) -> usize {
    match error {
        Error::NotFound { .. } => 0,
        Error::AlreadyExists { .. } => 1,
        Error::Config(_) => 2,
        Error::Transient { .. } => 3,
        Error::Denied { .. } => 4,
        Error::InvalidData { .. } => 5,
        Error::Other { .. } => 6,
    }
}

/// Upper bounds (seconds) of the duration histogram's buckets: Litestream's, so that
/// dashboards built on its `litestream_replica_operation_duration_seconds` read ours.
pub const DURATION_BUCKETS: [f64; 9] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0];

struct Cell {
    count: AtomicU64,
    bytes: AtomicU64,
    errors: [AtomicU64; CODES.len()],
    /// Operations that took at most `DURATION_BUCKETS[i]` and more than the bound before
    /// (not cumulative; the snapshot sums them up).
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    nanos: AtomicU64,
}

impl Cell {
    const fn new() -> Cell {
        Cell {
            count: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: [const { AtomicU64::new(0) }; CODES.len()],
            buckets: [const { AtomicU64::new(0) }; DURATION_BUCKETS.len()],
            nanos: AtomicU64::new(0),
        }
    }

    fn record(&self, took: Duration, bytes: u64, error: Option<&Error>) {
        let seconds = took.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.nanos
            .fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(e) = error {
            self.errors[code_index(e)].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

static TABLE: [[Cell; OPS.len()]; TYPES.len()] = [const { [const { Cell::new() }; OPS.len()] }; TYPES.len()];

/// What one (replica type, operation) pair has done since the process started.
#[derive(Clone, Debug, PartialEq)]
pub struct OperationStats {
    pub replica_type: &'static str,
    pub operation: &'static str,
    pub count: u64,
    /// Bytes sent (PUT) or received (GET).
    pub bytes: u64,
    /// Failed operations by error kind, only the kinds that happened.
    pub errors: Vec<(&'static str, u64)>,
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`] (operations that took at
    /// most that long); `count` is the `+Inf` bucket.
    pub cumulative_buckets: [u64; DURATION_BUCKETS.len()],
    pub duration_seconds: f64,
}

/// Every (replica type, operation) pair that has been used in this process.
pub fn operation_stats() -> Vec<OperationStats> {
    let mut out = Vec::new();
    for (t, row) in TABLE.iter().enumerate() {
        for (o, cell) in row.iter().enumerate() {
            let count = cell.count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let mut cumulative_buckets = [0; DURATION_BUCKETS.len()];
            let mut running = 0;
            for (i, b) in cell.buckets.iter().enumerate() {
                running += b.load(Ordering::Relaxed);
                cumulative_buckets[i] = running;
            }
            out.push(OperationStats {
                replica_type: TYPES[t],
                operation: OPS[o].label(),
                // An operation recorded while this snapshot was taken may be in a bucket
                // and not yet in the count; the +Inf bucket never goes below the others.
                count: count.max(running),
                bytes: cell.bytes.load(Ordering::Relaxed),
                errors: CODES
                    .iter()
                    .zip(&cell.errors)
                    .map(|(code, n)| (*code, n.load(Ordering::Relaxed)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
                cumulative_buckets,
                duration_seconds: cell.nanos.load(Ordering::Relaxed) as f64 / 1e9,
            });
        }
    }
    out
}

/// A store whose every operation is counted under its replica type.
pub struct Metered {
    inner: Arc<dyn ReplicaStore>,
    cells: &'static [Cell; OPS.len()],
}

impl std::fmt::Debug for Metered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Metered {
    /// Wraps `inner`, counting its operations under `scheme`'s replica type (`gs` for
    /// `gcs`, `abs` for `az`, as Litestream names them).
    pub fn wrap(scheme: &str, inner: Arc<dyn ReplicaStore>) -> Arc<dyn ReplicaStore> {
        let name = match scheme {
            "gcs" => "gs",
            "az" => "abs",
            other => other,
        };
        let t = TYPES.iter().position(|t| *t == name).unwrap_or(TYPES.len() - 1);
        Arc::new(Metered {
            inner,
            cells: &TABLE[t],
        })
    }

    async fn time<T>(
        &self,
        op: Op,
        sent: u64,
        f: impl std::future::Future<Output = Result<T>>,
        received: fn(&T) -> u64,
    ) -> Result<T> {
        let started = Instant::now();
        let result = f.await;
        let bytes = match &result {
            Ok(value) => sent + received(value),
            Err(_) => 0,
        };
        let index = OPS.iter().position(|o| *o == op).expect("every op is in OPS");
        self.cells[index].record(started.elapsed(), bytes, result.as_ref().err());
        result
    }
}

fn none<T>(_: &T) -> u64 {
    0
}

fn body_len(b: &Bytes) -> u64 {
    b.len() as u64
}

#[async_trait]
impl ReplicaStore for Metered {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    fn file_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.inner.file_key(level, min_txid, max_txid)
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxObject>> {
        self.time(Op::List, 0, self.inner.list(level), none).await
    }

    async fn get(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<Bytes> {
        self.time(Op::Get, 0, self.inner.get(level, min_txid, max_txid), body_len)
            .await
    }

    async fn get_range(&self, level: u8, min_txid: u64, max_txid: u64, range: Range<u64>) -> Result<Bytes> {
        let f = self.inner.get_range(level, min_txid, max_txid, range);
        self.time(Op::Get, 0, f, body_len).await
    }

    async fn head(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<LtxObject> {
        self.time(Op::Head, 0, self.inner.head(level, min_txid, max_txid), none)
            .await
    }

    async fn timestamp(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<i64> {
        let f = self.inner.timestamp(level, min_txid, max_txid);
        self.time(Op::Head, 0, f, none).await
    }

    async fn put_new(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let sent = data.len() as u64;
        let f = self.inner.put_new(level, min_txid, max_txid, data, timestamp_ms);
        self.time(Op::Put, sent, f, none).await
    }

    async fn put(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let sent = data.len() as u64;
        let f = self.inner.put(level, min_txid, max_txid, data, timestamp_ms);
        self.time(Op::Put, sent, f, none).await
    }

    fn put_requests(&self, bytes: u64, create: bool) -> u32 {
        self.inner.put_requests(bytes, create)
    }

    // Local files only, no request to the store: not counted.
    async fn sweep_abandoned(&self, idle: Duration) -> Result<u32> {
        self.inner.sweep_abandoned(idle).await
    }

    async fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<()> {
        self.time(Op::Delete, 0, self.inner.delete(level, min_txid, max_txid), none)
            .await
    }

    // The fencing probe's markers are requests to the store like any other: counted as
    // the PUT and DELETE they are, so the operation totals match the store's own logs.
    async fn create_marker(&self, name: &str, data: Bytes) -> Result<()> {
        let sent = data.len() as u64;
        self.time(Op::Put, sent, self.inner.create_marker(name, data), none)
            .await
    }

    async fn delete_marker(&self, name: &str) -> Result<()> {
        self.time(Op::Delete, 0, self.inner.delete_marker(name), none).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open_store;

    fn stats_of(replica_type: &str, operation: &str) -> Option<OperationStats> {
        operation_stats()
            .into_iter()
            .find(|s| s.replica_type == replica_type && s.operation == operation)
    }

    #[test]
    fn every_operation_is_counted_with_its_bytes_and_failures() {
        // Process-wide counters: only memory:// stores of this test run here, but other
        // tests may add to them, so the test compares before and after.
        let before = |op| stats_of("memory", op).map_or((0, 0, 0), |s| (s.count, s.bytes, s.errors.len() as u64));
        let (puts, put_bytes, _) = before("PUT");
        let (gets, get_bytes, _) = before("GET");
        let store = open_store("memory://metered-test", &Default::default()).unwrap();
        crate::runtime::block_on(async {
            store
                .put_new(0, 1, 1, Bytes::from_static(b"0123456789"), 0)
                .await
                .unwrap();
            assert_eq!(store.get_range(0, 1, 1, 2..5).await.unwrap().len(), 3);
            assert!(store.get(0, 7, 7).await.unwrap_err().is_not_found());
        });
        let put = stats_of("memory", "PUT").unwrap();
        let get = stats_of("memory", "GET").unwrap();
        assert!(put.count > puts && put.bytes >= put_bytes + 10);
        assert!(get.count >= gets + 2 && get.bytes >= get_bytes + 3);
        assert!(get.errors.iter().any(|(code, n)| *code == "NotFound" && *n >= 1));
        assert!(*get.cumulative_buckets.last().unwrap() <= get.count);
        assert!(get.duration_seconds > 0.0);
        assert!(get.cumulative_buckets.windows(2).all(|w| w[0] <= w[1]));
    }
}
