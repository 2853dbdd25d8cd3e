//! A process's resource use sampled over a long run, and whether it stayed flat: what the
//! soaks assert about memory and descriptors, and the percentiles they report.

/// (RSS in kB, open fds) of a process.
pub fn usage(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// One quantity sampled every second.
pub struct Series(pub Vec<u64>);

/// How a series behaved: its first value, the highest during warm-up, the highest after
/// it, and the last.
pub struct Flatness {
    pub start: u64,
    pub warm: u64,
    pub max_after: u64,
    /// Median of the last quarter of the run.
    pub late: u64,
    pub end: u64,
}

impl Series {
    /// Warm-up is the first quarter of the run, at most two minutes: the table reaches its
    /// steady size, caches fill, the first snapshots and compactions have run.
    pub fn flatness(&self) -> Flatness {
        let s = &self.0;
        let w = (s.len() / 4).clamp(1, 120).min(s.len() - 1);
        Flatness {
            start: s[0],
            warm: *s[..=w].iter().max().unwrap(),
            max_after: *s[w..].iter().max().unwrap(),
            late: {
                let mut tail = s[s.len() - (s.len() / 4).max(1)..].to_vec();
                tail.sort_unstable();
                tail[tail.len() / 2]
            },
            end: *s.last().unwrap(),
        }
    }
}

impl std::fmt::Display for Flatness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "start={} warm={} late={} end={} max={}",
            self.start, self.warm, self.late, self.end, self.max_after
        )
    }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
