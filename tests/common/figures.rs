//! Figures the reliability suites measure (faults injected, retries, catch-up times),
//! printed and appended to `target/figures/<suite>.txt` so `make test` and `make torture`
//! can show them all at the end, after cargo's captured output.

use std::io::Write;
use std::path::PathBuf;

fn dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("figures")
}

/// Prints `line` and appends it to `target/figures/<suite>.txt`.
pub fn record(suite: &str, line: &str) {
    println!("FIGURES {suite}: {line}");
    let dir = dir();
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{suite}.txt")))
    {
        // One write per line so parallel tests do not interleave within a line.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

/// `$name` parsed as seconds, else `default` (the short version `make test` runs).
pub fn seconds_from_env(name: &str, default: u64) -> std::time::Duration {
    let secs = std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(default);
    std::time::Duration::from_secs(secs)
}
