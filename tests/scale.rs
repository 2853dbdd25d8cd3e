//! Many databases in one process (issue 15): a thousand primaries open, commit and sync
//! on the engine's few threads under `ulimit -n 4096`, and every one restores equal to
//! its primary.
//!
//! `LITESTREAM_SCALE_DATABASES` sets the count (default 1,000).

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::s3::{ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use harness::*;
use std::process::Command;
use std::time::Duration;

/// Threads of ours the engine allows whatever the number of databases: its own (4), the
/// async runtime's workers (2) and blocking pool (2).
const OUR_THREADS: usize = 8;

/// Descriptors per primary: SQLite's three (database, WAL, shared memory) and the
/// replication lock. The snapshot's private connection closes before the application's
/// connection opens the file, so SQLite need not park its descriptor (`vfs/private.rs`).
const FDS_PER_PRIMARY: usize = 4;

/// The process's own descriptors beside the databases' (standard streams, the engine's
/// event loop, a few staging files open at once while the engine works).
const FDS_OF_THE_PROCESS: usize = 96;

#[test]
fn a_thousand_primaries_in_one_process_run_on_eight_threads_and_all_restore() {
    let n: usize = std::env::var("LITESTREAM_SCALE_DATABASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("db")).unwrap();
    // 4,096 for a thousand databases.
    let nofile = FDS_PER_PRIMARY * n + FDS_OF_THE_PROCESS;
    let out = Command::new(python())
        .arg(repo_root().join("tests/scripts/many_primaries.py"))
        .arg(extension())
        .arg(dir.path())
        .arg(n.to_string())
        .arg(nofile.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "many_primaries.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let app = report["app_threads"].as_u64().unwrap() as usize;
    let peak = report["peak_threads"].as_u64().unwrap() as usize;
    assert!(
        peak <= app + OUR_THREADS,
        "{peak} threads with {n} databases: more than the application's {app} + {OUR_THREADS}: {report}"
    );
    let txids = report["txids"].as_array().unwrap();
    assert_eq!(txids.len(), n);
    // Every database got its commit stored; a sample of 20 restores equal to its primary.
    for (i, txid) in txids.iter().enumerate() {
        assert!(txid.as_u64().unwrap() >= 2, "database {i} synced TXID {txid}");
    }
    let step = (n / 20).max(1);
    for i in (0..n).step_by(step) {
        let db = dir.path().join(format!("db/{i}.db"));
        let url = format!("file://{}/replicas/{i}", dir.path().display());
        let restored = dir.path().join(format!("restored-{i}.db"));
        litestream_restore(&url, &restored, &[]).unwrap();
        assert_eq!(dump(&restored), dump(&db), "database {i} restores differently");
    }
    eprintln!(
        "{n} primaries: {peak} threads (application {app}), {} descriptors, engine {}",
        report["peak_fds"], report["engine"]
    );
}

/// Issue 15, item 6: opening one database does not wait for another database's open
/// that is stuck in its first store round trip (a store behind a proxy that holds every
/// request). Both opens run in one process; the one on `file://` must open, commit and
/// sync while the other is still opening.
#[test]
fn an_open_does_not_wait_for_another_databases_stalled_store() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens upstream: every request is held for the stall, then dropped.
    let proxy = FaultProxy::start(
        1,
        FaultPlan {
            stall: Duration::from_secs(30),
            ..FaultPlan::of(&[Fault::Stall], 100)
        },
    );
    let stalled_url = format!(
        "s3://stalled/a?endpoint={}&region={REGION}&forcePathStyle=true",
        proxy.endpoint
    );
    let out = Command::new(python())
        .arg(repo_root().join("tests/scripts/parallel_open.py"))
        .arg(extension())
        .arg(dir.path())
        .arg(&stalled_url)
        .env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "parallel_open.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["stalled_still_opening"], true,
        "the stalled open ended early: {report}"
    );
    assert!(report["other_txid"].as_u64().unwrap() >= 2, "{report}");
    let seconds = report["other_seconds"].as_f64().unwrap();
    assert!(
        seconds < 5.0,
        "the database on file:// took {seconds:.1} s to open, commit and sync beside a stalled open: {report}"
    );
}
