//! `tests/scripts/history.py`: writes through the VFS with `litestream_sync()` at random
//! moments, one JSON line per sync (the TXID, the time, a hash of the table at that TXID),
//! for point-in-time restore tests; and the same hash of a restored database.

use std::path::Path;
use std::process::Command;

use super::{extension, python, repo_root};

/// One synced point: the table had hash `hash` at TXID `txid`, from time `ms` (wall-clock
/// milliseconds) until the next write.
#[derive(Debug, Clone)]
pub struct Point {
    pub txid: u64,
    pub ms: i64,
    pub hash: String,
}

/// `history.py record EXT URI SECONDS SEED`, not started.
pub fn record_command(uri: &str, seconds: &str, seed: u64) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/scripts/history.py"))
        .arg("record")
        .arg(extension())
        .arg(uri)
        .arg(seconds)
        .arg(seed.to_string());
    cmd
}

/// The point one line of `record`'s output states, if it is one.
pub fn parse_point(line: &str) -> Option<Point> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    Some(Point {
        txid: v["txid"].as_u64()?,
        ms: v["ms"].as_i64()?,
        hash: v["hash"].as_str()?.to_string(),
    })
}

/// Runs a [`record_command`] to completion; returns its points, panics if it fails.
pub fn record(cmd: &mut Command) -> Vec<Point> {
    let out = cmd.output().expect("python3 runs");
    assert!(
        out.status.success(),
        "history.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(parse_point)
        .collect()
}

/// `history.py hash DB`: the hash `record` prints, of a restored database.
pub fn table_hash(db: &Path) -> String {
    let out = Command::new(python())
        .arg(repo_root().join("tests/scripts/history.py"))
        .arg("hash")
        .arg(db)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "hash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
