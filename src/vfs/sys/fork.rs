//! Noticing `fork()`. A pre-fork server (gunicorn `--preload`, uWSGI, Puma or Unicorn
//! with `preload_app`, Python's `multiprocessing` on Linux) loads the extension and often
//! touches the database in the parent, then forks its workers. A child has only the
//! thread that forked: the engine's threads and the async runtime's are gone, while the
//! statics that name them are copied. Before this, a worker's commits were captured and
//! never uploaded, its `litestream_sync()` timed out, and its status showed no error.
//!
//! A child handler (`pthread_atfork`) counts forks: [`epoch`] is 0 in the process that
//! loaded the extension and grows in each child. Whatever holds threads is a
//! [`PerProcess`] value, made again on first use in a child (the parent's copy is left
//! alone: dropping it would wait for threads that do not exist), and what the parent had
//! open is the parent's (`primary::registry`, `replica::registry`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

static EPOCH: AtomicU64 = AtomicU64::new(0);

extern "C" fn in_child() {
    // Only an atomic add: the child of a multi-threaded process may run
    // async-signal-safe code alone until it returns from fork().
    EPOCH.fetch_add(1, Ordering::Relaxed);
}

/// Registers the child handler, once per process (a child inherits the registration).
pub fn watch() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a handler that only touches an atomic; no prepare or
        // parent handler.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(in_child)) };
        if rc != 0 {
            tracing::warn!("pthread_atfork failed ({rc}): a child of fork() would not replicate");
        }
    });
}

/// How many forks separate this process from the one that loaded the extension.
#[inline]
pub fn epoch() -> u64 {
    EPOCH.load(Ordering::Relaxed)
}

/// A value made once per process: on first use, and again on first use in a child of
/// `fork()`. Values are leaked, never dropped (they live as long as the process; a
/// parent's copy in a child holds threads that do not exist there).
pub struct PerProcess<T: 'static> {
    /// The current value with the epoch it was made in.
    current: AtomicPtr<(u64, T)>,
    /// The epoch + 1 whose value a thread is making, 0 when none is.
    making: AtomicU64,
}

impl<T: Send + Sync + 'static> PerProcess<T> {
    pub const fn new() -> Self {
        PerProcess {
            current: AtomicPtr::new(std::ptr::null_mut()),
            making: AtomicU64::new(0),
        }
    }

    /// This process's value, made by `make` if there is none yet.
    #[inline]
    pub fn get(&self, make: impl FnOnce() -> T) -> &'static T {
        self.get_in(epoch(), |_| make())
    }

    /// [`PerProcess::get`]; `make` is also given the parent's value in a child of `fork()`.
    #[inline]
    pub fn get_after(&self, make: impl FnOnce(Option<&'static T>) -> T) -> &'static T {
        self.get_in(epoch(), make)
    }

    #[inline]
    fn get_in(&self, epoch: u64, make: impl FnOnce(Option<&'static T>) -> T) -> &'static T {
        if let Some(value) = self.load(epoch) {
            return value;
        }
        self.make(epoch, make)
    }

    #[inline]
    fn load(&self, epoch: u64) -> Option<&'static T> {
        let ptr = self.current.load(Ordering::Acquire);
        // SAFETY: a non-null pointer was stored by `make` from a leaked Box, never
        // freed, and published with Release after it was written.
        let pair: &'static (u64, T) = unsafe { ptr.as_ref()? };
        (pair.0 == epoch).then_some(&pair.1)
    }

    #[cold]
    fn make(&self, epoch: u64, make: impl FnOnce(Option<&'static T>) -> T) -> &'static T {
        // One maker per epoch. Not a mutex: a child may have copied it locked (a thread
        // of the parent was here at the fork), and nobody would ever unlock it there. A
        // copied claim names the parent's epoch, which a child's differs from.
        let mine = epoch + 1;
        loop {
            if let Some(value) = self.load(epoch) {
                return value;
            }
            let claim = self.making.load(Ordering::Acquire);
            if claim == mine {
                std::thread::yield_now(); // another thread of this process is making it
                continue;
            }
            if self
                .making
                .compare_exchange(claim, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                break;
            }
        }
        // A `make` that panics gives the claim back for the next caller.
        struct Unclaim<'a>(&'a AtomicU64, u64);
        impl Drop for Unclaim<'_> {
            fn drop(&mut self) {
                let _ = self.0.compare_exchange(self.1, 0, Ordering::AcqRel, Ordering::Acquire);
            }
        }
        let unclaim = Unclaim(&self.making, mine);
        // SAFETY: as in `load`: a leaked Box, never freed.
        let previous = unsafe { self.current.load(Ordering::Acquire).as_ref() }.map(|pair| &pair.1);
        let leaked: &'static mut (u64, T) = Box::leak(Box::new((epoch, make(previous))));
        self.current.store(leaked, Ordering::Release);
        drop(unclaim);
        &leaked.1
    }
}

impl<T: Send + Sync + 'static> Default for PerProcess<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// A mutex-guarded value of this process: a child of `fork()` makes its own, behind a
/// mutex of its own (the parent's may have been copied locked: a thread of the parent
/// inside it at the fork would never unlock it here). The parent's value is leaked, never
/// dropped: for what a process has open (databases, replicas, claims), dropping an entry
/// could close a connection the parent opened (and, with its descriptors, the POSIX
/// locks the child's own connections hold).
pub struct ProcessMutex<T: 'static> {
    inner: PerProcess<Mutex<T>>,
}

/// What this process has open, by name ([`ProcessMutex`]).
pub type ProcessMap<K, V> = ProcessMutex<HashMap<K, V>>;
pub type ProcessMapGuard<'a, K, V> = MutexGuard<'a, HashMap<K, V>>;

impl<T: Send + Default + 'static> ProcessMutex<T> {
    pub const fn new() -> Self {
        ProcessMutex {
            inner: PerProcess::new(),
        }
    }

    pub fn lock(&self) -> MutexGuard<'static, T> {
        self.lock_leaving(|_| {})
    }

    /// [`ProcessMutex::lock`]; in a child, `leave` first sees the parent's value, unless
    /// it was copied locked.
    pub fn lock_leaving(&self, leave: impl FnOnce(&T)) -> MutexGuard<'static, T> {
        let value = self.inner.get_after(|parents| {
            if let Some(Ok(parents)) = parents.map(Mutex::try_lock) {
                leave(&parents);
            }
            Mutex::new(T::default())
        });
        value.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<T: Send + Default + 'static> Default for ProcessMutex<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Forks while another thread holds what `hold` returns, runs `work` in the child,
    /// and says whether the child finished within 10 s (a child still waiting is killed).
    /// `work` must use only what a child of a threaded process may: it is what the
    /// extension does in a pre-fork server's worker.
    pub(crate) fn finishes_in_a_child<G: 'static>(hold: fn() -> Box<G>, work: fn()) -> bool {
        watch();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let guard = hold();
            held_tx.send(()).expect("the test waits");
            let _ = done_rx.recv();
            drop(guard);
        });
        held_rx.recv().expect("the holder holds");
        // SAFETY: the child runs `work` and leaves with `_exit`, never returning into the
        // test harness (whose threads are the parent's).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = match std::panic::catch_unwind(work) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            // SAFETY: ends the child without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed: {}", std::io::Error::last_os_error());
        let started = Instant::now();
        let finished = loop {
            let mut status = 0;
            // SAFETY: waits for our own child, without blocking.
            let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if rc == pid {
                break libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
            }
            if started.elapsed() > Duration::from_secs(10) {
                // SAFETY: our own child, stuck; then reaped.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                break false;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = done_tx.send(());
        holder.join().expect("the holder ends");
        finished
    }

    #[test]
    fn a_value_is_made_once_per_epoch() {
        // Epochs passed in: moving the process's own would remake the runtime and the
        // engine under the other tests running in parallel.
        let value: PerProcess<u64> = PerProcess::new();
        let first = value.get_in(0, |_| 7);
        assert_eq!(*value.get_in(0, |_| 8), 7, "made once");
        assert!(std::ptr::eq(first, value.get_in(0, |_| 9)));
        assert_eq!(
            *value.get_in(1, |parents| 10 + parents.unwrap()),
            17,
            "made again in a child"
        );
        assert_eq!(*value.get_in(1, |_| 11), 17);
        let panicked = std::panic::catch_unwind(|| value.get_in(2, |_| panic!("make failed")));
        assert!(panicked.is_err());
        assert_eq!(*value.get_in(2, |_| 12), 12, "a failed make gives its claim back");
    }
}
