//! A read replica kept open while the primary's page size changes: the application
//! stops, plain `sqlite3` runs `PRAGMA page_size=N; VACUUM` (out of WAL mode and back),
//! and the primary then stores a full snapshot of the new page size. A replica must
//! follow it within a poll or two, and a transaction (or a point-in-time view) of a TXID
//! before the change must still read that TXID's rows, whether the pages come from the
//! store, the cache or a hydration file laid out for the new page size.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Rows of each table: 600 of 300 bytes, about 90 pages of 4 KiB per table, so that the
/// old layout's slots and the new one's overlap.
const ROWS: &str = "600|180000";

/// A primary at the default page size (4096) with tables `t` and `u`, synced to a
/// `file://` replica: (dir, db, replica URL).
fn primary() -> (tempfile::TempDir, PathBuf, String) {
    replicated_with(
        "CREATE TABLE t(a INTEGER PRIMARY KEY, b);\n\
         CREATE TABLE u(a INTEGER PRIMARY KEY, b);\n\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 600)\n\
         INSERT INTO t(b) SELECT randomblob(300) FROM n;\n\
         INSERT INTO u(b) SELECT randomblob(300) FROM t;",
    )
}

/// Rebuilds `db` at `page_size` with the plain shell, as an operator would, then writes
/// through the VFS again (which stores the new page size's snapshot and a deletion);
/// returns the TXID of that write.
fn change_page_size(db: &Path, url: &str, page_size: u32) -> u64 {
    plain_sqlite(
        db,
        &format!("PRAGMA journal_mode=DELETE; PRAGMA page_size={page_size}; VACUUM; PRAGMA journal_mode=WAL;"),
    );
    open_and_sync(db, url, "DELETE FROM u WHERE a > 10;")
}

/// A replica shell of `url` following every 50 ms, hydrating into `hydrate` if given.
/// SQLite's own cache is small, so that a transaction's reads come back to the VFS; the
/// replica's page cache keeps its default size, where hydration hands the versions it
/// moves past (a wrong-sized one once made a reader panic).
fn replica(dir: &Path, url: &str, hydrate: Option<&Path>) -> LiveShell {
    let hydrate = hydrate.map_or(String::new(), |p| format!("&hydrate={}", p.display()));
    LiveShell::start(
        dir,
        "replica",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=50ms{hydrate}\n\
             PRAGMA cache_size=-64;",
            dir.join("view.db").display()
        ),
    )
}

fn hydration(r: &mut LiveShell) -> serde_json::Value {
    serde_json::from_str(&r.run("SELECT litestream_status() ->> '$.hydration';")).unwrap()
}

/// Waits up to 10 s for the hydration file to hold `txid` (0: whatever is newest).
fn wait_hydrated(r: &mut LiveShell, txid: u64) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let status = hydration(r);
        if status["complete"] == true && (txid == 0 || status["txid"] == txid) {
            return status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not hydrated to TXID {txid}: {status}\n{}",
            r.stderr()
        );
        sleep(Duration::from_millis(50));
    }
}

/// Both tables, whole, and the integrity check, as one string. (`PRAGMA page_size` goes
/// after a read: it answers from the last transaction without starting one.)
const READ_ALL: &str = "SELECT count(*), sum(length(b)) FROM t;\n\
                        SELECT count(*), sum(length(b)) FROM u;\n\
                        PRAGMA integrity_check;";

/// After the change, the replica at `tx` (the new page size, rows deleted from `u`), and
/// the hydration file holding it.
fn follow(r: &mut LiveShell, tx: u64, page_size: u32) {
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({tx}, 10000);")).trim(),
        tx.to_string()
    );
    assert_eq!(
        r.run(&format!("{READ_ALL}\nPRAGMA page_size;")),
        format!("{ROWS}\n10|3000\nok\n{page_size}\n"),
        "{}",
        r.stderr()
    );
    wait_hydrated(r, tx);
}

/// The hydration status says what happened: the file laid out anew once, for the new
/// page size, wholly local, and no error.
fn assert_hydration_moved(r: &mut LiveShell, page_size: u32) {
    let status = hydration(r);
    assert_eq!(status["page_size"], page_size, "{status}");
    assert_eq!(status["page_size_changes"], 1, "{status}");
    assert_eq!(status["pages_local"], status["pages"], "{status}");
    assert!(status["last_error"].is_null(), "{status}");
    let error = r.run("SELECT litestream_status() ->> '$.error';");
    assert_eq!(error.trim(), "", "the replica reports an error: {error}");
}

/// A transaction pinned before the change reads its own TXID to the end, while hydration
/// moves the file to the new page size underneath it (which once overwrote the old
/// slots: wrong counts, "malformed", a slice panic at 1 KiB), and hydration completes
/// at the new page size (growing it once failed forever: "failed to fill whole buffer").
fn pinned_transaction_across(page_size: u32) {
    let (dir, db, url) = primary();
    let mut r = replica(dir.path(), &url, Some(&dir.path().join("hydrated.db")));
    wait_hydrated(&mut r, 0);
    r.run("BEGIN;");
    assert_eq!(r.run("SELECT count(*), sum(length(b)) FROM t;"), format!("{ROWS}\n"));

    let tx = change_page_size(&db, &url, page_size);
    wait_hydrated(&mut r, tx);
    assert_eq!(
        r.run(READ_ALL),
        format!("{ROWS}\n{ROWS}\nok\n"),
        "the pinned transaction read another TXID's pages: {}",
        r.stderr()
    );
    r.run("COMMIT;");
    follow(&mut r, tx, page_size);
    assert_hydration_moved(&mut r, page_size);
}

#[test]
fn a_transaction_pinned_before_the_page_size_grows_reads_its_own_rows() {
    pinned_transaction_across(65536);
}

#[test]
fn a_transaction_pinned_before_the_page_size_shrinks_reads_its_own_rows() {
    pinned_transaction_across(1024);
}

/// A point-in-time view of a TXID before the change, taken once the hydration file holds
/// the new page size, reads the old rows at the old page size (it once read the new
/// layout's bytes as old pages: 13 rows of 600, or a panic).
fn view_before(page_size: u32) {
    let (dir, db, url) = primary();
    let mut r = replica(dir.path(), &url, Some(&dir.path().join("hydrated.db")));
    wait_hydrated(&mut r, 0);
    sleep(Duration::from_millis(20));
    let before = plain_sqlite(&db, "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now');");
    sleep(Duration::from_millis(20));

    let tx = change_page_size(&db, &url, page_size);
    follow(&mut r, tx, page_size);
    let at: u64 = r
        .run(&format!("SELECT litestream_set_time('{}');", before.trim()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("litestream_set_time: {e}\n{}", r.stderr()));
    assert!(at < tx, "the view is at TXID {at}, not before {tx}");
    assert_eq!(
        r.run(&format!("{READ_ALL}\nPRAGMA page_size;")),
        format!("{ROWS}\n{ROWS}\nok\n4096\n"),
        "the view before the change read another TXID's pages: {}",
        r.stderr()
    );
    assert_hydration_moved(&mut r, page_size);
}

#[test]
fn a_view_before_the_page_size_grew_reads_its_own_rows() {
    view_before(65536);
}

#[test]
fn a_view_before_the_page_size_shrank_reads_its_own_rows() {
    view_before(1024);
}

/// A replica meeting a level-0 file of another page size re-plans at once (the new
/// history starts at a level-9 snapshot, which level 0 alone does not show) instead of
/// serving the old TXID for 30 polls and calling itself corrupt meanwhile.
#[test]
fn a_replica_follows_a_page_size_change_within_a_few_polls() {
    let (dir, db, url) = primary();
    let poll = Duration::from_millis(300);
    let mut r = LiveShell::start(
        dir.path(),
        "replica",
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval={}ms",
            dir.path().join("view.db").display(),
            poll.as_millis()
        ),
    );
    assert_eq!(r.run("SELECT count(*), sum(length(b)) FROM u;"), format!("{ROWS}\n"));

    let tx = change_page_size(&db, &url, 1024);
    let changed = Instant::now();
    // No litestream_wait: a waiter wakes the poller at once, and 30 quick polls would
    // hide the slow path; the poller's own pace is what is measured.
    loop {
        let out = r.run("SELECT litestream_status() ->> '$.latest_txid', litestream_status() ->> '$.error';");
        let (txid, error) = out.trim().split_once('|').unwrap();
        assert!(
            !error.contains("corrupt"),
            "a healthy replica called itself corrupt: {error}"
        );
        if txid == tx.to_string() {
            break;
        }
        assert!(
            changed.elapsed() < poll * 8,
            "still at TXID {txid} of {tx} after {:?} ({error})",
            changed.elapsed()
        );
        sleep(Duration::from_millis(50));
    }
    assert_eq!(
        r.run("SELECT count(*), sum(length(b)) FROM u;\nPRAGMA page_size;"),
        "10|3000\n1024\n"
    );
}
