//! Compaction and retention: the work that keeps a point-in-time restore at a dozen or so
//! files whatever the history length.
//!
//! Level N (1..=3) merges the level N-1 files that follow its last file into one file,
//! once per wall-clock-aligned window. Inputs are read from a local cache where this
//! process has them (level-0 files it uploaded, level-1/2 files it compacted) and
//! downloaded otherwise. Outputs are deterministic for a given input range, so a
//! compaction that died half-way is simply done again: object stores make a PUT visible
//! whole or not at all, and the local cache writes a temp file and renames it.
//!
//! A merge writes its output to a file of the cache (`LevelCache::merge_output`) and the
//! PUT maps it, so a level-9 snapshot, the size of the database, is never a heap buffer.
//!
//! Retention keeps every point newer than `retention`: the newest snapshot at or before
//! that boundary and everything after it. Level-0 files go earlier, `l0_retention` after
//! a level-1 file covers them, so old points are restorable at level-1 granularity.

pub use super::level_cache::LevelCache;
use super::level_cache::TempOutput;
use crate::config::CompactionConfig;
use crate::ltx::crypto::{Encryption, PrivateKey};
use crate::ltx::{compact_with, Encoding, Error, Header};
use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The snapshot level.
pub const SNAPSHOT_LEVEL: u8 = 9;

/// What the level-9 snapshot step of a turn did.
#[derive(Debug)]
pub enum SnapshotTurn {
    Stored(Compacted),
    /// The newest state already is a snapshot, or the replica is empty.
    Current,
    /// No restore plan reaches the replica's newest TXID: why.
    ChainBroken(String),
}

/// What one compaction wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compacted {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub inputs: usize,
    pub bytes: u64,
    /// Inputs read from the local cache rather than downloaded.
    pub local_inputs: usize,
}

/// Why a compaction step failed. `Unreadable`: an input this primary's key does not open
/// (encrypted to other keys, or encrypted and no key): no retry mends that, only a rekey
/// of the replica, so the primary reports it as its `error` and not only as a count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompactError {
    Unreadable(String),
    Other(String),
}

impl CompactError {
    /// A merge's error, `context` in front.
    fn merging(context: String, e: crate::ltx::Error) -> CompactError {
        let message = format!("{context}: {e}");
        match e {
            crate::ltx::Error::NotARecipient { .. } | crate::ltx::Error::KeyRequired { .. } => {
                CompactError::Unreadable(message)
            }
            _ => CompactError::Other(message),
        }
    }
}

impl From<String> for CompactError {
    fn from(message: String) -> Self {
        CompactError::Other(message)
    }
}

impl std::fmt::Display for CompactError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompactError::Unreadable(m) | CompactError::Other(m) => f.write_str(m),
        }
    }
}

/// What one retention pass deleted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Deleted {
    pub snapshots: usize,
    pub files: usize,
}

pub struct Compactor {
    pub store: Arc<dyn ReplicaStore>,
    pub cache: LevelCache,
    pub config: CompactionConfig,
    /// How outputs are written: every output encrypted under a content key of its own
    /// when keyed (inputs are opened and their pages sealed again, never copied sealed).
    pub encoding: Encoding,
    /// Opens encrypted inputs.
    pub encryption: Option<Arc<Encryption>>,
    /// Counts the plaintext files left after each retention pass, when keyed.
    pub encryption_status: Option<Arc<super::encryption::EncryptionStatus>>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The first multiple of `interval` after `now_ms`: windows aligned to wall-clock time.
pub fn next_boundary(now_ms: i64, interval: Duration) -> i64 {
    let step = (interval.as_millis() as i64).max(1);
    (now_ms.div_euclid(step) + 1) * step
}

/// How many files at the start of `chain` one merge takes: as many as fit in `cap`
/// bytes, at least one. A merge's output is at most about its inputs' size (pages only
/// drop out), so this bounds the size of one file at a level.
fn capped_run(chain: &[&LtxObject], cap: u64) -> usize {
    let mut total = 0u64;
    let fit = chain
        .iter()
        .take_while(|f| {
            total = total.saturating_add(f.size);
            total <= cap
        })
        .count();
    fit.max(1)
}

/// How many files at the start of `chain` belong to one window of `window` (by when the
/// store wrote each): a backlog of several windows (the database closed, killed or run
/// with `compaction=off` before its window was compacted) is merged a window at a time,
/// so that a point-in-time restore still finds a file ending at each window it spans.
/// Merging it whole made one file of all of it, and once `l0_retention` removed its
/// inputs, a restore to a time inside it gave the state before the backlog: a closed
/// primary's last acknowledged commits went missing from every restore to a time before
/// its reopen (found by a tester, 2026-12-07). The newest two windows stay one run when
/// they are neighbours: files uploaded in the window now running, just after the
/// boundary, go with the window that just ended, as they always did, rather than making
/// a file of one or two inputs each turn. Only the times' differences count, never this
/// machine's clock against the store's; `windows` is [`windows_of`] the files.
fn window_run(windows: &[u128]) -> usize {
    let first = windows[0];
    let same = windows.iter().take_while(|&&i| i <= first).count();
    let next = windows.get(same).copied();
    let rest_is_next_window = next.is_some_and(|n| n == first + 1 && windows[same..].iter().all(|&i| i <= n));
    if rest_is_next_window {
        windows.len()
    } else {
        same.max(1)
    }
}

/// The window of `window` each file of `chain` was dated in, computed once for the whole
/// backlog; `None` when a file has no time.
fn windows_of(chain: &[&LtxObject], window: Duration) -> Option<Vec<u128>> {
    let step = window.as_millis().max(1);
    chain
        .iter()
        .map(|f| {
            f.last_modified
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() / step)
        })
        .collect()
}

impl Compactor {
    fn key(&self) -> Option<&PrivateKey> {
        self.encryption.as_ref().map(|e| e.key())
    }

    /// Merges the files of `level - 1` that follow the last file of `level` into files at
    /// `level`: one file, unless their sizes add up to more than `max_input_bytes`, when
    /// each file merges a run of inputs under that (and an input over it is merged
    /// alone). A busy writer's 30 s window once made one 1.1 GB file, held in memory
    /// then; outputs are files now (`merge`), and the cap keeps each one a size a
    /// restore's plan and a PUT handle well. Returns what was written, summed; `None`
    /// when there is nothing new.
    pub fn compact_level(&self, level: u8) -> Result<Option<Compacted>, CompactError> {
        self.compact_level_checked(level).map(|(done, _)| done)
    }

    /// [`Self::compact_level`], and why no restore reaches past a gap the input has
    /// before or inside what it merged, if one does (`chain_gaps.rs`).
    pub fn compact_level_checked(&self, level: u8) -> Result<(Option<Compacted>, Option<String>), CompactError> {
        assert!(
            (1..=self.config.levels.len()).contains(&(level as usize)),
            "level {level} is not in the ladder"
        );
        let store = self.store.as_ref();
        let err = |e: crate::storage::Error| e.to_string();
        let last = block_on(store.list(level))
            .map_err(err)?
            .last()
            .map_or(0, |f| f.max_txid);
        let sources = block_on(store.list(level - 1)).map_err(err)?;
        let mut chain: Vec<&LtxObject> = Vec::new();
        let mut broken = None;
        for f in sources.iter().filter(|f| f.max_txid > last) {
            let prev = chain.last().map_or(last, |p| p.max_txid);
            if broken.is_none() {
                broken = self.unbridged_gap(level, prev, f)?;
            }
            let follows = crate::ltx::is_contiguous(prev, f.min_txid, f.max_txid);
            if (!chain.is_empty() || last > 0) && !follows {
                if !chain.is_empty() {
                    break;
                }
                tracing::warn!(
                    level,
                    after = last,
                    next = f.min_txid,
                    "level {} has a gap after TXID {last}; compacting from {}",
                    level - 1,
                    f.min_txid
                );
            }
            chain.push(f);
        }
        let mut done: Option<Compacted> = None;
        let mut rest = &chain[..];
        // Files without a time (a store that does not say) are one run.
        let windows = windows_of(&chain, self.config.levels[level as usize - 1]);
        while !rest.is_empty() {
            let run = windows
                .as_deref()
                .map_or(rest.len(), |w| window_run(&w[chain.len() - rest.len()..]));
            let take = capped_run(&rest[..run], self.config.max_input_bytes);
            let (piece, complete) = self.compact_run(level, &rest[..take])?;
            rest = &rest[piece.inputs..];
            done = Some(match done {
                None => piece,
                Some(d) => Compacted {
                    max_txid: piece.max_txid,
                    inputs: d.inputs + piece.inputs,
                    bytes: d.bytes + piece.bytes,
                    local_inputs: d.local_inputs + piece.local_inputs,
                    ..d
                },
            });
            // A page-size change ended the run early: the next window starts the file
            // of the new size.
            if !complete {
                break;
            }
        }
        Ok((done, broken))
    }

    /// Merges one run of `level - 1` files into a file at `level`, stores it, caches it
    /// for the next level and prunes its inputs from the cache. Also returns whether the
    /// whole run was merged (false: it stopped at a page-size change).
    fn compact_run(&self, level: u8, run: &[&LtxObject]) -> Result<(Compacted, bool), CompactError> {
        let mut run = run.to_vec();
        let whole = run.len();
        let (out, local_inputs) = match self.merge(level - 1, &run) {
            // The database was rebuilt with another page size (a reseed, see
            // primary/reseed.rs): a file never mixes page sizes, so this one stops before
            // it.
            Err(crate::ltx::Error::PageSizeChanged { .. }) => {
                let keep = self.same_page_size_prefix(level - 1, &run)?;
                run.truncate(keep.max(1));
                self.merge(level - 1, &run)
            }
            other => other,
        }
        .map_err(|e| CompactError::merging(format!("compacting level {} into level {level}", level - 1), e))?;
        let (output, header) = out;
        let (min_txid, max_txid) = (header.min_txid, header.max_txid);
        let bytes = output
            .bytes()
            .map_err(|e| format!("reading {}: {e}", output.path().display()))?;
        // Kept for the next level's merge (a rename: the mapping stays valid); the top
        // level has none, and its file goes when `output` drops, after the PUT.
        if (level as usize) < self.config.levels.len() {
            self.cache
                .keep(output, level, min_txid, max_txid)
                .map_err(|e| format!("caching a level-{level} file: {e}"))?;
        }
        let size = bytes.len() as u64;
        block_on(self.store.put(level, min_txid, max_txid, bytes, header.timestamp_ms)).map_err(|e| e.to_string())?;
        // The inputs are now covered by this level: the cache no longer needs them.
        if let Err(e) = self.cache.prune(level - 1, max_txid) {
            tracing::warn!("pruning the level-{} cache: {e}", level - 1);
        }
        let done = Compacted {
            level,
            min_txid,
            max_txid,
            inputs: run.len(),
            bytes: size,
            local_inputs,
        };
        Ok((done, run.len() == whole))
    }

    /// Merges `inputs` of `level` into one file: local copies are read from disk, the rest
    /// streamed with ranged GETs, the output written to a file (`merge_to_file`), so
    /// memory holds a page per input and buffers, not the inputs or the output. Also
    /// returns how many inputs were local.
    fn merge(&self, level: u8, inputs: &[&LtxObject]) -> crate::ltx::Result<((TempOutput, Header), usize)> {
        let merged = self.merge_reading(level, inputs);
        let damaged = match &merged {
            Err(e) => !matches!(
                e,
                Error::Io(_)
                    | Error::PageSizeChanged { .. }
                    | Error::KeyRequired { .. }
                    | Error::NotARecipient { .. }
                    | Error::NotContiguous { .. }
                    | Error::Usage(_)
                    | Error::Compress(_)
            ),
            Ok(_) => false,
        };
        if !damaged {
            return merged;
        }
        let forgotten = self
            .cache
            .forget(level, inputs.iter().map(|f| (f.min_txid, f.max_txid)));
        if forgotten == 0 {
            return merged;
        }
        // A local copy damaged on disk (a file system that lost writes, bit rot) failed
        // this merge, and would have failed every merge of its window while the store
        // held good bytes: the run's local copies go, and the store's are read instead.
        if let Err(e) = &merged {
            tracing::warn!(
                "merging level {level}: {e}; removed the {forgotten} local copies of its inputs and \
                 reading them from the store instead"
            );
        }
        self.merge_reading(level, inputs)
    }

    fn merge_reading(&self, level: u8, inputs: &[&LtxObject]) -> crate::ltx::Result<((TempOutput, Header), usize)> {
        let mut local_inputs = 0;
        let mut readers: Vec<Box<dyn Read + Send>> = Vec::with_capacity(inputs.len());
        for f in inputs {
            match self.cache.open_file(level, f.min_txid, f.max_txid) {
                Some(file) => {
                    local_inputs += 1;
                    readers.push(Box::new(io::BufReader::with_capacity(256 << 10, file)));
                }
                None => readers.push(Box::new(crate::restore::RemoteReader::spawn(
                    Arc::clone(&self.store),
                    (*f).clone(),
                    8 << 20,
                    2,
                    Arc::default(),
                ))),
            }
        }
        Ok((self.merge_to_file(readers)?, local_inputs))
    }

    /// Merges `readers` into a new file of the cache, removed on every error (and when
    /// the returned output drops, unless kept): a PUT of it maps the file.
    fn merge_to_file(&self, readers: Vec<Box<dyn Read + Send>>) -> crate::ltx::Result<(TempOutput, Header)> {
        let (output, file) = self.cache.merge_output()?;
        let out = compact_with(
            readers,
            io::BufWriter::with_capacity(256 << 10, file),
            &self.encoding,
            self.key(),
        )?;
        // A write the buffer still held may fail here (a full disk): not a whole file.
        out.writer.into_inner().map_err(|e| e.into_error())?;
        Ok((output, out.header))
    }

    /// How many files at the start of `chain` share the first one's page size.
    fn same_page_size_prefix(&self, level: u8, chain: &[&LtxObject]) -> Result<usize, String> {
        let mut first = None;
        for (i, f) in chain.iter().enumerate() {
            let head = match self.cache.read_head(level, f.min_txid, f.max_txid) {
                Some(head) => head,
                None => block_on(self.store.get_range(level, f.min_txid, f.max_txid, 0..100))
                    .map_err(|e| e.to_string())?
                    .to_vec(),
            };
            let page_size = crate::ltx::Header::decode(&head).map_err(|e| e.to_string())?.page_size;
            if *first.get_or_insert(page_size) != page_size {
                return Ok(i);
            }
        }
        Ok(chain.len())
    }

    /// A level-9 snapshot at the newest stored TXID: the latest restore plan merged into
    /// one file (the merge a restore does, written as LTX), streamed from the store or
    /// the local cache. Nothing when the newest state already is a snapshot, or when no
    /// plan reaches it (the replica was emptied or put back from an older copy under
    /// this primary: only a snapshot of the database itself mends that).
    pub fn snapshot(&self) -> Result<SnapshotTurn, CompactError> {
        let store = self.store.as_ref();
        let listing = block_on(crate::restore::Listing::fetch(store)).map_err(|e| e.to_string())?;
        if listing.is_empty() {
            return Ok(SnapshotTurn::Current);
        }
        let plan = match crate::restore::plan_reachable(&listing) {
            Ok((plan, None)) => plan,
            Ok((_, Some(gap))) => return Ok(SnapshotTurn::ChainBroken(gap.to_string())),
            Err(e) => return Ok(SnapshotTurn::ChainBroken(e)),
        };
        if plan.len() == 1 && plan[0].level == SNAPSHOT_LEVEL {
            return Ok(SnapshotTurn::Current);
        }
        let mut local_inputs = 0;
        let mut readers: Vec<Box<dyn Read + Send>> = Vec::with_capacity(plan.len());
        for f in &plan {
            let cached = (f.level < 3)
                .then(|| self.cache.open_file(f.level, f.min_txid, f.max_txid))
                .flatten();
            match cached {
                Some(file) => {
                    local_inputs += 1;
                    readers.push(Box::new(io::BufReader::with_capacity(256 << 10, file)));
                }
                None => readers.push(Box::new(crate::restore::RemoteReader::spawn(
                    Arc::clone(&self.store),
                    f.clone(),
                    8 << 20,
                    2,
                    Arc::default(),
                ))),
            }
        }
        // `output` is removed when this returns, whichever way.
        let (output, header) = self
            .merge_to_file(readers)
            .map_err(|e| CompactError::merging("merging the plan".into(), e))?;
        if header.min_txid != 1 {
            return Err(format!("the plan starts at TXID {}, not at a snapshot", header.min_txid).into());
        }
        let max_txid = header.max_txid;
        let bytes = output
            .bytes()
            .map_err(|e| format!("reading {}: {e}", output.path().display()))?;
        let size = bytes.len() as u64;
        block_on(store.put(SNAPSHOT_LEVEL, 1, max_txid, bytes, header.timestamp_ms)).map_err(|e| e.to_string())?;
        Ok(SnapshotTurn::Stored(Compacted {
            level: SNAPSHOT_LEVEL,
            min_txid: 1,
            max_txid,
            inputs: plan.len(),
            bytes: size,
            local_inputs,
        }))
    }

    /// Deletes what no point newer than `now - retention` needs, and level-0 files that a
    /// level-1 file has covered for longer than `l0_retention`. Oldest first, so a pass
    /// that dies half-way leaves a replica every retained point can still be restored from.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<Deleted, String> {
        let store = self.store.as_ref();
        let err = |e: crate::storage::Error| e.to_string();
        let mut deleted = Deleted::default();
        let boundary = now_ms - self.config.retention.as_millis() as i64;
        let snapshots = block_on(store.list(SNAPSHOT_LEVEL)).map_err(err)?;
        // The newest snapshot written at or before the boundary: points after the
        // boundary start from it or from a newer one. Read oldest first, and stopping at
        // the first one written after the boundary: a snapshot written while the clock
        // was behind (a VM resumed with an old clock) carries an older time than the ones
        // before it, and taken alone it let retention delete the history of the whole
        // window (a tester: a restore 50 s back, inside a 2 min retention, gave a state
        // 30 s later). Only ever more is kept: a clock ahead keeps files longer.
        let mut keep_from: Option<&LtxObject> = None;
        for s in &snapshots {
            let ts = block_on(store.timestamp(SNAPSHOT_LEVEL, s.min_txid, s.max_txid)).map_err(err)?;
            if ts > boundary {
                break;
            }
            keep_from = Some(s);
        }
        if let Some(keep) = keep_from {
            for s in snapshots.iter().filter(|s| s.max_txid < keep.max_txid) {
                block_on(store.delete(SNAPSHOT_LEVEL, s.min_txid, s.max_txid)).map_err(err)?;
                deleted.snapshots += 1;
            }
            // Every incremental level, also those a longer ladder configured before.
            for level in crate::restore::LEVELS {
                for f in block_on(store.list(level)).map_err(err)? {
                    if f.max_txid <= keep.max_txid {
                        block_on(store.delete(level, f.min_txid, f.max_txid)).map_err(err)?;
                        deleted.files += 1;
                    }
                }
            }
        }
        let l1_max = block_on(store.list(1)).map_err(err)?.last().map_or(0, |f| f.max_txid);
        let l0_cutoff = SystemTime::now()
            .checked_sub(self.config.l0_retention)
            .unwrap_or(UNIX_EPOCH);
        for f in block_on(store.list(0)).map_err(err)? {
            let old = f.last_modified.is_some_and(|t| t <= l0_cutoff);
            if f.max_txid <= l1_max && old {
                block_on(store.delete(0, f.min_txid, f.max_txid)).map_err(err)?;
                deleted.files += 1;
            }
        }
        Ok(deleted)
    }
}

#[cfg(test)]
#[path = "compactor_tests.rs"]
mod tests;
