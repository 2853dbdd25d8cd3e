//! Other processes and connections at the edges of replication (issue 14): commits of
//! a process that does not replicate must reach the replica however the WAL they were
//! in goes away, and what SQLite lets an application do to a replicated database must
//! either work or fail with a message.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Long enough that the replicating process never catches up on its own between the
/// steps of a test: only the hand-off records can bring it the followers' commits.
const SLOW: &str = "sync_interval=5s";

fn open_cmd(db: &Path, url: &str, params: &str) -> String {
    format!(".open file:{}?vfs=litestream&replica={url}&{params}", db.display())
}

/// A temporary directory whose `app.db` shell `a` (opened with `params`) replicates to
/// `replica/`, table `t` created and synced.
fn replicated_by_a(params: &str) -> (tempfile::TempDir, PathBuf, String, LiveShell) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    let mut a = LiveShell::start(dir.path(), "a", &open_cmd(&db, &url, params));
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    (dir, db, url, a)
}

fn status(shell: &mut LiveShell) -> Value {
    let text = shell.run("SELECT litestream_status();");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status {text:?}: {e}"))
}

fn restore_equals_primary(dir: &Path, url: &str, db: &Path) {
    let restored = dir.join("restored.db");
    let _ = std::fs::remove_file(&restored);
    litestream_restore(url, &restored, &[]).unwrap();
    assert_eq!(integrity(&restored), "ok");
    assert_eq!(dump(&restored), dump(db), "the replica lacks commits the primary has");
}

#[test]
fn a_followers_commits_reach_the_replica_when_it_truncates_the_wal_before_they_were_read() {
    let (dir, db, url, mut a) = replicated_by_a(SLOW);
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, SLOW));
    assert_eq!(status(&mut b)["role"], "follower");
    b.run("INSERT INTO t(v) VALUES ('b1'); INSERT INTO t(v) VALUES ('b2'); PRAGMA wal_checkpoint(TRUNCATE);");
    assert_eq!(std::fs::metadata(dir.path().join("app.db-wal")).unwrap().len(), 0);
    a.run("INSERT INTO t(v) VALUES ('a1'); SELECT litestream_sync();");
    let s = status(&mut a);
    assert_eq!(s["snapshots"], 1, "continued without a snapshot: {s}");
    drop(b);
    drop(a);
    restore_equals_primary(dir.path(), &url, &db);
}

#[test]
fn a_followers_commits_reach_the_replica_when_the_replicating_process_closes_last() {
    let (dir, db, url, a) = replicated_by_a(SLOW);
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, SLOW));
    b.run("INSERT INTO t(v) VALUES ('b1'); INSERT INTO t(v) VALUES ('b2');");
    drop(b);
    // A closes last at once: SQLite checkpoints and deletes the WAL before A's next
    // catch-up could have read B's commits.
    drop(a);
    assert!(
        !dir.path().join("app.db-wal").exists(),
        "the last close deleted the WAL"
    );
    let mut c = LiveShell::start(dir.path(), "c", &open_cmd(&db, &url, SLOW));
    c.run("SELECT litestream_sync();");
    assert_eq!(status(&mut c)["snapshots"], 0, "continued without a snapshot");
    drop(c);
    restore_equals_primary(dir.path(), &url, &db);
}

#[test]
fn the_replicating_process_captures_its_own_commit_after_another_process_restarted_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    let mut a = LiveShell::start(dir.path(), "a", &open_cmd(&db, &url, SLOW));
    let base: u64 = a
        .run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();")
        .trim()
        .parse()
        .unwrap();
    for i in 0..30 {
        a.run(&format!("INSERT INTO t(v) VALUES ('a{i}');"));
    }
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, SLOW));
    // B checkpoints everything and restarts the WAL with one commit: A's next frame
    // lands at an offset A's capture had already passed in the old generation.
    b.run("PRAGMA wal_checkpoint(RESTART); INSERT INTO t(v) VALUES ('b');");
    a.run("INSERT INTO t(v) VALUES ('after the restart');");
    let synced: u64 = a.run("SELECT litestream_sync();").trim().parse().unwrap();
    assert_eq!(synced, base + 32, "every commit has a TXID of its own");
    assert_eq!(status(&mut a)["snapshots"], 1, "continued without a snapshot");
    drop(b);
    drop(a);
    restore_equals_primary(dir.path(), &url, &db);
}

#[test]
fn a_followers_sync_covers_its_commits_across_wal_restarts_with_random_salts() {
    let (dir, db, url, _a) = replicated_by_a("sync_interval=200ms");
    for round in 0..6 {
        // A fresh connection of B begins the WAL again with random salts (SQLite does
        // that for a connection that has not checkpointed yet).
        let mut b = LiveShell::start(
            dir.path(),
            &format!("b{round}"),
            &open_cmd(&db, &url, "sync_interval=200ms"),
        );
        b.run(&format!(
            "INSERT INTO t(v) VALUES ('b{round}'); PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t(v) VALUES ('b{round}+');"
        ));
        let synced: u64 = b.run("SELECT litestream_sync(20000);").trim().parse().unwrap();
        let at = dir.path().join(format!("at{round}.db"));
        litestream_restore(&url, &at, &["-txid", &format!("{synced:016x}")]).unwrap();
        let rows = plain_sqlite(&at, &format!("SELECT count(*) FROM t WHERE v = 'b{round}+'"));
        assert_eq!(
            rows.trim(),
            "1",
            "round {round}: TXID {synced} returned by B's sync lacks B's commit"
        );
    }
}

#[test]
fn exclusive_locking_mode_is_refused_on_a_replicated_database() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out, stderr) = sqlite_output(&format!(
        "{}\nCREATE TABLE t(x);\nPRAGMA locking_mode=EXCLUSIVE;\nPRAGMA locking_mode=NORMAL;\nINSERT INTO t VALUES (1);\nSELECT litestream_sync() > 0;\n",
        open_cmd(&dir.path().join("app.db"), &format!("file://{}/replica", dir.path().display()), "")
    ));
    assert!(
        stderr.contains("refusing PRAGMA locking_mode=EXCLUSIVE"),
        "the pragma fails with a message: {stderr}"
    );
    assert!(out.lines().any(|l| l == "1"), "replication goes on: {out}{stderr}");
}

/// SQLite asks only the main database's file about an unqualified `PRAGMA locking_mode`,
/// and gives a database attached while the connection is in exclusive mode that mode
/// (with a wal-index in heap memory): such an attached primary's commits bypassed
/// `sync=commit` (they returned before they were stored) and replication's own
/// connection was locked out. Its writes are refused instead, before any byte reaches
/// the WAL, with the reason on stderr; back in normal mode (which SQLite leaves at the
/// end of the next write transaction, refused once more) it replicates on.
#[test]
fn exclusive_locking_mode_reaching_an_attached_primary_refuses_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let attach = |name: &str| {
        format!("ATTACH 'file:{d}/{name}.db?vfs=litestream&replica=file://{d}/{name}-replica&sync=commit' AS b;")
    };
    // Attached while the connection is in exclusive mode.
    let (_, out, stderr) = sqlite_output(&format!(
        ".open {d}/main.db\nPRAGMA locking_mode=EXCLUSIVE;\n{}\nCREATE TABLE b.t(x);\nSELECT 'tables', count(*) FROM b.sqlite_master;",
        attach("heap")
    ));
    assert!(stderr.contains("attempt to write a readonly database"), "{out}{stderr}");
    assert!(
        stderr.contains("is in exclusive locking mode"),
        "the reason is said: {stderr}"
    );
    assert!(out.contains("tables|0"), "{out}{stderr}");
    // Switched to exclusive mode by an unqualified pragma after the attach.
    let (_, out, stderr) = sqlite_output(&format!(
        ".open {d}/main.db\n{}\nCREATE TABLE b.t(x);\nINSERT INTO b.t VALUES (1);\n\
         PRAGMA locking_mode=EXCLUSIVE;\nINSERT INTO b.t VALUES (2);\n\
         PRAGMA b.locking_mode=NORMAL;\nINSERT INTO b.t VALUES (3);\nINSERT INTO b.t VALUES (4);\n\
         SELECT 'stored', litestream_sync(10000, 'b') = litestream_txid('b');",
        attach("later")
    ));
    assert_eq!(
        stderr.matches("attempt to write a readonly database").count(),
        2,
        "rows 2 and 3 are refused: {out}{stderr}"
    );
    assert!(out.contains("stored|1"), "{out}{stderr}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&format!("file://{d}/later-replica"), &restored, &[]).unwrap();
    assert_eq!(plain_sqlite(&restored, "SELECT group_concat(x) FROM t").trim(), "1,4");
    assert_eq!(dump(&restored), dump(&dir.path().join("later.db")));
}

#[test]
fn a_sync_commit_that_times_out_shows_in_the_status() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir(dir.path().join("replica.real")).unwrap();
    std::fs::write(dir.path().join("blocker"), b"not a directory").unwrap();
    std::os::unix::fs::symlink(dir.path().join("replica.real"), dir.path().join("replica")).unwrap();
    let (_, out, stderr) = sqlite_output(&format!(
        "\
.open file:{d}/app.db?vfs=litestream&replica=file://{d}/replica&sync=commit&sync_timeout=300ms&sync_interval=50ms
CREATE TABLE t(x);
SELECT 'before', litestream_status() ->> '$.sync_commit_timeouts';
.shell ln -s {d}/blocker {d}/swap && mv -T {d}/swap {d}/replica
INSERT INTO t VALUES (1);
SELECT 'after', litestream_status() ->> '$.sync_commit_timeouts', litestream_status() ->> '$.sync_commit_error' IS NOT NULL;"
    ));
    assert!(out.contains("before|0"), "{out}{stderr}");
    assert!(
        out.contains("after|1|1"),
        "the missed sync is in the status: {out}{stderr}"
    );
}

/// `sync=commit` is the connection's promise, whoever replicates: a follower's commit
/// returns once the replicating process (here `async`, with a long interval) stored it.
/// Before, it returned at once and the replica did not have it; its status did not say.
#[test]
fn a_followers_commit_with_sync_commit_returns_once_stored() {
    let (dir, db, url, a) = replicated_by_a(SLOW);
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, &format!("{SLOW}&sync=commit")));
    b.run("INSERT INTO t(v) VALUES ('b1');");
    // Read from the store while A still waits out its interval.
    let restored = dir.path().join("restored.db");
    sql_restore(&url, &restored, &[]);
    assert_eq!(
        plain_sqlite(&restored, "SELECT v FROM t").trim(),
        "b1",
        "the commit returned before it was stored"
    );
    let s = status(&mut b);
    assert_eq!(s["role"], "follower", "{s}");
    assert_eq!(s["sync_mode"], "commit", "{s}");
    assert_eq!(s["sync_commit_timeouts"], 0, "{s}");
    drop(b);
    drop(a);
}

/// A follower's `sync=commit` that cannot be met (the replicating process is stopped)
/// shows in its status, as the replicating process's own does; the commit stands.
#[test]
fn a_followers_sync_commit_that_times_out_shows_in_its_status() {
    let (dir, db, url, a) = replicated_by_a(SLOW);
    let mut b = LiveShell::start(
        dir.path(),
        "b",
        &open_cmd(&db, &url, &format!("{SLOW}&sync=commit&sync_timeout=300ms")),
    );
    a.signal(libc::SIGSTOP);
    b.run("INSERT INTO t(v) VALUES ('b1');");
    let s = status(&mut b);
    a.signal(libc::SIGCONT);
    assert_eq!(s["sync_commit_timeouts"], 1, "{s}");
    assert!(
        s["sync_commit_error"].as_str().is_some_and(|e| e.contains("timed out")),
        "{s}"
    );
    assert_eq!(plain_sqlite(&db, "SELECT v FROM t").trim(), "b1", "the commit stands");
}

/// A follower's `litestream_sync()` wakes the replicating process (its sync request is
/// watched) instead of waiting for that process's next turn: with an interval of an
/// hour, the sync is still answered within its 10 s timeout. Before, it timed out.
#[test]
fn a_followers_sync_is_answered_before_the_replicating_process_interval() {
    let hour = "sync_interval=1h";
    let (dir, db, url, _a) = replicated_by_a(hour);
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, hour));
    for n in 1..=3 {
        let out = b.run(&format!(
            "INSERT INTO t(v) VALUES ('b{n}'); SELECT litestream_sync(10000) > 0;"
        ));
        assert_eq!(out.trim(), "1", "sync {n}: {out}{}", b.stderr());
    }
    assert_eq!(status(&mut b)["role"], "follower");
    let restored = dir.path().join("restored.db");
    sql_restore(&url, &restored, &[]);
    assert_eq!(plain_sqlite(&restored, "SELECT count(*) FROM t").trim(), "3");
}

/// An idle replicating process stops listing its request, hand-off and staging
/// directories while nothing arrives in them (`primary/quiet_dir.rs`): after 7 s of
/// quiet a follower's request, its hand-off record (the WAL truncated under the
/// replicating process) and the staged files that follow are all still found, and
/// the sync returns within its timeout with every commit stored.
#[test]
fn a_followers_sync_after_a_long_quiet_is_answered_with_every_commit() {
    let (dir, db, url, _a) = replicated_by_a("sync_interval=200ms");
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, "sync_interval=200ms"));
    std::thread::sleep(std::time::Duration::from_secs(7));
    let out = b.run(
        "INSERT INTO t(v) VALUES ('b1'); PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t(v) VALUES ('b2'); \
         SELECT litestream_sync(5000) > 0;",
    );
    assert!(out.trim().ends_with('1'), "the sync after a quiet: {out}{}", b.stderr());
    restore_equals_primary(dir.path(), &url, &db);
}

/// A replicating process that is stopped (SIGSTOP: it keeps its lock, nobody takes
/// over) takes no hand-off records; a follower writing and restarting the WAL meanwhile
/// stops writing them at its `max_staging` instead of filling the disk (a workers
/// tester: 1.29 GB in 40 s), and once the stopped process runs again a snapshot covers
/// what the missing records would have: every commit is stored.
#[test]
fn a_stopped_replicating_process_bounds_the_hand_off_records_and_a_snapshot_covers_the_rest() {
    let (dir, db, url, a) = replicated_by_a("sync_interval=100ms");
    let mut b = LiveShell::start(
        dir.path(),
        "b",
        &open_cmd(&db, &url, "sync_interval=100ms&max_staging=256KiB"),
    );
    a.signal(libc::SIGSTOP);
    for _ in 0..12 {
        b.run(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25) \
             INSERT INTO t(v) SELECT hex(randomblob(2000)) FROM n; PRAGMA wal_checkpoint(TRUNCATE);",
        );
    }
    let handoff = dir.path().join("app.db-litestream/handoff");
    let held: u64 = std::fs::read_dir(&handoff)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    a.signal(libc::SIGCONT);
    // 12 restarts of ~100 KB: over 1 MB unbounded; the limit plus one record at most.
    assert!(held < 256 * 1024 + 200_000, "hand-off records hold {held} bytes");
    assert!(b.stderr().contains("writing no more"), "{}", b.stderr());
    let out = b.run("SELECT litestream_sync(30000) > 0;");
    assert!(out.trim().ends_with('1'), "{out}{}", b.stderr());
    restore_equals_primary(dir.path(), &url, &db);
}

/// A follower whose commits wait more than 10 s (3 `sync_interval`s if longer) because
/// the replicating process stores nothing has a status `error` saying so, naming that
/// process; once it stores again the error is gone. Before, a worker polling its own
/// status saw `error` null through an outage (an operations tester).
#[test]
fn a_followers_status_says_when_its_commits_wait_too_long_to_be_stored() {
    let (dir, db, url, a) = replicated_by_a("sync_interval=100ms");
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, "sync_interval=100ms"));
    a.signal(libc::SIGSTOP);
    b.run("INSERT INTO t(v) VALUES ('b1');");
    assert!(status(&mut b)["error"].is_null());
    std::thread::sleep(std::time::Duration::from_secs(11));
    let s = status(&mut b);
    a.signal(libc::SIGCONT);
    let error = s["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("have waited") && error.contains("has stored nothing"),
        "{s}"
    );
    assert_eq!(b.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    assert!(status(&mut b)["error"].is_null());
}

/// A process that opens the database read-only (`mode=ro`: a reporting worker) and is
/// first to open it holds the replication role like any other: it captures the writers'
/// commits from the WAL and their hand-off records, answers their syncs and uploads.
#[test]
fn a_read_only_connection_that_replicates_carries_the_writers_commits() {
    let (dir, db, url, a) = replicated_by_a(SLOW);
    drop(a);
    let mut reader = LiveShell::start(dir.path(), "reader", &open_cmd(&db, &url, &format!("{SLOW}&mode=ro")));
    let s = status(&mut reader);
    assert_eq!(
        (s["role"].as_str(), s["replicating"].as_bool()),
        (Some("primary"), Some(true)),
        "{s}"
    );
    let mut writer = LiveShell::start(dir.path(), "writer", &open_cmd(&db, &url, SLOW));
    assert_eq!(status(&mut writer)["role"], "follower");
    let out = writer.run(
        "INSERT INTO t(v) VALUES ('w1'); PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t(v) VALUES ('w2'); \
         SELECT litestream_sync(10000) > 0;",
    );
    assert_eq!(
        out.lines().last(),
        Some("1"),
        "the writer's sync: {out}{}",
        writer.stderr()
    );
    assert_eq!(reader.run("SELECT group_concat(v) FROM t;").trim(), "w1,w2");
    assert_eq!(status(&mut reader)["snapshots"], 0, "continued without a snapshot");
    drop(writer);
    drop(reader);
    restore_equals_primary(dir.path(), &url, &db);
}

/// Polls `shell`'s status until `done` holds (or `secs` pass); the last status.
fn status_until(shell: &mut LiveShell, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let s = status(shell);
        if done(&s) || std::time::Instant::now() > deadline {
            return s;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// A worker asked for its status while the replicating process's uploads fail says why,
/// in the replicating process's words, before its own commits have waited long; the
/// error goes when the uploads succeed again. Before, a follower's `error` stayed null
/// for 10 s and then said only that its commits waited.
#[test]
fn a_followers_status_carries_the_replicating_processs_error() {
    let (dir, db, url, mut a) = replicated_by_a("sync_interval=100ms");
    let mut b = LiveShell::start(dir.path(), "b", &open_cmd(&db, &url, "sync_interval=100ms"));
    assert_eq!(status(&mut b)["role"], "follower");
    let replica = dir.path().join("replica");
    let aside = dir.path().join("replica-aside");
    std::fs::rename(&replica, &aside).unwrap();
    std::fs::write(&replica, b"not a directory").unwrap();
    b.run("INSERT INTO t(v) VALUES ('b1');");
    let s = status_until(&mut a, 10, |s| s["error"].is_string());
    let theirs = s["error"]
        .as_str()
        .unwrap_or_else(|| panic!("the replicating process shows no error: {s}"));
    let s = status_until(&mut b, 10, |s| s["error"].is_string());
    let error = s["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("the replicating process (pid") && error.contains("reports"),
        "{s}"
    );
    assert!(
        s["unstored_seconds"].as_f64().unwrap() < 10.0,
        "said before the 10 s of waiting: {s}"
    );
    assert!(s["replicated_by"]["error"].is_string(), "{s}");
    assert!(s["replicated_by"]["error_since_ms"].is_i64(), "{s}");
    let said = s["replicated_by"]["error"].as_str().unwrap();
    assert!(
        theirs.split(':').next() == said.split(':').next(),
        "its own words: {theirs} / {said}"
    );

    std::fs::remove_file(&replica).unwrap();
    std::fs::rename(&aside, &replica).unwrap();
    assert_eq!(
        b.run("SELECT litestream_sync(20000) > 0;").trim(),
        "1",
        "{}",
        b.stderr()
    );
    let s = status_until(&mut b, 10, |s| s["error"].is_null());
    assert!(s["error"].is_null() && s["replicated_by"]["error"].is_null(), "{s}");
    drop(b);
    drop(a);
    restore_equals_primary(dir.path(), &url, &db);
}
