//! Point-in-time views of a replica: `litestream_set_time`, `litestream_time()` and
//! `PRAGMA litestream_time` show the database as it was, then follow again on 'latest'.

mod harness;

use harness::*;
use litestream_vfs::storage::format_rfc3339_nano;
use std::thread::sleep;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

#[test]
fn a_connection_can_look_at_the_past_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let primary = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms",
        db.display()
    );
    let write = |sql: &str| -> u64 {
        sqlite(&format!("{primary}\n{sql}\nSELECT litestream_sync(30000);"))
            .trim()
            .parse()
            .unwrap()
    };
    let t1 = write("CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    sleep(Duration::from_millis(1200));
    let between = now_ms();
    sleep(Duration::from_millis(1200));
    let t2 = write("INSERT INTO t VALUES (2);");
    sleep(Duration::from_millis(2000));
    let t3 = write("INSERT INTO t VALUES (3);");
    assert!(t1 < t2 && t2 < t3);

    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&role=replica&replica={url}\n\
         SELECT count(*), litestream_txid(), litestream_time() FROM t;\n\
         SELECT litestream_set_time('{}');\n\
         SELECT count(*), litestream_txid(), litestream_time() <= '{}' FROM t;\n\
         PRAGMA litestream_time = 'latest';\n\
         SELECT count(*), litestream_txid() FROM t;\n\
         PRAGMA litestream_time = '1 second ago';\n\
         SELECT count(*), litestream_txid() FROM t;\n\
         SELECT litestream_status() ->> '$.time' = litestream_time();",
        dir.path().join("view.db").display(),
        format_rfc3339_nano(between),
        format_rfc3339_nano(between),
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("3|{t3}|latest"), "{out}");
    assert_eq!(lines[1], t1.to_string(), "{out}");
    assert_eq!(lines[2], format!("1|{t1}|1"), "{out}");
    assert_eq!(lines[3], "latest", "{out}");
    assert_eq!(lines[4], format!("3|{t3}"), "{out}");
    // 1 s ago is between the second and the third write (2 s apart).
    assert_eq!(lines[6], format!("2|{t2}"), "{out}");
    assert_eq!(lines[7], "1", "{out}");

    // Before the first write, or not a time at all: errors that say so.
    for (when, expected) in [("1 hour ago", "no state at or before"), ("soon", "is not a time")] {
        let err = sqlite_result(&format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}\nPRAGMA litestream_time = '{when}';",
            dir.path().join("view.db").display()
        ))
        .unwrap_err();
        assert!(err.contains(expected), "{when}: {err}");
    }
}

/// Going back to a time before a table existed shows a database without it: 'no such
/// table', not the schema of the time the connection came from (whose root pages lie
/// past the end of the older database: 'database disk image is malformed'). The store
/// is `tests/data/backup-cookie-replica` (TXID 1 empty, written at 21:19:26.05; TXID 2
/// `u(y)` holding 42, at 21:19:27.634), whose two page 1s carry the same stored schema
/// cookie, as every first snapshot of a new database did before the primary kept the
/// database's cookie in its snapshots.
#[test]
fn going_back_to_before_a_table_existed_says_no_such_table() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let from = repo_root().join("tests/data/backup-cookie-replica/ltx/0");
    std::fs::create_dir_all(replica.join("ltx/0")).unwrap();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), replica.join("ltx/0").join(entry.file_name())).unwrap();
    }
    let (_, out, err) = sqlite_output(&format!(
        ".open file:{}?vfs=litestream&role=replica&replica=file://{}\n\
         SELECT 'latest', y FROM u;\n\
         SELECT litestream_set_time('2026-12-06T21:19:26.500Z');\n\
         SELECT 'empty', y FROM u;\n\
         SELECT 'tables', count(*) FROM sqlite_master;\n\
         SELECT litestream_set_time('latest');\n\
         SELECT 'again', y FROM u;",
        dir.path().join("view.db").display(),
        replica.display(),
    ));
    assert_eq!(out, "latest|42\n1\ntables|0\n2\nagain|42\n", "stderr: {err}");
    assert!(err.contains("no such table: u"), "{err}");
    assert!(!err.contains("malformed"), "{err}");
}

/// A connection pinned to a time whose files retention then removes: its reads fail
/// saying the state is no longer in the replica, and its status says so under `error`.
/// Before, each query failed with "disk I/O error" (the log said "retry the
/// transaction", which failed the same way forever) while the status said all was well
/// (found by a tester, 2026-12-07).
#[test]
fn a_pinned_time_that_retention_removes_is_an_error_the_status_shows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut writer = shell::LiveShell::start(
        dir.path(),
        "writer",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms&levels=300ms,1s\
             &snapshot_interval=1s&retention=2s&l0_retention=300ms",
            db.display()
        ),
    );
    writer.run(
        "CREATE TABLE big(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB); \
         INSERT INTO big SELECT value, 0, randomblob(400) FROM generate_series(1, 2000); \
         SELECT litestream_sync(30000);",
    );
    let mut replica = shell::LiveShell::start(
        dir.path(),
        "replica",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=100ms&cache_size=64KiB",
            dir.path().join("view.db").display()
        ),
    );
    replica.run("PRAGMA cache_size=5;");
    let pinned = replica.run(&format!(
        "SELECT litestream_set_time('{}');",
        format_rfc3339_nano(now_ms())
    ));
    assert!(pinned.trim().parse::<u64>().is_ok(), "{pinned}\n{}", replica.stderr());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        writer.run("UPDATE big SET v = v + 1, pad = randomblob(400) WHERE id % 50 = abs(random()) % 50;");
        let sum = replica.run("SELECT sum(v) FROM big;");
        if sum.trim().is_empty() {
            break; // the read failed
        }
        assert_eq!(sum.trim(), "0", "the pinned state, or an error");
        assert!(
            std::time::Instant::now() < deadline,
            "retention never removed the pinned state's files"
        );
        sleep(Duration::from_millis(200));
    }
    assert!(
        replica.stderr().contains("is no longer in the replica"),
        "{}",
        replica.stderr()
    );
    let error = replica.run("SELECT litestream_status() ->> '$.error';");
    assert!(error.contains("is no longer in the replica"), "{error}");
    // Back to following: reads work and the error is gone.
    replica.run("SELECT litestream_set_time('latest');");
    assert!(!replica.run("SELECT sum(v) > 0 FROM big;").trim().is_empty());
    assert_eq!(replica.run("SELECT litestream_status() ->> '$.error';").trim(), "");
}
