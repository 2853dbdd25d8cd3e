//! The time written into the header of each LTX file this process makes.
//!
//! Restores by time (`-timestamp`, time travel) find a state by a binary search over the
//! files' times, and retention keeps "the newest snapshot written before the window"
//! by them: both need times that grow with TXIDs. The wall clock does not always: NTP
//! steps it back after a VM resumes. A file written then carried an older time than the
//! one before it, and a restore to a time before the step gave a state from after it
//! (a tester: rows deleted during the step were gone from a restore to before it).
//!
//! So a new file's time is the wall clock, but never earlier than one this process
//! wrote before: after a step back, files carry the time of the step until the clock
//! catches up, and a warning says so once. (Across processes a clock that is behind at
//! the open still writes older times: the process has nothing to compare with.)

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

/// Times handed out, never going back.
struct NeverBack {
    /// The newest time handed out.
    newest: AtomicI64,
    /// Whether the current step back was warned of.
    warned: AtomicBool,
}

/// This process's: every database's files (one clock for all of them).
static HEADERS: NeverBack = NeverBack::new();

/// A step back smaller than this is not worth a warning (clocks slew by milliseconds).
const WORTH_SAYING_MS: i64 = 1_000;

/// The time for a new file's header, in ms since the Unix epoch.
pub fn header_time_ms() -> i64 {
    HEADERS.at(super::batch::now_ms())
}

impl NeverBack {
    const fn new() -> NeverBack {
        NeverBack {
            newest: AtomicI64::new(i64::MIN),
            warned: AtomicBool::new(false),
        }
    }

    /// `now`, or the newest time handed out if the clock is behind it.
    fn at(&self, now: i64) -> i64 {
        let newest = self.newest.fetch_max(now, Ordering::Relaxed);
        if now >= newest {
            self.warned.store(false, Ordering::Relaxed);
            return now;
        }
        if newest - now >= WORTH_SAYING_MS && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                behind_ms = newest - now,
                "the wall clock went back {:.1} s: new LTX files carry the time of the newest one \
                 until it catches up, so restores by time within that span give the state at its end \
                 (restore by TXID is exact)",
                (newest - now) as f64 / 1000.0
            );
        }
        newest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_never_go_back_and_follow_the_clock_again_once_it_catches_up() {
        let times = NeverBack::new();
        let t = 1_800_000_000_000;
        assert_eq!(times.at(t), t);
        assert_eq!(times.at(t + 10), t + 10);
        // An hour back: the newest time stays.
        assert_eq!(times.at(t - 3_600_000), t + 10);
        assert!(times.warned.load(Ordering::Relaxed));
        assert_eq!(times.at(t + 5), t + 10);
        // Caught up.
        assert_eq!(times.at(t + 20), t + 20);
        assert!(!times.warned.load(Ordering::Relaxed));
    }
}
