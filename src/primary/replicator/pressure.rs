//! Back-pressure: a writer that commits faster than the worker stages waits, after its
//! commit, for the worker to take the queue. Memory for captured commits then stays
//! under about twice `max_queue` (the queue, and the batch being staged) instead of
//! growing for as long as the writer keeps ahead (172 MB with the 64 MiB default).

use super::*;
use std::cell::Cell;

/// The longest one commit waits. A stage that takes longer is stuck (a slow disk): commits
/// must go on, and the writer waits again only once a stage has succeeded. A stage that
/// fails lets its writers go at once: the commits over `max_queue` are dropped for a
/// snapshot (`stage.rs`, `drop_what_staging_cannot_take`).
const MAX_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    /// The primary (by address) whose commit on this thread left its queue over
    /// `max_queue`: set by `on_wal_write` under the shared mutex, consumed when the
    /// same thread releases the write lock. Waiting there rather than at the commit
    /// frame lets readers see the commit and other connections take the lock (no
    /// SQLITE_BUSY for writers without a busy timeout). A thread-local costs the
    /// common case no lock on the way out.
    static PRESSED: Cell<usize> = const { Cell::new(0) };
    /// (primary, staged TXID) when this thread's last wait ran out.
    static GAVE_UP: Cell<(usize, u64)> = const { Cell::new((0, 0)) };
}

impl Primary {
    fn address(&self) -> usize {
        self as *const Primary as usize
    }

    /// A commit left the queue over `max_queue`: its writer's thread waits when it
    /// releases the write lock.
    pub(super) fn press(&self) {
        PRESSED.set(self.address());
    }

    /// On the writer's thread, after it released the write lock: waits while the queue
    /// it filled is over `max_queue`, until the worker takes it (the stage's cut), a
    /// snapshot is due (it covers the queue), replication stops, or `MAX_WAIT`.
    pub(super) fn hold_back_writer(&self) {
        if PRESSED.get() != self.address() {
            return;
        }
        PRESSED.set(0);
        // An engine thread must never wait for an engine job.
        if crate::engine::in_turn() {
            return;
        }
        let limit = self.config.max_queue_bytes as usize;
        let over =
            |s: &Shared| s.queued_bytes() > limit && s.snapshot_needed.is_none() && s.fatal.is_none() && !s.closing;
        let started = Instant::now();
        let mut shared = self.lock();
        if GAVE_UP.get() == (self.address(), shared.staged_txid) {
            return; // no stage succeeded since the last wait ran out
        }
        while over(&shared) {
            let waited = started.elapsed();
            if waited >= MAX_WAIT {
                GAVE_UP.set((self.address(), shared.staged_txid));
                tracing::warn!(
                    db = %self.db_path.display(),
                    queued_bytes = shared.queued_bytes(),
                    "a commit waited {} s for staging to take the queue (max_queue {limit}); going on without waiting until a stage succeeds",
                    waited.as_secs()
                );
                return;
            }
            // The cut and every stage's end notify `progress`; the slice only bounds
            // how late a snapshot request (which notifies nobody) is noticed.
            let slice = (MAX_WAIT - waited).min(Duration::from_millis(50));
            shared = self
                .progress
                .wait_timeout(shared, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let waited = started.elapsed();
        if waited >= Duration::from_millis(1) {
            tracing::debug!(db = %self.db_path.display(), waited_ms = waited.as_millis() as u64, "a commit waited for staging (back-pressure)");
        }
    }
}
