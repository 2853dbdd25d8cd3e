//! What the replicating process leaves when it restarts the WAL itself (issue 15, small
//! commits): the commits it captured since the last stage, merged page by page, in a
//! batch record, not a copy of every frame of the generation, and a SIGKILL right after
//! the restarts loses none of them and needs no snapshot.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::path::Path;

/// The worker never stages during the test (its first turn runs at open): only the
/// hand-off records hold the commits the restarts overwrite.
const SLOW: &str = "sync_interval=60s";

fn open_cmd(db: &Path, url: &str) -> String {
    format!(".open file:{}?vfs=litestream&replica={url}&{SLOW}", db.display())
}

fn number(shell: &mut LiveShell, sql: &str) -> u64 {
    let text = shell.run(sql);
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{sql} gave {text:?}: {e}"))
}

/// (kind, bytes) of each hand-off record left in the staging directory.
fn records(db: &Path) -> Vec<(String, u64)> {
    let dir = db.with_file_name("app.db-litestream").join("handoff");
    let mut found: Vec<(String, u64)> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let (_, kind) = name.split_once('.')?;
                    Some((kind.to_string(), e.metadata().ok()?.len()))
                })
                .filter(|(kind, _)| kind != "tmp")
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn restarts_hand_off_merged_pages_and_a_kill_after_them_loses_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    let mut a = LiveShell::start(dir.path(), "a", &open_cmd(&db, &url));
    a.run("PRAGMA wal_autocheckpoint=20; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    // 400 one-row commits: about 20 WAL restarts, each over a generation of 20 frames
    // that touched the same few pages.
    let mut sql = String::new();
    for i in 0..400 {
        sql.push_str(&format!("INSERT INTO t(v) VALUES ('row {i} {}');\n", "x".repeat(40)));
    }
    a.run(&sql);
    let committed = number(&mut a, "SELECT litestream_txid();");
    let left = records(&db);
    let batches: Vec<&(String, u64)> = left.iter().filter(|(kind, _)| kind == "batch").collect();
    assert!(batches.len() >= 10, "the restarts wrote batch records: {left:?}");
    // A tail holds 500 bytes of metadata and the 32-byte header before its frames.
    let copied: Vec<&(String, u64)> = left.iter().filter(|(kind, len)| kind == "tail" && *len > 532).collect();
    assert!(copied.is_empty(), "no restart copied frames: {left:?}");
    let total: u64 = left.iter().map(|(_, len)| len).sum();
    assert!(
        total < 400 * 4096 / 4,
        "records hold merged pages, not every frame: {total} bytes in {left:?}"
    );

    a.kill(); // SIGKILL: nothing staged since the table was created
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url));
    let synced = number(&mut b, "SELECT litestream_sync();");
    let status: Value = serde_json::from_str(b.run("SELECT litestream_status();").trim()).unwrap();
    assert_eq!(synced, committed, "every commit kept its TXID: {status}");
    assert_eq!(
        status["snapshots"], 0,
        "resumed from the records without a snapshot: {status}"
    );
    assert!(
        records(&db).is_empty(),
        "staging the records deleted them: {:?}",
        records(&db)
    );
    drop(b);
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(integrity(&restored), "ok");
    assert_eq!(dump(&restored), dump(&db), "the replica lacks commits the primary has");
    assert_eq!(plain_sqlite(&restored, "SELECT count(*) FROM t;").trim(), "400");
}

#[test]
fn restarts_that_meet_a_stage_in_progress_hand_off_batches_not_frame_copies() {
    // A stage every millisecond: the worker stages back to back (each stage writes and
    // fsyncs the LTX file and the state, with their directories), so most WAL restarts
    // land between a stage's cut of the queue and its saved state. Those used to copy
    // every frame of the generation (a tail) under the application's write lock; those
    // before the stage's file is in place wait for it (a kill there would otherwise
    // leave the next open a batch beginning at commits nothing on disk holds).
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=1ms",
        db.display()
    );
    let mut a = LiveShell::start_with(dir.path(), "a", &[("LITESTREAM_LOG_LEVEL", "debug")], None, &open);
    a.run("PRAGMA wal_autocheckpoint=8; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);");
    let mut sql = String::new();
    for i in 0..3000 {
        sql.push_str(&format!("INSERT INTO t(v) VALUES ('row {i} {}');\n", "z".repeat(300)));
    }
    a.run(&sql);
    let log = a.stderr();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    let (batches, tails) = (count("hand-off: batch"), count("hand-off: tail"));
    assert!(
        batches >= 50,
        "the restarts wrote batch records: {batches} batches, {tails} tails"
    );
    // A restart that meets a stage before its LTX file is in place waits for the file
    // (up to 50 ms) and then writes a batch; only one that waited in vain writes a tail.
    let waited_in_vain = count("this restart writes a tail");
    assert!(
        tails <= waited_in_vain,
        "no restart copied the generation's frames but after a vain wait ({batches} batches, {tails} tails, \
         {waited_in_vain} vain waits)"
    );
    let synced = number(&mut a, "SELECT litestream_sync();");
    assert_eq!(synced, number(&mut a, "SELECT litestream_txid();"));
    drop(a);
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db), "the replica lacks commits the primary has");
    eprintln!("restarts beside back-to-back stages: {batches} batch records, {tails} tails");
}

/// Cycles of the kill loop below (LITESTREAM_CRASH_CYCLES raises it, as in primary_crash).
fn cycles() -> u64 {
    crash_cycles(25)
}

#[test]
fn sigkills_among_restarts_every_few_commits_lose_nothing() {
    // A WAL restart every ~8 frames and a stage every 100 ms: kills land before, during
    // and after batch records, between them and the stage that deletes them, and in
    // stages that restarts raced.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for cycle in 0..cycles() {
        let mut script = format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms\n\
             PRAGMA wal_autocheckpoint=8;\n\
             CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT);\n",
            db.display()
        );
        for i in 0..4000 {
            script.push_str(&format!(
                "INSERT INTO t(v) VALUES ('{cycle} {i} {}');\n",
                "y".repeat(i % 300)
            ));
            if i % 500 == 499 {
                script.push_str("SELECT litestream_sync();\n");
            }
        }
        let path = dir.path().join("cycle.sql");
        std::fs::write(&path, script).unwrap();
        let mut child = std::process::Command::new("sqlite3")
            .args(["-batch", "-cmd"])
            .arg(format!(".load {}", extension().display()))
            .arg(":memory:")
            .stdin(std::fs::File::open(&path).unwrap())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100 + next() % 600));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let mut last = LiveShell::start(dir.path(), "last", &open_cmd(&db, &url));
    let synced = number(&mut last, "SELECT litestream_sync();");
    let local = number(&mut last, "SELECT litestream_txid();");
    assert_eq!(synced, local);
    drop(last);
    assert_eq!(integrity(&db), "ok");
    let ranges = level0_ranges(&dir.path().join("replica"));
    assert_contiguous(&ranges);
    assert_eq!(ranges.last().unwrap().1, synced, "the replica reaches the final TXID");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(integrity(&restored), "ok");
    assert_eq!(
        dump(&restored),
        dump(&db),
        "restore differs from the primary after {} kills",
        cycles()
    );
    eprintln!(
        "restart kill loop: {} SIGKILLs, {} rows, final TXID {synced}, {} level-0 files",
        cycles(),
        plain_sqlite(&db, "SELECT count(*) FROM t;").trim(),
        ranges.len()
    );
}
