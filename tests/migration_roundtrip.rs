//! Moving between Litestream 0.5.17 and this extension, both ways, on one `file://` replica
//! (docs/migration.md): the real `litestream replicate`, configured by a `litestream.yml`,
//! hands a replica to our primary and takes one over from it, and after each move both
//! `litestream restore` and our `restore_latest` give back exactly the database. And the
//! queries people run against Litestream's own VFS answer the same through ours.

mod harness;

use harness::*;
use litestream_vfs::restore::restore_latest;
use litestream_vfs::storage::{open_store, StoreOptions};
use std::path::Path;
use std::process::{Command, Output};

/// `litestream restore` and our `restore_latest` of `url` both give `db`'s content.
fn both_restore(db: &Path, url: &str, dir: &Path) {
    let theirs = dir.join("restored-by-litestream.db");
    litestream_restore(url, &theirs, &[]).unwrap();
    let store = open_store(url, &StoreOptions::default()).unwrap();
    let ours = dir.join("restored-by-us.db");
    restore_latest(&store, &ours).unwrap();
    let want = dump(db);
    for (who, restored) in [("litestream restore", &theirs), ("restore_latest", &ours)] {
        assert_eq!(integrity(restored), "ok", "{who}");
        assert_eq!(dump(restored), want, "{who} differs from the database");
    }
}

const SCHEMA: &str = "CREATE TABLE notes(id INTEGER PRIMARY KEY, author TEXT, body TEXT);";

/// `n` rows by `author`, a few hundred bytes each so that they span many pages.
fn rows(author: &str, n: u32) -> String {
    format!(
        "WITH RECURSIVE i(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM i WHERE k < {n})
         INSERT INTO notes(author, body) SELECT '{author}', hex(randomblob(150)) FROM i;"
    )
}

#[test]
fn a_replica_litestream_built_is_continued_by_our_primary_with_takeover() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    plain_sqlite(
        &db,
        &format!("PRAGMA journal_mode=WAL; {SCHEMA} {}", rows("before litestream", 200)),
    );

    // Litestream replicates the database as it is, and one more transaction.
    let litestream = LitestreamReplicate::start(&litestream_config(dir.path(), &db, &url));
    let first = litestream.wait_beyond(&replica, 0);
    plain_sqlite(&db, &rows("under litestream", 100));
    let litestream_max = litestream.wait_beyond(&replica, first);
    litestream.stop();

    // Our primary will not write after another writer's TXIDs unless told to take over.
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
        db.display()
    );
    let err = sqlite_result(&format!("{open}\n{}", rows("refused", 1))).unwrap_err();
    assert!(err.contains("takeover=1"), "{err}");
    let out = sqlite(&format!(
        "{open}&takeover=1\n{}\nUPDATE notes SET body = lower(body) WHERE id % 7 = 0;\nSELECT litestream_sync(30000);",
        rows("ours", 100)
    ));
    let ours_max: u64 = out.trim().parse().unwrap();
    assert!(
        ours_max > litestream_max,
        "our TXIDs ({ours_max}) continue after litestream's ({litestream_max})"
    );
    // Taking over is once: the next open is an ordinary one.
    let out = sqlite(&format!(
        "{open}
{}
SELECT litestream_sync(30000);",
        rows("ours later", 10)
    ));
    assert!(out.trim().parse::<u64>().unwrap() > ours_max, "{out}");
    assert_contiguous(&level0_ranges(&replica));
    assert_eq!(
        plain_sqlite(&db, "SELECT count(*) FROM notes WHERE author = 'refused'").trim(),
        "0"
    );
    both_restore(&db, &url, dir.path());
}

/// Our replica ends with a one-TXID increment, or (docs/migration.md's step for every
/// other case) with `litestream_snapshot()` after several commits went up as one
/// level-0 file. Litestream 0.5.17 reads where capture stood from a file named with the
/// newest TXID alone, so a last file holding several TXIDs left every one of its syncs
/// failing (found by a tester), and so did a last file that was one of our snapshots
/// until they said WAL offset 32 (as Litestream's own do) instead of 0.
#[test]
fn a_replica_our_primary_built_is_continued_by_litestream_with_a_snapshot() {
    for ends_with_a_snapshot in [false, true] {
        continued_by_litestream(ends_with_a_snapshot);
    }
}

fn continued_by_litestream(ends_with_a_snapshot: bool) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let last = if ends_with_a_snapshot {
        // Three commits in one sync_interval: one level-0 file of three TXIDs.
        "INSERT INTO notes(author, body) VALUES ('a', 'x'); INSERT INTO notes(author, body) VALUES ('b', 'y');
        INSERT INTO notes(author, body) VALUES ('c', 'z'); SELECT litestream_sync(30000) > 0;
        SELECT litestream_snapshot(60000);"
    } else {
        "SELECT litestream_sync(30000);"
    };
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms
        {SCHEMA} {}
        SELECT litestream_sync(30000) > 0;
        {}
        {last}",
        db.display(),
        rows("ours", 200),
        rows("ours again", 50),
    ));
    let ours_max: u64 = out.lines().last().unwrap().parse().unwrap();

    // Litestream, with no state of its own for this database, finds the replica ahead of
    // it and continues at the next TXID with a snapshot of the whole database.
    let litestream = LitestreamReplicate::start(&litestream_config(dir.path(), &db, &url));
    let snapshot_max = litestream.wait_beyond(&replica, ours_max);
    let (min, max) = *level0_ranges(&replica)
        .iter()
        .find(|r| r.0 == ours_max + 1)
        .unwrap_or_else(|| panic!("no level-0 file starts at TXID {}", ours_max + 1));
    let name = format!("ltx/0/{min:016x}-{max:016x}.ltx");
    let file = litestream_vfs::ltx::decode_file(&std::fs::read(replica.join(name)).unwrap()).unwrap();
    assert_eq!(
        file.pages.len() as u32,
        file.header.commit,
        "litestream's first file is a full snapshot"
    );
    plain_sqlite(&db, &rows("litestream", 100));
    litestream.wait_beyond(&replica, snapshot_max);

    assert_contiguous(&level0_ranges(&replica));
    let expected = if ends_with_a_snapshot { "353" } else { "350" };
    assert_eq!(
        plain_sqlite(&db, "SELECT count(*) FROM notes").trim(),
        expected,
        "every write is in the database"
    );
    assert!(
        !litestream.log().contains("ERROR"),
        "ends with a snapshot: {ends_with_a_snapshot}; Litestream failed:\n{}",
        litestream.log()
    );
    litestream.stop();
    both_restore(&db, &url, dir.path());
}

/// The two read-replica VFS extensions, which a process loads one at a time.
#[derive(Clone, Copy, Debug)]
enum Vfs {
    /// Litestream 0.5.17's (it reads `LITESTREAM_REPLICA_URL` when loaded).
    Litestreams,
    Ours,
}

impl Vfs {
    /// Runs `script` in the sqlite3 shell on a new connection (file `name` in `dir`)
    /// reading the replica at `url`.
    fn run(self, dir: &Path, name: &str, url: &str, script: &str) -> Output {
        let file = dir.join(name);
        let (extension, open) = match self {
            Vfs::Litestreams => (
                litestream_vfs_extension(),
                format!(".open file:{}?vfs=litestream", file.display()),
            ),
            Vfs::Ours => (
                extension(),
                format!(
                    ".open file:{}?vfs=litestream&role=replica&replica={url}",
                    file.display()
                ),
            ),
        };
        Command::new("sqlite3")
            .env_remove("AWS_CA_BUNDLE")
            .env("LITESTREAM_REPLICA_URL", url)
            .arg("-batch")
            .arg("-cmd")
            .arg(format!(".load {} sqlite3_litestreamvfs_init", extension.display()))
            .arg(":memory:")
            .arg(open)
            .arg(script)
            .output()
            .unwrap()
    }

    /// [`Vfs::run`], which must succeed; stdout.
    fn read(self, dir: &Path, name: &str, url: &str, script: &str) -> String {
        let out = self.run(dir, name, url, script);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{self:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }
}

#[test]
fn queries_written_for_litestreams_vfs_answer_the_same_through_ours() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms
        {SCHEMA} {}
        SELECT litestream_sync(30000) > 0;
        INSERT INTO notes(author, body) VALUES ('last', 'row');
        SELECT litestream_sync(30000);",
        db.display(),
        rows("ours", 300),
    ));
    let txid: u64 = out.lines().last().unwrap().parse().unwrap();

    // What both VFSes answer alike: the data, PRAGMA litestream_txid (16 hex digits), a
    // lag that is a whole number of seconds, and accepting a return to the latest state.
    let script = "SELECT count(*), sum(length(body)), max(id) FROM notes;
        PRAGMA litestream_txid;
        SELECT typeof(litestream_lag()) = 'integer' AND litestream_lag() >= -1;
        PRAGMA litestream_lag;
        SELECT coalesce(litestream_set_time('latest'), 'accepted') IS NOT NULL;";
    let theirs = Vfs::Litestreams.read(dir.path(), "theirs.db", &url, script);
    let ours = Vfs::Ours.read(dir.path(), "ours.db", &url, script);
    let lines = |text: &str| -> Vec<String> { text.lines().map(str::to_string).collect() };
    let (theirs, ours) = (lines(&theirs), lines(&ours));
    assert_eq!(theirs.len(), 5, "{theirs:?}");
    assert_eq!(ours.len(), 5, "{ours:?}");
    assert_eq!(
        ours[0],
        plain_sqlite(&db, "SELECT count(*), sum(length(body)), max(id) FROM notes;").trim()
    );
    assert_eq!(theirs[0], ours[0], "the same rows");
    assert_eq!(theirs[1], format!("{txid:016x}"), "their PRAGMA litestream_txid");
    assert_eq!(ours[1], theirs[1], "our PRAGMA litestream_txid");
    assert_eq!((theirs[2].as_str(), ours[2].as_str()), ("1", "1"), "litestream_lag()");
    for lag in [&theirs[3], &ours[3]] {
        assert!(
            lag.parse::<i64>().is_ok_and(|s| s >= -1),
            "PRAGMA litestream_lag: {lag}"
        );
    }
    assert_eq!(
        (theirs[4].as_str(), ours[4].as_str()),
        ("1", "1"),
        "litestream_set_time('latest')"
    );
    // Both refuse to set the TXID or the lag (theirs says only "SQL logic error").
    for (pragma, message) in [
        ("PRAGMA litestream_txid = 1;", "litestream_txid is read-only"),
        ("PRAGMA litestream_lag = 0;", "litestream_lag is read-only"),
    ] {
        let theirs = Vfs::Litestreams.run(dir.path(), "theirs.db", &url, pragma);
        assert!(!theirs.status.success(), "litestream's VFS accepted {pragma}");
        let ours = Vfs::Ours.run(dir.path(), "ours.db", &url, pragma);
        let stderr = String::from_utf8_lossy(&ours.stderr);
        assert!(!ours.status.success() && stderr.contains(message), "{pragma}: {stderr}");
    }

    // Where they differ (docs/migration.md): litestream_txid() is hex text there and an
    // integer here; at the latest state litestream_time() is a timestamp there and
    // 'latest' here; litestream_set_time() returns NULL there and the TXID it moves to here.
    let script = "SELECT typeof(litestream_txid()), litestream_txid();
        SELECT litestream_time() = 'latest', litestream_time() GLOB '20[0-9][0-9]-*T*Z';
        SELECT quote(litestream_set_time('latest'));";
    let theirs = Vfs::Litestreams.read(dir.path(), "theirs.db", &url, script);
    assert_eq!(theirs, format!("text|{txid:016x}\n0|1\nNULL\n"));
    let ours = Vfs::Ours.read(dir.path(), "ours.db", &url, script);
    assert_eq!(ours, format!("integer|{txid}\n1|0\n{txid}\n"));
}
