//! Timers and a run queue of jobs, served by a small fixed set of threads.
//!
//! A job is never run by two threads at once. Ready jobs are served first come, first
//! served, so one busy database cannot starve a thousand quiet ones: each turn of a job
//! is one bounded round of its work, after which it goes to the back of the queue.
//!
//! Background jobs (compaction) go after the others and hold at most half the threads:
//! the compaction windows of every database open at the same wall-clock instant, and a
//! long compaction must not delay another database's level-0 upload.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Periodic work of one database, run by the engine's threads.
pub trait Job: Send + Sync {
    /// One turn: does what is due and says when it wants the next turn (`None`: the
    /// job is finished and leaves the engine).
    fn run(&self) -> Option<Instant>;

    /// Work that may wait behind the others' (compaction): served after them, on at
    /// most half of the threads.
    fn background(&self) -> bool {
        false
    }
}

/// Names a job registered with the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JobId(pub(super) u64);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    /// Waiting for its timer (or a wake).
    Waiting,
    /// In the run queue.
    Ready,
    Running,
}

struct Slot {
    job: Arc<dyn Job>,
    background: bool,
    state: State,
    /// Invalidates timer entries of earlier schedulings (the heap is never searched).
    generation: u64,
    /// Woken while running: runs again at once instead of at the time it returns.
    again: bool,
    /// Being removed: not run again.
    removing: bool,
}

#[derive(Default)]
struct Queue {
    jobs: HashMap<u64, Slot>,
    timers: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    ready: VecDeque<u64>,
    /// Ready background jobs, served when `ready` is empty.
    ready_background: VecDeque<u64>,
    threads: usize,
    running: usize,
    running_background: usize,
}

impl Queue {
    /// Puts a job that became ready at the back of its class's queue.
    fn push_ready(&mut self, id: u64) {
        if self.jobs.get(&id).is_some_and(|s| s.background) {
            self.ready_background.push_back(id);
        } else {
            self.ready.push_back(id);
        }
    }

    /// The next job to run: the oldest ready one, background ones only while they hold
    /// fewer than `background_threads`.
    fn pop_ready(&mut self, background_threads: usize) -> Option<u64> {
        self.ready.pop_front().or_else(|| {
            if self.running_background < background_threads {
                self.ready_background.pop_front()
            } else {
                None
            }
        })
    }
}

pub(super) struct Scheduler {
    queue: Mutex<Queue>,
    /// Wakes a thread: a job became ready or the earliest timer changed.
    work: Condvar,
    /// A job stopped running (for `remove`).
    finished: Condvar,
    next_id: AtomicU64,
    max_threads: usize,
    /// Threads background jobs may hold at once.
    background_threads: usize,
    pub(super) turns: AtomicU64,
}

/// The engine job whose turn runs on this thread, if any.
pub(super) fn current() -> Option<u64> {
    CURRENT.with(|c| c.get())
}

thread_local! {
    /// The job this engine thread runs, so that a job removing itself does not wait
    /// for itself.
    static CURRENT: Cell<Option<u64>> = const { Cell::new(None) };
}

/// How long a job that panicked waits before its next turn (it is kept: a panic in one
/// round of a database's work must not end its replication silently).
const AFTER_PANIC: Duration = Duration::from_secs(1);

impl Scheduler {
    pub(super) fn new(max_threads: usize) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
            finished: Condvar::new(),
            next_id: AtomicU64::new(1),
            max_threads: max_threads.max(1),
            background_threads: (max_threads / 2).max(1),
            turns: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `job` for its first turn at `first`. Threads start as jobs arrive, up
    /// to the maximum, and stay (idle ones wait on a condition variable).
    pub(super) fn add(self: &Arc<Self>, job: Arc<dyn Job>, first: Instant) -> JobId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let background = job.background();
        let mut q = self.lock();
        q.jobs.insert(
            id,
            Slot {
                job,
                background,
                state: State::Waiting,
                generation: 0,
                again: false,
                removing: false,
            },
        );
        q.timers.push(Reverse((first, id, 0)));
        let want = q.jobs.len().min(self.max_threads);
        while q.threads < want {
            let me = Arc::clone(self);
            let n = q.threads;
            match std::thread::Builder::new()
                .name(format!("litestream-engine-{n}"))
                .spawn(move || me.serve())
            {
                Ok(_) => q.threads += 1,
                Err(e) => {
                    // The threads already running serve every job, only more slowly.
                    tracing::error!("cannot start an engine thread: {e}");
                    break;
                }
            }
        }
        drop(q);
        self.work.notify_one();
        JobId(id)
    }

    /// Runs the job as soon as a thread is free (or again right after its current turn).
    pub(super) fn wake(&self, id: JobId) {
        let mut q = self.lock();
        let Some(slot) = q.jobs.get_mut(&id.0) else { return };
        match slot.state {
            State::Waiting => {
                slot.state = State::Ready;
                slot.generation += 1;
                q.push_ready(id.0);
                drop(q);
                self.work.notify_one();
            }
            State::Running => slot.again = true,
            State::Ready => {}
        }
    }

    /// Takes the job out of the engine, waiting for a turn in progress to end (unless
    /// the caller is that turn).
    pub(super) fn remove(&self, id: JobId) {
        let mut q = self.lock();
        let Some(slot) = q.jobs.get_mut(&id.0) else { return };
        slot.removing = true;
        if CURRENT.with(|c| c.get()) == Some(id.0) {
            return; // the turn in progress ends, then the job goes
        }
        while q.jobs.get(&id.0).is_some_and(|s| s.state == State::Running) {
            q = self.finished.wait(q).unwrap_or_else(|p| p.into_inner());
        }
        q.jobs.remove(&id.0);
        q.ready.retain(|r| *r != id.0);
        q.ready_background.retain(|r| *r != id.0);
        drop(q);
        super::io::forget(id.0);
    }

    /// Threads background jobs may hold at once.
    pub(super) fn background_threads(&self) -> usize {
        self.background_threads
    }

    /// (jobs, ready, running, threads) for the status.
    pub(super) fn counts(&self) -> (usize, usize, usize, usize) {
        let q = self.lock();
        (
            q.jobs.len(),
            q.ready.len() + q.ready_background.len(),
            q.running,
            q.threads,
        )
    }

    /// An engine thread: takes the next ready job, or sleeps until the earliest timer.
    fn serve(&self) {
        let mut q = self.lock();
        loop {
            let now = Instant::now();
            while let Some(Reverse((at, id, generation))) = q.timers.peek().copied() {
                if at > now {
                    break;
                }
                q.timers.pop();
                if let Some(slot) = q.jobs.get_mut(&id) {
                    if slot.generation == generation && slot.state == State::Waiting {
                        slot.state = State::Ready;
                        q.push_ready(id);
                    }
                }
            }
            let Some(id) = q.pop_ready(self.background_threads) else {
                let wait = q
                    .timers
                    .peek()
                    .map(|Reverse((at, _, _))| at.saturating_duration_since(now));
                q = match wait {
                    Some(d) => self.work.wait_timeout(q, d).unwrap_or_else(|p| p.into_inner()).0,
                    None => self.work.wait(q).unwrap_or_else(|p| p.into_inner()),
                };
                continue;
            };
            let Some(slot) = q.jobs.get_mut(&id) else { continue };
            if slot.removing {
                continue;
            }
            slot.state = State::Running;
            slot.again = false;
            let job = Arc::clone(&slot.job);
            let background = slot.background;
            q.running += 1;
            q.running_background += usize::from(background);
            // More ready jobs than this thread: let another one start on them.
            if !q.ready.is_empty() || !q.ready_background.is_empty() {
                self.work.notify_one();
            }
            drop(q);
            CURRENT.with(|c| c.set(Some(id)));
            let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.run())).unwrap_or_else(|_| {
                tracing::error!("an engine job panicked; its next turn is in {AFTER_PANIC:?}");
                Some(Instant::now() + AFTER_PANIC)
            });
            CURRENT.with(|c| c.set(None));
            self.turns.fetch_add(1, Ordering::Relaxed);
            drop(job);
            q = self.lock();
            q.running -= 1;
            q.running_background -= usize::from(background);
            if background && !q.ready_background.is_empty() {
                // A background job waiting for this one's thread share may start.
                self.work.notify_one();
            }
            let Some(slot) = q.jobs.get_mut(&id) else { continue };
            match next {
                _ if slot.removing => {
                    q.jobs.remove(&id);
                    super::io::forget(id);
                }
                None => {
                    q.jobs.remove(&id);
                    super::io::forget(id);
                }
                Some(_) if slot.again => {
                    slot.state = State::Ready;
                    q.push_ready(id);
                }
                Some(at) => {
                    slot.state = State::Waiting;
                    slot.generation += 1;
                    let generation = slot.generation;
                    q.timers.push(Reverse((at, id, generation)));
                }
            }
            self.finished.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    struct Counter {
        turns: AtomicUsize,
        every: Duration,
        sleep: Duration,
    }

    impl Job for Counter {
        fn run(&self) -> Option<Instant> {
            self.turns.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(self.sleep);
            Some(Instant::now() + self.every)
        }
    }

    fn counter(every: Duration, sleep: Duration) -> Arc<Counter> {
        Arc::new(Counter {
            turns: AtomicUsize::new(0),
            every,
            sleep,
        })
    }

    #[test]
    fn a_thousand_jobs_run_on_the_fixed_threads_each_at_its_time() {
        let s = Scheduler::new(3);
        let jobs: Vec<_> = (0..1000)
            .map(|_| counter(Duration::from_millis(50), Duration::ZERO))
            .collect();
        for j in &jobs {
            s.add(Arc::clone(j) as Arc<dyn Job>, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(s.counts().3, 3, "threads");
        for j in &jobs {
            let n = j.turns.load(Ordering::SeqCst);
            assert!((2..=8).contains(&n), "a job ran {n} times in 300 ms every 50 ms");
        }
    }

    #[test]
    fn a_slow_job_delays_no_other_job_beyond_its_period() {
        let s = Scheduler::new(2);
        let slow = counter(Duration::ZERO, Duration::from_millis(500));
        s.add(Arc::clone(&slow) as Arc<dyn Job>, Instant::now());
        let quick: Vec<_> = (0..50)
            .map(|_| counter(Duration::from_millis(20), Duration::ZERO))
            .collect();
        for j in &quick {
            s.add(Arc::clone(j) as Arc<dyn Job>, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(400));
        for j in &quick {
            assert!(
                j.turns.load(Ordering::SeqCst) >= 5,
                "a quick job was starved by a slow one"
            );
        }
    }

    /// Compaction-like work: long turns, counted while they run.
    struct Long {
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
    }

    impl Job for Long {
        fn run(&self) -> Option<Instant> {
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
            self.running.fetch_sub(1, Ordering::SeqCst);
            Some(Instant::now())
        }

        fn background(&self) -> bool {
            true
        }
    }

    #[test]
    fn long_background_jobs_hold_half_the_threads_and_level0_work_goes_first() {
        let s = Scheduler::new(4);
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        for _ in 0..10 {
            let long = Long {
                running: Arc::clone(&running),
                most: Arc::clone(&most),
            };
            s.add(Arc::new(long), Instant::now());
        }
        let quick: Vec<_> = (0..50)
            .map(|_| counter(Duration::from_millis(20), Duration::from_millis(1)))
            .collect();
        for j in &quick {
            s.add(Arc::clone(j) as Arc<dyn Job>, Instant::now());
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            most.load(Ordering::SeqCst) <= 2,
            "background jobs held more than half the threads"
        );
        assert!(most.load(Ordering::SeqCst) >= 1, "background jobs never ran");
        for j in &quick {
            assert!(
                j.turns.load(Ordering::SeqCst) >= 5,
                "a quick job waited behind long background ones"
            );
        }
    }

    #[test]
    fn a_woken_job_runs_at_once_and_a_removed_one_never_again() {
        let s = Scheduler::new(1);
        let j = counter(Duration::from_secs(3600), Duration::ZERO);
        let id = s.add(
            Arc::clone(&j) as Arc<dyn Job>,
            Instant::now() + Duration::from_secs(3600),
        );
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(j.turns.load(Ordering::SeqCst), 0);
        s.wake(id);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(j.turns.load(Ordering::SeqCst), 1);
        s.remove(id);
        s.wake(id);
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(j.turns.load(Ordering::SeqCst), 1);
        assert_eq!(s.counts().0, 0);
    }

    #[test]
    fn removing_waits_for_the_turn_in_progress() {
        let s = Scheduler::new(1);
        let j = counter(Duration::from_secs(3600), Duration::from_millis(300));
        let id = s.add(Arc::clone(&j) as Arc<dyn Job>, Instant::now());
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        s.remove(id);
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "remove returned mid-turn"
        );
        assert_eq!(j.turns.load(Ordering::SeqCst), 1);
    }
}
