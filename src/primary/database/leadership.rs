//! Taking replication over when the replicating process goes away, and, while this
//! process replicates, checking that its lock file is still the one at the path.

use super::Database;
use crate::primary::{follower, shared_staging};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

impl Database {
    /// Watches for the replicating process to go away, and takes over: every half
    /// `sync_interval`, as a job of the process's engine. The lock is the kernel's, so a
    /// dead holder releases it at once. While this process leads, the job checks each
    /// few seconds that its lock file is still the one at the path (`LeaderLock::keep`),
    /// until the database closes.
    pub fn watch_leadership(self: &Arc<Self>) {
        let period = (self.config.sync_interval / 2).max(Duration::from_millis(10));
        let job = LeadershipJob {
            database: Arc::downgrade(self),
            period,
            failures: AtomicU32::new(0),
            published_error: Default::default(),
        };
        crate::engine::engine().add(Arc::new(job), Instant::now() + period);
    }
}

/// A follower's takeover check (`Database::watch_leadership`). It holds the database
/// weakly: a closed database ends the job at its next turn.
struct LeadershipJob {
    database: Weak<Database>,
    period: Duration,
    /// Consecutive failed takeovers: each one spaces the next attempt further.
    failures: AtomicU32,
    /// While this process leads, its status error as told to the followers.
    published_error: crate::primary::leader_error::Published,
}

/// How often the replicating process checks that its lock file is still the one at the
/// path (`LeaderLock::keep`): a stat and an fstat.
const LOCK_FILE_CHECK: Duration = Duration::from_secs(5);

impl crate::engine::Job for LeadershipJob {
    fn run(&self) -> Option<Instant> {
        let db = self.database.upgrade()?;
        if db.closed.load(Ordering::Relaxed) {
            return None;
        }
        if let Some(primary) = db.leader() {
            match db.lock.keep() {
                Ok(true) => {
                    let lock_dir = shared_staging::lock_dir(&db.path);
                    follower::announce_leader(
                        &lock_dir,
                        db.config.file_modes,
                        primary.node_id(),
                        db.destination.clone(),
                    );
                    self.failures.store(0, Ordering::Relaxed);
                }
                Ok(false) => self.failures.store(0, Ordering::Relaxed),
                // Said once: the next check finds nothing new to take.
                Err(e) => tracing::error!(db = %db.path.display(), "{e}"),
            }
            let lock_dir = shared_staging::lock_dir(&db.path);
            self.published_error
                .publish(&lock_dir, db.config.file_modes, primary.error());
            return Some(Instant::now() + LOCK_FILE_CHECK);
        }
        let failures = self.failures.load(Ordering::Relaxed);
        if !db.lock.held_by_another() {
            match db.try_lead() {
                // Leading now: the turns above check the lock file and tell the
                // followers this process's status error.
                Ok(true) => {
                    *db.takeover_failed.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    return Some(Instant::now() + LOCK_FILE_CHECK);
                }
                Ok(false) => self.failures.store(0, Ordering::Relaxed),
                Err(e) => {
                    self.failures.store(failures + 1, Ordering::Relaxed);
                    tracing::warn!("taking replication over failed (retrying): {e}");
                    *db.takeover_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                }
            }
        }
        let failures = self.failures.load(Ordering::Relaxed);
        Some(Instant::now() + self.period * (1 + failures.min(20)))
    }
}
