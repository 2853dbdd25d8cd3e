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

/// The plan in a line: consecutive files of one level as one step, `L0 x19 <min>-<max>`.
pub fn plan_steps(plan: &[litestream_vfs::storage::LtxObject]) -> Vec<String> {
    let mut steps: Vec<(u8, usize, u64, u64)> = Vec::new();
    for f in plan {
        match steps.last_mut() {
            Some((level, n, _, max)) if *level == f.level => {
                *n += 1;
                *max = f.max_txid;
            }
            _ => steps.push((f.level, 1, f.min_txid, f.max_txid)),
        }
    }
    steps
        .iter()
        .map(|&(level, n, min, max)| {
            let count = if n > 1 { format!(" x{n}") } else { String::new() };
            format!("L{level}{count} {}-{}", txid(min), txid(max))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use litestream_vfs::storage::LtxObject;

    #[test]
    fn a_long_plan_prints_as_runs_per_level() {
        let f = |level, min_txid, max_txid| LtxObject {
            level,
            min_txid,
            max_txid,
            size: 1,
            last_modified: None,
        };
        let plan = [f(9, 1, 10), f(1, 11, 20), f(0, 21, 21), f(0, 22, 22), f(0, 23, 30)];
        assert_eq!(
            plan_steps(&plan),
            [
                "L9 0000000000000001-000000000000000a",
                "L1 000000000000000b-0000000000000014",
                "L0 x3 0000000000000015-000000000000001e"
            ]
        );
    }

    #[test]
    fn sizes_and_txids_read_like_litestream() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 << 19), "1.50 MiB");
        assert_eq!(txid(0x42), "0000000000000042");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
