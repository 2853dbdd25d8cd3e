//! How the commands print sizes, TXIDs and times.

/// Bytes in binary units with three significant-ish digits: `512 B`, `1.50 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[unit])
    }
}

/// A TXID as Litestream prints it (16 hex digits).
pub fn txid(t: u64) -> String {
    format!("{t:016x}")
}

/// Milliseconds since the epoch as RFC 3339 UTC.
pub fn time(ms: i64) -> String {
    litestream_vfs::storage::format_rfc3339_nano(ms)
}

/// A throughput figure, `-` when too little time passed to say.
pub fn rate(bytes: u64, seconds: f64) -> String {
    if seconds < 1e-3 {
        return "-".into();
    }
    format!("{}/s", self::bytes((bytes as f64 / seconds) as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_txids_read_like_litestream() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 19), "1.50 MiB");
        assert_eq!(txid(0x42), "0000000000000042");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
