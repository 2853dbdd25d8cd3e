//! How long a read the application waits for may go unanswered before a second, identical
//! request goes out beside it ([`super::retry::hedged`]).
//!
//! The delay follows what the reads of one replica have taken: a few times their recent
//! 95th percentile, so that only a request far out in the store's tail is hedged (on a
//! healthy store about none: [`FLOOR`] is above its whole distribution), and never more
//! than [`CAP`], so that a query waits that and one ordinary answer for a request the
//! store holds, where it waited the silence limit (`silence.rs`, 30 s).
//! `LITESTREAM_READ_HEDGE_DELAY` fixes the delay, or turns hedging off.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// No hedge sooner than this: S3 answers a small ranged GET in tens of ms and a LIST in
/// ~100-200 ms when it is well, so a healthy store's requests are not sent twice however
/// fast its usual answers are (3 × a p95 of 5 ms on loopback would hedge at 15 ms).
pub const FLOOR: Duration = Duration::from_millis(300);

/// No later than this: a store slow enough to push the percentile past it still gets a
/// second chance within a second and a half on a stalled request.
pub const CAP: Duration = Duration::from_millis(1500);

/// The delay is this many times the recent 95th percentile.
const FACTOR: u32 = 3;

/// Answers remembered (the most recent ones): enough for a 95th percentile that one slow
/// answer does not move, few enough to follow a store that got slower.
const WINDOW: usize = 128;

/// How the process hedges: `LITESTREAM_READ_HEDGE_DELAY` as read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setting {
    /// From the latencies seen (unset).
    Adaptive,
    /// This delay always.
    Fixed(Duration),
    /// `0` or `off`: never hedge.
    Off,
}

/// `LITESTREAM_READ_HEDGE_DELAY`: a duration such as `500ms` fixes the delay, `0` or
/// `off` turns hedging off, unset or unreadable (reported once) leaves it adaptive.
fn setting() -> Setting {
    static SETTING: OnceLock<Setting> = OnceLock::new();
    *SETTING.get_or_init(|| match std::env::var("LITESTREAM_READ_HEDGE_DELAY") {
        Err(_) => Setting::Adaptive,
        Ok(text) => parse_setting(&text).unwrap_or_else(|| {
            tracing::warn!(value = %text, "LITESTREAM_READ_HEDGE_DELAY is not a duration or 'off'; hedging adaptively");
            Setting::Adaptive
        }),
    })
}

fn parse_setting(text: &str) -> Option<Setting> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Some(Setting::Off);
    }
    match crate::config::parse_duration(text) {
        Ok(d) if d.is_zero() => Some(Setting::Off),
        Ok(d) => Some(Setting::Fixed(d)),
        Err(_) => None,
    }
}

/// Recent answer times of one replica's reads, and the hedge delay they give.
#[derive(Debug, Default)]
pub struct Latencies {
    /// A ring of the last [`WINDOW`] answer times, in microseconds, and where the next goes.
    recent: Mutex<(Vec<u32>, usize)>,
}

impl Latencies {
    /// One request answered after `took` (a success: a failure's time says little of how
    /// long answers take).
    pub fn record(&self, took: Duration) {
        let micros = took.as_micros().min(u32::MAX as u128) as u32;
        let mut g = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let (ring, next) = &mut *g;
        if ring.len() < WINDOW {
            ring.push(micros);
        } else {
            ring[*next] = micros;
        }
        *next = (*next + 1) % WINDOW;
    }

    /// How long a read may go unanswered before it is hedged; `None`: not at all.
    pub fn hedge_delay(&self) -> Option<Duration> {
        match setting() {
            Setting::Off => None,
            Setting::Fixed(d) => Some(d),
            Setting::Adaptive => Some(self.adaptive_delay()),
        }
    }

    /// [`FACTOR`] × the 95th percentile of the recent answers, within [`FLOOR`]..[`CAP`];
    /// [`CAP`] before any answer (nothing yet says what is slow for this store).
    fn adaptive_delay(&self) -> Duration {
        let mut recent = {
            let g = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            g.0.clone()
        };
        if recent.is_empty() {
            return CAP;
        }
        let at = (recent.len() * 95).div_ceil(100) - 1;
        let (_, p95, _) = recent.select_nth_unstable(at);
        (Duration::from_micros(u64::from(*p95)) * FACTOR).clamp(FLOOR, CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_is_a_few_times_the_recent_tail_within_floor_and_cap() {
        let l = Latencies::default();
        assert_eq!(l.adaptive_delay(), CAP, "nothing seen yet");
        // A fast store: the floor, not 3 × 2 ms.
        for _ in 0..200 {
            l.record(Duration::from_millis(2));
        }
        assert_eq!(l.adaptive_delay(), FLOOR);
        // A few slow answers in the window's last 5% do not move it...
        for _ in 0..5 {
            l.record(Duration::from_secs(10));
        }
        assert_eq!(l.adaptive_delay(), FLOOR);
        // ...a store whose answers take 200 ms does (3 × 200 ms), and a slower one hits the cap.
        for _ in 0..WINDOW {
            l.record(Duration::from_millis(200));
        }
        assert_eq!(l.adaptive_delay(), Duration::from_millis(600));
        for _ in 0..WINDOW {
            l.record(Duration::from_secs(2));
        }
        assert_eq!(l.adaptive_delay(), CAP);
    }

    #[test]
    fn the_setting_reads_durations_and_off() {
        assert_eq!(parse_setting("off"), Some(Setting::Off));
        assert_eq!(parse_setting("0"), Some(Setting::Off));
        assert_eq!(parse_setting("250ms"), Some(Setting::Fixed(Duration::from_millis(250))));
        assert_eq!(parse_setting("2s"), Some(Setting::Fixed(Duration::from_secs(2))));
        assert_eq!(parse_setting("soon"), None);
    }
}
