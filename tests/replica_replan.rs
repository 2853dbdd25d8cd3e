//! A read transaction whose plan loses its files (compaction or retention removed them)
//! goes on from one fresh plan of the same TXID: the re-plan happens once, not once per
//! page it reads afterwards. (The soak found a scan pinned to an old TXID re-listing the
//! store for every page: 100 s and 7,500 requests for one query.)

mod common;
mod harness;

use common::shell::Shell;
use harness::*;

#[test]
fn a_transaction_whose_files_vanish_replans_once_not_per_page() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // ~150 pages of rows, in a few level-0 files. Compaction off: a level-1 window
    // boundary passing during the session would put them in a level-1 file too, which the
    // transaction would plan with and which the move below does not take away.
    sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&compaction=off\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB);\n\
         INSERT INTO t SELECT value, randomblob(2000) FROM generate_series(1, 300);\n\
         SELECT litestream_sync(10000);\n",
        dir.path().join("app.db").display()
    ));
    let l0 = replica.join("ltx/0");
    let expected = plain_sqlite(&dir.path().join("app.db"), "SELECT count(*), sum(length(b)) FROM t;");

    // A tiny replica cache and SQLite page cache: a second scan must read pages again.
    let mut shell = Shell::start(
        &extension(),
        &dir.path().join("replica.stderr"),
        &[],
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&cache_size=8k&poll_interval=60s",
            dir.path().join("view.db").display()
        ),
    );
    shell.run("PRAGMA cache_size=5; BEGIN;");
    assert_eq!(shell.run("SELECT count(*), sum(length(b)) FROM t;"), expected);
    let errors_before = read_errors(&mut shell);

    // "Compaction": every level-0 file moves to level 1 under the same name, so a plan of
    // the same TXID exists, but none of the transaction's own files do.
    std::fs::create_dir_all(replica.join("ltx/1")).unwrap();
    for entry in std::fs::read_dir(&l0).unwrap() {
        let entry = entry.unwrap();
        std::fs::rename(entry.path(), replica.join("ltx/1").join(entry.file_name())).unwrap();
    }

    assert_eq!(
        shell.run("SELECT count(*), sum(length(b)) FROM t;"),
        expected,
        "{}",
        shell.stderr()
    );
    let missing = read_errors(&mut shell) - errors_before;
    shell.run("COMMIT;");
    assert_eq!(
        missing, 1,
        "the scan found its files gone {missing} times: it re-planned for every page instead of once"
    );
}

fn read_errors(shell: &mut Shell) -> u64 {
    let out = shell.run("SELECT litestream_status() ->> '$.read_errors';");
    out.trim().parse().unwrap_or_else(|_| panic!("status: {out:?}"))
}
