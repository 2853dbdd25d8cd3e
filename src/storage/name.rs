//! LTX file names: `%016x-%016x.ltx`, lowercase hex min and max TXID.
//!
//! Names come from object listings, i.e. from whoever can write to the bucket, so parsing
//! is strict: anything that is not exactly a name we would have written is rejected.

/// Length of a valid name: two 16-digit hex numbers, a dash and `.ltx`.
const NAME_LEN: usize = 16 + 1 + 16 + 4;

/// The object name of the LTX file covering `min_txid..=max_txid`.
pub fn format_name(min_txid: u64, max_txid: u64) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Parses a name written by [`format_name`]. Returns `None` for anything else: uppercase hex,
/// other lengths, other suffixes, and `min > max`.
pub fn parse_name(name: &str) -> Option<(u64, u64)> {
    let b = name.as_bytes();
    if b.len() != NAME_LEN || b[16] != b'-' || &b[33..] != b".ltx" {
        return None;
    }
    let min = parse_hex16(&b[..16])?;
    let max = parse_hex16(&b[17..33])?;
    (min <= max).then_some((min, max))
}

/// Whether `name` is an LTX file its writer has not finished: Litestream writes
/// `<name>.tmp` and renames it, so a listing of a replica it writes meets them. Skipped
/// like any other name, but not worth a warning.
pub fn unfinished_name(name: &str) -> bool {
    name.strip_suffix(".tmp").is_some_and(|n| parse_name(n).is_some())
}

/// Exactly 16 lowercase hex digits (`u64::from_str_radix` would also take uppercase and a sign).
fn parse_hex16(digits: &[u8]) -> Option<u64> {
    digits.iter().try_fold(0u64, |acc, &c| {
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn litestreams_unfinished_files_are_told_from_other_names() {
        assert!(unfinished_name("0000000000000001-0000000000000002.ltx.tmp"));
        assert!(!unfinished_name("0000000000000001-0000000000000002.ltx"));
        assert!(!unfinished_name("notes.tmp"));
    }

    #[test]
    fn round_trip() {
        assert_eq!(format_name(1, 0x3e8), "0000000000000001-00000000000003e8.ltx");
        assert_eq!(parse_name("0000000000000001-00000000000003e8.ltx"), Some((1, 0x3e8)));
        assert_eq!(parse_name(&format_name(u64::MAX, u64::MAX)), Some((u64::MAX, u64::MAX)));
    }

    #[test]
    fn rejects_anything_else() {
        for bad in [
            "",
            "0000000000000001-00000000000003E8.ltx",  // uppercase
            "0000000000000002-0000000000000001.ltx",  // min > max
            "000000000000001-00000000000003e8.ltx",   // short
            "00000000000000001-00000000000003e8.ltx", // long
            "0000000000000001_00000000000003e8.ltx",  // separator
            "0000000000000001-00000000000003e8.LTX",
            "0000000000000001-00000000000003e8.ltx.tmp",
            "+000000000000001-00000000000003e8.ltx",
            "../../../etc/passwd",
            "0000000000000001-000000000000/3e8.ltx",
        ] {
            assert_eq!(parse_name(bad), None, "{bad:?}");
        }
    }
}
