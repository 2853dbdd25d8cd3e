//! Hydration (`hydrate=path`): the replica downloads the whole database into a local
//! file in the background; once complete, reads need no store at all, and the file
//! follows new TXIDs.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Waits until the hydration file holds the newest state.
fn wait_hydrated(shell: &mut LiveShell) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status: serde_json::Value =
            serde_json::from_str(&shell.run("SELECT litestream_status() ->> '$.hydration';")).unwrap();
        if status["complete"] == true {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "not hydrated: {status}\n{}",
            shell.stderr()
        );
        sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_hydrated_replica_reads_locally_and_keeps_following() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let local = dir.path().join("hydrated.db");
    let t1 = python_workload(&db, &url, 11, 200, &["sync_interval=100ms"]);

    // A page cache too small for the database: reads must come from somewhere else.
    let mut r = LiveShell::start(
        dir.path(),
        "shell",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=50ms&cache_size=4k&hydrate={}",
            dir.path().join("view.db").display(),
            local.display()
        ),
    );
    let status = wait_hydrated(&mut r);
    assert_eq!(status["txid"], t1, "{status}");
    assert_eq!(status["pages_local"], status["pages"], "{status}");

    // The store disappears: everything is still served, from the local file.
    let away = dir.path().join("replica-away");
    std::fs::rename(&replica, &away).unwrap();
    assert_eq!(r.run(".dump"), dump(&db), "{}", r.stderr());
    assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    let local_reads = |r: &mut LiveShell| -> u64 {
        r.run("SELECT litestream_status() ->> '$.hydration.local_reads';")
            .trim()
            .parse()
            .unwrap()
    };
    assert!(local_reads(&mut r) > 10);
    // While idle and complete, the file is the database at that TXID.
    let image = std::process::Command::new("sqlite3")
        .arg(format!("file:{}?immutable=1", local.display()))
        .arg(".dump")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&image.stdout), dump(&db));

    // The store comes back with new TXIDs: the replica and its file follow.
    std::fs::rename(&away, &replica).unwrap();
    let t2 = python_workload(&db, &url, 12, 100, &["sync_interval=100ms"]);
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string()
    );
    let status = wait_hydrated(&mut r);
    assert_eq!(status["txid"], t2, "{status}");
    std::fs::rename(&replica, &away).unwrap();
    assert_eq!(r.run(".dump"), dump(&db), "{}", r.stderr());
}

#[test]
fn two_processes_never_share_one_hydration_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let local = dir.path().join("hydrated.db");
    let mut primary = LiveShell::start(
        dir.path(),
        "primary",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            db.display()
        ),
    );
    // Rows over many pages, every one of which the update below changes.
    primary.run(
        "CREATE TABLE t(k INTEGER PRIMARY KEY, v, pad); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
         INSERT INTO t SELECT i, 0, randomblob(200) FROM n;",
    );
    let t1: u64 = primary.run("SELECT litestream_sync();").trim().parse().unwrap();
    let view = |name: &str, poll: &str| {
        format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval={poll}&cache_size=4k&hydrate={}",
            dir.path().join(name).display(),
            local.display()
        )
    };
    // Process A hydrates at t1 and stays there (it polls once an hour).
    let mut a = LiveShell::start(dir.path(), "a", &view("a.db", "1h"));
    assert_eq!(wait_hydrated(&mut a)["txid"], t1);

    primary.run("UPDATE t SET v = 1;");
    let t2: u64 = primary.run("SELECT litestream_sync();").trim().parse().unwrap();
    // Process B names the same file while A uses it.
    let mut b = LiveShell::start(dir.path(), "b", &view("b.db", "50ms"));
    let started = Instant::now();
    let status = loop {
        let status: serde_json::Value =
            serde_json::from_str(&b.run("SELECT litestream_status() ->> '$.hydration';")).unwrap();
        if status["complete"] == true || status["waiting_for_file"] == true {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{status}\n{}", b.stderr());
        sleep(Duration::from_millis(50));
    };
    // A, still at t1, reads its pages from the file: they must be t1's, not B's.
    assert_eq!(
        a.run("SELECT litestream_txid(), count(*), sum(v) FROM t;").trim(),
        format!("{t1}|2000|0"),
        "{}",
        a.stderr()
    );
    assert_eq!(status["waiting_for_file"], true, "B must not take A's file: {status}");
    assert!(b.stderr().contains("in use by another process"), "{}", b.stderr());
    // B answers from the store meanwhile.
    assert_eq!(
        b.run(&format!("SELECT litestream_wait({t2}, 30000), sum(v) FROM t;"))
            .trim(),
        format!("{t2}|2000"),
        "{}",
        b.stderr()
    );
    // Once A is gone, B takes the file over.
    drop(a);
    let status = wait_hydrated(&mut b);
    assert_eq!(
        (status["txid"].as_u64(), status["waiting_for_file"].as_bool()),
        (Some(t2), Some(false))
    );
    assert_eq!(status["pages_local"], status["pages"], "{status}");
    assert_eq!(b.run("SELECT sum(v) FROM t;").trim(), "2000");
}

/// A hydration that fails on every retry (here a page frame the store corrupted) is the
/// replica's `error` in `litestream_status()`, not only `hydration.last_error` under a
/// top-level null: reads then come from the store, and the operator should know why.
/// Its retries back off: retried every `poll_interval`, one on a full disk downloaded
/// ~1 MB/s for as long as the disk stayed full, with a WARN each time (a tester).
#[test]
fn a_hydration_that_keeps_failing_is_the_replicas_error_and_backs_off() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // Compaction off: a level-1 window boundary passing during the session would merge
    // the level-0 files into a level-1 file, which hydration would read instead of the
    // damaged one.
    open_and_sync(
        &dir.path().join("app.db"),
        &format!("{url}&compaction=off"),
        "CREATE TABLE t(body TEXT);\n\
         INSERT INTO t(body) SELECT hex(randomblob(500)) FROM generate_series(1, 500);",
    );
    // Smash the compressed bytes of the last page of the newest level-0 file.
    let (min, max) = *level0_ranges(&replica).last().unwrap();
    let path = replica.join(format!("ltx/0/{min:016x}-{max:016x}.ltx"));
    let mut bytes = std::fs::read(&path).unwrap();
    let entry = *litestream_vfs::ltx::decode_file(&bytes)
        .unwrap()
        .index
        .entries()
        .last()
        .unwrap();
    bytes[entry.offset as usize + 10..(entry.offset + entry.size as u64) as usize].fill(0xff);
    std::fs::write(&path, &bytes).unwrap();

    let mut r = LiveShell::start_with(
        dir.path(),
        "shell",
        &[("LITESTREAM_LOG_LEVEL", "debug")],
        None,
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=50ms&hydrate={}",
            dir.path().join("view.db").display(),
            dir.path().join("hydrated.db").display()
        ),
    );
    let started = Instant::now();
    loop {
        // One status, read whole: three calls could straddle the failure.
        let out = r.run("SELECT litestream_status();");
        let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
        if let Some(last) = status["hydration"]["last_error"].as_str() {
            let error = status["error"].as_str().unwrap_or_default();
            assert!(error.contains("hydration") && error.contains(last), "{status}");
            assert_eq!(status["hydration"]["complete"], false, "{status}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "hydration never failed: {out}"
        );
        sleep(Duration::from_millis(50));
    }
    // 3 s of retries: every 50 ms, ~60 attempts; backing off from 50 ms, 6.
    sleep(Duration::from_secs(3));
    let log = r.stderr();
    let attempts = log.lines().filter(|l| l.contains("hydration failed")).count();
    let warnings = log
        .lines()
        .filter(|l| l.contains("hydration failed") && l.contains("WARN"))
        .count();
    println!("~3 s of a hydration failing: {attempts} attempts, {warnings} WARN lines");
    assert!(attempts <= 12, "hydration retried {attempts} times in ~3 s:\n{log}");
    assert!(warnings <= 2, "the same failure logged {warnings} times:\n{log}");
}

/// The whole `litestream_status()` once hydration either completed or failed.
fn hydration_settled(r: &mut LiveShell) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let out = r.run("SELECT litestream_status();");
        let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"));
        if status["hydration"]["complete"] == true || status["hydration"]["last_error"].is_string() {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "hydration neither completed nor failed: {status}\n{}",
            r.stderr()
        );
        sleep(Duration::from_millis(50));
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `hydrate=` naming a file that is not a hydration file (here an unrelated database)
/// leaves it exactly as it was, permissions too, instead of emptying it and filling it
/// with the replica's pages; the replica reads from the store and its status says why.
#[test]
fn hydrate_naming_an_unrelated_database_leaves_it_unchanged() {
    let (dir, db, url) = replicated_with(
        "CREATE TABLE t(body TEXT);\n\
         INSERT INTO t(body) SELECT hex(randomblob(500)) FROM generate_series(1, 300);",
    );
    let precious = dir.path().join("precious.db");
    plain_sqlite(&precious, "CREATE TABLE p(x); INSERT INTO p VALUES ('keep me');");
    std::fs::set_permissions(&precious, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let before = std::fs::read(&precious).unwrap();

    let mut r = LiveShell::start(
        dir.path(),
        "shell",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=50ms&hydrate={}",
            dir.path().join("view.db").display(),
            precious.display()
        ),
    );
    let status = hydration_settled(&mut r);
    let last = status["hydration"]["last_error"].as_str().unwrap_or_default();
    assert!(
        last.contains("is an existing file that is not a hydration file; refusing to overwrite it"),
        "{status}"
    );
    assert!(status["error"].as_str().unwrap_or_default().contains(last), "{status}");
    assert_eq!(status["hydration"]["complete"], false, "{status}");
    assert_eq!(
        status["hydration"]["waiting_for_file"], false,
        "nothing will free it: {status}"
    );
    // Reads come from the store.
    assert_eq!(r.run("SELECT count(*) FROM t;").trim(), "300", "{}", r.stderr());
    assert_eq!(r.run(".dump"), dump(&db));
    // Later rounds (every poll_interval) refuse it too.
    sleep(Duration::from_millis(500));
    drop(r);
    assert!(std::fs::read(&precious).unwrap() == before, "the database was changed");
    assert_eq!(mode(&precious), 0o644);
    assert_eq!(plain_sqlite(&precious, "SELECT x FROM p;").trim(), "keep me");
}

/// `hydrate=` naming the database file of a live primary in another process: the file is
/// left alone, so the primary's later commits, a snapshot, and a restore of its replica
/// all hold the primary's rows. (It was emptied and filled with another database's
/// pages; the primary answered from its cache, was "malformed" once closed, and
/// snapshotted the wreck into its backup.)
#[test]
fn hydrate_naming_a_live_primarys_database_leaves_the_primary_intact() {
    // The replica the reader follows: another database.
    let (dir, _, other_url) = replicated_with(
        "CREATE TABLE o(body TEXT);\n\
         INSERT INTO o(body) SELECT hex(randomblob(300)) FROM generate_series(1, 400);",
    );
    let db = dir.path().join("live.db");
    let url = format!("file://{}", dir.path().join("live-replica").display());
    let mut primary = LiveShell::start(
        dir.path(),
        "primary",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            db.display()
        ),
    );
    primary.run(
        "CREATE TABLE a(i INTEGER PRIMARY KEY, v TEXT);\n\
         INSERT INTO a(v) SELECT hex(randomblob(100)) FROM generate_series(1, 2000);\n\
         SELECT litestream_sync();\n\
         PRAGMA wal_checkpoint(TRUNCATE);",
    );
    let mode_before = mode(&db);

    let mut r = LiveShell::start(
        dir.path(),
        "reader",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={other_url}&poll_interval=50ms&hydrate={}",
            dir.path().join("view.db").display(),
            db.display()
        ),
    );
    let status = hydration_settled(&mut r);
    let last = status["hydration"]["last_error"].as_str().unwrap_or_default();
    assert!(last.contains("refusing to overwrite it"), "{status}");
    assert!(status["error"].as_str().unwrap_or_default().contains(last), "{status}");
    assert_eq!(r.run("SELECT count(*) FROM o;").trim(), "400", "{}", r.stderr());
    sleep(Duration::from_millis(300));
    drop(r);

    let out = primary.run(
        "INSERT INTO a(v) SELECT hex(randomblob(100)) FROM generate_series(1, 10);\n\
         SELECT litestream_snapshot() > 0;\n\
         INSERT INTO a(v) VALUES ('after the snapshot');\n\
         SELECT litestream_sync() > 0;\n\
         SELECT count(*) FROM a;",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["1", "1", "2011"],
        "{}",
        primary.stderr()
    );
    drop(primary);
    assert_eq!(integrity(&db), "ok");
    assert_eq!(plain_sqlite(&db, "SELECT count(*) FROM a;").trim(), "2011");
    assert_eq!(mode(&db), mode_before);
    let restored = dir.path().join("restored.db");
    sql_restore(&url, &restored, &[]);
    assert_eq!(dump(&restored), dump(&db));
}

/// A hydration file an earlier open made (its marker beside it) is the replica's own:
/// a later open takes it again and hydrates, with no error.
#[test]
fn a_hydration_file_made_by_an_earlier_open_is_reused() {
    let (dir, db, url) = replicated_with(
        "CREATE TABLE t(body TEXT);\n\
         INSERT INTO t(body) SELECT hex(randomblob(500)) FROM generate_series(1, 300);",
    );
    let local = dir.path().join("hydrated.db");
    let open = format!(
        ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=50ms&cache_size=4k&hydrate={}",
        dir.path().join("view.db").display(),
        local.display()
    );
    let mut first = LiveShell::start(dir.path(), "first", &open);
    wait_hydrated(&mut first);
    drop(first);
    assert!(std::fs::metadata(&local).unwrap().len() > 0);

    let mut again = LiveShell::start(dir.path(), "again", &open);
    let status = hydration_settled(&mut again);
    assert_eq!(status["hydration"]["complete"], true, "{status}");
    assert_eq!(status["hydration"]["last_error"], serde_json::Value::Null, "{status}");
    assert_eq!(status["error"], serde_json::Value::Null, "{status}");
    assert_eq!(again.run(".dump"), dump(&db));
    assert!(status["hydration"]["pages_written"].as_u64().unwrap() > 0, "{status}");
}

/// Commits `rows` rows tagged `tag` to table `table` (each its own commit) of a primary
/// at `db` on `url`, and returns the TXID stored.
fn write_tagged(db: &Path, url: &str, table: &str, tag: &str, rows: u32, pad: u32) -> u64 {
    let mut sql = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n\
         CREATE TABLE IF NOT EXISTS {table}(id INTEGER PRIMARY KEY, tag TEXT, pad BLOB);\n",
        db.display()
    );
    for _ in 0..rows {
        sql.push_str(&format!(
            "INSERT INTO {table}(tag, pad) VALUES ('{tag}', zeroblob({pad}));\n"
        ));
    }
    sql.push_str("SELECT litestream_sync(10000);");
    sqlite(&sql).trim().lines().last().unwrap().parse().unwrap()
}

/// The database at a replica's URL deleted with its replica, and another one started
/// there: replicas open across the change serve only the new database once it is
/// stored, never the old one's cached or hydrated pages inside it. Before, they appended
/// the new database's files to the old state once its TXIDs passed the old ones, with
/// the old pages carried over (a tester's: 29 wrong rows, a hydrated file failing
/// `integrity_check`, no error).
#[test]
fn replicas_open_across_a_database_replaced_at_their_url_serve_only_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let old_txid = write_tagged(&db, &url, "t", "A", 40, 300);
    let open = |label: &str, extra: &str| {
        LiveShell::start(
            dir.path(),
            label,
            &format!(
                ".open file:{}/{label}.db?vfs=litestream&role=replica&replica={url}&poll_interval=100ms{extra}",
                dir.path().display()
            ),
        )
    };
    let hydrated_path = dir.path().join("hydrated-copy.db");
    let mut plain = open("plain", "");
    let mut hydrated = open("hydrated", &format!("&hydrate={}", hydrated_path.display()));
    for replica in [&mut plain, &mut hydrated] {
        assert_eq!(
            replica.run("SELECT count(*), min(tag), max(tag) FROM t;").trim(),
            "40|A|A"
        );
    }
    assert_eq!(wait_hydrated(&mut hydrated)["txid"], old_txid);

    std::fs::remove_dir_all(&replica).unwrap();
    std::fs::remove_dir_all(dir.path().join("app.db-litestream")).unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    // The new database's table t is written by TXIDs the old one also had, so its pages
    // come from files ending at or before the TXID the replicas served: the ones a
    // carry-over would have filed the old pages under. Table t2 takes it past that TXID.
    assert!(write_tagged(&db, &url, "t", "B", 40, 1000) <= old_txid);
    let new_txid = write_tagged(&db, &url, "t2", "B", 50, 10);
    assert!(new_txid > old_txid, "the new database passes the old one's TXID");

    for replica in [&mut plain, &mut hydrated] {
        let reached = replica.run(&format!("SELECT litestream_wait({new_txid}, 30000);"));
        assert_eq!(reached.trim(), new_txid.to_string(), "{}", replica.stderr());
        assert_eq!(
            replica
                .run("SELECT count(*), min(tag), max(tag) FROM t; SELECT count(*) FROM t2; PRAGMA integrity_check;")
                .trim(),
            "40|B|B\n50\nok",
            "{}",
            replica.stderr()
        );
        assert!(
            replica.stderr().contains("holds another database now"),
            "{}",
            replica.stderr()
        );
    }
    assert_eq!(wait_hydrated(&mut hydrated)["txid"], new_txid);
    assert_eq!(
        plain_sqlite(
            &hydrated_path,
            "SELECT count(*), min(tag), max(tag) FROM t; PRAGMA integrity_check;"
        )
        .trim(),
        "40|B|B\nok"
    );
}
