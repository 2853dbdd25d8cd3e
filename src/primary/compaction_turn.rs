//! The compaction ladder's clock: one turn at each wall-clock window boundary (the
//! engine runs it as a job, `replicator/worker.rs`), and which levels can have work, so
//! that an idle database's windows pass without a request.

use super::compaction_due::SavedDue;
use super::compactor::{next_boundary, CompactError, Compacted, Compactor, Deleted, SnapshotTurn, SNAPSHOT_LEVEL};
use crate::config::CompactionConfig;
use crate::runtime::block_on;

/// What a compaction turn needs from the primary it works for.
pub trait CompactionControl {
    /// Reports the outcome of one step, for `litestream_status()` and the log.
    fn report(&self, event: CompactionEvent);
}

/// One step of a compaction turn.
#[derive(Debug)]
pub enum CompactionEvent {
    Compacted(Compacted),
    Retention(Deleted),
    /// A step failed: level `level`'s (9: the snapshot), or another (`None`: retention,
    /// the census, the sweep).
    Failed {
        level: Option<u8>,
        message: String,
    },
    /// Level `level`'s step (9: the snapshot) could not read an input with this
    /// primary's key: only a rekey mends it.
    Unreadable {
        level: u8,
        message: String,
    },
    /// Level `level`'s step had nothing to do or did it: what it last failed on is over.
    Succeeded(u8),
    /// No restore plan reaches the replica's newest TXID (why): the primary takes a
    /// snapshot of the database.
    ChainBroken(String),
    /// Whether this primary's key opens the file a restore of the newest state starts
    /// from (`None`), or why not: the primary then takes a snapshot to its key.
    BaseKey(Option<String>),
}

impl CompactionEvent {
    /// A step other than a level's failed.
    fn failed(message: String) -> Self {
        CompactionEvent::Failed { level: None, message }
    }
}

/// When each level (and the snapshot) is next due, wall-clock ms, and which levels may
/// have work: an idle database's windows then pass without a request (with 1,000
/// databases, listing every level of each every 30 s was ~170 requests/s for nothing).
pub struct CompactionClock {
    due: Vec<i64>,
    snapshot_due: i64,
    /// Level `i + 1` may have input: level `i` gained files since it last found nothing
    /// new. All set at open (a previous process may have left work).
    pending: Vec<bool>,
    /// The level-0 upload count this clock last saw.
    seen_uploads: Option<u64>,
    /// Retention must run again by then even if nothing else does: level-0 files become
    /// deletable `l0_retention` after a level-1 file covers them.
    retention_due: Option<i64>,
    /// The next sweep of abandoned upload leftovers (`ReplicaStore::sweep_abandoned`):
    /// at the first turn, then at most every [`ABANDONED_AFTER`].
    sweep_due: i64,
}

/// A leftover of an upload (a `file://` staging file) nothing has written to for this
/// long belongs to a writer that was killed: no live put pauses an hour.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

impl CompactionClock {
    pub fn new(config: &CompactionConfig, now_ms: i64) -> CompactionClock {
        CompactionClock {
            due: config.levels.iter().map(|i| next_boundary(now_ms, *i)).collect(),
            snapshot_due: next_boundary(now_ms, config.snapshot_interval),
            pending: vec![true; config.levels.len()],
            seen_uploads: None,
            retention_due: Some(now_ms),
            sweep_due: now_ms,
        }
    }

    /// [`CompactionClock::new`], with each boundary an earlier open saved and did not
    /// reach still due (at once, when it has passed): see `compaction_due.rs`.
    pub fn resumed(config: &CompactionConfig, now_ms: i64, saved: Option<&SavedDue>) -> CompactionClock {
        let mut clock = CompactionClock::new(config, now_ms);
        if let Some(saved) = saved {
            for (due, earlier) in clock.due.iter_mut().zip(&saved.levels) {
                *due = (*due).min(*earlier);
            }
            clock.snapshot_due = clock.snapshot_due.min(saved.snapshot);
        }
        clock
    }

    /// Brings every time due back within one period of `now` after the wall clock stepped
    /// back (NTP after a VM resumed): a boundary computed before the step would otherwise
    /// lie as far ahead as the step, and compaction, snapshots and retention would stop
    /// for that long without a word (a tester: a turn under a clock an hour behind left
    /// level 0 growing from 41 to 728 files, and the correction did not wake it).
    pub fn rebase(&mut self, config: &CompactionConfig, now: i64) {
        for (due, interval) in self.due.iter_mut().zip(&config.levels) {
            *due = (*due).min(next_boundary(now, *interval));
        }
        self.snapshot_due = self.snapshot_due.min(next_boundary(now, config.snapshot_interval));
        if let Some(due) = self.retention_due.as_mut() {
            *due = (*due).min(now + config.l0_retention.as_millis() as i64);
        }
        self.sweep_due = self.sweep_due.min(now + ABANDONED_AFTER.as_millis() as i64);
    }

    /// The boundaries to save for the next open.
    pub fn saved(&self) -> SavedDue {
        SavedDue {
            levels: self.due.clone(),
            snapshot: self.snapshot_due,
        }
    }

    /// The earliest boundary still ahead.
    pub fn next(&self) -> i64 {
        self.due
            .iter()
            .copied()
            .chain([self.snapshot_due])
            .min()
            .unwrap_or(i64::MAX)
    }

    /// The primary's count of level-0 uploads: a change makes level 1 pending.
    pub fn saw_uploads(&mut self, uploads: u64) {
        if self.seen_uploads != Some(uploads) {
            self.seen_uploads = Some(uploads);
            self.pending[0] = true;
        }
    }
}

/// The event for step `level` failing with `e` (`message`: `e` with the step in front).
fn failed(level: u8, message: String, e: &CompactError) -> CompactionEvent {
    match e {
        CompactError::Unreadable(_) => CompactionEvent::Unreadable { level, message },
        CompactError::Other(_) => CompactionEvent::Failed {
            level: Some(level),
            message,
        },
    }
}

impl Compactor {
    /// One turn (the engine runs it at [`CompactionClock::next`]): at every wall-clock
    /// boundary of a level that has passed, compact it (lower levels first, so a level-2
    /// run sees the level-1 file of the same instant), take a snapshot at every snapshot
    /// boundary, then enforce retention. A level whose input has not changed since it
    /// last found nothing to do is skipped without a request. Returns the next boundary.
    pub fn turn(&self, clock: &mut CompactionClock, now: i64, control: &dyn CompactionControl) -> i64 {
        clock.rebase(&self.config, now);
        let intervals = &self.config.levels;
        let mut ran = false;
        for (i, level) in (1..=intervals.len() as u8).enumerate() {
            if now < clock.due[i] {
                continue;
            }
            clock.due[i] = next_boundary(now, intervals[i]);
            if !clock.pending[i] {
                continue;
            }
            ran = true;
            let found = self.compact_level_checked(level).map(|(done, broken)| {
                if let Some(why) = broken {
                    control.report(CompactionEvent::ChainBroken(why));
                }
                done
            });
            match found {
                Ok(Some(done)) => {
                    control.report(CompactionEvent::Compacted(done));
                    // It stays pending: a chain may have stopped at a gap or a page-size
                    // change, and the next window finds out (two LISTs) and settles.
                    if let Some(next) = clock.pending.get_mut(i + 1) {
                        *next = true;
                    }
                    clock.retention_due = Some(now + self.config.l0_retention.as_millis() as i64);
                }
                Ok(None) => {
                    clock.pending[i] = false;
                    control.report(CompactionEvent::Succeeded(level));
                }
                Err(e) => control.report(failed(level, format!("level {level}: {e}"), &e)),
            }
        }
        if now >= clock.snapshot_due {
            clock.snapshot_due = next_boundary(now, self.config.snapshot_interval);
            ran = true;
            match self.snapshot() {
                Ok(SnapshotTurn::Stored(done)) => control.report(CompactionEvent::Compacted(done)),
                Ok(SnapshotTurn::Current) => control.report(CompactionEvent::Succeeded(SNAPSHOT_LEVEL)),
                Ok(SnapshotTurn::ChainBroken(why)) => control.report(CompactionEvent::ChainBroken(why)),
                Err(e) => control.report(failed(SNAPSHOT_LEVEL, format!("snapshot: {e}"), &e)),
            }
        }
        let retention_due = clock.retention_due.is_some_and(|t| now >= t);
        if ran || retention_due {
            match self.enforce_retention(now) {
                Ok(d) => {
                    if d != Deleted::default() {
                        control.report(CompactionEvent::Retention(d));
                    }
                    if retention_due {
                        clock.retention_due = None;
                    }
                }
                Err(e) => control.report(CompactionEvent::failed(format!("retention: {e}"))),
            }
            if let Some(status) = &self.encryption_status {
                let key = self.encryption.as_ref().map(|e| e.key());
                match status.census(self.store.as_ref(), key) {
                    Ok(census) => control.report(CompactionEvent::BaseKey(census.base_not_ours)),
                    Err(e) => control.report(CompactionEvent::failed(format!("counting plaintext files: {e}"))),
                }
            }
        }
        if now >= clock.sweep_due {
            clock.sweep_due = now + ABANDONED_AFTER.as_millis() as i64;
            if let Err(e) = block_on(self.store.sweep_abandoned(ABANDONED_AFTER)) {
                control.report(CompactionEvent::failed(format!(
                    "removing abandoned upload leftovers: {e}"
                )));
            }
        }
        clock.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file_modes::FileModes;
    use crate::ltx::{Compression, Encoder, Header, FLAG_NO_CHECKSUM};
    use crate::primary::compactor::LevelCache;
    use crate::runtime::block_on;
    use crate::storage::{open_store, LtxObject, ReplicaStore, Result};
    use async_trait::async_trait;
    use bytes::Bytes;
    use std::ops::Range;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    /// Counts LISTs: every compaction and retention pass starts with one.
    #[derive(Debug)]
    struct Counting(Arc<dyn ReplicaStore>, AtomicUsize);

    #[async_trait]
    impl ReplicaStore for Counting {
        fn describe(&self) -> &str {
            self.0.describe()
        }
        async fn list(&self, level: u8) -> Result<Vec<LtxObject>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            self.0.list(level).await
        }
        async fn get(&self, level: u8, min: u64, max: u64) -> Result<Bytes> {
            self.0.get(level, min, max).await
        }
        async fn get_range(&self, level: u8, min: u64, max: u64, range: Range<u64>) -> Result<Bytes> {
            self.0.get_range(level, min, max, range).await
        }
        async fn head(&self, level: u8, min: u64, max: u64) -> Result<LtxObject> {
            self.0.head(level, min, max).await
        }
        async fn timestamp(&self, level: u8, min: u64, max: u64) -> Result<i64> {
            self.0.timestamp(level, min, max).await
        }
        async fn put_new(&self, level: u8, min: u64, max: u64, data: Bytes, ts: i64) -> Result<()> {
            self.0.put_new(level, min, max, data, ts).await
        }
        async fn put(&self, level: u8, min: u64, max: u64, data: Bytes, ts: i64) -> Result<()> {
            self.0.put(level, min, max, data, ts).await
        }
        async fn delete(&self, level: u8, min: u64, max: u64) -> Result<()> {
            self.0.delete(level, min, max).await
        }
        async fn create_marker(&self, name: &str, data: Bytes) -> Result<()> {
            self.0.create_marker(name, data).await
        }
        async fn delete_marker(&self, name: &str) -> Result<()> {
            self.0.delete_marker(name).await
        }
    }

    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);

    impl CompactionControl for Events {
        fn report(&self, event: CompactionEvent) {
            self.0.lock().unwrap().push(format!("{event:?}"));
        }
    }

    fn level0(txid: u64) -> Bytes {
        let header = Header {
            flags: FLAG_NO_CHECKSUM,
            page_size: 512,
            commit: 1,
            min_txid: txid,
            max_txid: txid,
            timestamp_ms: txid as i64 * 1000,
            ..Header::default()
        };
        let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
        enc.write_page(1, &[txid as u8; 512]).unwrap();
        enc.finish(0).unwrap().0.into()
    }

    /// Runs turns at each boundary until `until` (simulated wall-clock ms).
    fn run_until(c: &Compactor, clock: &mut CompactionClock, events: &Events, until: i64) {
        while clock.next() <= until {
            let now = clock.next();
            c.turn(clock, now, events);
        }
    }

    /// Opens shorter than a window (a connection per request) each counted to the next
    /// boundary from their own start and never reached one: nothing was compacted. A
    /// boundary an earlier open saved and did not reach is due at once.
    #[test]
    fn a_boundary_an_earlier_open_did_not_reach_is_due_at_the_next_open() {
        let config = CompactionConfig::default();
        let first_open = CompactionClock::new(&config, 10_000);
        assert_eq!(first_open.next(), 30_000, "level 1's first boundary");
        // Closed at 10.3 s; the next open comes at 40 s, past that boundary.
        let saved = first_open.saved();
        let next_open = CompactionClock::resumed(&config, 40_000, Some(&saved));
        assert_eq!(next_open.next(), 30_000, "overdue: the engine runs it at once");
        assert_eq!(
            CompactionClock::resumed(&config, 40_000, None).next(),
            60_000,
            "without a saved clock, as before"
        );
        // Saved boundaries later than the open's own (a longer ladder before) do not
        // delay it.
        let mut late = saved.clone();
        late.levels[0] = 10_000_000;
        assert_eq!(CompactionClock::resumed(&config, 40_000, Some(&late)).next(), 60_000);
    }

    /// The wall clock stepped back an hour after the boundaries were set (NTP after a VM
    /// resumed): the next turn brings them within a window of the new time, and level 1
    /// compacts at the next boundary, not an hour later.
    #[test]
    fn a_clock_stepped_back_delays_compaction_by_one_window_not_the_step() {
        let dir = tempfile::tempdir().unwrap();
        let c = Compactor {
            store: open_store("memory://stepped-back", &Default::default()).unwrap(),
            cache: LevelCache::open(dir.path(), FileModes::NewDatabase, 5).unwrap(),
            config: CompactionConfig::default(),
            encoding: Compression::Lz4.into(),
            encryption: None,
            encryption_status: None,
        };
        let (hour, window) = (3_600_000, 30_000);
        let mut clock = CompactionClock::new(&c.config, 10 * hour);
        block_on(c.store.put(0, 1, 1, level0(1), 1000)).unwrap();
        clock.saw_uploads(1);
        let events = Events::default();
        let stepped = 9 * hour + 1_000;
        let next = c.turn(&mut clock, stepped, &events);
        assert!(
            next <= stepped + window,
            "the next turn at {next}, {} ms away",
            next - stepped
        );
        c.turn(&mut clock, next, &events);
        let events = events.0.lock().unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.starts_with("Compacted") && e.contains("level: 1")),
            "{events:?}"
        );
    }

    #[test]
    fn an_idle_ladder_makes_no_requests_until_level_zero_gains_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting(
            open_store("memory://idle-ladder", &Default::default()).unwrap(),
            AtomicUsize::new(0),
        ));
        let c = Compactor {
            store: Arc::clone(&store) as Arc<dyn ReplicaStore>,
            cache: LevelCache::open(dir.path(), FileModes::NewDatabase, 5).unwrap(),
            config: CompactionConfig::default(),
            encoding: Compression::Lz4.into(),
            encryption: None,
            encryption_status: None,
        };
        let events = Events::default();
        let hour = 3_600_000;
        block_on(c.store.put(0, 1, 1, level0(1), 1000)).unwrap();
        let mut clock = CompactionClock::new(&c.config, 0);
        clock.saw_uploads(1);
        // The first windows compact what is there up the ladder, then settle.
        run_until(&c, &mut clock, &events, 2 * hour);
        assert!(
            events.0.lock().unwrap().iter().any(|e| e.contains("level: 3")),
            "{events:?}",
            events = events.0.lock().unwrap()
        );
        let settled = store.1.load(Ordering::SeqCst);
        assert!(settled > 0);
        // Two idle hours: 240 level-1 windows, 40 level-2, 8 level-3, 2 level-4, no request.
        clock.saw_uploads(1);
        run_until(&c, &mut clock, &events, 4 * hour);
        assert_eq!(
            store.1.load(Ordering::SeqCst),
            settled,
            "an idle ladder listed the store"
        );
        // A new level-0 file: the next level-1 window compacts it.
        block_on(c.store.put(0, 2, 2, level0(2), 2000)).unwrap();
        clock.saw_uploads(2);
        run_until(&c, &mut clock, &events, 4 * hour + 30_000);
        assert!(store.1.load(Ordering::SeqCst) > settled);
        let level1 = block_on(c.store.list(1)).unwrap();
        assert_eq!(level1.last().map(|f| f.max_txid), Some(2));
        assert!(!events.0.lock().unwrap().iter().any(|e| e.contains("Failed")));
    }

    /// Makes `path` look written `ago` in the past.
    fn written_ago(path: &std::path::Path, ago: std::time::Duration) {
        let file = std::fs::File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - ago).unwrap();
    }

    #[test]
    fn a_staging_file_a_killed_upload_left_in_a_file_replica_is_removed_once_idle_an_hour() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let url = format!("file://{}", replica.display());
        let c = Compactor {
            store: open_store(&url, &Default::default()).unwrap(),
            cache: LevelCache::open(&dir.path().join("cache"), FileModes::NewDatabase, 5).unwrap(),
            config: CompactionConfig::default(),
            encoding: Compression::Lz4.into(),
            encryption: None,
            encryption_status: None,
        };
        block_on(c.store.put(0, 1, 1, level0(1), 1000)).unwrap();
        let level0_dir = replica.join("ltx").join("0");
        let snapshots_dir = replica.join("ltx").join("9");
        std::fs::create_dir_all(&snapshots_dir).unwrap();
        // What object_store's put leaves when its writer dies before the rename: one
        // long abandoned (a snapshot's), one being written right now.
        let abandoned = snapshots_dir.join("0000000000000001-0000000000000005.ltx#3");
        let live = level0_dir.join("0000000000000002-0000000000000002.ltx#4");
        std::fs::write(&abandoned, vec![7u8; 4096]).unwrap();
        std::fs::write(&live, b"in flight").unwrap();
        written_ago(&abandoned, ABANDONED_AFTER + std::time::Duration::from_secs(60));

        let events = Events::default();
        let mut clock = CompactionClock::new(&c.config, 0);
        c.turn(&mut clock, 0, &events);
        assert!(
            !abandoned.exists(),
            "the abandoned staging file was removed at the first turn"
        );
        assert!(
            live.exists(),
            "a staging file written within the hour is a live upload's"
        );
        assert_eq!(block_on(c.store.list(0)).unwrap().len(), 1, "the stored file stays");

        // The live one is abandoned too, later: the sweep comes again an hour on, not at
        // every turn.
        written_ago(&live, ABANDONED_AFTER + std::time::Duration::from_secs(60));
        c.turn(&mut clock, 60_000, &events);
        assert!(live.exists(), "no second sweep within the hour");
        c.turn(&mut clock, ABANDONED_AFTER.as_millis() as i64, &events);
        assert!(!live.exists());
        assert!(
            !events.0.lock().unwrap().iter().any(|e| e.contains("Failed")),
            "{:?}",
            events.0.lock().unwrap()
        );
    }
}
