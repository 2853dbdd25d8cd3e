//! The read replica (`role=replica`) through real programs: it shows exactly what the
//! primary committed, follows new commits in a long-lived connection, refuses writes,
//! and reads replicas written by us (file://, S3 on moto) and by Litestream 0.5.17.

mod common;
mod harness;

use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use harness::*;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const END: &str = "__litestream_test_end__";

/// A long-lived `sqlite3` shell with the extension loaded: one connection across many
/// commands, as an application holds it. stderr goes to a file.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr_path: PathBuf,
}

impl Shell {
    fn start(dir: &Path, open: &str, envs: &[(&str, &str)]) -> Shell {
        let stderr_path = dir.join(format!("shell-{}.stderr", std::process::id() as u64 ^ rand_suffix()));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        // stdbuf: the shell's stdout is a pipe, which C stdio would otherwise buffer.
        let mut child = Command::new("stdbuf")
            .args(["-o0", "sqlite3", "-batch", "-cmd"])
            .arg(format!(".load {}", extension().display()))
            .arg(":memory:")
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("sqlite3 runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut shell = Shell {
            child,
            stdin,
            stdout,
            stderr_path,
        };
        shell.run(open);
        shell
    }

    /// Runs SQL or dot-commands; returns what they printed on stdout.
    fn run(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}\n.print {END}").unwrap();
        self.stdin.flush().unwrap();
        let mut out = String::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "sqlite3 exited; stderr:\n{}", self.stderr());
            if line.trim_end() == END {
                return out;
            }
            out.push_str(&line);
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, ".quit");
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
}

fn replica_open(name: &Path, url: &str) -> String {
    format!(
        ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=100ms",
        name.display()
    )
}

fn assert_no_local_files(name: &Path) {
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = name.as_os_str().to_owned();
        p.push(suffix);
        assert!(!Path::new(&p).exists(), "the replica created {p:?}");
    }
}

#[test]
fn a_file_replica_shows_what_the_primary_committed_and_follows_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let name = dir.path().join("replica-view.db");

    let t1 = python_workload(&db, &url, 1, 150, &["sync_interval=100ms"]);
    let mut r = Shell::start(dir.path(), &replica_open(&name, &url), &[]);
    assert_eq!(r.run("SELECT litestream_txid();").trim(), t1.to_string());
    assert_eq!(
        r.run(".dump"),
        dump(&db),
        "the replica differs from the primary at TXID {t1}"
    );
    assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    assert_eq!(
        r.run("PRAGMA journal_mode;").trim(),
        "delete",
        "served in rollback mode"
    );
    let lag: i64 = r.run("SELECT litestream_lag();").trim().parse().unwrap();
    assert!((0..5).contains(&lag), "lag {lag}");

    // The same connection follows new commits, between its read transactions.
    let t2 = python_workload(&db, &url, 2, 150, &["sync_interval=100ms"]);
    assert!(t2 > t1);
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string()
    );
    assert_eq!(r.run("SELECT litestream_txid();").trim(), t2.to_string());
    assert_eq!(
        r.run(".dump"),
        dump(&db),
        "the replica differs from the primary at TXID {t2}"
    );

    // A transaction keeps its TXID while newer ones arrive.
    r.run("BEGIN; SELECT count(*) FROM items;");
    let t3 = python_workload(&db, &url, 3, 60, &["sync_interval=100ms"]);
    assert!(t3 > t2);
    assert_eq!(r.run("SELECT litestream_txid();").trim(), t2.to_string());
    r.run("COMMIT;");
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t3}, 30000);")).trim(),
        t3.to_string()
    );
    assert_eq!(r.run(".dump"), dump(&db));

    // An update in place changes neither the size nor page 1 on the primary: only the
    // change counter the replica serves tells SQLite its cached pages are stale.
    let row = "SELECT qty FROM items WHERE id = (SELECT min(id) FROM items);";
    let before = r.run(row);
    let t4: u64 = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n\
         UPDATE items SET qty = 987654 WHERE id = (SELECT min(id) FROM items);\n\
         SELECT litestream_sync(30000);",
        db.display()
    ))
    .trim()
    .parse()
    .unwrap();
    assert_eq!(t4, t3 + 1);
    assert_ne!(before.trim(), "987654");
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t4}, 30000);")).trim(),
        t4.to_string()
    );
    assert_eq!(r.run(row).trim(), "987654");

    let status: serde_json::Value = serde_json::from_str(&r.run("SELECT litestream_status();")).unwrap();
    assert_eq!(status["role"], "replica");
    assert_eq!(status["txid"], t4);
    assert!(status["requests"].as_u64().unwrap() > 0);
    assert!(status["cache"]["hits"].as_u64().unwrap() > 0);

    r.run("SELECT litestream_wait(1000000000, 50);");
    assert!(
        r.stderr().contains("timed out after 50 ms waiting for TXID 1000000000"),
        "{}",
        r.stderr()
    );

    // Writes fail, and nothing appears under the local name.
    r.run("INSERT INTO items(name) VALUES ('on the replica');");
    assert!(r.stderr().contains("readonly"), "{}", r.stderr());
    r.run("CREATE TABLE other(x);");
    assert_eq!(
        r.run("SELECT count(*) FROM items WHERE name = 'on the replica';")
            .trim(),
        "0"
    );
    assert_no_local_files(&name);
    drop(r);
    assert_no_local_files(&name);
}

/// A primary `<name>.db` with table `t(id, body)` of `rows` rows of `bytes` random
/// bytes (hex), synced to a `file://` replica in `dir`. Returns (db, replica URL).
fn replicated_table(dir: &Path, name: &str, rows: u32, bytes: u32) -> (std::path::PathBuf, String) {
    let db = dir.join(format!("{name}.db"));
    let url = format!("file://{}", dir.join("replica").display());
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);\n\
         INSERT INTO t(body) SELECT hex(randomblob({bytes})) FROM generate_series(1, {rows});\n\
         SELECT litestream_sync(30000) > 0;",
        db.display()
    ));
    assert_eq!(out.trim(), "1");
    (db, url)
}

#[test]
fn a_point_query_fetches_a_few_pages_not_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = replicated_table(dir.path(), "big", 4000, 500);
    let size =
        std::fs::metadata(&db).unwrap().len() + std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    let started = Instant::now();
    let out = sqlite(&format!(
        "{}\nSELECT length(body) FROM t WHERE id = 2345;\n\
         SELECT litestream_status() ->> '$.requests', litestream_status() ->> '$.bytes_fetched', \
         litestream_status() ->> '$.pages_fetched', litestream_status() ->> '$.files_in_plan', \
         litestream_status() ->> '$.pages_read_at_open';",
        replica_open(&dir.path().join("view.db"), &url)
    ));
    let elapsed = started.elapsed();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000");
    let nums: Vec<u64> = lines[1].split('|').map(|n| n.parse().unwrap()).collect();
    let (requests, bytes, pages, files, at_open) = (nums[0], nums[1], nums[2], nums[3], nums[4]);
    eprintln!(
        "point query on a {size}-byte database: {requests} requests, {bytes} bytes, {pages} pages \
         ({at_open} read with the indexes), {files} files in plan, {elapsed:?}"
    );
    // Pages asked for on their own; the first pages of each file come with its index.
    let on_demand = pages - at_open;
    assert!(on_demand <= 5, "{on_demand} pages fetched on their own");
    // Whether the inserts landed in the first snapshot or after it is a matter of timing.
    assert!(files <= 3, "{files} files in the plan");
    // One LIST per level (snapshots and levels 0-8, all in one round), head and tail of
    // each planned file, and the pages.
    let lists = 1 + litestream_vfs::restore::LEVELS.len() as u64;
    assert!(
        requests <= lists + 2 * files + on_demand,
        "{requests} requests for {files} files and {on_demand} pages"
    );
    assert!(bytes < size / 10, "fetched {bytes} of {size} bytes");
}

#[test]
fn a_corrupt_page_frame_is_sqlite_corrupt_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("c.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // Compaction off: a level-1 window boundary passing during the session would merge
    // the level-0 files into a level-1 file, which the replica would read instead of the
    // damaged one.
    sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&compaction=off\n\
         CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);\n\
         INSERT INTO t(body) SELECT hex(randomblob(500)) FROM generate_series(1, 500);\n\
         SELECT litestream_sync(30000);",
        db.display()
    ));
    // Smash the compressed bytes of the last page of the newest level-0 file.
    let (min, max) = *level0_ranges(&replica).last().unwrap();
    let path = replica.join(format!("ltx/0/{min:016x}-{max:016x}.ltx"));
    let mut bytes = std::fs::read(&path).unwrap();
    let decoded = litestream_vfs::ltx::decode_file(&bytes).unwrap();
    let entry = *decoded.index.entries().last().unwrap();
    assert!(entry.pgno > 2);
    for b in &mut bytes[entry.offset as usize + 10..(entry.offset + entry.size as u64) as usize] {
        *b = 0xff;
    }
    std::fs::write(&path, &bytes).unwrap();
    let err = sqlite_result(&format!(
        "{}\nSELECT sum(length(body)) FROM t;",
        replica_open(&dir.path().join("view.db"), &url)
    ))
    .unwrap_err();
    assert!(err.contains("malformed"), "{err}");
    assert!(err.contains(&format!("page {}", entry.pgno)), "{err}");
}

#[test]
fn an_empty_replica_location_is_a_clear_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("nothing-here").display());
    let err = sqlite_result(&format!("{}\nSELECT 1;", replica_open(&dir.path().join("x.db"), &url))).unwrap_err();
    assert!(err.contains("has no LTX files"), "{err}");
    assert!(!dir.path().join("x.db").exists());
    // Replica functions on a connection that is not a replica say so.
    let err = sqlite_result("SELECT litestream_wait(1, 10);").unwrap_err();
    assert!(err.contains("not a read replica"), "{err}");
}

#[test]
fn an_s3_replica_shows_what_the_primary_committed_and_follows_it() {
    let moto = Moto::start();
    moto.create_bucket("replica");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = moto.url("replica", "app");
    let creds = [
        ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
    ];
    let workload = |seed| {
        let mut cmd = workload_command(&db, &url, seed, 120, &["sync_interval=100ms"]);
        cmd.envs(creds);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse::<u64>().unwrap()
    };
    let t1 = workload(1);
    let name = dir.path().join("view.db");
    let mut r = Shell::start(dir.path(), &replica_open(&name, &url), &creds);
    assert_eq!(
        r.run("SELECT litestream_txid();").trim(),
        t1.to_string(),
        "{}",
        r.stderr()
    );
    assert_eq!(r.run(".dump"), dump(&db));
    let t2 = workload(2);
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string()
    );
    assert_eq!(r.run(".dump"), dump(&db));
    assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    assert_no_local_files(&name);

    // An empty prefix of an existing bucket: a clear error.
    let empty = Shell::start(
        dir.path(),
        &replica_open(&dir.path().join("y.db"), &moto.url("replica", "nothing")),
        &creds,
    );
    let err = empty.stderr();
    assert!(err.contains("has no LTX files"), "{err}");

    // The store goes away. Pages in the cache are still served; a page that is not is an
    // I/O error with a message, after brief retries, and the replica reports it.
    let count = r.run("SELECT count(*) FROM items;");
    let small_open = format!("{}&cache_size=4k", replica_open(&dir.path().join("small.db"), &url));
    let mut small = Shell::start(dir.path(), &small_open, &creds);
    assert_eq!(small.run("SELECT count(*) > 0 FROM sqlite_schema;").trim(), "1");
    drop(moto);
    let started = Instant::now();
    assert_eq!(small.run("SELECT count(*) FROM items;"), "");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(small.stderr().contains("disk I/O error"), "{}", small.stderr());
    assert!(small.stderr().contains("reading page"), "{}", small.stderr());
    assert_eq!(r.run("SELECT count(*) FROM items;"), count, "{}", r.stderr());
    let status: serde_json::Value = serde_json::from_str(&small.run("SELECT litestream_status();")).unwrap();
    assert!(status["read_errors"].as_u64().unwrap() >= 1, "{status}");
}

fn max_l0_txid(replica: &Path) -> u64 {
    level0_ranges(replica).iter().map(|r| r.1).max().unwrap_or(0)
}

/// Waits until Litestream's newest level-0 TXID has been stable for 2 s.
fn wait_for_litestream(replica: &Path, log: &Path) -> u64 {
    let started = Instant::now();
    let (mut last, mut since) = (max_l0_txid(replica), Instant::now());
    while last == 0 || since.elapsed() < Duration::from_secs(2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "litestream never settled:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        sleep(Duration::from_millis(100));
        let m = max_l0_txid(replica);
        if m != last {
            (last, since) = (m, Instant::now());
        }
    }
    last
}

#[test]
fn a_replica_written_by_litestream_is_served_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let plain = |sql: &str| {
        let out = Command::new("sqlite3").arg(&db).arg(sql).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    plain(
        "PRAGMA journal_mode=wal;
         CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB);
         INSERT INTO kv SELECT 'key-' || value, randomblob(200 + value % 700) FROM generate_series(1, 5000);",
    );
    let log = dir.path().join("litestream.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(litestream_bin())
        .env_remove("AWS_CA_BUNDLE")
        .arg("replicate")
        .arg(&db)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        plain("UPDATE kv SET v = randomblob(100) WHERE rowid % 7 = 0;");
        plain("DELETE FROM kv WHERE rowid % 5 = 0;");
        let t1 = wait_for_litestream(&replica, &log);
        let name = dir.path().join("view.db");
        let mut r = Shell::start(dir.path(), &replica_open(&name, &url), &[]);
        assert_eq!(
            r.run("SELECT litestream_txid();").trim(),
            t1.to_string(),
            "{}",
            r.stderr()
        );
        assert_eq!(r.run(".dump"), dump(&db));
        // More writes while Litestream keeps replicating: the same connection follows.
        plain("INSERT INTO kv SELECT 'more-' || value, randomblob(300) FROM generate_series(1, 2000);");
        plain("VACUUM;");
        plain("UPDATE kv SET v = zeroblob(10) WHERE k LIKE 'more-1%';");
        let t2 = wait_for_litestream(&replica, &log);
        assert!(t2 > t1);
        assert_eq!(
            r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
            t2.to_string()
        );
        assert_eq!(r.run(".dump"), dump(&db));
        assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    }));
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let stopped = Instant::now();
    while child.try_wait().unwrap().is_none() && stopped.elapsed() < Duration::from_secs(15) {
        sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    if let Err(e) = result {
        eprintln!("litestream log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
        std::panic::resume_unwind(e);
    }
}

#[test]
fn a_full_scan_reads_ahead_instead_of_one_request_per_page() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url) = replicated_table(dir.path(), "scan", 8000, 400);
    let expected = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*), sum(length(body)) FROM t")
        .output()
        .unwrap();
    let out = sqlite(&format!(
        "{}\nSELECT count(*), sum(length(body)) FROM t;\n\
         SELECT litestream_status() ->> '$.requests', litestream_status() ->> '$.pages_fetched';",
        replica_open(&dir.path().join("scan-view.db"), &url)
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        String::from_utf8_lossy(&expected.stdout).trim(),
        "the scan sees the primary's rows"
    );
    let nums: Vec<u64> = lines[1].split('|').map(|n| n.parse().unwrap()).collect();
    let (requests, pages) = (nums[0], nums[1]);
    eprintln!("full scan: {pages} pages in {requests} requests");
    assert!(pages > 1000, "the scan touched the whole table: {pages} pages");
    assert!(
        requests * 20 < pages,
        "{requests} requests for {pages} pages: no read-ahead"
    );
}

/// A replica of a new database: the primary has synced only the empty database, TXID
/// 1, when a reader opens and loads its (empty) schema; tables created after that must
/// show in that same connection. The first snapshot used to store the backup API's
/// schema cookie (1) instead of the database's (0), the first CREATE TABLE made the
/// real cookie 1 as well, and SQLite, seeing the cookie unchanged, answered 'no such
/// table' forever on that connection.
#[test]
fn a_replica_that_read_the_empty_database_sees_tables_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let t1 = open_and_sync(&db, &url, "");
    let mut r = shell::LiveShell::start(dir.path(), "replica", &replica_open(&dir.path().join("view.db"), &url));
    assert_eq!(r.run("SELECT litestream_txid();").trim(), t1.to_string());
    // The schema is loaded here, and the snapshot carries the database's own cookie.
    assert_eq!(
        r.run("SELECT count(*) FROM sqlite_master; PRAGMA schema_version;"),
        "0\n0\n"
    );

    let t2 = open_and_sync(&db, &url, "CREATE TABLE u(y); INSERT INTO u VALUES (42);");
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string()
    );
    assert_eq!(r.run("SELECT y FROM u;").trim(), "42", "{}", r.stderr());
    assert_eq!(r.run("PRAGMA schema_version;").trim(), "1");
}

/// `tests/data/backup-cookie-replica`: TXID 1, the empty database, and TXID 2, `CREATE
/// TABLE u(y)` with one row (42), as primaries before the fix stored them: both page 1s
/// carry schema cookie 1 (the snapshot's from the backup API, the next from the first
/// CREATE TABLE). Copies the files up to `txid` into `replica`.
fn backup_cookie_replica(replica: &Path, txid: u64) {
    let from = repo_root().join("tests/data/backup-cookie-replica/ltx/0");
    let to = replica.join("ltx/0");
    std::fs::create_dir_all(&to).unwrap();
    for t in 1..=txid {
        let name = format!("{t:016x}-{t:016x}.ltx");
        std::fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// Replicas already in stores hold such snapshots: the replica itself must notice a
/// schema change that the stored cookie does not show.
#[test]
fn a_replica_notices_a_new_schema_behind_an_unchanged_stored_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let replica = dir.path().join("replica");
    backup_cookie_replica(&replica, 1);
    let url = format!("file://{}", replica.display());
    let mut r = shell::LiveShell::start(dir.path(), "replica", &replica_open(&dir.path().join("view.db"), &url));
    assert_eq!(
        r.run("SELECT litestream_txid(), count(*) FROM sqlite_master;").trim(),
        "1|0"
    );

    backup_cookie_replica(&replica, 2);
    assert_eq!(r.run("SELECT litestream_wait(2, 30000);").trim(), "2");
    assert_eq!(r.run("SELECT y FROM u;").trim(), "42", "{}", r.stderr());
}
