//! A replica's background work as jobs of the process's engine (`crate::engine`): the
//! poller that follows the store every `poll_interval` (sooner when a reader waits or a
//! file of the plan went missing), and hydration into a local file. No thread of its
//! own: a thousand replicas in one process share the engine's few threads.

use super::fetch::FetchError;
use super::{hydrate, Replica};
use crate::engine::{engine, round_trip, Deferred, Job, PATIENCE};
use futures::FutureExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

struct PollJob(Arc<Replica>);

impl Job for PollJob {
    fn run(&self) -> Option<Instant> {
        let replica = &self.0;
        // `wake` is set by a reader waiting for a TXID (`Replica::wait`): this poll is
        // awaited, and hedges its reads as a query does.
        let awaited = {
            let mut g = replica.lock();
            if g.stop {
                tracing::debug!(replica = %replica.name, "replica poller stopped");
                return None;
            }
            std::mem::replace(&mut g.wake, false)
        };
        // The poll's store requests run in the async runtime; a slow one (a stalled or
        // failing store, retried inside object_store) is left there after the engine's
        // patience, and its end wakes this job, whose next turn takes the result.
        let polling = Arc::clone(replica);
        let poll = async move {
            std::panic::AssertUnwindSafe(polling.poll_once(awaited))
                .catch_unwind()
                .await
                .unwrap_or_else(|_| Err(FetchError::Corrupt("the poller panicked".into())))
        };
        let result = match round_trip("poll", PATIENCE, poll) {
            Ok(result) => result,
            Err(Deferred) => return Some(Instant::now() + replica.poll_interval),
        };
        if let Err(e) = result {
            replica.stats().poll_errors.fetch_add(1, Ordering::Relaxed);
            let message = e.to_string();
            let mut g = replica.lock();
            match g.poll_warning.due(&message, Instant::now()) {
                Some(0) => tracing::warn!(replica = %replica.name, error = %message, "replica poll failed"),
                Some(held) => tracing::warn!(
                    replica = %replica.name,
                    error = %message,
                    "replica poll failed ({held} more times since it was last logged)"
                ),
                None => tracing::debug!(replica = %replica.name, error = %message, "replica poll failed"),
            }
            g.last_error = Some(message);
        }
        let g = replica.lock();
        // Asked for during this turn (a waiter, a re-plan, stop): the next one is now.
        Some(if g.wake || g.stop {
            Instant::now()
        } else {
            Instant::now() + replica.poll_interval
        })
    }
}

struct HydrateJob {
    replica: Arc<Replica>,
    hydration: Arc<hydrate::Hydration>,
    retry: std::sync::Mutex<Retry>,
}

/// Failed hydrations in a row, and when the next may start. A hydration file on a full
/// disk failed at its first write after each span was fetched: retried every
/// `poll_interval` (and at every new state), it downloaded ~1 MB/s for as long as the
/// disk stayed full, with a WARN each second (a tester).
#[derive(Default)]
struct Retry {
    failures: u32,
    not_before: Option<Instant>,
    last_error: String,
}

/// The longest pause between two hydration attempts after failures.
const HYDRATE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(120);

impl Job for HydrateJob {
    /// Hydration's ranged GETs block its turn: on a stalled store they must not take
    /// the threads that other databases' uploads need.
    fn background(&self) -> bool {
        true
    }

    /// Hydrates up to the newest state; then waits for the next (the poller wakes it).
    fn run(&self) -> Option<Instant> {
        let (replica, h) = (&self.replica, &self.hydration);
        // A new state wakes this job: after failures it still waits its pause.
        if let Some(at) = self.retry().not_before.filter(|at| *at > Instant::now()) {
            return Some(at);
        }
        let state = {
            let g = replica.lock();
            if g.stop {
                return None;
            }
            Arc::clone(&g.current)
        };
        // `take`: the file may be another process's; hydrate once it is ours (until
        // then, try again every poll_interval).
        if h.txid() == state.txid || !h.take() {
            return Some(Instant::now() + replica.poll_interval);
        }
        let stop = || replica.lock().stop;
        let started = Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Versions hydration moves past stay in the cache for readers pinned to them.
            h.hydrate(&state, &replica.fetcher.background(), &stop, &mut |k, old| {
                replica.cache.insert(k, old.into())
            })
        }))
        .unwrap_or_else(|_| Err(FetchError::Corrupt("hydration panicked".into())));
        match result {
            Ok(true) => {
                *self.retry() = Retry::default();
                tracing::info!(
                    replica = %replica.name,
                    txid = state.txid,
                    ms = started.elapsed().as_millis() as u64,
                    "hydrated"
                );
                Some(Instant::now()) // a newer state may have come meanwhile
            }
            Ok(false) => None,
            Err(e) => {
                let message = e.to_string();
                h.record_error(&message);
                let mut retry = self.retry();
                retry.failures += 1;
                let pause = (replica.poll_interval * 2u32.saturating_pow(retry.failures - 1)).min(HYDRATE_RETRY_MAX);
                if message != retry.last_error {
                    tracing::warn!(replica = %replica.name, error = %message, "hydration failed; retrying in {pause:?}");
                    retry.last_error = message;
                } else {
                    tracing::debug!(replica = %replica.name, failures = retry.failures, "hydration failed again; retrying in {pause:?}");
                }
                let at = Instant::now() + pause;
                retry.not_before = Some(at);
                Some(at)
            }
        }
    }
}

impl HydrateJob {
    fn retry(&self) -> std::sync::MutexGuard<'_, Retry> {
        self.retry.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Replica {
    /// Registers the poller (its first turn one `poll_interval` from now: opening just
    /// listed the store) and hydration (at once).
    pub(super) fn start_jobs(self: &Arc<Self>) {
        let id = engine().add(Arc::new(PollJob(Arc::clone(self))), Instant::now() + self.poll_interval);
        let _ = self.poll_job.set(id);
        if let Some(h) = &self.hydration {
            let job = HydrateJob {
                replica: Arc::clone(self),
                hydration: Arc::clone(h),
                retry: Default::default(),
            };
            let id = engine().add(Arc::new(job), Instant::now());
            let _ = self.hydrate_job.set(id);
        }
    }

    /// Runs the poller's next turn now.
    pub(super) fn wake_poller(&self) {
        if let Some(id) = self.poll_job.get() {
            engine().wake(*id);
        }
    }

    /// A new state is ready: hydration follows it now.
    pub(super) fn wake_hydrator(&self) {
        if let Some(id) = self.hydrate_job.get() {
            engine().wake(*id);
        }
    }
}
