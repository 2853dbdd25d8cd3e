//! What the VFS calls on the application's threads: WAL writes to capture, the write
//! lock taken and released, database-file writes. Memory copies and a short mutex on the
//! commit path; reads of the WAL only when another process wrote it. What runs before
//! this process ends a generation is `generation_end.rs`.

use super::*;

impl Primary {
    /// Called after every successful write to the WAL (on the writer's thread).
    pub fn on_wal_write(&self, offset: u64, data: &[u8], wal: &mut dyn WalSource) {
        let mut shared = self.lock();
        if offset == 0 {
            shared.fresh_header = None;
        }
        let found = shared.capture.on_write(offset, data, wal).unwrap_or_else(|e| {
            // The write itself succeeded; only our read-back failed.
            Err(Discontinuity(format!("reading the WAL back: {e}")))
        });
        self.frames_pending
            .store(shared.capture.has_pending(), Ordering::Relaxed);
        match found {
            Ok(txns) if txns.is_empty() => {}
            Ok(txns) => {
                if shared.snapshot_needed.is_some() {
                    return; // the coming snapshot includes them
                }
                shared.oldest_pending_ms.get_or_insert_with(now_ms);
                shared.enqueue(txns);
                if shared.queued_bytes() as u64 > self.config.max_queue_bytes {
                    self.wake_worker();
                    // The writer waits for the worker when it releases the write lock
                    // (`pressure.rs`).
                    self.press();
                }
                drop(shared);
                die_before_the_count_if_asked();
            }
            Err(Discontinuity(reason)) => {
                if shared.snapshot_needed.is_none() {
                    tracing::warn!(db = %self.db_path.display(), %reason, "capture lost track of the WAL; taking a snapshot");
                }
                shared.require_snapshot(reason);
                self.wake_worker();
            }
        }
    }

    /// Called when SQLite is about to release the WAL write lock: the write transaction
    /// is over. Frames still pending belong to one that rolled back after spilling; they
    /// are dropped (another process may reuse their offsets). Before the release, not
    /// after: once it is released another connection of this process may take the lock
    /// and write, and its frames were the ones dropped (four threads on one database: a
    /// commit half dropped, read back from the file, taken for one written over a
    /// captured frame, or left unread under the next write lock; a needless snapshot
    /// each time).
    pub fn write_transaction_over(&self) {
        if self.frames_pending.swap(false, Ordering::Relaxed) {
            self.lock().capture.discard_pending();
        }
    }

    /// Called once SQLite released the WAL write lock (waits here block no other
    /// writer). With `sync=commit`, the commit returns only once its TXID is in object
    /// storage.
    pub fn write_lock_released(&self) {
        self.hold_back_writer();
        self.after_commit();
    }

    /// Called before a write to the database file itself (not its WAL). In WAL mode only
    /// checkpoints write there, copying pages whose commits capture already has. A
    /// database that leaves WAL mode (an unqualified `PRAGMA journal_mode=MEMORY|OFF` on a
    /// connection where it is attached: SQLite asks only the main database, so the
    /// pragma cannot be refused for it) says so by writing page 1 with file format
    /// version 1 (bytes 18-19); from then on its commits are written straight into the
    /// file, unseen by capture. Each write then requires a snapshot, so every such commit
    /// is still replicated, if expensively, until page 1 says WAL (2) again. True for
    /// such a write: the transaction's end then waits for its snapshot with
    /// `sync=commit` ([`Primary::after_commit`]).
    pub fn on_db_write(&self, offset: u64, data: &[u8]) -> bool {
        if offset == 0 && data.len() > 19 {
            let leaving = data[18] == 1 && data[19] == 1;
            let was = self.outside_wal.swap(leaving, Ordering::Relaxed);
            if leaving && !was {
                tracing::warn!(
                    db = %self.db_path.display(),
                    "the database left WAL mode (journal_mode changed on a connection it is attached to); each commit is now replicated by a full snapshot until PRAGMA journal_mode=WAL"
                );
            } else if was && !leaving {
                tracing::info!(db = %self.db_path.display(), "the database is back in WAL mode");
            }
        }
        if !self.outside_wal.load(Ordering::Relaxed) {
            return false;
        }
        let mut shared = self.lock();
        shared.require_snapshot("the database was written outside WAL mode".into());
        self.wake_worker();
        true
    }

    /// With `sync=commit`, waits until the commit just made is stored. Called when a
    /// write transaction ends: at the WAL write lock's release, or, outside WAL mode,
    /// when it gives up its lock on the file (`vfs/file.rs`), where the snapshot
    /// `on_db_write` required carries the commit (before, such commits returned at once).
    pub fn after_commit(&self) {
        if self.config.sync_mode != SyncMode::Commit {
            return;
        }
        let target = self.lock().next_txid - 1;
        if let Err(e) = self.sync(target, self.config.sync_timeout) {
            // The commit is durable locally and returns: SQLite has no way to fail a
            // transaction after its commit. The miss shows in the status and the log.
            tracing::error!(db = %self.db_path.display(), "sync=commit: {e}");
            let mut shared = self.lock();
            shared.sync_commit_timeouts += 1;
            shared.sync_commit_error = Some(e);
        }
    }

    /// When the application's attempt at the WAL write lock failed with BUSY: if our
    /// own snapshot (or the recovery a wal-index probe runs) holds the lock, waits
    /// (bounded) for its release and returns true so the caller retries.
    pub fn wait_for_snapshot_lock(&self) -> bool {
        let locking = self.snapshot_locking.lock().unwrap_or_else(|p| p.into_inner());
        if !*locking {
            return false;
        }
        let (locking, _) = self
            .snapshot_unlocked
            .wait_timeout_while(locking, Duration::from_secs(10), |held| *held)
            .unwrap_or_else(|p| p.into_inner());
        !*locking
    }

    pub(super) fn set_snapshot_locking(&self, held: bool) {
        *self.snapshot_locking.lock().unwrap_or_else(|p| p.into_inner()) = held;
        if !held {
            self.snapshot_unlocked.notify_all();
        }
    }

    /// Commits written by other processes (followers) reach us only through the WAL
    /// and the hand-off records of the generations they ended. The WAL is read only as
    /// far as SQLite's wal-index counts it committed (`wal_index.rs`). True when capture
    /// stands at the count read just now: every commit made before this call is queued.
    /// `asked`: a follower waits for an answer (`answer_sync_requests`).
    pub(super) fn catch_up_foreign_commits(&self, asked: bool) -> bool {
        let (mut counted, mut fresh) = self.wal_index.counted();
        // A process whose application has not read the database yet maps no wal-index: a
        // dead process's last commits (after a takeover) or a follower's `litestream_sync()`
        // would wait for its first read. Read the count through a connection of our own
        // then (only then: with no process holding the wal-index it must be recovered,
        // which makes the application's connections wait; and never while closing, when
        // ours would bring a deleted WAL back).
        // The recovery holds the WAL write lock: an application writer that meets it
        // waits for it as for a snapshot's (`wait_for_snapshot_lock`), instead of getting
        // SQLITE_BUSY at once without a busy timeout (a shell's INSERT right after a
        // takeover, 1 run in ~60 of `takeover` under load).
        let probe = self.took_over.load(Ordering::Relaxed) || asked;
        if counted.is_none() && probe && !self.lock().closing {
            self.set_snapshot_locking(true);
            counted = self.snapshotter.wal_index(&self.db_path);
            self.set_snapshot_locking(false);
            fresh = counted.is_some();
        }
        let Ok(mut file) = WalFile::open(&self.db_path) else {
            return false;
        };
        let mut wal = CountedWal::cut(&mut file, counted);
        let mut shared = self.lock();
        self.follow_locked(&mut shared, &mut wal, "an engine turn");
        fresh && counted.is_some_and(|counted| shared.snapshot_needed.is_some() || reached(&shared.capture, counted))
    }

    /// This primary was opened by a takeover, not by the application's open.
    pub fn taken_over(&self) {
        self.took_over.store(true, Ordering::Relaxed);
        self.wake_worker();
    }

    /// Follows the WAL and the records under the shared lock; captured commits are
    /// queued, a discontinuity asks for a snapshot. `site` names the caller in the log.
    pub(super) fn follow_locked(&self, shared: &mut Shared, wal: &mut dyn WalSource, site: &'static str) {
        if shared.snapshot_needed.is_some() {
            return; // the coming snapshot covers everything; it repositions capture
        }
        // Our writer, holding the write lock, began this generation and is about to write
        // its header: until then the WAL has none or the previous generation's, and
        // nobody else can write it (an engine turn that read the WAL in that moment took
        // it for a truncation, or a generation no record connects, and asked for a
        // needless snapshot).
        if let Some(fresh) = shared.fresh_header.filter(|g| Some(*g) == shared.capture.generation()) {
            let live = crate::primary::follow::read_header(wal);
            if matches!(live, Ok(h) if h.map(|h| (h.salt1, h.salt2)) != Some(fresh)) {
                return;
            }
        }
        let identity = || FileIdentity::of(&self.db_path).ok();
        let consumed_before = shared.handoff_consumed;
        // SQLite's commit count before the WAL is read: a commit counted here whose
        // generation this look then finds neither in the WAL nor in a record was
        // checkpointed away unseen (`Capture::left_commits`).
        let commits_before = self.wal_index.read().map(|h| h.commits);
        let left_before = shared.capture.commits_left();
        let followed = {
            let Shared {
                capture,
                handoff_consumed,
                ..
            } = &mut *shared;
            follow(capture, handoff_consumed, &self.records, wal, &identity)
        };
        if shared.handoff_consumed != consumed_before {
            // The queue now holds commits another process's record holds too.
            shared.origin = None;
        }
        let followed = match followed {
            Ok(Ok(txns)) => Ok(
                commits_while_empty(&mut shared.capture, left_before, commits_before, || {
                    self.wal_index.read().map(|h| h.commits)
                })
                .map(|()| txns),
            ),
            other => other,
        };
        match followed {
            Ok(Ok(txns)) => {
                if !txns.is_empty() {
                    shared.oldest_pending_ms.get_or_insert_with(now_ms);
                    shared.enqueue(txns);
                }
            }
            Ok(Err(Discontinuity(reason))) => {
                tracing::warn!(db = %self.db_path.display(), %reason, at = site, "taking a snapshot");
                shared.require_snapshot(reason);
                self.wake_worker();
            }
            Err(e) => tracing::warn!(db = %self.db_path.display(), "reading the WAL: {e}"),
        }
    }

    /// Answers followers' `litestream_sync()` requests with the TXID that covers every
    /// commit made before them: the last captured, or the snapshot still to come. Only
    /// once capture has `caught_up` with the wal-index as read after the requests were
    /// listed; else they wait for a later turn.
    pub(super) fn answer_sync_requests(&self, requests: &[PathBuf], caught_up: bool) {
        if requests.is_empty() || !caught_up {
            return;
        }
        let mut shared = self.lock();
        if shared.snapshot_needed.is_some() {
            return; // answered once the snapshot has its TXID
        }
        let txid = shared.next_txid - 1;
        for request in requests {
            follower::answer(request, self.config.file_modes, txid, self.node_id);
        }
        shared.sync_requested = true;
    }

    /// This writer is about to append to the generation the wal-index counts. When that
    /// is the one capture ended last, and capture holds nothing since, the restart its
    /// record announced never reached the file (`Capture::resume_ended`): capture takes
    /// it up again where it ended it, and the writer's frames continue it. Otherwise
    /// they were taken for another generation's, and a snapshot for a lost track
    /// (multi_process_crash, once in 2,800 kills).
    fn resume_counted_generation(&self, shared: &mut Shared, wal: &mut dyn WalSource, shm: ShmWal) {
        if shared.snapshot_needed.is_some() || shared.capture.generation() == Some((shm.salt1, shm.salt2)) {
            return;
        }
        let Ok(Some(header)) = crate::primary::follow::read_header(wal) else {
            return;
        };
        if (header.salt1, header.salt2) == (shm.salt1, shm.salt2)
            && shared.capture.resume_ended(&header, u64::from(shm.max_frame))
        {
            tracing::info!(
                db = %self.db_path.display(),
                "the WAL goes on in the generation a hand-off record ended (its writer died before restarting it)"
            );
            self.follow_locked(shared, wal, "a resumed generation");
        }
    }

    /// A writer of this process holds the WAL write lock: before it writes, capture
    /// everything others committed since our position (their frames, the generations
    /// they ended), so the writer's frames continue what capture has. `shm` is the
    /// wal-index header when it could be read; it costs nothing to compare.
    pub fn after_write_lock(&self, shm: Option<ShmWal>) {
        let mut shared = self.lock();
        // A new write transaction: the last one's header write landed or failed.
        shared.fresh_header = None;
        if let Some(shm) = shm {
            let in_step = shared.capture.generation() == Some((shm.salt1, shm.salt2))
                && shared.capture.next_frame() == shm.max_frame as u64;
            if in_step || shared.snapshot_needed.is_some() {
                return;
            }
        }
        // Frames past the count are a commit in flight or one whose writer died before
        // SQLite counted it: this writer is about to put its own frames there. Without a
        // count (a header being recovered) the file as it is, and the checks below.
        match WalFile::open(&self.db_path) {
            Ok(mut file) => {
                let mut wal = match shm {
                    Some(shm) => CountedWal::cut(&mut file, Some(shm)),
                    None => CountedWal::cut_or_whole(&mut file, None),
                };
                self.follow_locked(&mut shared, &mut wal, "the write lock");
                if let Some(shm) = shm {
                    self.resume_counted_generation(&mut shared, &mut wal, shm);
                }
            }
            Err(e) => tracing::warn!(db = %self.db_path.display(), "reading the WAL: {e}"),
        }
        let apart = shm.and_then(|shm| apart_from_wal_index(&shared.capture, shm));
        if let Some(reason) = apart.filter(|_| shared.snapshot_needed.is_none()) {
            tracing::warn!(db = %self.db_path.display(), %reason, "taking a snapshot");
            shared.require_snapshot(reason);
            self.wake_worker();
        }
    }
}

/// Whether capture stands where the wal-index count puts the end of committed frames:
/// in its generation at its last counted frame, or past a generation ended by its record
/// when the counted one holds nothing yet.
fn reached(capture: &crate::primary::capture::Capture, counted: ShmWal) -> bool {
    if capture.ended() {
        return counted.max_frame == 0;
    }
    capture.generation() == Some((counted.salt1, counted.salt2)) && capture.next_frame() >= u64::from(counted.max_frame)
}

/// Where capture, just brought up to date under the write lock, and SQLite's wal-index
/// disagree on the end of the generation both are in; None when they agree. With the
/// lock held no commit is in flight, so they must agree: capture past the wal-index
/// read a commit frame whose writer died before SQLite counted it (the next writer
/// reuses its slot); capture short of it could not read commits SQLite has (a chain
/// that an overwritten frame broke). Either way only a snapshot is sure to match.
fn apart_from_wal_index(capture: &crate::primary::capture::Capture, shm: ShmWal) -> Option<String> {
    if capture.generation() != Some((shm.salt1, shm.salt2)) {
        return None; // another generation: following it is `follow.rs`'s business
    }
    let (at, counted) = (capture.next_frame(), u64::from(shm.max_frame));
    match at.cmp(&counted) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Greater => Some(format!(
            "capture read commits up to frame {at} of the WAL, SQLite counts {counted}: a writer died before its \
             commit was counted"
        )),
        std::cmp::Ordering::Less => Some(format!(
            "capture could read the WAL only to frame {at}, SQLite counts {counted} committed"
        )),
    }
}

/// Tests only: `LITESTREAM_TEST_DIE_BEFORE_COUNT_MS=<ms>` ends the process that long
/// after capture took a commit, before SQLite counts it in the wal-index: the window of a
/// writer killed mid-commit, held open for stages to run in
/// (`tests/died_between_record_and_wal.rs`).
fn die_before_the_count_if_asked() {
    static AFTER: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let after = AFTER.get_or_init(|| std::env::var("LITESTREAM_TEST_DIE_BEFORE_COUNT_MS").ok()?.parse().ok());
    if let Some(ms) = *after {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        std::process::abort();
    }
}

/// After a look that found capture standing where the WAL was left empty: SQLite's
/// commit count must not have grown since (`Capture::left_commits`). `left_before` is
/// the count capture kept before the look and `commits_before` the wal-index's, read
/// before the WAL was; a look that learned of a newer emptying (a record's) keeps the
/// count now instead, since commits before it were the record's generation's.
fn commits_while_empty(
    capture: &mut crate::primary::capture::Capture,
    left_before: Option<u32>,
    commits_before: Option<u32>,
    commits_now: impl FnOnce() -> Option<u32>,
) -> Result<(), Discontinuity> {
    if !capture.ended() || capture.database_left().is_none() {
        return Ok(());
    }
    match (capture.commits_left(), left_before, commits_before) {
        (None, _, _) => {
            capture.left_commits(commits_now());
            Ok(())
        }
        // The same emptying as before the look: counts only grow (a wrapping compare;
        // a recovery that rebuilt the wal-index starts again at 0 and passes unseen, as
        // before this witness).
        (Some(left), Some(before), Some(now)) if left == before && (now.wrapping_sub(left) as i32) > 0 => {
            Err(Discontinuity(format!(
                "SQLite counted {} commits since the WAL was last left empty, and neither the WAL nor a \
                 hand-off record holds them (a process outside the VFS committed and checkpointed them away)",
                now.wrapping_sub(left)
            )))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primary::capture::Capture;
    use crate::wal::testing::WalBuilder;

    #[test]
    fn capture_and_the_wal_index_must_agree_on_the_last_commit_under_the_write_lock() {
        let mut wal = WalBuilder::new(512, 7, 99, false);
        wal.frame(1, 1, 1).frame(2, 2, 2);
        let mut capture = Capture::new();
        capture.skip_to_end(&mut wal.bytes.clone()).unwrap();
        assert_eq!(capture.next_frame(), 2);
        let shm = |max_frame, salt1| ShmWal {
            salt1,
            salt2: 99,
            max_frame,
            commits: 0,
        };
        assert_eq!(apart_from_wal_index(&capture, shm(2, 7)), None);
        // The second commit frame is valid in the file, but its writer died before
        // SQLite counted it: the next writer will put its own commit there.
        let past = apart_from_wal_index(&capture, shm(1, 7)).expect("capture is past the wal-index");
        assert!(past.contains("died"), "{past}");
        let short = apart_from_wal_index(&capture, shm(3, 7)).expect("capture is short of the wal-index");
        assert!(short.contains("only to frame 2"), "{short}");
        assert_eq!(
            apart_from_wal_index(&capture, shm(1, 8)),
            None,
            "another generation is follow's"
        );
    }

    #[test]
    fn commits_counted_while_the_wal_stayed_empty_are_a_discontinuity() {
        let file = FileIdentity {
            dev: 1,
            ino: 2,
            size: 4096,
            mtime_ns: 3,
        };
        let emptied = |commits| {
            let mut capture = Capture::new();
            capture.left_database(Some(file.clone()));
            capture.left_commits(commits);
            capture
        };
        // The same emptying before and after the look: a count that grew is commits
        // nobody captured, one that did not is nothing.
        let mut capture = emptied(Some(10));
        assert!(commits_while_empty(&mut capture, Some(10), Some(10), || Some(99)).is_ok());
        let err = commits_while_empty(&mut capture, Some(10), Some(11), || Some(99)).unwrap_err();
        assert!(
            err.0.contains("1 commits since the WAL was last left empty"),
            "{}",
            err.0
        );
        // Counts wrap; a recovery's restart at 0 is not taken for commits.
        let mut capture = emptied(Some(u32::MAX));
        assert!(commits_while_empty(&mut capture, Some(u32::MAX), Some(1), || None).is_err());
        let mut capture = emptied(Some(10));
        assert!(commits_while_empty(&mut capture, Some(10), Some(0), || None).is_ok());
        // No count when the WAL was left empty (a record followed in this look, an
        // open after a clean close): the count now becomes the one to keep.
        let mut capture = emptied(None);
        assert!(commits_while_empty(&mut capture, Some(10), Some(12), || Some(12)).is_ok());
        assert_eq!(capture.commits_left(), Some(12));
        // The wal-index not readable: nothing to compare.
        let mut capture = emptied(Some(10));
        assert!(commits_while_empty(&mut capture, Some(10), None, || None).is_ok());
        // Capture in a generation (a start record followed): nothing is kept.
        let mut capture = Capture::new();
        capture.begin_generation(WalBuilder::new(512, 7, 99, false).header);
        assert!(commits_while_empty(&mut capture, Some(10), Some(11), || Some(11)).is_ok());
    }
}
