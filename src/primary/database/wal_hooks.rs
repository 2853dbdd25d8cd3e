//! The WAL hooks of a database: what each process, replicating or following, does
//! before SQLite restarts, truncates or deletes the WAL, and around its write lock. No
//! commit may escape the replicating process whoever wrote it: a follower leaves a
//! hand-off record, the replicating process captures.

use super::Database;
use crate::config::SyncMode;
use crate::primary::capture::WalSource;
use crate::primary::state::FileIdentity;
use crate::primary::wal_file::WalFile;
use crate::primary::wal_index::{CountedWal, ShmWal};
use crate::wal::{WalHeader, HEADER_SIZE};
use std::sync::atomic::Ordering;

impl Database {
    /// A writer of this process is about to write a WAL header (`new`, 32 bytes) over
    /// `live`: a restart of the generation in it, or the first header of an empty WAL.
    pub fn before_wal_header(&self, live: &mut dyn WalSource, new: &[u8]) {
        let Ok(next) = WalHeader::parse(new) else {
            return; // not a header SQLite would write; the capture path reports it
        };
        let current = read_header(live);
        // The same header written again changes nothing. The same salts with another
        // checkpoint sequence (so another checksum seed) do: SQLite takes the salts from
        // shared memory but the sequence from the writing connection, so a writer
        // rewriting the header of a WAL whose frames were never committed (its last
        // writer died mid-transaction) can keep the salts and change the chain. Treated
        // as the same generation, every later frame failed capture's checksum check and a
        // whole generation went uncaptured (multi_process_crash under load).
        if current.is_some_and(|h| h == next) {
            return;
        }
        match (self.leader(), current) {
            (_, Some(_)) => self.generation_ends(live, Some(new), None),
            (Some(primary), None) => primary.before_fresh_header(live, new),
            (None, None) => {
                if let Err(e) = self
                    .records
                    .write_start(&new[..HEADER_SIZE], FileIdentity::of(&self.path).ok())
                {
                    tracing::warn!(db = %self.path.display(), "writing a WAL hand-off record: {e}");
                }
            }
        }
    }

    /// A checkpoint of this process is about to truncate the WAL below its header. It
    /// copied every frame into the database file first (SQLite truncates only then), so
    /// the file as it is now is what the empty WAL leaves: a later change to it with the
    /// WAL still empty is a generation nobody recorded (`Capture::left_database`).
    pub fn before_wal_truncate(&self, live: &mut dyn WalSource) {
        let left = FileIdentity::pinned(&self.path).ok();
        self.generation_ends(live, None, left);
    }

    /// The last connection to the database (in any process) is about to delete the
    /// WAL after checkpointing it.
    pub fn before_wal_delete(&self) {
        let mut live = match WalFile::open(&self.path) {
            Ok(wal) => wal,
            Err(e) => {
                tracing::warn!(db = %self.path.display(), "reading the WAL before its deletion: {e}");
                return;
            }
        };
        let closed = FileIdentity::pinned(&self.path).ok();
        self.generation_ends(&mut live, None, closed);
    }

    /// The generation in `live` goes away (restarted with the header `next`, truncated,
    /// or deleted leaving the database `closed`): the replicating process captures it,
    /// a follower hands it off, each as far as SQLite counts it committed.
    fn generation_ends(&self, live: &mut dyn WalSource, next: Option<&[u8]>, closed: Option<FileIdentity>) {
        let live = &mut CountedWal::cut_or_whole(live, self.wal_index.before_generation_ends());
        match self.leader() {
            Some(primary) => primary.before_wal_destroyed(live, next, closed),
            None => self.hand_off_tail(live, next, closed),
        }
    }

    /// Whether a connection of this process holds the WAL write lock, as SQLite takes it
    /// outside exclusive locking mode (`vfs/file.rs` refuses WAL writes without it).
    pub fn wal_write_lock_held(&self) -> bool {
        self.wal_index.write_lock_held()
    }

    /// A writer of this process holds the WAL write lock; `shm` is the wal-index header
    /// then, when it could be read.
    #[inline]
    pub fn after_write_lock(&self, shm: Option<ShmWal>) {
        self.wal_index.write_locked(shm);
        if let Some(primary) = self.leader() {
            primary.after_write_lock(shm);
        }
    }

    /// A writer of this process releases the WAL write lock (`release` does it). What
    /// belonged to its transaction (the count at the lock, frames pending) is forgotten
    /// first, while no other connection of this process can be writing: after the
    /// release it would be the next writer's.
    #[inline]
    pub fn release_write_lock<R>(&self, release: impl FnOnce() -> R) -> R {
        // The primary this transaction wrote to, read while the lock still counts as
        // held: one installed after `write_unlocked` never saw it.
        let leader = self.leader();
        let wrote_as_follower = self.follower_writes.take_transaction_wrote();
        self.wal_index.write_unlocked();
        if let Some(primary) = &leader {
            primary.write_transaction_over();
        }
        let released = release();
        if let Some(primary) = &leader {
            primary.write_lock_released();
        }
        if self.is_waiting.load(Ordering::Acquire) {
            // A takeover waited for this transaction to end (`install`).
            self.install_waiting();
        }
        // After the install: before it, a follower's sync=commit asked a replicating
        // process that was gone (that is why this one took over), and waited out its
        // timeout while its own takeover waited for it.
        if leader.is_none() && wrote_as_follower && self.config.sync_mode == SyncMode::Commit {
            self.follower_sync_commit();
        }
        released
    }

    /// `sync=commit` on a follower: its commit returns once the replicating process has
    /// stored it (`follower_writes.rs`).
    fn follower_sync_commit(&self) {
        if let Err(e) = self.sync(self.config.sync_timeout) {
            tracing::error!(db = %self.path.display(), "sync=commit: {e}");
            self.follower_writes.sync_commit_missed(e);
        }
    }

    /// A follower hands off the generation in `live` from where the replicating process
    /// last staged.
    fn hand_off_tail(&self, live: &mut dyn WalSource, next: Option<&[u8]>, closed: Option<FileIdentity>) {
        // A replicating process that is stopped (not dead: it keeps the lock) takes no
        // records, and each WAL restart of the followers left one more: the directory
        // grew by every byte written (1.29 GB in 40 s, a workers tester). Past
        // `max_staging` no record is written: the replicating process, once it runs
        // again, finds the generation gone without one and takes a snapshot, as below.
        let held = self.records.record_bytes().unwrap_or(0);
        if held >= self.config.max_staging_bytes {
            if !self.handoff_full.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    db = %self.path.display(),
                    held,
                    limit = self.config.max_staging_bytes,
                    "the replicating process has not taken the WAL hand-off records for a while (stopped?): they \
                     hold {held} bytes, max_staging is {}; writing no more, it takes a snapshot when it runs again",
                    self.config.max_staging_bytes
                );
            }
            return;
        }
        self.handoff_full.store(false, Ordering::Relaxed);
        let staged = self.state_file.load().ok().flatten().and_then(|s| s.wal);
        if let Err(e) = self.records.write_tail(live, staged.as_ref(), next, closed) {
            // The replicating process will find the generation gone without a record
            // and take a snapshot: nothing is lost, it only costs an upload.
            tracing::warn!(db = %self.path.display(), "writing a WAL hand-off record: {e}");
        }
    }
}

fn read_header(wal: &mut dyn WalSource) -> Option<WalHeader> {
    let mut raw = [0u8; HEADER_SIZE];
    match wal.read_exact_at(0, &mut raw) {
        Ok(true) => WalHeader::parse(&raw).ok(),
        _ => None,
    }
}
