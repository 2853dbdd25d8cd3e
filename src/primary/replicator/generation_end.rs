//! What runs on a writer's thread before this process ends a WAL generation (a restart,
//! a truncation, the WAL's deletion) or begins one on an empty WAL: capture every commit
//! still in it and leave the hand-off record (a tail, a batch or a start) that a restart
//! or a takeover after a crash follows.

use super::*;

impl Primary {
    /// This process is about to restart (`next` is the new header), truncate or delete
    /// (`closed`: the database after the checkpoint) the WAL: capture every commit still
    /// in it, and leave a tail record, so that a restart or a takeover after a crash can
    /// follow the generation too.
    pub fn before_wal_destroyed(&self, live: &mut dyn WalSource, next: Option<&[u8]>, closed: Option<FileIdentity>) {
        let mut shared = self.lock();
        self.follow_locked(&mut shared, live, "a generation ending");
        let unread = match shared.snapshot_needed {
            None => captured_to_end(&shared.capture, live).err(),
            Some(_) => None,
        };
        if let Some(where_) = unread {
            // Ending the generation now would drop its unread commits without a trace
            // (seen under load in multi_process_crash: a restored replica failed
            // integrity_check). A snapshot covers them instead.
            let reason =
                format!("the WAL held commits capture had not read when it was restarted or truncated ({where_})");
            tracing::warn!(db = %self.db_path.display(), %reason, "taking a snapshot");
            shared.require_snapshot(reason);
            self.wake_worker();
        }
        if shared.snapshot_needed.is_some() {
            // The snapshot copies the database after every commit of this generation: a
            // tail would hold nothing a restart can use (it snapshots as well, finding no
            // record), and while staging is full or failing nothing consumes tails, so one
            // per restart of the WAL (up to 4 MB each) filled the disk the database
            // lives on (a tester: 12.5 MB of them beside a 2 MiB max_staging, then
            // SQLITE_FULL, then opens refused).
            shared.origin = None;
            shared.own_wal_deletion = closed;
            return;
        }
        if let Some(next) = next {
            shared = self.wait_for_staged_file(shared);
            if self.hand_off_batch(&mut shared, live, next) {
                shared.own_wal_deletion = None;
                return;
            }
        }
        // A tail holds frames of commits the queue holds too: no batch record can follow
        // it until they are staged.
        shared.origin = None;
        let staged = match self.state_file.load() {
            Ok(state) => state.and_then(|s| s.wal),
            Err(_) => None,
        };
        let written = self.records.write_tail(live, staged.as_ref(), next, closed.clone());
        let own = written.as_ref().ok().copied().flatten();
        // Capture moves with the record, under the same lock: a batch cut in between
        // would save a position and a record count that disagree.
        self.consume_own_record(&mut shared, written);
        if shared.snapshot_needed.is_none() {
            shared.capture.end_generation();
            shared.capture.left_database(closed.clone());
            shared.capture.left_commits(self.wal_index.read().map(|h| h.commits));
            if let Some(next) = next.and_then(|h| WalHeader::parse(h).ok()) {
                shared.capture.begin_generation(next);
                shared.fresh_header = shared.capture.generation();
            }
        }
        shared.own_wal_deletion = closed;
        records_hold_the_queue(&mut shared, own);
    }

    /// A restart that meets a stage between its cut and its staged file waits for the file
    /// (the mutex released meanwhile: the stage needs it once the file is in place), up
    /// to `STAGED_FILE_WAIT`: then the batch record it writes can begin at the cut
    /// (`hand_off_batch`). A stage that takes longer (a slow disk's fsync) gets a tail.
    fn wait_for_staged_file<'a>(&self, mut shared: MutexGuard<'a, Shared>) -> MutexGuard<'a, Shared> {
        let deadline = Instant::now() + STAGED_FILE_WAIT;
        while shared.stage_file_pending {
            let now = Instant::now();
            if now >= deadline {
                tracing::debug!(db = %self.db_path.display(), "a stage's file was not in place within {STAGED_FILE_WAIT:?}; this restart writes a tail");
                break;
            }
            shared = self
                .progress
                .wait_timeout(shared, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        shared
    }

    /// This process restarts the WAL (`next` is the new header) with every commit of it
    /// captured: hands off the commits queued since `origin` as a batch record (their
    /// pages, merged) instead of a tail (every frame since the saved position: the whole
    /// generation, usually, a third of a small commit's CPU). The queue is then held
    /// until the next stage, and capture continues in the new generation. False when
    /// this cannot be done (a snapshot due, no origin, a failed write): the caller
    /// writes a tail.
    ///
    /// A stage between its staged file and its saved state does not stop it: `origin` is
    /// then the position that state will say, and should the process die before the
    /// state is saved, the next open adopts the staged file (`unfinished_stage.rs`).
    /// A stage between its cut and its staged file does (the restart waits for the file
    /// first, a few milliseconds: `wait_for_staged_file`): the cut's commits are then only
    /// in memory and in the frames this restart overwrites, and a batch beginning at the
    /// cut left the next open after a kill nothing to continue from but a snapshot
    /// (multi_process_crash under load). A tail, from the saved state, holds them.
    fn hand_off_batch(&self, shared: &mut Shared, live: &mut dyn WalSource, next: &[u8]) -> bool {
        if shared.snapshot_needed.is_some() || shared.stage_file_pending {
            return false;
        }
        let Some(from) = shared.origin else {
            return false;
        };
        let Some(to) = shared.capture.position().filter(|p| !p.ended) else {
            return false;
        };
        // A running checksum of zeros (not known yet, see `Capture::verify_position`)
        // does not pin the history a restart compares the batch's ends with.
        if from.checksum == (0, 0) || to.checksum == (0, 0) {
            return false;
        }
        // Commits and frames go together: frames after `origin` without a queued commit
        // would be ones capture skipped.
        if shared.queue.is_empty() != (from == to) {
            return false;
        }
        let Ok(next_header) = WalHeader::parse(next) else {
            return false;
        };
        let mut raw = [0u8; crate::wal::HEADER_SIZE];
        if !matches!(live.read_exact_at(0, &mut raw), Ok(true)) {
            return false;
        }
        match WalHeader::parse(&raw) {
            Ok(h) if Some((h.salt1, h.salt2)) == shared.capture.generation() => {}
            _ => return false,
        }
        // The queue holds every commit after `from`.
        let after_txid = if shared.queue.is_empty() {
            shared.next_txid - 1
        } else {
            shared.queue.min_txid() - 1
        };
        let seq = match self
            .records
            .write_batch(&raw, (from, after_txid), to, next, &shared.queue)
        {
            Ok(seq) => seq,
            Err(e) => {
                tracing::warn!(db = %self.db_path.display(), "writing a WAL hand-off batch: {e}; writing a tail");
                return false;
            }
        };
        if shared.handoff_consumed != seq - 1 && !self.only_holes_before(shared.handoff_consumed, seq) {
            // A record before ours was not followed: a tail, followed like any other, is
            // the known path there.
            self.records.remove(seq);
            return false;
        }
        shared.handoff_consumed = seq;
        shared.capture.end_generation();
        shared.capture.begin_generation(next_header);
        shared.fresh_header = shared.capture.generation();
        records_hold_the_queue(shared, Some(seq));
        true
    }

    /// A writer of this process begins a generation on an empty WAL (`header`).
    pub fn before_fresh_header(&self, live: &mut dyn WalSource, header: &[u8]) {
        let mut shared = self.lock();
        self.follow_locked(&mut shared, live, "a fresh WAL header");
        shared.own_wal_deletion = None;
        let database = FileIdentity::of(&self.db_path).ok();
        let written = self.records.write_start(header, database.clone()).map(Some);
        let own = written.as_ref().ok().copied().flatten();
        self.consume_own_record(&mut shared, written);
        let mut begun = false;
        // Capture may stand in a generation another process's start record began, whose
        // writer died before writing the header: the WAL is empty and it holds nothing.
        let free = shared.capture.ended() || shared.capture.never_reached_the_file(database.as_ref());
        if shared.snapshot_needed.is_none() && free {
            if let Ok(header) = WalHeader::parse(header) {
                shared.capture.begin_generation(header);
                shared.capture.began_on_empty_wal(database);
                shared.fresh_header = shared.capture.generation();
                begun = true;
            }
        }
        records_hold_the_queue(&mut shared, own.filter(|_| begun));
    }

    /// A record this process just wrote holds nothing capture lacks: it counts as
    /// followed when every record before it was.
    pub(super) fn consume_own_record(&self, shared: &mut Shared, written: io::Result<Option<u64>>) {
        match written {
            Ok(Some(seq)) => {
                let next = shared.handoff_consumed == seq - 1;
                if next || shared.snapshot_needed.is_some() || self.only_holes_before(shared.handoff_consumed, seq) {
                    shared.handoff_consumed = seq;
                }
            }
            Ok(None) => {}
            // Nothing is lost (capture has the commits; after a crash the next open
            // finds no record and takes a snapshot), and on a full staging disk every
            // WAL restart fails alike: said once a minute.
            Err(e) => self.warn_repeated(shared, &format!("writing a WAL hand-off record: {e}")),
        }
    }

    /// Whether every number between `consumed` and this process's own record `seq` is a
    /// hole: taken by a process that died before its record was in place. Called right
    /// after following the records, under the WAL write lock (or the exclusive lock of
    /// a closing connection), so no other record is on its way. Left unconsumed, our own
    /// record was followed later as another process's, and a tail of the generation
    /// capture had already left was a discontinuity (multi_process_crash: "hand-off N is
    /// of another WAL generation than the one captured"). Lists the directory only then.
    fn only_holes_before(&self, consumed: u64, seq: u64) -> bool {
        self.records
            .list_after(consumed)
            .is_ok_and(|list| list.iter().all(|r| r.seq() <= consumed || r.seq() >= seq))
    }
}

/// After this process wrote record `own` and capture moved past it: when every record
/// up to it is followed (so each commit queued is in a record or staged, and capture
/// stands at the start of the next generation), the queue is held and batch records
/// may continue from here. Otherwise they wait for the next stage.
fn records_hold_the_queue(shared: &mut Shared, own: Option<u64>) {
    shared.origin = None;
    if shared.snapshot_needed.is_some() || own.is_none_or(|seq| shared.handoff_consumed != seq) {
        return;
    }
    let Some(start) = shared.capture.position().filter(|p| !p.ended) else {
        return;
    };
    let queue = std::mem::take(&mut shared.queue);
    let older = std::mem::replace(&mut shared.held, queue);
    let Shared { held, capture, .. } = shared;
    held.absorb_older(older, &mut |page| capture.recycle(page));
    shared.origin = Some(start);
}

/// Whether `capture` holds every commit the live WAL holds: its generation is the live
/// one and it stands at or past the live WAL's last commit, or the live WAL holds no
/// committed frame at all. Reads the frame headers once (one frame in memory). The error
/// says where capture and the WAL stood, for the log.
fn captured_to_end(capture: &crate::primary::capture::Capture, live: &mut dyn WalSource) -> Result<(), String> {
    // From capture's position first: at every WAL restart this process makes, walking
    // the whole generation again cost a tenth of a small commit's CPU.
    if let Ok(Some(false)) = capture.commits_after(live) {
        return Ok(());
    }
    let mut probe = crate::primary::capture::Capture::new();
    probe.skip_to_end(live).map_err(|e| format!("reading the WAL: {e}"))?;
    let Some(end) = probe.position() else {
        return Ok(()); // no header: nothing to lose
    };
    let at = capture.position();
    let complete = match at {
        Some(at) if (at.salt1, at.salt2) == (end.salt1, end.salt2) => at.next_frame >= end.next_frame,
        _ => end.next_frame == 0,
    };
    if complete {
        return Ok(());
    }
    // The WAL still shows the generation capture ended last (its writer died between
    // the record and the new header): everything in it was captured. Seen once in
    // 3,600 kills of multi_process_crash, where it forced a needless snapshot.
    let header = crate::primary::follow::read_header(live).map_err(|e| format!("reading the WAL: {e}"))?;
    if header.is_some_and(|h| capture.ended_with_nothing_since(&h, end.next_frame)) {
        return Ok(());
    }
    let describe = |p: Option<crate::primary::capture::WalPosition>| match p {
        Some(p) => format!(
            "{:08x}{:08x} frame {}{}",
            p.salt1,
            p.salt2,
            p.next_frame,
            if p.ended { " (ended)" } else { "" }
        ),
        None => "no generation".into(),
    };
    Err(format!(
        "capture at {}, the WAL's last commit ends at {}",
        describe(at),
        describe(Some(end))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primary::capture::Capture;
    use crate::wal::testing::WalBuilder;

    #[test]
    fn a_wal_still_showing_the_generation_capture_ended_holds_nothing_unread() {
        let mut g1 = WalBuilder::new(512, 7, 99, false);
        g1.frame(1, 1, 1).frame(2, 2, 2);
        let g2 = WalBuilder::new(512, 8, 5, false);
        let mut capture = Capture::new();
        capture.skip_to_end(&mut g1.bytes.clone()).unwrap();
        capture.end_generation();
        capture.begin_generation(g2.header); // from the record of a writer that then died
        assert_eq!(captured_to_end(&capture, &mut g1.bytes.clone()), Ok(()));
        // One commit past where capture ended it is unread.
        let mut longer = g1.clone();
        longer.frame(3, 3, 3);
        let unread = captured_to_end(&capture, &mut longer.bytes.clone()).unwrap_err();
        assert!(unread.contains("frame 3"), "{unread}");
        // Another chain under the same salts is not the generation capture ended.
        let mut other = WalBuilder::new(1024, 7, 99, false);
        other.frame(1, 1, 1);
        assert!(captured_to_end(&capture, &mut other.bytes.clone()).is_err());
    }
}
