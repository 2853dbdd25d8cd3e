//! A per-process budget of requests per second to each store endpoint, so that ten
//! thousand databases committing at once, or catching up after an outage, do not storm
//! S3 (which throttles a prefix past a few thousand requests a second, and bills every
//! one). Verneuil paces itself the same way.
//!
//! Every store [`open_store`](super::open_store) returns is wrapped in [`Paced`]: each
//! call of the [`ReplicaStore`] trait takes a slot from its endpoint's budget before it
//! goes out, whoever makes it (uploads, compaction, replica reads, restores). The budget
//! is a generic cell rate: `rate` requests a second, up to a tenth of a second's worth
//! at once, first come first served. A call waits asynchronously: an engine job whose
//! request waits hands it off like any slow round trip (`crate::engine::round_trip`).
//!
//! Rate: the `requests_per_second` URI parameter, else `LITESTREAM_REQUESTS_PER_SECOND`,
//! else 1000 for network stores; local ones (`file://`, `memory://`) are unpaced unless
//! told. `0` means no budget. Databases sharing an endpoint share its budget; if they ask
//! for different rates, the lowest holds. Retries object_store makes inside one call (at
//! most three, 100 ms apart or more) are not counted.

use crate::vfs::sys::fork::ProcessMutex;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;

use super::error::Result;
use super::store::{LtxObject, ReplicaStore};

/// Requests per second to one network store endpoint when nothing says otherwise.
pub const DEFAULT_RATE: u32 = 1000;

/// The budget of one endpoint, and what it has seen.
pub struct Budget {
    endpoint: String,
    state: Mutex<Cell>,
    /// Calls waiting for their slot, and calls gone out and not yet answered.
    waiting: AtomicU64,
    in_flight: AtomicU64,
    requests: AtomicU64,
}

struct Cell {
    /// Requests per second; 0: none.
    rate: u32,
    /// When the budget is next free of earlier reservations (the "theoretical arrival
    /// time" of the generic cell rate algorithm).
    free_at: Instant,
    /// Requests counted per second for the last few seconds (`requests_per_second`).
    window: [(u64, u64); 4],
}

impl Budget {
    fn new(endpoint: &str, rate: u32) -> Budget {
        Budget {
            endpoint: endpoint.to_string(),
            state: Mutex::new(Cell {
                rate,
                free_at: Instant::now(),
                window: [(0, 0); 4],
            }),
            waiting: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cell> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests this budget lets out at once after a quiet spell.
    fn burst(rate: u32) -> u32 {
        (rate / 10).max(1)
    }

    /// Reserves the next `n` slots: when the first of these requests may go out.
    fn reserve(&self, now: Instant, n: u32) -> Instant {
        let mut cell = self.lock();
        let second = epoch_second(now);
        let i = (second % cell.window.len() as u64) as usize;
        if cell.window[i].0 != second {
            cell.window[i] = (second, 0);
        }
        cell.window[i].1 += u64::from(n);
        if cell.rate == 0 {
            return now;
        }
        let interval = Duration::from_secs(1) / cell.rate;
        let tolerance = interval * (Self::burst(cell.rate) - 1);
        let free_at = cell.free_at.max(now);
        cell.free_at = free_at + interval * n;
        free_at.checked_sub(tolerance).map_or(now, |t| t.max(now))
    }

    /// Waits for a slot, then runs `request` counted as in flight.
    async fn pace<T>(&self, request: impl std::future::Future<Output = T>) -> T {
        self.pace_n(1, request).await
    }

    /// Like [`Budget::pace`] for a call that makes `n` requests (an upload in parts):
    /// it waits for the first slot only and takes all `n`, so the requests after it
    /// wait for the rest. Its parts go out as fast as they upload; at 5 MiB or more
    /// each, they cannot storm anything.
    async fn pace_n<T>(&self, n: u32, request: impl std::future::Future<Output = T>) -> T {
        let at = self.reserve(Instant::now(), n.max(1));
        if at > Instant::now() {
            let _waiting = Counted::new(&self.waiting);
            tokio::time::sleep_until(at.into()).await;
        }
        self.requests.fetch_add(u64::from(n.max(1)), Ordering::Relaxed);
        let _in_flight = Counted::new(&self.in_flight);
        request.await
    }

    /// Lowers the rate to `rate` if that is lower (0 counts as no limit).
    fn ask(&self, rate: u32) {
        let mut cell = self.lock();
        if rate != 0 && (cell.rate == 0 || rate < cell.rate) {
            cell.rate = rate;
        }
    }

    /// The endpoint's figures for the status: its budget, requests per second over the
    /// last full seconds, requests waiting for a slot and in flight.
    pub fn json(&self) -> serde_json::Value {
        let cell = self.lock();
        let now = epoch_second(Instant::now());
        // The last three full seconds (this one is still counting).
        let recent: u64 = cell
            .window
            .iter()
            .filter(|(s, _)| *s < now && now - *s <= 3)
            .map(|(_, n)| n)
            .sum();
        serde_json::json!({
            "endpoint": self.endpoint,
            "budget_per_second": cell.rate,
            "requests_per_second": recent as f64 / 3.0,
            "requests": self.requests.load(Ordering::Relaxed),
            "waiting_for_budget": self.waiting.load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
        })
    }
}

/// Whole seconds since the process first paced a request.
fn epoch_second(now: Instant) -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    now.saturating_duration_since(*START.get_or_init(Instant::now))
        .as_secs()
}

/// Per process: a child of `fork()` paces its own requests (`vfs::sys::fork`).
static BUDGETS: ProcessMutex<Vec<Arc<Budget>>> = ProcessMutex::new();

/// The budget of `endpoint`, made on first use with `rate`; a later, lower `rate`
/// lowers it.
pub fn budget(endpoint: &str, rate: u32) -> Arc<Budget> {
    let mut all = BUDGETS.lock();
    if let Some(b) = all.iter().find(|b| b.endpoint == endpoint) {
        b.ask(rate);
        return Arc::clone(b);
    }
    let b = Arc::new(Budget::new(endpoint, rate));
    all.push(Arc::clone(&b));
    b
}

/// Every endpoint's figures (the engine's status).
pub fn budgets_json() -> Vec<serde_json::Value> {
    let all: Vec<Arc<Budget>> = BUDGETS.lock().clone();
    all.iter().map(|b| b.json()).collect()
}

/// Requests per second over the last full seconds, all endpoints together.
pub fn requests_per_second() -> f64 {
    total(budgets_json().iter().filter_map(|b| b["requests_per_second"].as_f64()))
}

/// The sum of `rates`, 0 when there are none. Not `Iterator::sum`: for floats it starts
/// from -0.0 (the identity of IEEE addition), and a process without stores showed
/// `"requests_per_second":-0.0` in `litestream_status()`.
fn total(rates: impl Iterator<Item = f64>) -> f64 {
    rates.fold(0.0, |sum, rate| sum + rate)
}

/// The rate a store gets: what its URI or options say, else the environment's, else the
/// default for network stores (`None` from both for a local store: unpaced).
pub fn rate_for(scheme: &str, asked: Option<u32>, env: Option<&str>) -> std::result::Result<u32, String> {
    if let Some(rate) = asked {
        return Ok(rate);
    }
    if let Some(text) = env.filter(|v| !v.trim().is_empty()) {
        return parse_rate(text).map_err(|e| format!("LITESTREAM_REQUESTS_PER_SECOND: {e}"));
    }
    Ok(match scheme {
        "file" | "memory" => 0,
        _ => DEFAULT_RATE,
    })
}

/// A whole number of requests per second (0: no limit).
pub fn parse_rate(text: &str) -> std::result::Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| format!("{text:?} is not a whole number of requests per second (0: no limit)"))
}

/// A store whose every call waits for its endpoint's budget.
pub struct Paced {
    inner: Arc<dyn ReplicaStore>,
    budget: Arc<Budget>,
}

impl std::fmt::Debug for Paced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

impl Paced {
    pub fn wrap(inner: Arc<dyn ReplicaStore>, budget: Arc<Budget>) -> Arc<dyn ReplicaStore> {
        Arc::new(Paced { inner, budget })
    }
}

#[async_trait]
impl ReplicaStore for Paced {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    fn file_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.inner.file_key(level, min_txid, max_txid)
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.budget.endpoint)
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxObject>> {
        self.budget.pace(self.inner.list(level)).await
    }

    async fn get(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<Bytes> {
        self.budget.pace(self.inner.get(level, min_txid, max_txid)).await
    }

    async fn get_range(&self, level: u8, min_txid: u64, max_txid: u64, range: Range<u64>) -> Result<Bytes> {
        self.budget
            .pace(self.inner.get_range(level, min_txid, max_txid, range))
            .await
    }

    async fn head(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<LtxObject> {
        self.budget.pace(self.inner.head(level, min_txid, max_txid)).await
    }

    async fn timestamp(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<i64> {
        self.budget.pace(self.inner.timestamp(level, min_txid, max_txid)).await
    }

    async fn put_new(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let n = self.inner.put_requests(data.len() as u64, true);
        self.budget
            .pace_n(n, self.inner.put_new(level, min_txid, max_txid, data, timestamp_ms))
            .await
    }

    async fn put(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let n = self.inner.put_requests(data.len() as u64, false);
        self.budget
            .pace_n(n, self.inner.put(level, min_txid, max_txid, data, timestamp_ms))
            .await
    }

    fn put_requests(&self, bytes: u64, create: bool) -> u32 {
        self.inner.put_requests(bytes, create)
    }

    // Local files only: no request, nothing to pace.
    async fn sweep_abandoned(&self, idle: std::time::Duration) -> Result<u32> {
        self.inner.sweep_abandoned(idle).await
    }

    async fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<()> {
        self.budget.pace(self.inner.delete(level, min_txid, max_txid)).await
    }

    async fn create_marker(&self, name: &str, data: Bytes) -> Result<()> {
        self.budget.pace(self.inner.create_marker(name, data)).await
    }

    async fn delete_marker(&self, name: &str) -> Result<()> {
        self.budget.pace(self.inner.delete_marker(name)).await
    }
}

/// One more in a counter while alive. A request given up on (a timeout, a stop, an open
/// that failed) drops its future before the line after its `await`: counted by hand,
/// `in_flight` grew by each such request for good (a tester: 90 after 10 refused opens).
struct Counted<'a>(&'a AtomicU64);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicU64) -> Counted<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::error::Error;

    #[test]
    fn the_rate_of_no_stores_is_zero_not_negative_zero() {
        let none = total(std::iter::empty());
        assert!(none == 0.0 && none.is_sign_positive(), "{none:?}");
        assert_eq!(serde_json::json!(none).to_string(), "0.0");
        assert_eq!(total([0.0, 0.0].into_iter()).to_string(), "0");
        assert_eq!(total([1.5, 2.0].into_iter()), 3.5);
    }

    #[test]
    fn a_request_given_up_on_is_not_counted_in_flight_for_good() {
        let budget = Budget::new("given-up", 0);
        crate::runtime::block_on(async {
            let request = budget.pace_n(1, std::future::pending::<()>());
            // Polled once (counted in flight), then dropped as a timeout drops it.
            assert!(tokio::time::timeout(std::time::Duration::from_millis(10), request)
                .await
                .is_err());
        });
        assert_eq!(budget.in_flight.load(Ordering::Relaxed), 0);
    }

    /// A store that only counts the calls that reach it, and when.
    #[derive(Debug, Default)]
    struct Counting {
        arrivals: Mutex<Vec<Instant>>,
    }

    #[async_trait]
    impl ReplicaStore for Counting {
        fn describe(&self) -> &str {
            "counting"
        }
        async fn list(&self, _: u8) -> Result<Vec<LtxObject>> {
            self.arrivals.lock().unwrap().push(Instant::now());
            Ok(Vec::new())
        }
        async fn get(&self, _: u8, _: u64, _: u64) -> Result<Bytes> {
            Err(Error::config("unused"))
        }
        async fn get_range(&self, _: u8, _: u64, _: u64, _: Range<u64>) -> Result<Bytes> {
            Err(Error::config("unused"))
        }
        async fn head(&self, _: u8, _: u64, _: u64) -> Result<LtxObject> {
            Err(Error::config("unused"))
        }
        async fn timestamp(&self, _: u8, _: u64, _: u64) -> Result<i64> {
            Err(Error::config("unused"))
        }
        async fn put_new(&self, _: u8, _: u64, _: u64, _: Bytes, _: i64) -> Result<()> {
            Err(Error::config("unused"))
        }
        async fn put(&self, _: u8, _: u64, _: u64, _: Bytes, _: i64) -> Result<()> {
            Err(Error::config("unused"))
        }
        /// As an upload in 7 parts would.
        fn put_requests(&self, _: u64, _: bool) -> u32 {
            7
        }
        async fn delete(&self, _: u8, _: u64, _: u64) -> Result<()> {
            Err(Error::config("unused"))
        }
        async fn create_marker(&self, _: &str, _: Bytes) -> Result<()> {
            Err(Error::config("unused"))
        }
        async fn delete_marker(&self, _: &str) -> Result<()> {
            Err(Error::config("unused"))
        }
    }

    /// 120 requests at once through a budget of 40 a second (4 at once): in every span
    /// from the first request, the store sees at most the burst plus the rate times the
    /// span. A slow machine only makes the counts smaller, so the test cannot pass by
    /// luck of timing, only by the budget holding; and every request gets through.
    #[test]
    fn a_burst_of_requests_reaches_the_store_within_the_budget() {
        let counting = Arc::new(Counting::default());
        let budget = budget("test://a-burst", 40);
        let store = Paced::wrap(Arc::clone(&counting) as Arc<dyn ReplicaStore>, Arc::clone(&budget));
        let started = Instant::now();
        crate::runtime::block_on(async {
            let calls: Vec<_> = (0..120)
                .map(|_| {
                    let store = Arc::clone(&store);
                    tokio::spawn(async move { store.list(0).await })
                })
                .collect();
            for c in calls {
                c.await.unwrap().unwrap();
            }
        });
        let arrivals = counting.arrivals.lock().unwrap().clone();
        assert_eq!(arrivals.len(), 120, "every request gets through");
        for (n, at) in arrivals.iter().enumerate() {
            let allowed = Budget::burst(40) as f64 + 40.0 * at.duration_since(started).as_secs_f64();
            assert!(
                (n + 1) as f64 <= allowed + 1.0,
                "request {} reached the store {:?} after the first: over the budget",
                n + 1,
                at.duration_since(started)
            );
        }
        let figures = budget.json();
        assert_eq!(figures["requests"], 120);
        assert_eq!(figures["waiting_for_budget"], 0);
        assert_eq!(figures["budget_per_second"], 40);
    }

    #[test]
    fn the_lowest_rate_asked_for_an_endpoint_holds_and_local_stores_are_unpaced() {
        assert_eq!(budget("test://shared", 500).json()["budget_per_second"], 500);
        assert_eq!(budget("test://shared", 100).json()["budget_per_second"], 100);
        assert_eq!(budget("test://shared", 0).json()["budget_per_second"], 100);
        assert_eq!(budget("test://shared", 900).json()["budget_per_second"], 100);
        assert_eq!(rate_for("s3", None, None), Ok(DEFAULT_RATE));
        assert_eq!(rate_for("file", None, None), Ok(0));
        assert_eq!(rate_for("file", None, Some("20")), Ok(20));
        assert_eq!(rate_for("s3", Some(5), Some("20")), Ok(5));
        assert!(rate_for("s3", None, Some("fast")).is_err());
    }

    /// A put that makes 7 requests (an upload in parts) takes 7 slots: at 10 a second,
    /// the request after it waits 0.7 s less its burst of one.
    #[test]
    fn an_upload_in_parts_takes_a_slot_per_request() {
        let counting = Arc::new(Counting::default());
        let budget = budget("test://in-parts", 10);
        let store = Paced::wrap(Arc::clone(&counting) as Arc<dyn ReplicaStore>, Arc::clone(&budget));
        let started = Instant::now();
        crate::runtime::block_on(async {
            let _ = store.put(0, 1, 1, Bytes::new(), 0).await;
            store.list(0).await.unwrap();
        });
        let waited = counting.arrivals.lock().unwrap()[0].duration_since(started);
        assert!(
            waited >= Duration::from_millis(600),
            "the next request waited only {waited:?}"
        );
        assert_eq!(budget.json()["requests"], 8);
    }

    #[test]
    fn an_unpaced_budget_never_waits() {
        let b = budget("test://unpaced", 0);
        let now = Instant::now();
        for _ in 0..1000 {
            assert_eq!(b.reserve(now, 1), now);
        }
    }
}
