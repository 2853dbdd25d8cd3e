//! The times a user names for a point in a replica's history ('latest', an RFC 3339
//! timestamp, '5 minutes ago'): read replicas' `litestream_set_time` and restore's
//! `-timestamp`/target both parse them here, below both roles.

use crate::storage::parse_rfc3339_ms;
use std::time::{SystemTime, UNIX_EPOCH};

/// A point a user asked for: the newest state, or the state at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeTarget {
    /// The newest state (a replica connection follows the store).
    Latest,
    /// The newest state at or before this time (ms since the epoch).
    At(i64),
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Parses 'latest', an RFC 3339 timestamp, or a relative time such as '5 minutes ago',
/// '90s ago' or '1.5 hours ago'.
pub fn parse_time(text: &str) -> Result<TimeTarget, String> {
    parse_time_at(text, now_ms())
}

fn parse_time_at(text: &str, now: i64) -> Result<TimeTarget, String> {
    let t = text.trim();
    if t.eq_ignore_ascii_case("latest") || t.eq_ignore_ascii_case("now") {
        return Ok(TimeTarget::Latest);
    }
    if let Some(ms) = parse_rfc3339_ms(t) {
        return Ok(TimeTarget::At(ms));
    }
    let bad = || {
        format!(
            "'{text}' is not a time: use 'latest', an RFC 3339 timestamp (2024-05-06T07:08:09Z) \
             or a relative time ('5 minutes ago')"
        )
    };
    let lower = t.to_ascii_lowercase();
    let ago = lower.strip_suffix("ago").ok_or_else(bad)?.trim();
    let split = ago
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(ago.len());
    let (number, unit) = ago.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit.trim() {
        "ms" | "millisecond" | "milliseconds" => 1.0,
        "s" | "sec" | "secs" | "second" | "seconds" => 1e3,
        "m" | "min" | "mins" | "minute" | "minutes" => 60e3,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600e3,
        "d" | "day" | "days" => 86_400e3,
        "w" | "week" | "weeks" => 7.0 * 86_400e3,
        _ => return Err(bad()),
    };
    let back = value * unit_ms;
    if !back.is_finite() || !(0.0..=1e15).contains(&back) {
        return Err(bad());
    }
    Ok(TimeTarget::At(now - back as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_latest_absolute_and_relative_times() {
        let now = 1_700_000_000_000;
        assert_eq!(parse_time_at("latest", now), Ok(TimeTarget::Latest));
        assert_eq!(parse_time_at(" LATEST ", now), Ok(TimeTarget::Latest));
        assert_eq!(
            parse_time_at("2023-11-14T22:13:20.5Z", now),
            Ok(TimeTarget::At(1_700_000_000_500))
        );
        assert_eq!(parse_time_at("5 minutes ago", now), Ok(TimeTarget::At(now - 300_000)));
        assert_eq!(parse_time_at("90s ago", now), Ok(TimeTarget::At(now - 90_000)));
        assert_eq!(parse_time_at("1.5 hours ago", now), Ok(TimeTarget::At(now - 5_400_000)));
        assert_eq!(parse_time_at("1 day ago", now), Ok(TimeTarget::At(now - 86_400_000)));
        for bad in [
            "yesterday",
            "5 minutes",
            "five minutes ago",
            "5 fortnights ago",
            "",
            "-1s ago",
        ] {
            assert!(parse_time_at(bad, now).unwrap_err().contains("is not a time"), "{bad}");
        }
    }
}
