//! Everything the replica asks of storage, counted: LISTs, the tail (page index) and
//! header of each file, and single page frames.

use super::state::PlanFile;
use super::Stats;
use crate::ltx::crypto::PrivateKey;
use crate::ltx::{Header, TailRead, DEFAULT_TAIL_GUESS, HEADER_SIZE, MIN_FILE_SIZE};
use crate::restore::Listing;
use crate::storage::{retry, LtxObject, ReplicaStore, RetryPolicy};
use bytes::{Bytes, BytesMut};
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
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
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Storage(e) => write!(f, "{e}"),
            FetchError::Corrupt(m) => write!(f, "corrupt replica: {m}"),
            FetchError::Key(m) => f.write_str(m),
        }
    }
}

impl From<crate::storage::Error> for FetchError {
    fn from(e: crate::storage::Error) -> Self {
        FetchError::Storage(e)
    }
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
}

impl Fetcher {
    pub async fn list(&self, level: u8) -> Result<Vec<LtxObject>, FetchError> {
        let files = retry(
            || {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.store.list(level)
            },
            &read_policy(),
        )
        .await?;
        Ok(files)
    }

    /// One LIST of every level.
    pub async fn list_all(&self) -> Result<Listing, FetchError> {
        let stats = &self.stats;
        let listing = retry(
            || {
                stats
                    .requests
                    .fetch_add(1 + crate::restore::LEVELS.len() as u64, Ordering::Relaxed);
                Listing::fetch(self.store.as_ref())
            },
            &read_policy(),
        )
        .await?;
        Ok(listing)
    }

    /// The header timestamp of a file (object metadata where the store keeps it, else
    /// the header's first bytes): one request.
    pub async fn timestamp(&self, obj: &LtxObject) -> Result<i64, FetchError> {
        let ms = retry(
            || {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.store.timestamp(obj.level, obj.min_txid, obj.max_txid)
            },
            &read_policy(),
        )
        .await?;
        Ok(ms)
    }

    /// Bytes `range` of a file, with one ranged GET (retried).
    pub async fn get_range(&self, obj: &LtxObject, range: Range<u64>) -> Result<Bytes, FetchError> {
        let bytes = retry(
            || {
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                self.store
                    .get_range(obj.level, obj.min_txid, obj.max_txid, range.clone())
            },
            &read_policy(),
        )
        .await?;
        self.stats
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(bytes)
    }

    /// The header and page index of one file: one ranged GET of its last 32 KiB (the
    /// whole file when smaller, header included), plus one for the header of a larger
    /// file, in parallel; more of the tail only when the index is larger than the guess.
    pub async fn plan_file(&self, obj: &LtxObject) -> Result<PlanFile, FetchError> {
        let name = format!(
            "level {} file {}",
            obj.level,
            crate::ltx::format_name(obj.min_txid, obj.max_txid)
        );
        let corrupt = |m: String| FetchError::Corrupt(format!("{name}: {m}"));
        if obj.size < MIN_FILE_SIZE {
            return Err(corrupt(format!("{} bytes is too short for an LTX file", obj.size)));
        }
        let guess = DEFAULT_TAIL_GUESS.min(obj.size);
        let mut tail_start = obj.size - guess;
        let (head, mut tail) = if tail_start == 0 {
            let all = self.get_range(obj, 0..obj.size).await?;
            (all.slice(..HEADER_SIZE), all)
        } else {
            let (head, tail) = tokio::join!(
                self.get_range(obj, 0..HEADER_SIZE as u64),
                self.get_range(obj, tail_start..obj.size)
            );
            (head?, tail?)
        };
        let header = Header::decode(&head).map_err(|e| corrupt(e.to_string()))?;
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
                    let more = self.get_range(obj, from..tail_start).await?;
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
        Ok(PlanFile {
            object: obj.clone(),
            header,
            entries: file_tail.index.into_entries(),
            keys,
        })
    }

    /// [`Fetcher::plan_file`] for many files, a few at a time, in the given order.
    pub async fn plan_files(&self, objs: Vec<LtxObject>) -> Result<Vec<PlanFile>, FetchError> {
        const PARALLEL: usize = 8;
        let semaphore = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut set = JoinSet::new();
        for (i, obj) in objs.into_iter().enumerate() {
            let fetcher = self.clone();
            let semaphore = Arc::clone(&semaphore);
            set.spawn(async move {
                let _permit = semaphore.acquire_owned().await;
                (i, fetcher.plan_file(&obj).await)
            });
        }
        let mut out: Vec<Option<PlanFile>> = Vec::new();
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
