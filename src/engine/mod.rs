//! One replication engine per process: a small fixed set of threads that runs every
//! database's periodic work as jobs (a primary's staging and upload each
//! `sync_interval`, its compaction windows, a follower's takeover checks), however
//! many databases the process has open. Created on first use, never per database.
//!
//! Threads of ours in a process: the engine's (`LITESTREAM_ENGINE_THREADS`, default
//! 4), the async runtime's workers (`LITESTREAM_IO_THREADS`, default 2) and its
//! blocking pool (`LITESTREAM_BLOCKING_THREADS`, default 2): 8 in all by default.
//! Read replicas' polling and hydration are engine jobs too.
//!
//! A job's store round trip that takes longer than [`PATIENCE`] is handed off to the
//! async runtime ([`round_trip`]): a stalled store holds no engine thread. Compaction
//! is background work, served after the rest on at most half the threads.

mod dir_watch;
mod io;
mod scheduler;
mod status;

pub use dir_watch::{wake_on_new_file, DirWatch};
pub use io::{last_turn, request_in_flight, round_trip, waiting_since, Deferred, PATIENCE};
pub use scheduler::{Job, JobId};

use crate::vfs::sys::fork::PerProcess;
use scheduler::Scheduler;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one turn of a job may work before it yields to the others: a database
/// catching up on a hundred staged files uploads them over several turns, between
/// other databases' (and a job's patience for a slow round trip is far below it).
pub const TURN_SHARE: Duration = Duration::from_millis(50);

/// Whether this thread is running an engine job's turn.
pub fn in_turn() -> bool {
    scheduler::current().is_some()
}

/// Engine threads when `LITESTREAM_ENGINE_THREADS` is not set: jobs block their thread
/// on store round trips, so a few stalled stores must leave threads for the others.
const DEFAULT_THREADS: usize = 4;

/// Made again in a child of `fork()`, whose copy of the parent's has no threads.
static ENGINE: PerProcess<Engine> = PerProcess::new();

pub struct Engine {
    scheduler: Arc<Scheduler>,
}

/// The process's engine, started on first use (its threads start as jobs arrive).
pub fn engine() -> &'static Engine {
    ENGINE.get(|| Engine {
        scheduler: Scheduler::new(env_count("LITESTREAM_ENGINE_THREADS", DEFAULT_THREADS)),
    })
}

/// A positive count from the environment, else `default` (an unusable value is
/// reported once and ignored).
pub(crate) fn env_count(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                tracing::warn!("{name}={v:?} is not a positive count; using {default}");
                default
            }
        },
        Err(_) => default,
    }
}

impl Engine {
    /// Registers `job`; its first turn runs at `first`.
    pub fn add(&self, job: Arc<dyn Job>, first: Instant) -> JobId {
        self.scheduler.add(job, first)
    }

    /// Runs the job's next turn now (or right after the one in progress).
    pub fn wake(&self, id: JobId) {
        self.scheduler.wake(id)
    }

    /// Takes the job out, waiting for a turn in progress to end.
    pub fn remove(&self, id: JobId) {
        self.scheduler.remove(id)
    }

    /// The process-level part of `litestream_status()`; `backlog` is every replicating
    /// database's (store endpoint, TXIDs not yet stored, bytes of them in memory or staged).
    pub fn status(&self, backlog: &[(String, u64, u64)]) -> serde_json::Value {
        status::json(&self.scheduler, backlog)
    }
}
