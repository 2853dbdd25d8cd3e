//! Invariant 3: a discontinuity the primary cannot explain becomes a full snapshot at
//! the next TXID, never a gap and never silent divergence.

mod harness;

use harness::shell::LiveShell;
use harness::*;

#[test]
fn a_database_edited_without_the_vfs_is_snapshotted_at_the_next_txid() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let first = open_and_sync(&db, &url, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    // Someone edits the file with a plain sqlite3, bypassing the VFS.
    plain_sqlite(&db, "INSERT INTO t VALUES (2); DELETE FROM t WHERE x = 1;");
    let second = open_and_sync(&db, &url, "INSERT INTO t VALUES (3);");
    assert!(second > first);
    let ranges = level0_ranges(&replica);
    assert_contiguous(&ranges);
    // The file right after `first` is a full snapshot (it holds every page).
    let snapshot = ranges.iter().find(|r| r.0 == first + 1).unwrap();
    let name = format!("{:016x}-{:016x}.ltx", snapshot.0, snapshot.1);
    let bytes = std::fs::read(replica.join("ltx/0").join(name)).unwrap();
    let file = litestream_vfs::ltx::decode_file(&bytes).unwrap();
    assert_eq!(
        file.pages.len() as u32,
        file.header.commit,
        "every page of the database"
    );
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn local_state_older_than_the_replica_is_snapshotted_after_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    open_and_sync(&db, &url, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    // Keep an old copy of the database and its replication state...
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::copy(&db, old.join("app.db")).unwrap();
    copy_dir(&dir.path().join("app.db-litestream"), &old.join("app.db-litestream"));
    let ahead = open_and_sync(&db, &url, "INSERT INTO t VALUES (2); INSERT INTO t VALUES (3);");
    // ...and go back to it, as a restore from a disk backup would.
    std::fs::remove_file(&db).unwrap();
    std::fs::remove_dir_all(dir.path().join("app.db-litestream")).unwrap();
    std::fs::rename(old.join("app.db"), &db).unwrap();
    std::fs::rename(old.join("app.db-litestream"), dir.path().join("app.db-litestream")).unwrap();
    let after = open_and_sync(&db, &url, "INSERT INTO t VALUES (4);");
    assert!(
        after > ahead,
        "TXIDs continue after the replica's ({ahead}), got {after}"
    );
    assert_contiguous(&level0_ranges(&replica));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db), "the replica now follows the local database");
}

/// A restart must not forget a snapshot it owes: here the first open after an edit made
/// without the VFS is killed while the snapshot cannot start (another process holds the
/// write lock). The next open must still snapshot, or the edit never reaches the replica.
#[test]
fn a_snapshot_killed_before_it_was_staged_is_taken_after_the_restart() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    open_and_sync(&db, &url, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    // A plain SQLite process (no VFS) commits a new table into the WAL and then holds the
    // write lock, so the VFS's snapshot cannot begin.
    let script = format!(
        "import sqlite3, sys, time\n\
         c = sqlite3.connect({db:?}, isolation_level=None)\n\
         c.execute('CREATE TABLE u(y)'); c.execute(\"INSERT INTO u VALUES ('outside')\")\n\
         c.execute('BEGIN IMMEDIATE')\n\
         print('locked', flush=True)\n\
         time.sleep(60)\n",
        db = db.display().to_string()
    );
    let mut holder = Command::new(python())
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "locked");
    // The VFS opens (the edit is a discontinuity: a snapshot is due) and is killed.
    let mut shell = Command::new("sqlite3")
        .arg("-batch")
        .arg("-cmd")
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let script = format!(
            ".open file:{}?vfs=litestream&replica={url}\nSELECT count(*) FROM t;\nSELECT litestream_sync(20000);\n",
            db.display()
        );
        shell.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    }
    // It answered the query: the primary is open and owes a snapshot it cannot take.
    let mut answer = String::new();
    BufReader::new(shell.stdout.take().unwrap())
        .read_line(&mut answer)
        .unwrap();
    assert_eq!(answer.trim(), "1");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    shell.kill().unwrap();
    shell.wait().unwrap();
    // The holder dies too (SIGKILL): its commit stays in the WAL, never checkpointed.
    holder.kill().unwrap();
    holder.wait().unwrap();
    open_and_sync(&db, &url, "INSERT INTO t VALUES (2);");
    assert_contiguous(&level0_ranges(&replica));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(integrity(&restored), "ok");
    assert_eq!(plain_sqlite(&restored, "SELECT y FROM u;").trim(), "outside");
    assert_eq!(dump(&restored), dump(&db));
}

/// A snapshot that finds the write lock taken (a long transaction, here by another
/// process) waits and retries quietly: no warning for a normal condition, and the
/// snapshot is taken once the lock is free.
#[test]
fn a_snapshot_waits_quietly_for_a_long_write_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    plain_sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
    );
    // Another process holds the write lock for two seconds, committing nothing.
    let mut holder = std::process::Command::new(python())
        .arg("-c")
        .arg(
            "import sqlite3, sys, time\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN IMMEDIATE')\n\
             print('locked', flush=True)\n\
             time.sleep(2)\n\
             c.execute('ROLLBACK')\n",
        )
        .arg(&db)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(holder.stdout.as_mut().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    // The first open through the VFS owes a snapshot; it cannot start while the lock is held.
    let mut shell = std::process::Command::new("sqlite3")
        .arg("-batch")
        .arg("-bail")
        .arg("-cmd")
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .env("LITESTREAM_LOG_LEVEL", "debug")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut shell.stdin.take().unwrap(),
        format!(
            ".open file:{}?vfs=litestream&replica={url}\nSELECT litestream_sync(30000);\n",
            db.display()
        )
        .as_bytes(),
    )
    .unwrap();
    let out = shell.wait_with_output().unwrap();
    assert!(holder.wait().unwrap().success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("snapshot waits for a write transaction to end"),
        "the snapshot met the lock: {stderr}"
    );
    assert!(!stderr.contains("WARN"), "no warning for waiting: {stderr}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// A snapshot puts every hand-off record written so far behind it. Records already
/// staged are deleted, so when it finds none the count of records followed must stay
/// where it was, not go back to 0: the record of the next WAL restart was then taken for
/// one after a missing record, was not followed, and cost a second, needless snapshot
/// (seen after each snapshot in bench/threads_writer, four threads on one database).
#[test]
fn the_first_wal_restart_after_a_snapshot_needs_no_second_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let mut shell = harness::shell::LiveShell::start(
        dir.path(),
        "w",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            db.display()
        ),
    );
    let status = |shell: &mut harness::shell::LiveShell| -> serde_json::Value {
        serde_json::from_str(shell.run("SELECT litestream_status();").trim()).unwrap()
    };
    shell.run("CREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT litestream_sync(30000);");
    // A restart through the VFS: its record is followed, staged, then deleted.
    shell.run("PRAGMA wal_checkpoint(RESTART); INSERT INTO t VALUES (2); SELECT litestream_sync(30000);");
    let before = status(&mut shell);
    // A restart behind the VFS's back: no record connects it, so a snapshot.
    plain_sqlite(&db, "PRAGMA wal_checkpoint(RESTART); INSERT INTO t VALUES (3);");
    shell.run("INSERT INTO t VALUES (4); SELECT litestream_sync(30000);");
    let snapshotted = status(&mut shell);
    assert_eq!(
        snapshotted["snapshots"].as_u64(),
        before["snapshots"].as_u64().map(|n| n + 1),
        "{snapshotted}"
    );
    // The next restart through the VFS, then a few engine turns to follow its record.
    shell.run("PRAGMA wal_checkpoint(RESTART); INSERT INTO t VALUES (5); SELECT litestream_sync(30000);");
    std::thread::sleep(std::time::Duration::from_millis(800));
    shell.run("INSERT INTO t VALUES (6); SELECT litestream_sync(30000);");
    let after = status(&mut shell);
    assert_eq!(
        after["snapshots"],
        snapshotted["snapshots"],
        "{after}\n{}",
        shell.stderr()
    );
    drop(shell);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(
        plain_sqlite(&restored, "SELECT group_concat(x) FROM t").trim(),
        "1,2,3,4,5,6"
    );
}

/// Disaster recovery as Litestream documents it: restore the database with the CLI, then
/// start the application on the same replica. The restored file notes which replica
/// state it is, so the open continues the replica (the next TXID, no snapshot) instead of
/// refusing it as another database's. Before, it asked for `takeover=1`.
#[test]
fn a_database_restored_with_the_cli_continues_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let lost = dir.path().join("lost.db");
    let before = open_and_sync(&lost, &url, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);");
    let db = dir.path().join("app.db");
    let restore = our_cli_restore(&url, &db, &[]);
    assert!(restore.status.success(), "{}", String::from_utf8_lossy(&restore.stderr));
    let after = open_and_sync(&db, &url, "INSERT INTO t VALUES (3);");
    assert_eq!(
        after,
        before + 1,
        "the restored database's commit is the replica's next TXID"
    );
    assert!(!is_full_snapshot(&replica, after), "no snapshot was needed");
    assert_contiguous(&level0_ranges(&replica));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// A staging directory on storage that did not survive (an explicit `staging=` on a
/// container's scratch space, or deleted by hand) beside a database closed cleanly: the
/// close noted the TXID on the database file, and the next open continues the replica.
/// Before, it refused the database as another one's.
#[test]
fn a_cleanly_closed_database_whose_staging_directory_is_lost_continues_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let db = dir.path().join("app.db");
    let before = open_and_sync(&db, &url, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    std::fs::remove_dir_all(dir.path().join("app.db-litestream")).unwrap();
    let after = open_and_sync(&db, &url, "INSERT INTO t VALUES (2);");
    assert_eq!(after, before + 1);
    assert!(!is_full_snapshot(&replica, after), "no snapshot was needed");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// What the note cannot prove is refused as before, saying why: a restored database
/// written since without the VFS, one restored to an earlier TXID than the replica's
/// newest, one opened on another replica; and one that `litestream restore` (which
/// notes nothing) wrote.
#[test]
fn a_database_the_note_does_not_prove_is_refused_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let first = open_and_sync(
        &dir.path().join("a.db"),
        &url,
        "CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    );
    open_and_sync(&dir.path().join("a.db"), &url, "INSERT INTO t VALUES (2);");
    let other_url = format!("file://{}", dir.path().join("other").display());
    open_and_sync(&dir.path().join("o.db"), &other_url, "CREATE TABLE o(x);");
    open_and_sync(&dir.path().join("o.db"), &other_url, "INSERT INTO o VALUES (1);");
    let refusal = |db: &std::path::Path, url: &str| {
        sqlite_result(&format!(
            ".open file:{}?vfs=litestream&replica={url}\nINSERT INTO t VALUES (9);",
            db.display()
        ))
        .unwrap_err()
    };

    let edited = dir.path().join("edited.db");
    sql_restore(&url, &edited, &[]);
    plain_sqlite(&edited, "INSERT INTO t VALUES (3);");
    let err = refusal(&edited, &url);
    assert!(err.contains("written since without the litestream VFS"), "{err}");

    let earlier = dir.path().join("earlier.db");
    let out = our_cli_restore(&url, &earlier, &["-txid", &format!("{first:016x}")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = refusal(&earlier, &url);
    assert!(
        err.contains(&format!("holds this replica's TXID {first} and the replica is at")),
        "{err}"
    );

    let elsewhere = dir.path().join("elsewhere.db");
    sql_restore(&url, &elsewhere, &[]);
    let err = refusal(&elsewhere, &other_url);
    assert!(err.contains("not this replica"), "{err}");

    let by_litestream = dir.path().join("litestream.db");
    litestream_restore(&url, &by_litestream, &[]).unwrap();
    let err = refusal(&by_litestream, &url);
    assert!(
        err.contains("nothing shows this database is that replica's") && err.contains("takeover=1"),
        "{err}"
    );
}

/// An empty file where the database should be (what `sqlite3 app.db .tables` leaves on a
/// new machine, or a `touch` in an entry point) holds nothing: the open restores the
/// replica over it. Before, the open failed ("already exists; restore to a new path, or
/// ask to overwrite it", which an open cannot do). An empty file beside a WAL holding
/// bytes is refused, saying so.
#[test]
fn an_empty_database_file_is_restored_from_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let first = dir.path().join("first.db");
    let txid = open_and_sync(&first, &url, "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);");
    let db = dir.path().join("app.db");
    plain_sqlite(&db, ".tables");
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "the shell left an empty file");
    let after = open_and_sync(&db, &url, "INSERT INTO t VALUES (3);");
    assert_eq!(after, txid + 1);
    assert_eq!(plain_sqlite(&db, "SELECT group_concat(x) FROM t;").trim(), "1,2,3");

    let odd = dir.path().join("odd.db");
    std::fs::write(&odd, b"").unwrap();
    std::fs::write(dir.path().join("odd.db-wal"), b"not empty").unwrap();
    let err = sqlite_result(&format!(
        ".open file:{}?vfs=litestream&replica={url}\nSELECT count(*) FROM t;",
        odd.display()
    ))
    .unwrap_err();
    assert!(err.contains("is empty but") && err.contains("holds 9 bytes"), "{err}");
}

/// A service that crash-loops before its first commit (opened, synced, killed, again):
/// the first open's snapshot is all the replica needs. Before, the state saved with a
/// snapshot of a database without a WAL held no position, and every restart took the
/// whole database again ("no WAL position was saved with the last staged TXID": found by
/// hand, four 10 MB snapshots of an unchanged file). The snapshot now notes the database
/// file it copied, and a restart that finds it unchanged, with no WAL, goes on.
#[test]
fn restarts_after_a_snapshot_with_nothing_committed_since_take_no_new_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    plain_sqlite(
        &db,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
         INSERT INTO t(v) SELECT randomblob(1000) FROM generate_series(1, 200);",
    );
    for round in 0..3 {
        let mut app = shell::LiveShell::start(
            dir.path(),
            &format!("app{round}"),
            &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
        );
        app.run("SELECT count(*) FROM t; SELECT litestream_sync(30000);");
        app.kill();
    }
    let snapshots: Vec<_> = level0_ranges(&replica)
        .into_iter()
        .filter(|r| is_full_snapshot(&replica, r.0))
        .collect();
    assert_eq!(snapshots.len(), 1, "one snapshot for an unchanged file: {snapshots:?}");
    let snapshots = || {
        level0_ranges(&replica)
            .into_iter()
            .filter(|r| is_full_snapshot(&replica, r.0))
            .count()
    };
    // A commit after the last kill goes on from there as an increment.
    open_and_sync(&db, &url, "INSERT INTO t(v) VALUES (x'00');");
    assert_eq!(snapshots(), 1, "the commit is an increment");
    // Killed again after a snapshot, and the file changed without the VFS meanwhile:
    // that restart must not go on from the snapshot's file.
    plain_sqlite(&db, "DELETE FROM t WHERE id % 2 = 0; VACUUM;");
    let mut app = shell::LiveShell::start(
        dir.path(),
        "app3",
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    app.run("SELECT litestream_sync(30000);");
    assert_eq!(snapshots(), 2, "the changed file is a snapshot");
    app.kill();
    plain_sqlite(&db, "UPDATE t SET v = x'01' WHERE id = 1;");
    open_and_sync(&db, &url, "SELECT 1;");
    assert_eq!(snapshots(), 3, "changed after the snapshot, before the restart");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// A power loss with `synchronous=NORMAL` (or storage that drops flushed writes) leaves
/// the WAL's generation with fewer frames than were captured and uploaded: commits that
/// `litestream_sync()` acknowledged are in the replica only. Before, the open snapshotted
/// the older database as the replica's newest TXID, and compaction then merged the lost
/// TXIDs away (a tester: 100 acknowledged rows gone from every restore). Now the open
/// restores the database from the replica, keeping the file found aside.
#[test]
fn a_database_that_lost_acknowledged_commits_is_brought_forward_from_its_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let open = format!(".open file:{}?vfs=litestream&replica={url}", db.display());
    let mut shell = LiveShell::start(dir.path(), "writer", &open);
    shell.run("PRAGMA synchronous=NORMAL; CREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT litestream_sync(30000);");
    // What the disk keeps through the cut: the WAL as it was two commits ago.
    let kept = dir.path().join("kept");
    std::fs::create_dir(&kept).unwrap();
    for name in ["app.db", "app.db-wal"] {
        std::fs::copy(dir.path().join(name), kept.join(name)).unwrap();
    }
    let mut acknowledged = 0;
    for x in 2..=6 {
        let out = shell.run(&format!("INSERT INTO t VALUES ({x}); SELECT litestream_sync(30000);"));
        acknowledged = out.trim().parse::<u64>().unwrap();
    }
    shell.kill();
    for name in ["app.db", "app.db-wal"] {
        std::fs::copy(kept.join(name), dir.path().join(name)).unwrap();
    }
    let _ = std::fs::remove_file(dir.path().join("app.db-shm"));
    // (No plain sqlite3 look here: its close would checkpoint and delete the WAL.)
    let after = open_and_sync(&db, &url, "INSERT INTO t VALUES (7);");
    assert_eq!(
        plain_sqlite(&db, "SELECT group_concat(x) FROM t").trim(),
        "1,2,3,4,5,6,7",
        "the acknowledged rows are back"
    );
    assert_eq!(
        after,
        acknowledged + 1,
        "the chain goes on after the acknowledged TXIDs"
    );
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
    let aside: Vec<_> = std::fs::read_dir(dir.path().join("app.db-litestream"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("lost-commits-"))
        .collect();
    assert_eq!(aside.len(), 1, "the database as found is kept");
    assert!(aside[0].path().join("app.db").exists());
}
