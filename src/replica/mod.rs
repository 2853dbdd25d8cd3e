//! The read-replica role: a database served straight from object storage.
//!
//! Opening costs two rounds of requests, each made all at once: one LIST per level, then
//! for every file of the restore plan its page index (a tail sized from the file's size)
//! and its first 64 KiB, whose frames are the file's lowest pages: page 1, the schema and
//! the roots of early tables arrive with the indexes (see [`Fetcher::plan_file`]). A cold
//! point query on a 3-level b-tree then needs two more requests (interior page, leaf).
//! Each page SQLite reads that is not cached is one ranged GET of its compressed frame
//! (or a growing run of frames for a scan), decompressed into an LRU cache shared by
//! every connection of the replica in the process. A poller (a job of the process's engine,
//! `jobs.rs`) follows the store and prepares the next
//! [`State`]; a connection switches to it only when it starts a read transaction, so a
//! transaction never mixes two TXIDs. Optional: hydration into a local file
//! ([`hydrate`]) and point-in-time views per connection ([`time`]).

pub mod cache;
pub mod carry;
pub mod fetch;
mod history;
pub mod hydrate;
mod hydrate_claim;
mod jobs;
mod poll;
mod poll_warning;
pub mod pragma;
mod read;
pub mod registry;
pub mod schema_cookie;
pub mod sealed;
pub mod state;
mod status;
pub mod time;

use crate::ltx::HEADER_SIZE;
use crate::restore;
use crate::runtime::block_on;
use crate::storage::{open_store, StoreOptions};
use bytes::Bytes;
use cache::{PageCache, PageKey};
use fetch::{decode_frames, FetchError, Fetcher, Frame};
use state::{FileKey, PlanFile, State};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How a replica is opened (from [`crate::config::Config`]).
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    pub url: String,
    pub store_options: StoreOptions,
    pub poll_interval: Duration,
    pub cache_bytes: u64,
    /// Download every page into this local file in the background and read from it.
    pub hydrate: Option<std::path::PathBuf>,
    /// Opens an encrypted (LTX v4) replica.
    pub key: Option<Arc<crate::ltx::crypto::PrivateKey>>,
}

/// Request and cache counters, for `litestream_status()`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Every request sent, hedges included.
    pub requests: AtomicU64,
    /// Second requests sent beside a read the store had not answered within the hedge
    /// delay (see [`Fetcher::read`](fetch::Fetcher)).
    pub hedged_requests: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub pages_fetched: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Cached pages filed under a new plan's file without fetching (see [`carry`]).
    pub pages_carried: AtomicU64,
    /// Pages that came with the page indexes when the replica opened (each file's first
    /// bytes), without a request of their own; also counted in `pages_fetched`.
    pub pages_read_at_open: AtomicU64,
    pub polls: AtomicU64,
    /// Times the store turned out to hold another database's history (`poll.rs`).
    pub history_replacements: AtomicU64,
    pub poll_errors: AtomicU64,
    pub read_errors: AtomicU64,
}

/// Why a read failed; the VFS turns these into `SQLITE_IOERR_READ` / `SQLITE_CORRUPT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    Io(String),
    Corrupt(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(m) | ReadError::Corrupt(m) => f.write_str(m),
        }
    }
}

struct Shared {
    /// The newest prepared state: what the next read transaction sees.
    current: Arc<State>,
    stop: bool,
    wake: bool,
    /// A file of the plan went missing: the next poll re-plans from every level.
    replan: bool,
    polls_since_full: u32,
    last_caught_up: Option<Instant>,
    last_error: Option<String>,
    /// The newest TXID the store's last listing showed, reached or not: `store_txid` in
    /// status, so a replica stuck behind (a poll that fails) does not look current.
    store_txid: u64,
    poll_warning: poll_warning::PollWarning,
    /// The same for a page fetched by a read that the hydration file would not take
    /// (a full disk): logged per page before, ~190 lines a second (a tester).
    hydration_write_warning: poll_warning::PollWarning,
    /// The newest plan stops at this gap, short of the store's newest file: what the
    /// replica serves is the state before it (`poll.rs`).
    gap: Option<restore::Gap>,
}

impl Shared {
    /// Seconds since the replica last caught up with the store. Never caught up because
    /// a gap stops it: the age of the state it serves (its newest TXID's timestamp), as
    /// it is that far behind at least; -1 ("never") hid that it is stuck.
    fn lag(&self) -> Option<Duration> {
        self.last_caught_up.map(|t| t.elapsed()).or_else(|| {
            let now = crate::primary::compactor::now_ms();
            self.gap
                .as_ref()
                .map(|_| Duration::from_millis((now - self.current.timestamp_ms).max(0) as u64))
        })
    }

    /// What `litestream_status()` says under `error`: the gap, else the last failure.
    fn error(&self, name: &str) -> Option<String> {
        match &self.gap {
            Some(gap) => Some(format!(
                "replica {name} {gap}: serving TXID {}, the state before the gap, until a snapshot \
                 past it is stored (the primary takes one when its compaction finds the gap, or \
                 ask for it with litestream_snapshot())",
                gap.reached
            )),
            None => self.last_error.clone(),
        }
    }
}

/// One replica location, shared by every connection that opened it in this process.
pub struct Replica {
    name: String,
    fetcher: Fetcher,
    poll_interval: Duration,
    cache: PageCache,
    shared: Mutex<Shared>,
    /// Signalled when `current` changes.
    changed: Condvar,
    /// The poller's and hydration's jobs in the process's engine (`jobs.rs`).
    poll_job: std::sync::OnceLock<crate::engine::JobId>,
    hydrate_job: std::sync::OnceLock<crate::engine::JobId>,
    /// Headers and indexes of files seen, so a re-plan fetches only new files.
    known: Mutex<HashMap<FileKey, Arc<PlanFile>>>,
    hydration: Option<Arc<hydrate::Hydration>>,
    /// A fresh plan standing in for a read transaction's own, once a file of that one
    /// went missing: (address of the state it stands in for, the fresh state of the same
    /// TXID). Without it every later page the transaction misses would re-list the store
    /// and re-plan again (a scan pinned to an old TXID took 100 s and 7,500 requests).
    stand_in: Mutex<Option<(usize, Arc<State>)>>,
    opened: Instant,
    /// Sequential-read detection: the last page a fetch ended at and the current
    /// read-ahead window in pages (1 = no read-ahead).
    readahead_end: std::sync::atomic::AtomicU32,
    readahead_window: std::sync::atomic::AtomicU32,
}

/// Bytes read from the start of each planned file when a replica opens, with its index
/// (see [`Fetcher::plan_file`]): a snapshot's first 64 KiB hold page 1 and the next ~15
/// pages of 4 KiB, where the schema and the roots of tables created early live.
const OPEN_HEAD_BYTES: u64 = 64 * 1024;

/// Largest read-ahead: 1024 pages (4 MiB of 4 KiB pages) per round trip, in ranged GETs
/// of at most [`fetch::MAX_RANGE`] made together.
const MAX_READAHEAD_PAGES: u32 = 1024;
/// How much longer each read-ahead run of a scan is than the one before.
const READAHEAD_GROWTH: u32 = 4;

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("name", &self.name).finish()
    }
}

/// What a SQL function knows about a replica connection.
#[derive(Clone, Debug)]
pub struct ReplicaConn {
    pub replica: Arc<Replica>,
    /// The TXID the connection sees (its read transaction's, else the next one's).
    pub txid: u64,
    /// The connection's point-in-time setting.
    pub view: Arc<time::ConnView>,
}

impl Replica {
    /// Opens the replica at `config.url`: plans the latest TXID, reads the page index of
    /// every planned file, and starts following the store.
    pub fn open(config: &ReplicaConfig) -> Result<Arc<Replica>, String> {
        let store = open_store(&config.url, &config.store_options).map_err(|e| e.to_string())?;
        let name = store.describe().to_string();
        let fetcher = Fetcher::new(store, config.key.clone());
        let started = Instant::now();
        let listing = block_on(fetcher.list_all()).map_err(|e| format!("listing replica {name}: {e}"))?;
        let (plan, gap) = restore::plan_reachable(&listing).map_err(|e| {
            format!("replica {name} {e}: nothing to read (has a primary replicated to this location yet?)")
        })?;
        // Each file's first pages come with its index: SQLite's first reads (page 1, the
        // schema, the b-tree roots) are low page numbers, and this saves their round trips.
        let files = block_on(fetcher.plan_files(plan, OPEN_HEAD_BYTES)).map_err(|e| format!("replica {name}: {e}"))?;
        let (files, heads): (Vec<Arc<PlanFile>>, Vec<Bytes>) = files.into_iter().map(|(f, h)| (Arc::new(f), h)).unzip();
        let known = files.iter().map(|f| (f.key(), Arc::clone(f))).collect();
        let state = State::build(files).map_err(|e| format!("replica {name}: corrupt replica: {e}"))?;
        let caught_up = (state.txid >= listing.max_txid()).then(Instant::now);
        let hydration = match &config.hydrate {
            Some(path) => Some(Arc::new(hydrate::Hydration::create(path, &name)?)),
            None => None,
        };
        tracing::info!(
            replica = %name,
            txid = state.txid,
            pages = state.commit,
            files = state.files().len(),
            ms = started.elapsed().as_millis() as u64,
            "opened read replica"
        );
        let replica = Arc::new(Replica {
            name,
            fetcher,
            poll_interval: config.poll_interval,
            cache: PageCache::new(config.cache_bytes),
            readahead_end: std::sync::atomic::AtomicU32::new(u32::MAX),
            readahead_window: std::sync::atomic::AtomicU32::new(1),
            shared: Mutex::new(Shared {
                current: Arc::new(state),
                stop: false,
                wake: false,
                replan: false,
                polls_since_full: 0,
                last_caught_up: caught_up,
                last_error: None,
                store_txid: 0,
                poll_warning: Default::default(),
                hydration_write_warning: Default::default(),
                gap: None,
            }),
            changed: Condvar::new(),
            poll_job: Default::default(),
            hydrate_job: Default::default(),
            known: Mutex::new(known),
            hydration,
            stand_in: Mutex::new(None),
            opened: Instant::now(),
        });
        replica.note_gap(gap);
        replica.keep_first_pages(&replica.current(), &heads);
        replica.start_jobs();
        Ok(replica)
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The redacted replica URL.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The newest prepared state: a read transaction starting now sees this one.
    pub fn current(&self) -> Arc<State> {
        Arc::clone(&self.lock().current)
    }

    pub fn stats(&self) -> &Stats {
        &self.fetcher.stats
    }

    /// Seconds since the replica last caught up with the store; `None` if it never has.
    pub fn lag(&self) -> Option<Duration> {
        self.lock().lag()
    }

    /// Stops the poller (the last connection closed).
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake_poller();
        self.wake_hydrator();
        self.changed.notify_all();
    }

    /// Blocks until the newest state reaches `txid` (polling the store meanwhile);
    /// returns the TXID reached.
    pub fn wait(&self, txid: u64, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut g = self.lock();
        loop {
            if g.current.txid >= txid {
                return Ok(g.current.txid);
            }
            let now = Instant::now();
            if now >= deadline {
                let why = g
                    .error(&self.name)
                    .map(|e| format!(" (last error: {e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "timed out after {} ms waiting for TXID {txid}; the replica is at TXID {}{why}",
                    timeout.as_millis(),
                    g.current.txid
                ));
            }
            g.wake = true;
            self.wake_poller();
            g = self
                .changed
                .wait_timeout(g, (deadline - now).min(Duration::from_millis(100)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// The newest state whose files were all written at or before `target_ms` (header
    /// timestamps): one LIST per level, a binary search over file timestamps (about
    /// log2(files) requests), then the page indexes of the plan.
    pub fn state_at(&self, target_ms: i64) -> Result<Arc<State>, String> {
        let what = |e: FetchError| format!("replica {}: {e}", self.name);
        let listing = block_on(self.fetcher.list_all()).map_err(what)?;
        let timestamp = |f: &crate::storage::LtxObject| -> Result<i64, String> {
            let key = FileKey {
                level: f.level,
                min_txid: f.min_txid,
                max_txid: f.max_txid,
                size: f.size,
            };
            if let Some(known) = self.known_files().get(&key) {
                return Ok(known.header.timestamp_ms);
            }
            block_on(self.fetcher.timestamp(f)).map_err(what)
        };
        let Some(txid) = restore::resolve_timestamp(&listing, target_ms, timestamp)? else {
            let oldest = listing
                .snapshots
                .iter()
                .chain(listing.incremental.iter().flatten())
                .min_by_key(|f| f.max_txid)
                .map(|f| block_on(self.fetcher.timestamp(f)).map_err(what))
                .transpose()?
                .map_or(String::new(), |ms| {
                    format!(
                        "; its oldest TXID was written at {}",
                        crate::storage::format_rfc3339_nano(ms)
                    )
                });
            return Err(format!(
                "replica {} has no state at or before {}{oldest}",
                self.name,
                crate::storage::format_rfc3339_nano(target_ms)
            ));
        };
        let plan = restore::plan_at_time(&listing, txid).map_err(|e| format!("replica {} {e}", self.name))?;
        let planned = self.plan_files(plan).map_err(what)?;
        let state = State::build(planned).map_err(|e| format!("replica {}: corrupt replica: {e}", self.name))?;
        Ok(Arc::new(state))
    }

    /// Files the cached pages and the hydration slots that `old` serves under `new`'s
    /// files where [`carry`] proves the bytes are the same, so a new plan naming
    /// compacted files does not fetch again what it already has.
    fn carry_over(&self, old: &State, new: &State) {
        let Some(carry) = carry::Carry::between(old, new) else {
            tracing::debug!(replica = %self.name, from = old.txid, to = new.txid, "nothing carries to the new plan");
            return;
        };
        let pages = self.cache.carry(|k| carry.key(k));
        let slots = self.hydration.as_ref().map_or(0, |h| h.carry(&carry));
        self.stats().pages_carried.fetch_add(pages as u64, Ordering::Relaxed);
        tracing::debug!(
            replica = %self.name,
            from = old.txid,
            to = new.txid,
            pages,
            slots,
            "carried cached pages to the new plan"
        );
    }

    /// A freshly planned state at exactly `txid`, if the store still holds one.
    fn state_exactly(&self, txid: u64) -> Option<State> {
        let listing = block_on(self.fetcher.list_all()).ok()?;
        let plan = restore::plan(&listing, Some(txid)).ok()?;
        let files = self.plan_files(plan).ok()?;
        State::build(files).ok()
    }

    fn known_files(&self) -> MutexGuard<'_, HashMap<FileKey, Arc<PlanFile>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Headers and indexes of `objs`, fetching only those not seen before.
    fn plan_files(&self, objs: Vec<crate::storage::LtxObject>) -> Result<Vec<Arc<PlanFile>>, FetchError> {
        block_on(self.plan_files_async(&self.fetcher, objs))
    }

    /// [`Self::plan_files`] for the async poll, through `fetcher` (whether its reads
    /// hedge is the poll's to say).
    async fn plan_files_async(
        &self,
        fetcher: &Fetcher,
        objs: Vec<crate::storage::LtxObject>,
    ) -> Result<Vec<Arc<PlanFile>>, FetchError> {
        let key = |o: &crate::storage::LtxObject| FileKey {
            level: o.level,
            min_txid: o.min_txid,
            max_txid: o.max_txid,
            size: o.size,
        };
        let missing: Vec<_> = {
            let known = self.known_files();
            objs.iter().filter(|o| !known.contains_key(&key(o))).cloned().collect()
        };
        let fetched = fetcher.plan_files(missing, HEADER_SIZE as u64).await?;
        let mut known = self.known_files();
        for (f, _header) in fetched {
            known.insert(f.key(), Arc::new(f));
        }
        objs.iter()
            .map(|o| {
                known
                    .get(&key(o))
                    .cloned()
                    .ok_or_else(|| FetchError::Corrupt("index cache lost a file".into()))
            })
            .collect()
    }

    /// The key this replica was opened with, for `litestream_restore()` on its connections.
    pub fn encryption_key(&self) -> Option<crate::ltx::crypto::PrivateKey> {
        self.fetcher.key.as_deref().cloned()
    }
}
