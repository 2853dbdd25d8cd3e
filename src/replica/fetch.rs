//! Everything the replica asks of storage, counted: LISTs, the tail (page index) and
//! header of each file, and single page frames.

use super::state::PlanFile;
use super::Stats;
use crate::ltx::crypto::PrivateKey;
use crate::ltx::{Header, TailRead, DEFAULT_TAIL_GUESS, HEADER_SIZE, MIN_FILE_SIZE};
use crate::restore::{Listing, LEVELS, SNAPSHOT_LEVEL};
use crate::storage::{hedged, retry, Latencies, LtxObject, ReplicaStore, RetryPolicy};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// Storage failed (after retries), or the object is gone.
    Storage(crate::storage::Error),
    /// The bytes are not what an LTX file must hold.
    Corrupt(String),
    /// The replica is encrypted and the key is missing or not one of its recipients.
    Key(String),
    /// A local file of the replica (the hydration file) could not be written: nothing
    /// about the replica, which a full disk was reported as before ("corrupt replica").
    Local(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Storage(e) => write!(f, "{e}"),
            FetchError::Corrupt(m) => write!(f, "corrupt replica: {m}"),
            FetchError::Key(m) | FetchError::Local(m) => f.write_str(m),
        }
    }
}

impl From<crate::storage::Error> for FetchError {
    fn from(e: crate::storage::Error) -> Self {
        FetchError::Storage(e)
    }
}

/// Files whose index (and head) are read at once: a plan rarely has more than a dozen, and
/// each round trip saved is one a cold query does not wait for.
const PARALLEL_FILES: usize = 32;

/// Largest single ranged GET when fetching a large range: bigger ranges are split into
/// GETs of this size made together (a store serves each connection at a limited rate,
/// ~100 MB/s on S3). Not much smaller: each GET beyond the connections already open
/// pays a handshake's round trips first (TCP, then TLS).
pub const MAX_RANGE: u64 = 4 << 20;

/// Files up to this size are read whole when their first pages are wanted too (see
/// [`Fetcher::plan_file`]): one request instead of two, and every page of a recent
/// level-0 file (the pages that changed last) is then at hand.
const WHOLE_FILE_MAX: u64 = 512 * 1024;

/// How much of a file's end to read for its page index, from its size alone: 1/128 of it
/// (at least 32 KiB). An index entry is three varints, about 7-11 bytes for a page whose
/// frame is 1-4 KiB, so this holds the index of any file whose pages compress to 1.4 KiB
/// or more (with 4 KiB pages: any LZ4 ratio below ~2.9). A file of smaller frames (very
/// compressible pages) costs one more round trip for the rest; a larger guess would cost
/// every file more bytes.
pub fn tail_guess(size: u64) -> u64 {
    (size / 128).max(DEFAULT_TAIL_GUESS)
}

/// Storage retries on the read path: brief, since a reader is waiting.
pub fn read_policy() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(50),
        max_delay: Duration::from_secs(1),
        max_attempts: Some(5),
        deadline: Some(Duration::from_secs(5)),
    }
}

/// A store plus the counters every request goes through.
#[derive(Clone, Debug)]
pub struct Fetcher {
    pub store: Arc<dyn ReplicaStore>,
    pub stats: Arc<Stats>,
    /// Opens encrypted (LTX v4) files.
    pub key: Option<Arc<PrivateKey>>,
    /// How long this replica's reads have taken: the hedge delay (see [`Fetcher::read`]).
    pub latencies: Arc<Latencies>,
    /// Whether a request held past the hedge delay gets a second one beside it: for the
    /// reads the application waits for (a page, an open's or re-plan's LISTs and indexes);
    /// not for work no one waits for (see [`Fetcher::background`]).
    pub hedging: bool,
}

impl Fetcher {
    /// A fetcher for `store` whose reads hedge.
    pub fn new(store: Arc<dyn ReplicaStore>, key: Option<Arc<PrivateKey>>) -> Fetcher {
        Fetcher {
            store,
            stats: Arc::new(Stats::default()),
            key,
            latencies: Arc::new(Latencies::default()),
            hedging: true,
        }
    }

    /// The same fetcher, for work no query waits for (hydration, routine polls): its
    /// requests are never sent twice. Hydration's GETs are large and a second one would
    /// double its traffic to save time no one is waiting out; a poll held by the store
    /// is abandoned at the silence limit and the next one goes on.
    pub fn background(&self) -> Fetcher {
        Fetcher {
            hedging: false,
            ..self.clone()
        }
    }

    /// One store request (a LIST, a GET), counted, retried on the read path's policy,
    /// and, when this fetcher hedges, sent once more beside itself when it has not
    /// answered within the hedge delay ([`Latencies::hedge_delay`]); both are counted in
    /// `requests`, the second also in `hedged_requests`. The answer times of hedging
    /// reads feed the delay (background ones are other work: hydration's large ranges).
    async fn read<T, Fut>(&self, op: impl Fn() -> Fut) -> Result<T, crate::storage::Error>
    where
        Fut: std::future::Future<Output = crate::storage::Result<T>>,
    {
        let op = &op;
        let attempt = || {
            let delay = self.hedging.then(|| self.latencies.hedge_delay()).flatten();
            hedged(delay, move |hedge| {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                if hedge {
                    self.stats.hedged_requests.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(store = %self.store.describe(), delay_ms = delay.unwrap_or_default().as_millis() as u64, "no answer yet: hedging a read");
                }
                let request = op();
                async move {
                    let started = Instant::now();
                    let answer = request.await;
                    if answer.is_ok() && self.hedging {
                        self.latencies.record(started.elapsed());
                    }
                    answer
                }
            })
        };
        retry(attempt, &read_policy()).await
    }

    pub async fn list(&self, level: u8) -> Result<Vec<LtxObject>, FetchError> {
        Ok(self.read(|| self.store.list(level)).await?)
    }

    /// One LIST of every level, all at once. Each LIST is retried and hedged on its own:
    /// one held LIST does not send the other nine again.
    pub async fn list_all(&self) -> Result<Listing, FetchError> {
        let (snapshots, incremental) = tokio::join!(
            self.list(SNAPSHOT_LEVEL),
            futures::future::try_join_all(LEVELS.map(|level| self.list(level)))
        );
        Ok(Listing {
            snapshots: snapshots?,
            incremental: incremental?,
        })
    }

    /// The header timestamp of a file (object metadata where the store keeps it, else
    /// the header's first bytes): one request.
    pub async fn timestamp(&self, obj: &LtxObject) -> Result<i64, FetchError> {
        Ok(self
            .read(|| self.store.timestamp(obj.level, obj.min_txid, obj.max_txid))
            .await?)
    }

    /// Bytes `range` of a file, with one ranged GET (retried, hedged).
    pub async fn get_range(&self, obj: &LtxObject, range: Range<u64>) -> Result<Bytes, FetchError> {
        let bytes = self
            .read(|| {
                self.store
                    .get_range(obj.level, obj.min_txid, obj.max_txid, range.clone())
            })
            .await?;
        self.stats
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// Bytes `range` of a file as ranged GETs of at most [`MAX_RANGE`] bytes each, made
    /// together: a large range arrives in about one round trip instead of at one
    /// connection's bandwidth.
    pub async fn get_range_split(&self, obj: &LtxObject, range: Range<u64>) -> Result<Bytes, FetchError> {
        if range.end - range.start <= MAX_RANGE {
            return self.get_range(obj, range).await;
        }
        let pieces = (range.start..range.end)
            .step_by(MAX_RANGE as usize)
            .map(|from| self.get_range(obj, from..(from + MAX_RANGE).min(range.end)));
        let pieces = futures::future::try_join_all(pieces).await?;
        let mut joined = BytesMut::with_capacity((range.end - range.start) as usize);
        for piece in pieces {
            joined.extend_from_slice(&piece);
        }
        Ok(joined.freeze())
    }

    /// The header and page index of one file, and its first `head_len` bytes, in one round
    /// of requests made together: the whole file when it is small (with a head of more
    /// than the header: up to [`WHOLE_FILE_MAX`]), else its head and a tail sized by
    /// [`tail_guess`] to hold the whole index. A second round only when the
    /// index is larger than the guess.
    ///
    /// The head serves two purposes: its first [`HEADER_SIZE`] bytes are the header, and
    /// the frames after it are the file's lowest pages (frames are in page order), which a
    /// cold replica is about to read (page 1, the schema, the roots of the b-trees). Pass
    /// [`HEADER_SIZE`] for the header alone.
    pub async fn plan_file(&self, obj: &LtxObject, head_len: u64) -> Result<(PlanFile, Bytes), FetchError> {
        let name = format!(
            "level {} file {}",
            obj.level,
            crate::ltx::format_name(obj.min_txid, obj.max_txid)
        );
        let corrupt = |m: String| FetchError::Corrupt(format!("{name}: {m}"));
        if obj.size < MIN_FILE_SIZE {
            return Err(corrupt(format!("{} bytes is too short for an LTX file", obj.size)));
        }
        let head_len = head_len.max(HEADER_SIZE as u64);
        let guess = tail_guess(obj.size);
        let mut tail_start = obj.size - guess.min(obj.size);
        // Head and tail meet, or the file is small enough that one request for all of it
        // is cheaper than two (a second request may need a connection of its own).
        let whole = tail_start <= head_len || (head_len > HEADER_SIZE as u64 && obj.size <= WHOLE_FILE_MAX);
        let (head, mut tail) = if whole {
            let all = self.get_range_split(obj, 0..obj.size).await?;
            tail_start = 0;
            (all.clone(), all)
        } else {
            let (head, tail) = tokio::join!(
                self.get_range(obj, 0..head_len),
                self.get_range_split(obj, tail_start..obj.size)
            );
            (head?, tail?)
        };
        let header = Header::decode(&head[..HEADER_SIZE]).map_err(|e| corrupt(e.to_string()))?;
        if (header.min_txid, header.max_txid) != (obj.min_txid, obj.max_txid) {
            return Err(corrupt(format!(
                "header says TXIDs {}..={}",
                header.min_txid, header.max_txid
            )));
        }
        let (file_tail, keys) = loop {
            let read = super::sealed::parse_tail(self.key.as_deref(), &head, &header, obj.size, &tail).map_err(
                |e| match e {
                    FetchError::Corrupt(m) => corrupt(m),
                    other => other,
                },
            )?;
            match read {
                (TailRead::Complete(t), k) => break (t, k),
                (TailRead::NeedFrom(from), _) if from < tail_start => {
                    tracing::debug!(file = %name, guessed = obj.size - tail_start, needed = obj.size - from, "page index larger than guessed");
                    let more = self.get_range_split(obj, from..tail_start).await?;
                    let mut joined = BytesMut::with_capacity(more.len() + tail.len());
                    joined.extend_from_slice(&more);
                    joined.extend_from_slice(&tail);
                    tail = joined.freeze();
                    tail_start = from;
                }
                (TailRead::NeedFrom(from), _) => {
                    return Err(corrupt(format!(
                        "index wants bytes from {from}, already had {tail_start}"
                    )))
                }
            }
        };
        file_tail
            .index
            .check_header(&header)
            .map_err(|e| corrupt(e.to_string()))?;
        let planned = PlanFile {
            object: obj.clone(),
            header,
            entries: file_tail.index.into_entries(),
            keys,
        };
        Ok((planned, head))
    }

    /// [`Fetcher::plan_file`] for many files, all at once (up to [`PARALLEL_FILES`]), in
    /// the given order.
    pub async fn plan_files(&self, objs: Vec<LtxObject>, head_len: u64) -> Result<Vec<(PlanFile, Bytes)>, FetchError> {
        let semaphore = Arc::new(tokio::sync::Semaphore::new(PARALLEL_FILES));
        let mut set = JoinSet::new();
        for (i, obj) in objs.into_iter().enumerate() {
            let fetcher = self.clone();
            let semaphore = Arc::clone(&semaphore);
            set.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                (i, fetcher.plan_file(&obj, head_len).await)
            });
        }
        let mut out: Vec<Option<(PlanFile, Bytes)>> = Vec::new();
        while let Some(joined) = set.join_next().await {
            let (i, result) = joined.map_err(|e| FetchError::Corrupt(format!("index fetch task failed: {e}")))?;
            if out.len() <= i {
                out.resize_with(i + 1, || None);
            }
            out[i] = Some(result?);
        }
        Ok(out.into_iter().flatten().collect())
    }
}

/// One page frame of a file: page number, offset in the file, frame size (from its index).
pub type Frame = (u32, u64, u32);

/// Decodes the frame `(pgno, offset, size)` of `file` out of `bytes`, which hold the file
/// from offset `base`, into `out` (one page). The one place a replica turns stored frames
/// into pages: every read, read-ahead, speculative read and hydration goes through it.
pub fn decode_frame(
    file: &PlanFile,
    page_size: u32,
    bytes: &[u8],
    base: u64,
    (pgno, offset, size): Frame,
    out: &mut [u8],
) -> Result<(), FetchError> {
    let frame = offset
        .checked_sub(base)
        .and_then(|at| bytes.get(at as usize..at as usize + size as usize))
        .ok_or_else(|| FetchError::Corrupt(format!("{}: short read of page {pgno}", file.key())))?;
    file.decode_page(frame, pgno, page_size, out)
        .map_err(|e| FetchError::Corrupt(format!("{}: page {pgno}: {e}", file.key())))
}

/// [`decode_frame`] for each of `frames`: the pages, in the same order.
pub fn decode_frames(
    file: &PlanFile,
    page_size: u32,
    bytes: &[u8],
    base: u64,
    frames: &[Frame],
) -> Result<Vec<(u32, Vec<u8>)>, FetchError> {
    frames
        .iter()
        .map(|&frame| {
            let mut page = vec![0u8; page_size as usize];
            decode_frame(file, page_size, bytes, base, frame, &mut page)?;
            Ok((frame.0, page))
        })
        .collect()
}
