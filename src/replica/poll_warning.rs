//! The poller's failure warning, at most once a minute for the same failure (with how
//! many were held back), as the primary's `record_error` does: a keyless replica of a
//! replica that turned encryption on logged the same warning at every poll, five times a
//! second at `poll_interval=200ms` (found by a tester). Status `error` shows each.

use std::time::{Duration, Instant};

/// How often the same poll failure is logged.
pub const EVERY: Duration = Duration::from_secs(60);

/// The last failure logged, when, and how many identical ones were not logged since.
#[derive(Debug, Default)]
pub struct PollWarning {
    last: Option<(String, Instant, u64)>,
}

impl PollWarning {
    /// Whether to log `message` at `now` as a warning: `Some(n)` when it is new or last
    /// logged [`EVERY`] ago (`n` identical ones held back since), `None` to hold it back.
    pub fn due(&mut self, message: &str, now: Instant) -> Option<u64> {
        match &mut self.last {
            Some((last, at, held)) if last == message => {
                if now.duration_since(*at) < EVERY {
                    *held += 1;
                    return None;
                }
                let n = *held;
                (*at, *held) = (now, 0);
                Some(n)
            }
            _ => {
                self.last = Some((message.to_string(), now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_failure_is_logged_once_a_minute_with_the_count_held_back() {
        let mut w = PollWarning::default();
        let t = Instant::now();
        assert_eq!(w.due("no key", t), Some(0));
        for i in 1..300 {
            assert_eq!(w.due("no key", t + Duration::from_millis(200 * i)), None);
        }
        assert_eq!(w.due("no key", t + EVERY + Duration::from_millis(1)), Some(299));
        assert_eq!(w.due("store down", t + EVERY + Duration::from_millis(2)), Some(0));
        assert_eq!(w.due("no key", t + EVERY + Duration::from_millis(3)), Some(0));
    }
}
