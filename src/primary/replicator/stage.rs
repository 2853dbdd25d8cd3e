//! Staging: the queue of captured commits, or a snapshot, as one LTX file in the
//! staging directory, fsynced, with the state a restart resumes from.

use super::*;
use crate::ltx::Encoder;
use crate::primary::batch::{full_header, write_full};

impl Primary {
    /// Takes the pending snapshot if any, then stages the held batch and the queue as
    /// one LTX file.
    pub(super) fn stage_pending(&self) -> Result<Staged, StageError> {
        let _staging = self.stage_lock.lock().unwrap_or_else(|p| p.into_inner());
        let staged = self.recreate_vanished_staging().and_then(|()| self.stage_locked());
        match &staged {
            Ok(Staged::Done) => self.lock().staging_failure = None,
            Ok(Staged::Full { .. }) => {}
            Err(e) => {
                let mut shared = self.lock();
                // Every failure below already did this under the lock it failed in (a
                // restart does not wait for this one); kept for any that does not.
                shared.origin = None;
                if let StageError::Failed(e) = e {
                    shared.staging_failure = Some(e.clone());
                    self.drop_what_staging_cannot_take(&mut shared, e);
                }
            }
        }
        staged
    }

    /// A stage failed (a full disk, a read-only or unwritable staging directory) and the
    /// commits waiting for it are over `max_queue`: they are dropped, and a full snapshot
    /// at the next TXID covers them once staging works, as when staging is over
    /// `max_staging`. Kept, they grew memory for as long as the failure lasted (300 MB in
    /// 4 s of 100 KB commits on a full disk), and recovery then needed free space for
    /// all of them at once, where a snapshot needs the database's. Commits under
    /// `max_queue` stay, so a failure that passes quickly costs no snapshot.
    fn drop_what_staging_cannot_take(&self, shared: &mut Shared, error: &str) {
        let (bytes, limit) = (shared.queued_bytes(), self.config.max_queue_bytes);
        if bytes as u64 <= limit || shared.snapshot_needed.is_some() {
            return;
        }
        let count = shared.drop_pending(|count| {
            format!(
                "staging failed ({error}) with {count} commits ({bytes} bytes) in memory, over max_queue ({limit}): \
                 they were dropped and a snapshot covers them"
            )
        });
        self.save_after_drop(shared);
        tracing::warn!(
            db = %self.db_path.display(),
            commits = count,
            bytes,
            "staging failed ({error}) with more than max_queue ({limit} bytes) of commits in memory: dropped them; \
             a full snapshot covers them once staging works again"
        );
        // Writers held back by the full queue (`pressure.rs`) go on.
        self.progress.notify_all();
    }

    /// Writes `batch` as one staged LTX file, encoded straight into it.
    fn stage_batch(&self, batch: &Batch) -> Result<crate::primary::staging::StagedFile, crate::ltx::Error> {
        let encoding = self.encoding();
        self.staging.stage_with(batch.min_txid(), batch.max_txid(), |file| {
            let out = batch.encode_into(
                io::BufWriter::with_capacity(STAGE_BUFFER, file),
                self.node_id,
                &encoding,
            )?;
            out.into_inner().map_err(|e| e.into_error())?;
            Ok(())
        })
    }

    /// Commits were just dropped for a snapshot: the state says so (no WAL position, the
    /// TXIDs handed out), so that a restart before the snapshot takes one too and gives
    /// no TXID twice. Saving it removes the hand-off records capture consumed: they hold
    /// only commits the snapshot covers (a batch record holds a whole queue, up to
    /// `max_queue`), and while staging stays full or failing no stage would remove them.
    /// Should the save fail (a full disk), they go anyway: a restart from the older state
    /// finds no record for the WAL it meets and takes a snapshot as well.
    fn save_after_drop(&self, shared: &Shared) {
        if let Err(e) = self.save_state(shared, None) {
            tracing::warn!(db = %self.db_path.display(), "saving replication state after dropping commits: {e}");
            self.records.remove_through(shared.handoff_consumed);
        }
    }

    /// The staging directory was removed under this live primary: made again, once, with
    /// one warning. Files staged and not uploaded went with it; their TXIDs will never
    /// reach the replica, so, as after a discontinuity, a full snapshot at the next TXID
    /// covers them, stored at level 9 too so that restores start from it (the replica
    /// has a gap before it). Before, the directory was never made again: nothing was
    /// uploaded any more and every stage failed with "No such file or directory".
    fn recreate_vanished_staging(&self) -> Result<(), StageError> {
        let dir = self.staging.dir().display();
        match self.staging.recreate_if_gone() {
            Ok(false) => Ok(()),
            Ok(true) => {
                let mut shared = self.lock();
                let (first, last) = (shared.uploaded_txid + 1, shared.staged_txid);
                if first <= last {
                    let reason = format!(
                        "the staging directory {dir} was removed with TXIDs {first}-{last} staged and not uploaded"
                    );
                    tracing::warn!(db = %self.db_path.display(), "{reason}; made it again: a full snapshot at the next TXID covers them");
                    shared.require_snapshot(reason);
                    shared.chain_start_owed = true;
                } else {
                    tracing::warn!(db = %self.db_path.display(), "the staging directory {dir} was removed (nothing staged was lost); made it again");
                }
                Ok(())
            }
            Err(e) => Err(StageError::Failed(format!(
                "the staging directory {dir} was removed and cannot be made again: {e}"
            ))),
        }
    }

    /// Bytes staged, an error saying where when they cannot be counted.
    fn staged_bytes(&self) -> Result<u64, StageError> {
        self.staging
            .total_bytes()
            .map_err(|e| StageError::Failed(format!("{}: {e}", self.staging.dir().display())))
    }

    fn stage_locked(&self) -> Result<Staged, StageError> {
        if self.lock().snapshot_needed.is_some() {
            // A snapshot staged while the store is down and staging is over its
            // limit would be followed by another and another: wait for uploads first.
            let staged = self.staged_bytes()?;
            let limit = self.config.max_staging_bytes;
            if staged > limit {
                return Ok(Staged::Full { staged, limit });
            }
            self.take_snapshot()?;
        }
        let mut waited = 0;
        let batch = loop {
            let mut shared = self.lock();
            if shared.pending_commits() == 0 {
                // Nothing committed for a whole turn: idle, so keep no buffers.
                shared.capture.release_idle_buffers();
                return Ok(Staged::Done);
            }
            let staged = self.staged_bytes()?;
            let limit = self.config.max_staging_bytes;
            // Over the limit while uploads go through (a snapshot larger than max_staging
            // on its way up, a store slower than the commits for a while): staged anyway.
            // Dropping these commits made the next stage a snapshot, over the limit
            // itself, and so on: a full image every second after an outage while
            // commits went on (a tester: 2.9 GB uploaded in 2 minutes for a 10 MB
            // database with max_staging=1MiB).
            if staged > limit && shared.uploads_failing {
                // The store has been unreachable for long: stop keeping history, and
                // re-seed the replica with a snapshot once it is back.
                shared.drop_pending(|count| {
                    format!(
                        "staging is full ({staged} bytes, limit {limit}); {count} commits will be covered by a snapshot"
                    )
                });
                self.save_after_drop(&shared);
                return Ok(Staged::Full { staged, limit });
            }
            if waited < UNCOUNTED_WAITS && captured_past_the_count(&shared.capture, self.wal_index.read()) {
                drop(shared);
                waited += 1;
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            // The whole queue goes: capture's position now is right after its last
            // commit, including generations it ended or began since (`follow.rs`).
            let at_cut = (
                shared.capture.position(),
                shared.handoff_consumed,
                shared.capture.ended_before(),
                shared.capture.database_left().cloned(),
            );
            // What is captured from here on is queued from the position the state
            // will say: a restart before it is saved hands the queue off from there
            // (`hand_off_batch`), and a failure below takes that back.
            shared.origin = at_cut.0.filter(|p| !p.ended);
            shared.stage_file_pending = true;
            let batch = shared.take_pending();
            shared.in_stage = (batch.commits(), batch.bytes());
            break (batch, at_cut);
        };
        // A writer held back by a full queue (`pressure.rs`) goes on from here.
        self.progress.notify_all();
        let (batch, (position_at_cut, consumed_at_cut, ended_before_cut, left_at_cut)) = batch;
        pause_here_if_asked(&PAUSE_BEFORE_FILE);
        let staged = self
            .stage_batch(&batch)
            .map_err(|e| format!("writing {}: {e}", self.config.staging_dir.display()));
        if staged.is_ok() {
            // The cut's commits are on disk: a restart may hand the queue off from the cut
            // (one may be waiting for this: `wait_for_staged_file`).
            self.lock().stage_file_pending = false;
            self.progress.notify_all();
            pause_here_if_asked(&PAUSE_BEFORE_STATE);
        }
        let mut shared = self.lock();
        // A failed stage: `origin` is taken back below, under this same lock.
        if std::mem::take(&mut shared.stage_file_pending) {
            self.progress.notify_all();
        }
        shared.in_stage = (0, 0);
        match staged {
            Ok(_) => {
                shared.staged_txid = batch.max_txid();
                shared.staging_failure = None;
                // The closing stage of a process that deleted the WAL itself, with nothing
                // captured since the cut, saves what `Primary::close` would save next (the
                // clean close): one durable save instead of two, the second being the
                // same state (`persist`). Nothing in between can change it: the close
                // saves it whether or not the upload that follows succeeds.
                let closed_clean = shared
                    .clean_close()
                    .filter(|_| shared.closing && shared.pending_commits() == 0)
                    .filter(|_| shared.snapshot_needed.is_none() && shared.handoff_consumed == consumed_at_cut);
                let wal: Option<crate::primary::state::SavedWal> =
                    if shared.snapshot_needed.is_some() || closed_clean.is_some() {
                        None
                    } else {
                        position_at_cut.map(Into::into)
                    };
                let state = SavedState {
                    stored_for: None, // stamped by `persist`
                    numbered_txid: shared.numbered_past(batch.max_txid()),
                    node_id: self.node_id,
                    txid: batch.max_txid(),
                    ended_before: ended_before_cut.filter(|_| wal.is_some()).map(Into::into),
                    database_left: crate::primary::state::database_left_to_save(
                        left_at_cut,
                        wal.as_ref(),
                        shared.snapshot_needed.is_some(),
                        closed_clean.is_some(),
                    ),
                    wal,
                    closed_clean,
                    handoff_seq: consumed_at_cut,
                };
                shared.recycle(batch);
                if let Err(e) = self.persist(&state) {
                    // The state says less than the batch records written from the cut
                    // assume: no more of them until a stage saves one.
                    shared.origin = None;
                    return Err(format!("saving state: {e}").into());
                }
                self.progress.notify_all();
                Ok(Staged::Done)
            }
            Err(e) => {
                // Keep the commits in memory and try again next round. A restart may
                // have moved the queue to `held` meanwhile: both are newer than `batch`.
                // The queue now holds commits from before the cut again: no batch
                // record may begin at the cut.
                shared.origin = None;
                let Shared {
                    queue, held, capture, ..
                } = &mut *shared;
                let mut all = std::mem::take(queue);
                all.absorb_older(std::mem::take(held), &mut |page| capture.recycle(page));
                all.absorb_older(batch, &mut |page| capture.recycle(page));
                *queue = all;
                Err(e.into())
            }
        }
    }

    /// A full image of the database as the next TXID, staged like any batch.
    pub(super) fn take_snapshot(&self) -> Result<(), StageError> {
        let tmp = self.config.staging_dir.join(SNAPSHOT_TMP);
        remove_snapshot_leftovers(&self.config.staging_dir);
        let mut assigned: Option<(u64, u64, Batch)> = None;
        let mut snapshot_position: Option<WalPosition> = None;
        let mut snapshot_consumed = 0;
        let mut snapshot_left = None;
        let mut at_lock = |counted: Option<ShmWal>| {
            let mut shared = self.lock();
            let before = shared.take_pending();
            let txid = shared.next_txid;
            shared.next_txid += 1;
            shared.snapshot_needed = None;
            shared.last_snapshot_txid = txid;
            // Our snapshot connection holds the write lock: the count is exact, and the
            // snapshot holds what it counts, not a commit frame whose writer died first.
            if let Ok(mut file) = WalFile::open(&self.db_path) {
                let mut wal = CountedWal::cut_or_whole(&mut file, counted.or_else(|| self.wal_index.read()));
                if let Err(e) = shared.capture.skip_to_end(&mut wal) {
                    tracing::warn!("reading the WAL for a snapshot: {e}");
                }
            }
            // No WAL: the snapshot copies the database file as it is now, under the
            // write lock, and that is the file a later look must find unchanged.
            if shared.capture.ended() {
                shared.capture.left_database(FileIdentity::pinned(&self.db_path).ok());
                let wal_index = counted.or_else(|| self.wal_index.read());
                shared.capture.left_commits(wal_index.map(|h| h.commits));
                snapshot_left = shared.capture.database_left().cloned();
            }
            // Every record so far is older than the state the snapshot copies. Those
            // already staged are deleted: finding none (0) says nothing about the
            // numbers taken, and going back to it made the next restart's record look
            // like one after a missing record (a second, needless snapshot).
            let last = self.records.last_seq().unwrap_or(0);
            shared.handoff_consumed = shared.handoff_consumed.max(last);
            snapshot_position = shared.capture.position();
            snapshot_consumed = shared.handoff_consumed;
            shared.origin = snapshot_position.filter(|p| !p.ended);
            shared.in_stage = (before.commits(), before.bytes());
            // The first TXID not staged: with commits dropped (`drop_pending`), the
            // snapshot spans their TXIDs up to its own.
            let first = match before.is_empty() {
                true => shared.staged_txid + 1,
                false => before.max_txid() + 1,
            };
            assigned = Some((first, txid, before));
        };
        self.set_snapshot_locking(true);
        let released = || self.set_snapshot_locking(false);
        let result = self.snapshotter.snapshot(&self.db_path, &tmp, &mut at_lock, &released);
        self.set_snapshot_locking(false);
        // The commits before the snapshot point are staged just below.
        let in_stage_done = || self.lock().in_stage = (0, 0);
        let Some((min_txid, txid, before)) = assigned else {
            return Err(match result {
                Err(SnapshotError::WriterBusy) => StageError::SnapshotWaiting,
                Err(SnapshotError::Failed(e)) => StageError::Failed(format!("snapshot failed before it started: {e}")),
                Ok(()) => StageError::Failed("snapshot failed before it started".into()),
            });
        };
        let result = result.map_err(|e| match e {
            SnapshotError::WriterBusy => "the write lock was lost during the snapshot".to_string(),
            SnapshotError::Failed(e) => e,
        });
        // Commits captured before the snapshot point are staged first, in order: a
        // crash between the two must not leave the snapshot staged over a gap.
        if !before.is_empty() {
            let staged = self.stage_batch(&before).map_err(|e| e.to_string());
            if let Err(e) = staged {
                remove_snapshot_leftovers(&self.config.staging_dir);
                let first = before.min_txid();
                self.lock().recycle(before);
                in_stage_done();
                self.snapshot_failed(first, txid, &e);
                return Err(format!("staging the commits before a snapshot: {e}").into());
            }
            self.lock().recycle(before);
        }
        in_stage_done();
        // Encoded straight into the staging file: the image is the size of the database.
        let staged = result.and_then(|()| {
            self.staging
                .stage_with(min_txid, txid, |file| {
                    self.encode_copy(&tmp, min_txid, txid, file).map_err(io::Error::other)
                })
                .map_err(|e| e.to_string())
        });
        remove_snapshot_leftovers(&self.config.staging_dir);
        let staged = match staged {
            Ok(staged) => staged,
            Err(e) => {
                // Reading the copy, encoding or writing failed: `stage_with` removed its
                // temp file, so nothing took these TXIDs.
                self.snapshot_failed(min_txid, txid, &e);
                return Err(format!("snapshot: {e}").into());
            }
        };
        let mut shared = self.lock();
        shared.staged_txid = txid;
        shared.snapshots += 1;
        shared.staging_failure = None;
        if let Err(e) = self.save_staged(&shared, txid, snapshot_position, snapshot_consumed, snapshot_left) {
            shared.origin = None; // as for a batch whose state was not saved
            return Err(e.into());
        }
        tracing::info!(db = %self.db_path.display(), txid, bytes = staged.size, "snapshot staged");
        Ok(())
    }

    /// A snapshot that took its TXID at the lock was not staged (a full disk, a failed
    /// read of the copy), and no TXID from `first` on was: the next snapshot covers it
    /// all, spanning the TXIDs handed out meanwhile (none is given twice). Commits
    /// queued since the lock go too (the new snapshot copies the database later than
    /// every one of them).
    ///
    /// With no commit numbered since the lock, the next snapshot takes this one's TXID
    /// again: `litestream_txid()` handed it out while this one ran (as the TXID that holds
    /// the commits), and the next snapshot holds them. A new TXID left that one naming no
    /// stored state (a test saw the application told 20 and the replica given 21).
    fn snapshot_failed(&self, first: u64, txid: u64, error: &str) {
        let mut shared = self.lock();
        let dropped = shared.take_pending();
        shared.recycle(dropped);
        if shared.next_txid == txid + 1 {
            shared.next_txid = txid;
        }
        shared.staged_txid = first - 1;
        shared.origin = None;
        shared.require_snapshot(format!("previous snapshot attempt failed: {error}"));
    }

    /// Records that everything up to `txid` is staged, with the WAL position right after
    /// it. Not the capture's current position: commits captured since (queued, not
    /// staged) would be skipped by a restart that resumed from there. `left`: with no
    /// position (a database without a WAL), the file the snapshot copied, which a restart
    /// that finds it unchanged goes on from instead of taking the whole database again.
    pub(super) fn save_staged(
        &self,
        shared: &Shared,
        txid: u64,
        position: Option<WalPosition>,
        handoff_seq: u64,
        left: Option<FileIdentity>,
    ) -> Result<(), String> {
        let wal: Option<crate::primary::state::SavedWal> = if shared.snapshot_needed.is_some() {
            None
        } else {
            position.map(Into::into)
        };
        let state = SavedState {
            stored_for: None, // stamped by `persist`
            numbered_txid: shared.numbered_past(txid),
            node_id: self.node_id,
            txid,
            database_left: crate::primary::state::database_left_to_save(
                left,
                wal.as_ref(),
                shared.snapshot_needed.is_some(),
                false,
            ),
            wal,
            closed_clean: None,
            handoff_seq,
            ended_before: None,
        };
        self.persist(&state).map_err(|e| format!("saving state: {e}"))
    }

    /// Encodes the snapshot copy at `tmp` as one LTX file holding every page, into `out`
    /// (the staging temp file): one page in memory at a time, not the image.
    pub(super) fn encode_copy(
        &self,
        tmp: &Path,
        min_txid: u64,
        max_txid: u64,
        out: &mut fs::File,
    ) -> Result<(), String> {
        let file = crate::file_modes::open_read(tmp).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut header = [0u8; 100];
        let page_size = if len >= 100 {
            file.read_exact_at(&mut header, 0).map_err(|e| e.to_string())?;
            match u16::from_be_bytes([header[16], header[17]]) {
                1 => 65536,
                n => n as u32,
            }
        } else {
            4096
        };
        let commit = (len / page_size as u64) as u32;
        let header = full_header(page_size, commit, min_txid, max_txid, self.node_id);
        // Buffered: the encoder writes one frame at a time, a syscall each unbuffered.
        let writer = io::BufWriter::with_capacity(STAGE_BUFFER, out);
        let encoder = Encoder::with_encoding(writer, header, &self.encoding()).map_err(|e| e.to_string())?;
        write_full(encoder, |pgno, buf| {
            file.read_exact_at(buf, (pgno as u64 - 1) * page_size as u64)
        })?;
        Ok(())
    }
}

/// Write buffer between an encoder (a batch's or the snapshot's) and its staging file.
const STAGE_BUFFER: usize = 256 << 10;

/// How many milliseconds a stage waits, at most, for SQLite to count a commit capture
/// already has (see [`captured_past_the_count`]); after that it stages it anyway, as it
/// always did. The wait is a writer's thread preempted between the two, or its WAL
/// fsync (`synchronous=FULL` syncs before counting).
const UNCOUNTED_WAITS: u32 = 1000;

/// Whether capture holds a commit of the generation SQLite's wal-index names that the
/// wal-index does not count yet: a writer of this process wrote its commit frame and has
/// not updated the wal-index header. Staged and saved in that moment, a commit whose
/// writer is then killed is one SQLite never kept (another process's next commit takes
/// its slot): the replica would hold it until the next open found the WAL apart from
/// the saved position and took a snapshot (`multi_process_crash` on a loaded machine,
/// "hand-off N's frames do not continue the captured chain"). Unknown (no mapping, or
/// a writer updating the header) counts as not past.
fn captured_past_the_count(capture: &Capture, counted: Option<ShmWal>) -> bool {
    counted.is_some_and(|shm| {
        capture.generation() == Some((shm.salt1, shm.salt2)) && capture.next_frame() > u64::from(shm.max_frame)
    })
}

/// Tests only: a stage held that long (ms, from the environment variable `var`) at one
/// point, read once.
struct Pause {
    var: &'static str,
    ms: std::sync::OnceLock<Option<u64>>,
}

/// `LITESTREAM_TEST_PAUSE_STAGE_MS`: between the staged file and the state, the window in
/// which a WAL restart hands the commits after the cut off as a batch record
/// (`tests/died_between_record_and_wal.rs` kills the process there on purpose;
/// `multi_process_crash` hit it under load).
static PAUSE_BEFORE_STATE: Pause = Pause {
    var: "LITESTREAM_TEST_PAUSE_STAGE_MS",
    ms: std::sync::OnceLock::new(),
};

/// `LITESTREAM_TEST_PAUSE_BEFORE_STAGED_FILE_MS`: between the cut and the staged file,
/// where a restart writes a tail instead (`hand_off_batch`).
static PAUSE_BEFORE_FILE: Pause = Pause {
    var: "LITESTREAM_TEST_PAUSE_BEFORE_STAGED_FILE_MS",
    ms: std::sync::OnceLock::new(),
};

fn pause_here_if_asked(pause: &Pause) {
    let pause = pause.ms.get_or_init(|| std::env::var(pause.var).ok()?.parse().ok());
    if let Some(ms) = *pause {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}
