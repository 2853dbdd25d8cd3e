//! A database that is gone (deleted, a new machine) while its replica holds it: every
//! open must get the replica's data back, never an empty database that then becomes the
//! replica's latest state. Found by hand 2026-12-06 (a tester running worker processes).
//!
//! | test | what | before | after |
//! |---|---|---|---|
//! | `a_database_deleted_beside_its_staging_state_is_restored` | `rm app.db app.db-wal app.db-shm` (the `app.db-litestream` directory stays: `rm app.db*` skips it), after a clean close and after a kill | an empty database, uploaded as the replica's next TXID (latest restore empty) | restored from the replica; the latest restore equals it |
//! | `a_database_deleted_and_opened_again_in_the_same_process_is_restored` | the same, within a minute of the first open, in one process (a connection pool, a test suite) | replicated as a new database over the replica's files, refused as a second primary, every later open refused (a tester, 3 of 3) | restored from the replica |
//! | `workers_starting_together_on_a_missing_database_all_see_the_restore` | three processes open a deleted 8 MB database at once | some ran on an empty database (or the restore was refused: "is open") | each waits for the restoring one and sees every row |

mod harness;

use harness::*;
use std::path::{Path, PathBuf};

const ROWS: u32 = 4000;

/// A replicated database of about 8 MB: (dir, db, url).
fn replicated() -> (tempfile::TempDir, PathBuf, String) {
    replicated_with(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); \
         INSERT INTO t(v) SELECT randomblob(2000) FROM generate_series(1, {ROWS});"
    ))
}

fn delete_database(db: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    assert!(
        Path::new(&format!("{}-litestream", db.display())).exists(),
        "the staging state stays"
    );
}

fn count(shell: &mut shell::LiveShell) -> String {
    shell.run("SELECT count(*) FROM t;").trim().to_string()
}

#[test]
fn a_database_deleted_beside_its_staging_state_is_restored() {
    for killed in [false, true] {
        let (dir, db, url) = replicated();
        let open = format!(".open file:{}?vfs=litestream&replica={url}", db.display());
        let mut app = shell::LiveShell::start(dir.path(), "app", &open);
        app.run("INSERT INTO t(v) VALUES ('last'); SELECT litestream_sync(30000);");
        if killed {
            app.kill();
        }
        drop(app);
        let before = dump(&db);
        delete_database(&db);
        let mut app = shell::LiveShell::start(dir.path(), "again", &open);
        assert_eq!(
            count(&mut app),
            (ROWS + 1).to_string(),
            "killed: {killed}; {}",
            app.stderr()
        );
        app.run("SELECT litestream_sync(30000);");
        drop(app);
        assert_eq!(dump(&db), before, "killed: {killed}");
        let restored = dir.path().join("restored.db");
        check("restore", our_cli_restore(&url, &restored, &[]));
        assert_eq!(
            dump(&restored),
            before,
            "killed: {killed}: the latest restore is the database, not an empty one"
        );
    }
}

#[test]
fn a_database_deleted_and_opened_again_in_the_same_process_is_restored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let open = format!(".open file:{}?vfs=litestream&replica={url}", db.display());
    let mut app = shell::LiveShell::start(dir.path(), "app", &open);
    app.run("CREATE TABLE t(v); INSERT INTO t VALUES ('old-1'), ('old-2'); SELECT litestream_sync(30000);");
    app.run(".open :memory:");
    delete_database(&db);
    app.run(&open);
    assert_eq!(count(&mut app), "2", "{}", app.stderr());
    app.run("INSERT INTO t VALUES ('new'); SELECT litestream_sync(30000);");
    assert_eq!(count(&mut app), "3", "{}", app.stderr());
    drop(app);
    let restored = dir.path().join("restored.db");
    check("restore", our_cli_restore(&url, &restored, &[]));
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn workers_starting_together_on_a_missing_database_all_see_the_restore() {
    let (dir, db, url) = replicated();
    let before = dump(&db);
    delete_database(&db);
    // A busy timeout, as any application with several processes on one database has: the
    // first read of one may meet another's lock while it switches the restored file to
    // WAL mode (SQLITE_BUSY at once without one: 1 run in CI under load).
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}\n.timeout 10000",
        db.display()
    );
    let counts: Vec<(String, String)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|i| {
                let (dir, open) = (dir.path(), open.as_str());
                s.spawn(move || {
                    let mut worker = shell::LiveShell::start(dir, &format!("worker{i}"), open);
                    let seen = count(&mut worker);
                    worker.run("SELECT litestream_sync(30000);");
                    (seen, worker.stderr())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for (i, (seen, stderr)) in counts.iter().enumerate() {
        assert_eq!(seen, &ROWS.to_string(), "worker {i} saw another database:\n{stderr}");
    }
    assert_eq!(dump(&db), before);
    let restored = dir.path().join("restored.db");
    check("restore", our_cli_restore(&url, &restored, &[]));
    assert_eq!(dump(&restored), before, "the latest restore is the database");
}
