//! Store round trips of engine jobs, handed off when they take long: a job's turn waits
//! a little for its request, and past that the request carries on in the async runtime
//! while the engine thread goes on to other databases. A stalled store would otherwise
//! hold one of the engine's few threads per database that uses it, and four such
//! databases would stop every other database of the process.
//!
//! One request in flight per job: until it ends, the job's further round trips are
//! [`Deferred`] at once (its uploads keep their order), and its end wakes the job. The
//! job's next turn asks again with the same key and takes the result, so a request is
//! never made twice because it was slow.

use super::scheduler;
use crate::vfs::sys::fork::PerProcess;
use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a turn waits for its round trip before handing it off: a local disk or a
/// nearby store answers within it, so their work stays on the turn.
pub const PATIENCE: Duration = Duration::from_millis(20);

/// The round trip is still in flight (or another of the job's is): the job is woken
/// when it ends, and asks again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deferred;

struct Op {
    key: String,
    /// When the request was made: a store that does not answer shows in the status
    /// ([`waiting_since`]) before the request's own timeout fails it.
    since: Instant,
    result: Option<Box<dyn Any + Send>>,
    /// The turn stopped waiting: whoever finishes the request wakes the job.
    handed_off: bool,
}

#[derive(Default)]
struct InFlight {
    op: Mutex<Option<Op>>,
    done: Condvar,
}

impl InFlight {
    fn lock(&self) -> MutexGuard<'_, Option<Op>> {
        self.op.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits, at most until `deadline`, while the request in `op` has no result yet;
    /// `Err` (with the guard) when the deadline came first.
    fn wait_until<'a>(
        &'a self,
        mut op: MutexGuard<'a, Option<Op>>,
        deadline: Instant,
    ) -> Result<MutexGuard<'a, Option<Op>>, MutexGuard<'a, Option<Op>>> {
        while op.as_ref().is_some_and(|o| o.result.is_none()) {
            let now = Instant::now();
            if now >= deadline {
                return Err(op);
            }
            op = self
                .done
                .wait_timeout(op, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(op)
    }
}

/// Each job's request in flight, by job id: per process, like the engine whose job ids
/// key it (a child's new engine numbers its jobs from 1 again).
static SLOTS: PerProcess<Mutex<HashMap<u64, Arc<InFlight>>>> = PerProcess::new();
/// Requests handed off so far (status).
pub(super) static HANDED_OFF: AtomicU64 = AtomicU64::new(0);

fn slots() -> MutexGuard<'static, HashMap<u64, Arc<InFlight>>> {
    SLOTS.get(Default::default).lock().unwrap_or_else(|p| p.into_inner())
}

/// Requests in flight past their turn's patience (status).
pub(super) fn in_flight() -> usize {
    slots()
        .values()
        .filter(|s| s.lock().as_ref().is_some_and(|op| op.result.is_none()))
        .count()
}

/// Whether the job whose turn this is has a request in flight: its round trips are
/// [`Deferred`] until that ends, so a caller need not prepare another (read a large
/// staged file again every turn while its PUT crawls).
pub fn request_in_flight() -> bool {
    let Some(job) = scheduler::current() else {
        return false;
    };
    let slot = slots().get(&job).cloned();
    slot.is_some_and(|s| s.lock().as_ref().is_some_and(|op| op.result.is_none()))
}

/// The request of `job` still without an answer, and how long it has waited for one.
pub fn waiting_since(job: super::JobId) -> Option<(String, Duration)> {
    let slot = slots().get(&job.0).cloned()?;
    let op = slot.lock();
    op.as_ref()
        .filter(|o| o.result.is_none())
        .map(|o| (o.key.clone(), o.since.elapsed()))
}

/// Forgets a removed job's slot, unless a request of it is still in flight: that one
/// is for the job's [`last_turn`] to take.
pub(super) fn forget(job: u64) {
    let mut all = slots();
    if all
        .get(&job)
        .is_some_and(|s| s.lock().as_ref().is_some_and(|op| op.result.is_none()))
    {
        return;
    }
    all.remove(&job);
}

thread_local! {
    /// The removed job whose last turn runs on this thread, and until when its round
    /// trips may wait (`last_turn`).
    static LAST_TURN: Cell<Option<(u64, Instant)>> = const { Cell::new(None) };
}

/// Runs `turn` on this thread as the last turn of the removed job `id` (a closing
/// database's): its round trips first wait for the job's request still in flight and
/// take its result rather than make it again (a duplicate PUT racing the process's exit
/// would leave a file stored that the next open finds staged), then wait as long as
/// they take, until `deadline`: past it they are [`Deferred`] (a store that accepts
/// connections and never answers would otherwise hold the application's close for
/// object_store's whole-request timeout, 10 minutes).
pub fn last_turn<T>(id: super::JobId, deadline: Instant, turn: impl FnOnce() -> T) -> T {
    LAST_TURN.with(|c| c.set(Some((id.0, deadline))));
    let out = turn();
    LAST_TURN.with(|c| c.set(None));
    slots().remove(&id.0);
    out
}

/// Runs `request` for the engine job whose turn this is, waiting at most `patience`;
/// `key` names the request, so that the turn after a hand-off takes its result. Off
/// an engine thread (a closing connection's last turn, a test) it simply waits.
pub fn round_trip<T, F>(key: &str, patience: Duration, request: F) -> Result<T, Deferred>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let (job, deadline, last) = match (scheduler::current(), LAST_TURN.with(|c| c.get())) {
        (Some(job), _) => (job, Instant::now() + patience, false),
        (None, Some((job, deadline))) => (job, deadline, true),
        (None, None) => return Ok(crate::runtime::block_on(request)),
    };
    let slot = Arc::clone(slots().entry(job).or_default());
    let mut op = slot.lock();
    if last {
        op = slot.wait_until(op, deadline).map_err(|_| Deferred)?;
    }
    match op.as_mut() {
        Some(o) if o.key == key => match o.result.take() {
            Some(result) => {
                *op = None;
                if let Ok(value) = result.downcast::<T>() {
                    return Ok(*value);
                }
                // Another type under the same key: a caller's mistake; ask anew.
            }
            None => return Err(Deferred),
        },
        // One request at a time per job: the other one is awaited first.
        Some(o) if o.result.is_none() => return Err(Deferred),
        // A result nobody came back for (the caller moved on): dropped.
        _ => *op = None,
    }
    *op = Some(Op {
        key: key.to_string(),
        since: Instant::now(),
        result: None,
        handed_off: false,
    });
    drop(op);
    let finished = Arc::clone(&slot);
    crate::runtime::runtime().spawn(async move {
        let value = request.await;
        let wake = {
            let mut op = finished.lock();
            match op.as_mut() {
                Some(o) => {
                    o.result = Some(Box::new(value));
                    o.handed_off
                }
                None => false,
            }
        };
        finished.done.notify_all();
        if wake {
            super::engine().wake(super::JobId(job));
        }
    });
    let waited = slot.wait_until(slot.lock(), deadline);
    match waited {
        Ok(mut op) => {
            let result = op
                .take()
                .and_then(|o| o.result)
                .expect("the request this call made ended");
            Ok(*result.downcast::<T>().expect("the type this call stored"))
        }
        Err(mut op) => {
            if let Some(o) = op.as_mut() {
                o.handed_off = true;
            }
            HANDED_OFF.fetch_add(1, Ordering::Relaxed);
            Err(Deferred)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{engine, Job};
    use std::sync::atomic::AtomicUsize;

    /// A job whose one request takes 300 ms, and what its turns saw.
    struct Slow {
        requests: Arc<AtomicUsize>,
        turns: Mutex<Vec<(Duration, Result<u32, Deferred>)>>,
    }

    impl Job for Slow {
        fn run(&self) -> Option<Instant> {
            let started = Instant::now();
            let requests = Arc::clone(&self.requests);
            let got = round_trip("slow", PATIENCE, async move {
                requests.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(300)).await;
                7u32
            });
            let done = got.is_ok();
            self.turns.lock().unwrap().push((started.elapsed(), got));
            // Without a wake, the next turn would be an hour away.
            (!done).then(|| Instant::now() + Duration::from_secs(3600))
        }
    }

    #[test]
    fn a_slow_request_is_handed_off_made_once_and_its_end_wakes_the_job() {
        let job = Arc::new(Slow {
            requests: Arc::new(AtomicUsize::new(0)),
            turns: Mutex::new(Vec::new()),
        });
        engine().add(Arc::clone(&job) as Arc<dyn Job>, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(10);
        while job.turns.lock().unwrap().last().is_none_or(|t| t.1.is_err()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let turns = job.turns.lock().unwrap().clone();
        assert_eq!(turns.first().map(|t| t.1), Some(Err(Deferred)), "{turns:?}");
        assert!(
            turns[0].0 < Duration::from_millis(250),
            "the first turn waited for the request: {turns:?}"
        );
        assert_eq!(
            turns.last().map(|t| t.1),
            Some(Ok(7)),
            "the end of the request woke the job: {turns:?}"
        );
        assert_eq!(job.requests.load(Ordering::SeqCst), 1, "the request was made twice");
    }

    #[test]
    fn a_removed_jobs_last_turn_takes_the_request_in_flight_instead_of_making_it_again() {
        let job = Arc::new(Slow {
            requests: Arc::new(AtomicUsize::new(0)),
            turns: Mutex::new(Vec::new()),
        });
        let id = engine().add(Arc::clone(&job) as Arc<dyn Job>, Instant::now());
        while job.turns.lock().unwrap().is_empty() {
            std::thread::sleep(Duration::from_millis(5));
        }
        engine().remove(id);
        assert_eq!(job.turns.lock().unwrap()[0].1, Err(Deferred));
        let requests = Arc::clone(&job.requests);
        let got = last_turn(id, Instant::now() + Duration::from_secs(60), || {
            round_trip("slow", PATIENCE, async move {
                requests.fetch_add(1, Ordering::SeqCst);
                9u32
            })
        });
        assert_eq!(got, Ok(7), "the last turn made the request again");
        assert_eq!(job.requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_last_turn_waits_no_longer_than_its_deadline() {
        let job = Arc::new(Slow {
            requests: Arc::new(AtomicUsize::new(0)),
            turns: Mutex::new(Vec::new()),
        });
        let id = engine().add(
            Arc::clone(&job) as Arc<dyn Job>,
            Instant::now() + Duration::from_secs(3600),
        );
        engine().remove(id);
        let started = Instant::now();
        let got = last_turn(id, Instant::now() + Duration::from_millis(50), || {
            round_trip("stalled", PATIENCE, async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                1u32
            })
        });
        assert_eq!(got, Err(Deferred));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn off_the_engine_a_round_trip_simply_waits() {
        let got = round_trip("plain", Duration::ZERO, async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            5
        });
        assert_eq!(got, Ok(5));
    }
}
