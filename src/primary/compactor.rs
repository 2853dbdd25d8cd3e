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
//! Retention keeps every point newer than `retention`: the newest snapshot at or before
//! that boundary and everything after it. Level-0 files go earlier, `l0_retention` after
//! a level-1 file covers them, so old points are restorable at level-1 granularity.

pub use super::level_cache::LevelCache;
use crate::config::CompactionConfig;
use crate::ltx::crypto::{Encryption, PrivateKey};
use crate::ltx::{compact_with, Encoding};
use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The snapshot level.
pub const SNAPSHOT_LEVEL: u8 = 9;

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
/// drop out), so this bounds the output a merge holds in memory.
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

impl Compactor {
    fn key(&self) -> Option<&PrivateKey> {
        self.encryption.as_ref().map(|e| e.key())
    }

    /// Merges the files of `level - 1` that follow the last file of `level` into files at
    /// `level`: one file, unless their sizes add up to more than `max_input_bytes`, when
    /// each file merges a run of inputs under that (and an input over it is merged
    /// alone). A merge holds its encoded output whole (a PUT takes the whole body), so
    /// the cap bounds compaction's memory whatever the window's write volume: a busy
    /// writer's 30 s window held 1.1 GB. Returns what was written, summed; `None` when
    /// there is nothing new.
    pub fn compact_level(&self, level: u8) -> Result<Option<Compacted>, String> {
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
        for f in sources.iter().filter(|f| f.max_txid > last) {
            let prev = chain.last().map_or(last, |p| p.max_txid);
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
        while !rest.is_empty() {
            let take = capped_run(rest, self.config.max_input_bytes);
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
        Ok(done)
    }

    /// Merges one run of `level - 1` files into a file at `level`, stores it, caches it
    /// for the next level and prunes its inputs from the cache. Also returns whether the
    /// whole run was merged (false: it stopped at a page-size change).
    fn compact_run(&self, level: u8, run: &[&LtxObject]) -> Result<(Compacted, bool), String> {
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
        .map_err(|e| format!("compacting level {} into level {level}: {e}", level - 1))?;
        let (min_txid, max_txid) = (out.header.min_txid, out.header.max_txid);
        let bytes = out.writer;
        // Kept for the next level's merge; the top level has none.
        if (level as usize) < self.config.levels.len() {
            self.cache
                .write(level, min_txid, max_txid, &bytes)
                .map_err(|e| format!("caching a level-{level} file: {e}"))?;
        }
        let size = bytes.len() as u64;
        block_on(
            self.store
                .put(level, min_txid, max_txid, bytes.into(), out.header.timestamp_ms),
        )
        .map_err(|e| e.to_string())?;
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
    /// streamed with ranged GETs, so memory holds a page per input and the output, not the
    /// inputs. Also returns how many inputs were local.
    fn merge(&self, level: u8, inputs: &[&LtxObject]) -> crate::ltx::Result<(crate::ltx::Compacted<Vec<u8>>, usize)> {
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
        Ok((
            compact_with(readers, Vec::new(), &self.encoding, self.key())?,
            local_inputs,
        ))
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
    /// the local cache. `None` when the newest state already is a snapshot.
    pub fn snapshot(&self) -> Result<Option<Compacted>, String> {
        let store = self.store.as_ref();
        let listing = block_on(crate::restore::Listing::fetch(store)).map_err(|e| e.to_string())?;
        if listing.is_empty() {
            return Ok(None);
        }
        let plan = crate::restore::plan(&listing, None)?;
        if plan.len() == 1 && plan[0].level == SNAPSHOT_LEVEL {
            return Ok(None);
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
        let out = compact_with(readers, Vec::new(), &self.encoding, self.key())
            .map_err(|e| format!("merging the plan: {e}"))?;
        if out.header.min_txid != 1 {
            return Err(format!(
                "the plan starts at TXID {}, not at a snapshot",
                out.header.min_txid
            ));
        }
        let max_txid = out.header.max_txid;
        let size = out.writer.len() as u64;
        block_on(store.put(SNAPSHOT_LEVEL, 1, max_txid, out.writer.into(), out.header.timestamp_ms))
            .map_err(|e| e.to_string())?;
        Ok(Some(Compacted {
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
        // boundary start from it or from a newer one.
        let mut keep_from: Option<&LtxObject> = None;
        for s in snapshots.iter().rev() {
            let ts = block_on(store.timestamp(SNAPSHOT_LEVEL, s.min_txid, s.max_txid)).map_err(err)?;
            if ts <= boundary {
                keep_from = Some(s);
                break;
            }
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
mod tests {
    use super::*;
    use crate::file_modes::FileModes;
    use crate::ltx::{Compression, Encoder, Header, FLAG_NO_CHECKSUM};
    use crate::storage::open_store;
    use std::path::Path;

    fn ltx(min: u64, max: u64, pages: &[(u32, u8)], commit: u32, ts: i64) -> Vec<u8> {
        ltx_sized(512, min, max, pages, commit, ts)
    }

    fn ltx_sized(page_size: u32, min: u64, max: u64, pages: &[(u32, u8)], commit: u32, ts: i64) -> Vec<u8> {
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: ts,
            pre_apply_checksum: 0,
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
            recipients: 0,
        };
        let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
        for (pgno, fill) in pages {
            enc.write_page(*pgno, &vec![*fill; page_size as usize]).unwrap();
        }
        enc.finish(0).unwrap().0
    }

    fn compactor(name: &str, dir: &Path, config: CompactionConfig) -> Compactor {
        Compactor {
            store: open_store(&format!("memory://{name}"), &Default::default()).unwrap(),
            cache: LevelCache::open(dir, FileModes::NewDatabase, config.levels.len()).unwrap(),
            config,
            encoding: Compression::Lz4.into(),
            encryption: None,
            encryption_status: None,
        }
    }

    fn put(c: &Compactor, level: u8, min: u64, max: u64, bytes: Vec<u8>) {
        block_on(c.store.put(level, min, max, bytes.into(), (max * 1000) as i64)).unwrap();
    }

    fn names(c: &Compactor, level: u8) -> Vec<(u64, u64)> {
        block_on(c.store.list(level))
            .unwrap()
            .iter()
            .map(|f| (f.min_txid, f.max_txid))
            .collect()
    }

    #[test]
    fn a_level_merges_what_follows_its_last_file_and_the_result_restores_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let c = compactor("compact-level", dir.path(), CompactionConfig::default());
        put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
        put(&c, 0, 2, 3, ltx(2, 3, &[(2, 2), (3, 2)], 3, 3000));
        // One input cached locally, as the primary leaves it after uploading.
        c.cache.write(0, 4, 4, &ltx(4, 4, &[(1, 4)], 2, 4000)).unwrap();
        put(&c, 0, 4, 4, ltx(4, 4, &[(1, 4)], 2, 4000));
        let out = c.compact_level(1).unwrap().unwrap();
        assert_eq!((out.min_txid, out.max_txid, out.inputs, out.local_inputs), (1, 4, 3, 1));
        assert_eq!(names(&c, 1), [(1, 4)]);
        // The merged file is a snapshot of TXID 4: page 3 is above the final commit.
        let merged = block_on(c.store.get(1, 1, 4)).unwrap();
        let decoded = crate::ltx::decode_file(&merged).unwrap();
        let pages: Vec<(u32, u8)> = decoded.pages.iter().map(|(p, d)| (*p, d[0])).collect();
        assert_eq!(pages, [(1, 4), (2, 2)]);
        assert_eq!(decoded.header.timestamp_ms, 4000);
        // Nothing new: nothing to do. A new file: only it is compacted next time.
        assert_eq!(c.compact_level(1).unwrap(), None);
        put(&c, 0, 5, 6, ltx(5, 6, &[(2, 6)], 2, 6000));
        let next = c.compact_level(1).unwrap().unwrap();
        assert_eq!((next.min_txid, next.max_txid), (5, 6));
        // Level 2 from level 1, reading its inputs from the cache this process wrote.
        let l2 = c.compact_level(2).unwrap().unwrap();
        assert_eq!((l2.min_txid, l2.max_txid, l2.local_inputs), (1, 6, 2));
        assert!(c.cache.read(1, 1, 4).is_none(), "consumed inputs leave the cache");
    }

    /// A level-0 file of another page size (a reseed after the database was rebuilt
    /// outside the VFS) ends one level-1 file and starts the next: no file mixes sizes.
    #[test]
    fn a_page_size_change_splits_the_level_instead_of_failing_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = compactor("compact-page-size", dir.path(), CompactionConfig::default());
        put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1), (2, 1)], 2, 1000));
        put(&c, 0, 2, 2, ltx(2, 2, &[(2, 2)], 2, 2000));
        put(&c, 0, 3, 3, ltx_sized(1024, 3, 3, &[(1, 3)], 1, 3000));
        let first = c.compact_level(1).unwrap().unwrap();
        assert_eq!((first.min_txid, first.max_txid, first.inputs), (1, 2, 2));
        let second = c.compact_level(1).unwrap().unwrap();
        assert_eq!((second.min_txid, second.max_txid, second.inputs), (3, 3, 1));
        let merged = crate::ltx::decode_file(&block_on(c.store.get(1, 3, 3)).unwrap()).unwrap();
        assert_eq!(merged.header.page_size, 1024);
    }

    /// A busy writer's window can hold more than memory should (1.1 GB at 64 KiB rows
    /// flat out): each file merges at most `max_input_bytes` of inputs, and the whole
    /// window still goes in one turn, each file the newest of its run.
    #[test]
    fn a_window_over_the_input_cap_is_merged_in_runs_under_it() {
        let dir = tempfile::tempdir().unwrap();
        // Every file a full image of 7 pages, page p of TXID i filled with 10 i + p.
        let image = |i: u64| -> Vec<(u32, u8)> { (1..=7).map(|p| (p, (10 * i) as u8 + p as u8)).collect() };
        let file = |i: u64| ltx(i, i, &image(i), 7, i as i64 * 1000);
        let cap = file(1).len() as u64 * 5 / 2;
        let config = CompactionConfig {
            max_input_bytes: cap,
            ..Default::default()
        };
        let c = compactor("compact-cap", dir.path(), config);
        for i in 1..=6 {
            put(&c, 0, i, i, file(i));
        }
        let out = c.compact_level(1).unwrap().unwrap();
        assert_eq!((out.min_txid, out.max_txid, out.inputs), (1, 6, 6));
        assert_eq!(names(&c, 1), [(1, 2), (3, 4), (5, 6)]);
        for f in block_on(c.store.list(1)).unwrap() {
            assert!(f.size <= cap, "a level-1 file of {} bytes, cap {cap}", f.size);
            let bytes = block_on(c.store.get(1, f.min_txid, f.max_txid)).unwrap();
            let pages: Vec<(u32, u8)> = crate::ltx::decode_file(&bytes)
                .unwrap()
                .pages
                .iter()
                .map(|(p, d)| (*p, d[0]))
                .collect();
            assert_eq!(pages, image(f.max_txid));
        }
        // One input over the cap is merged alone rather than not at all.
        let big: Vec<(u32, u8)> = (1..=40).map(|p| (p, p as u8)).collect();
        let big = ltx(7, 7, &big, 40, 7000);
        assert!(big.len() as u64 > cap);
        put(&c, 0, 7, 7, big);
        put(&c, 0, 8, 8, file(8));
        assert_eq!(c.compact_level(1).unwrap().unwrap().inputs, 2);
        assert_eq!(&names(&c, 1)[3..], [(7, 7), (8, 8)]);
    }

    #[test]
    fn compacting_again_after_a_crash_gives_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = compactor("compact-again", dir.path(), CompactionConfig::default());
        put(&c, 0, 1, 2, ltx(1, 2, &[(1, 1)], 1, 2000));
        put(&c, 0, 3, 3, ltx(3, 3, &[(1, 3)], 1, 3000));
        c.compact_level(1).unwrap().unwrap();
        let first = block_on(c.store.get(1, 1, 3)).unwrap();
        // As if the process died after the upload and before anything else: the level-1
        // file is deleted and compaction runs again from the same inputs.
        block_on(c.store.delete(1, 1, 3)).unwrap();
        c.compact_level(1).unwrap().unwrap();
        assert_eq!(block_on(c.store.get(1, 1, 3)).unwrap(), first);
    }

    #[test]
    fn retention_keeps_the_snapshot_before_the_boundary_and_everything_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = CompactionConfig {
            retention: Duration::from_secs(10),
            l0_retention: Duration::from_secs(3600),
            ..Default::default()
        };
        let c = compactor("retention", dir.path(), config);
        // Snapshots at TXIDs 10, 20, 30 written at t = 10 s, 20 s, 30 s.
        for max in [10u64, 20, 30] {
            put(&c, 9, 1, max, ltx(1, max, &[(1, max as u8)], 1, max as i64 * 1000));
        }
        for (min, max) in [(1, 10), (11, 20), (21, 30), (31, 35)] {
            put(&c, 1, min, max, ltx(min, max, &[(1, max as u8)], 1, max as i64 * 1000));
        }
        // At t = 32 s the boundary is 22 s: snapshot 20 is the newest before it.
        let deleted = c.enforce_retention(32_000).unwrap();
        assert_eq!(names(&c, 9), [(1, 20), (1, 30)]);
        assert_eq!(names(&c, 1), [(21, 30), (31, 35)]);
        assert_eq!(deleted, Deleted { snapshots: 1, files: 2 });
        // Every point after the boundary still restores.
        let listing = block_on(crate::restore::Listing::fetch(c.store.as_ref())).unwrap();
        for txid in [20, 30, 35] {
            crate::restore::plan(&listing, Some(txid)).unwrap();
        }
    }

    #[test]
    fn level0_files_go_once_covered_by_level1_and_old_enough() {
        let dir = tempfile::tempdir().unwrap();
        let config = CompactionConfig {
            l0_retention: Duration::ZERO,
            ..Default::default()
        };
        let c = compactor("l0-retention", dir.path(), config);
        put(&c, 0, 1, 1, ltx(1, 1, &[(1, 1)], 1, 1000));
        put(&c, 0, 2, 2, ltx(2, 2, &[(1, 2)], 1, 2000));
        put(&c, 1, 1, 1, ltx(1, 1, &[(1, 1)], 1, 1000));
        c.enforce_retention(now_ms()).unwrap();
        assert_eq!(names(&c, 0), [(2, 2)], "only the covered level-0 file goes");
    }

    #[test]
    fn windows_align_to_wall_clock_multiples() {
        assert_eq!(next_boundary(61_000, Duration::from_secs(30)), 90_000);
        assert_eq!(next_boundary(90_000, Duration::from_secs(30)), 120_000);
        assert_eq!(next_boundary(0, Duration::from_secs(3600)), 3_600_000);
    }
}
