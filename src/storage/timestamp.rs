//! The `litestream-timestamp` object metadata value.
//!
//! Litestream 0.5 stores the LTX header timestamp (milliseconds since the epoch) as
//! `time.UnixMilli(ts).UTC().Format(time.RFC3339Nano)` (s3/gs/abs `WriteLTXFile`). Go's
//! RFC3339Nano drops trailing zeros of the fraction, and the dot when the fraction is zero:
//! `2024-05-06T07:08:09.12Z`, `2024-05-06T07:08:09Z`. We write the same bytes so that a
//! byte-comparing reader sees no difference between our objects and Litestream's.

/// Formats milliseconds since the Unix epoch the way Go's `time.RFC3339Nano` formats a UTC time.
pub fn format_rfc3339_nano(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if millis != 0 {
        let frac = format!("{millis:03}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 timestamp (any offset, any fraction precision) to milliseconds since
/// the epoch, truncating below the millisecond as the LTX header does.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).ok()?;
    Some(t.timestamp_millis())
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_go_rfc3339_nano() {
        // Expected strings are what Go prints for time.UnixMilli(ms).UTC().Format(time.RFC3339Nano).
        assert_eq!(format_rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339_nano(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(format_rfc3339_nano(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(format_rfc3339_nano(1_700_000_000_001), "2023-11-14T22:13:20.001Z");
        assert_eq!(format_rfc3339_nano(1_709_210_096_500), "2024-02-29T12:34:56.5Z");
        assert_eq!(format_rfc3339_nano(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_rfc3339_nano(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_back() {
        for ms in [0, 1, -1, 1_700_000_000_120, 1_709_210_096_500, 253_402_300_799_999] {
            assert_eq!(parse_rfc3339_ms(&format_rfc3339_nano(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339_ms("2023-11-14T23:13:20.123456789+01:00"),
            Some(1_700_000_000_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }
}
