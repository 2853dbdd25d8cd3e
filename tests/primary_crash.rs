//! Issue 3 acceptance: a writer killed with SIGKILL at random points, again and
//! again. After a restart and a sync, `litestream restore` equals the primary, the
//! database passes integrity_check, level-0 TXIDs have no gap, and every TXID that
//! `litestream_sync()` acknowledged is in the replica.

mod harness;

use harness::*;
use std::time::Duration;

/// Cycles in `make test`; LITESTREAM_CRASH_CYCLES raises it (`make torture`).
fn cycles() -> u64 {
    crash_cycles(50)
}

#[test]
fn sigkill_at_random_points_loses_no_acknowledged_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let acks = dir.path().join("acks.txt");
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for cycle in 0..cycles() {
        let mut cmd = workload_command(&db, &url, cycle + 1, 0, &["sync_interval=50ms"]);
        cmd.arg("--sync-every").arg("5").arg("--ack-file").arg(&acks);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(100 + next() % 700));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    // Restart, replicate what is left, and check everything.
    let final_txid = python_workload(&db, &url, 999, 10, &[]);
    assert_eq!(integrity(&db), "ok");
    let ranges = level0_ranges(&replica);
    assert_contiguous(&ranges);
    assert_eq!(
        ranges.last().unwrap().1,
        final_txid,
        "the replica reaches the final TXID"
    );
    let acked = std::fs::read_to_string(&acks).unwrap_or_default();
    let max_acked = acked
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(max_acked > 0, "the workload acknowledged syncs before being killed");
    assert!(
        max_acked <= final_txid,
        "acknowledged TXID {max_acked} is beyond the final {final_txid}"
    );
    let out = dir.path().join("restored.db");
    litestream_restore(&url, &out, &[]).unwrap();
    assert_eq!(integrity(&out), "ok");
    assert_eq!(
        dump(&out),
        dump(&db),
        "restore differs from the primary after {} crashes",
        cycles()
    );
    eprintln!(
        "crash loop: {} SIGKILLs, {} acknowledged syncs (max TXID {max_acked}), final TXID {final_txid}, {} level-0 files",
        cycles(),
        acked.lines().count(),
        ranges.len()
    );
}

/// What a crash leaves in the staging directory (half-written staged files, merge
/// outputs of the level cache) is swept by the next open, whatever that open saves on
/// the way (it opens the level cache once, the compactor sharing it).
#[test]
fn an_open_after_a_crash_sweeps_its_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    python_workload(&db, &url, 1, 3, &[]);
    let staging = dir.path().join("app.db-litestream");
    // Names a dead process (pid 4194305 is above Linux's pid_max) would have left.
    let leftovers = [
        staging.join("ltx/0000000000000009-0000000000000009.tmp"),
        staging.join("levels/merge-4194305-0.tmp"),
        staging.join("levels/0/0000000000000009-0000000000000009.tmp"),
        staging.join("levels/1/0000000000000009-0000000000000009.tmp"),
    ];
    for path in &leftovers {
        std::fs::write(path, b"half").unwrap();
    }
    python_workload(&db, &url, 2, 1, &[]);
    for path in &leftovers {
        assert!(!path.exists(), "{} is swept at open", path.display());
    }
    assert_eq!(integrity(&db), "ok");
}

/// A connection per request: each clean close leaves a state a reopen resumes from, so
/// no open after the first takes a snapshot, and the replica has every TXID once.
#[test]
fn open_commit_close_cycles_resume_without_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let mut last = 0;
    for seed in 1..=4 {
        last = python_workload(&db, &url, seed, 2, &[]);
        let state = std::fs::read_to_string(dir.path().join("app.db-litestream/state.json")).unwrap();
        let state: serde_json::Value = serde_json::from_str(&state).unwrap();
        assert!(!state["closed_clean"].is_null(), "a clean close is saved: {state}");
        assert_eq!(state["txid"], last, "the close saved its last TXID: {state}");
    }
    let ranges = level0_ranges(&replica);
    assert_contiguous(&ranges);
    assert_eq!(ranges.last().unwrap().1, last);
    let snapshots = ranges.iter().filter(|(min, _)| *min == 1).count();
    assert_eq!(snapshots, 1, "only the first open snapshots: {ranges:?}");
    assert_eq!(integrity(&db), "ok");
}
