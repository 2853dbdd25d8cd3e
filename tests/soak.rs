//! Soak: mixed writes with syncs every few dozen milliseconds, compaction and retention
//! on a shrunk ladder, and a read replica querying all the while. The writer's and the
//! reader's RSS and open file descriptors stay flat after warm-up, the replica's lag
//! stays bounded, and no query fails. `LITESTREAM_SOAK_SECONDS` (default 40; `make
//! torture` runs 1800) sets the length; figures are printed at the end.

mod harness;

use harness::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LADDER: &str = "l1_interval=1s&l2_interval=5s&l3_interval=20s&snapshot_interval=60s&retention=120s\
                      &l0_retention=10s&sync_interval=200ms";

fn seconds() -> u64 {
    std::env::var("LITESTREAM_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

/// (RSS in kB, open fds) of a process.
fn usage(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

struct Series {
    rss: Vec<u64>,
    fds: Vec<usize>,
}

impl Series {
    /// (RSS at the end of warm-up, max RSS after it, fds at warm-up, max fds after), kB.
    fn after_warmup(&self) -> (u64, u64, usize, usize) {
        let w = self.rss.len() / 4;
        (
            self.rss[w],
            *self.rss[w..].iter().max().unwrap(),
            self.fds[w],
            *self.fds[w..].iter().max().unwrap(),
        )
    }
}

#[test]
fn rss_fds_and_lag_stay_flat_under_mixed_load() {
    let secs = seconds();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let db = dir.path().join("app.db");
    let writer_uri = format!("file:{}?vfs=litestream&replica={url}&{LADDER}", db.display());
    let mut writer = Command::new(python())
        .arg(repo_root().join("tests/scripts/history.py"))
        .arg("record")
        .arg(extension())
        .arg(&writer_uri)
        .arg(secs.to_string())
        .arg("11")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let writer_out = writer.stdout.take().unwrap();
    let acked = std::thread::spawn(move || BufReader::new(writer_out).lines().count());
    // The reader starts once the replica has its first snapshot.
    let t = Instant::now();
    while !dir.path().join("replica/ltx/0").exists() {
        assert!(t.elapsed() < Duration::from_secs(30), "no replica after 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let reader_uri = format!(
        "file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=200ms&cache_size=4MB",
        dir.path().join("view.db").display()
    );
    let mut reader = Command::new(python())
        .arg(repo_root().join("tests/scripts/soak_reader.py"))
        .arg(extension())
        .arg(&reader_uri)
        .arg((secs.saturating_sub(2)).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let reader_out = reader.stdout.take().unwrap();
    let reports = std::thread::spawn(move || {
        BufReader::new(reader_out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
            .collect::<Vec<_>>()
    });
    let mut w = Series {
        rss: vec![],
        fds: vec![],
    };
    while writer.try_wait().unwrap().is_none() {
        if let Some((rss, fds)) = usage(writer.id()) {
            w.rss.push(rss);
            w.fds.push(fds);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(writer.wait().unwrap().success(), "writer failed");
    reader.wait().unwrap();
    let reports = reports.join().unwrap();
    let acked = acked.join().unwrap();
    assert!(reports.len() as u64 >= secs / 2, "{} reader reports", reports.len());
    let r = Series {
        rss: reports.iter().map(|v| v["rss_kb"].as_u64().unwrap()).collect(),
        fds: reports.iter().map(|v| v["fds"].as_u64().unwrap() as usize).collect(),
    };
    let max_lag = reports.iter().map(|v| v["lag"].as_i64().unwrap()).max().unwrap();
    let last = reports.last().unwrap();
    let (queries, errors) = (last["queries"].as_u64().unwrap(), last["errors"].as_u64().unwrap());
    let (w0, wmax, wf0, wfmax) = w.after_warmup();
    let (r0, rmax, rf0, rfmax) = r.after_warmup();
    eprintln!(
        "soak {secs}s: {acked} syncs; writer RSS {w0}->{wmax} kB max, fds {wf0}->{wfmax}; reader RSS {r0}->{rmax} kB \
         max, fds {rf0}->{rfmax}; replica lag max {max_lag} s; {queries} reader queries, {errors} errors"
    );
    assert_eq!(errors, 0, "reader queries failed");
    assert!(max_lag <= 5, "replica lag reached {max_lag} s");
    // Flat: growth after warm-up within allocator noise and the page cache budget.
    assert!(wmax <= w0 + 32 * 1024, "writer RSS grew {w0} -> {wmax} kB");
    assert!(rmax <= r0 + 32 * 1024, "reader RSS grew {r0} -> {rmax} kB");
    assert!(wfmax <= wf0 + 4, "writer fds grew {wf0} -> {wfmax}");
    assert!(rfmax <= rf0 + 4, "reader fds grew {rf0} -> {rfmax}");
}
