//! Replication belongs to the database, not to a process: when the replicating process
//! dies or closes, a process that still has the database open takes over, and nothing
//! it had captured, nor anything committed after, is lost (issue 16).

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const INTERVAL_MS: u64 = 1000;

fn status(shell: &mut LiveShell) -> Value {
    let text = shell.run("SELECT litestream_status();");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status {text:?}: {e}"))
}

/// Newest TXID in the `file://` replica's level 0.
fn replica_txid(replica: &Path) -> u64 {
    level0_ranges(replica).last().map_or(0, |r| r.1)
}

/// Waits until the replica holds `txid`; returns how long that took.
fn wait_for_txid(replica: &Path, txid: u64, limit: Duration) -> Duration {
    let start = Instant::now();
    while replica_txid(replica) < txid {
        assert!(
            start.elapsed() < limit,
            "the replica stayed at TXID {} (waiting for {txid}) for {limit:?}",
            replica_txid(replica)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

/// One database with a `file://` replica in a temporary directory.
struct Rig {
    dir: tempfile::TempDir,
    db: PathBuf,
    replica: PathBuf,
    url: String,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let replica = dir.path().join("replica");
        let url = format!("file://{}", replica.display());
        Rig { dir, db, replica, url }
    }

    /// The shell command opening the database at `INTERVAL_MS`.
    fn open(&self) -> String {
        self.open_every(&format!("{INTERVAL_MS}ms"))
    }

    /// The shell command opening the database with `sync_interval`.
    fn open_every(&self, sync_interval: &str) -> String {
        format!(
            ".open file:{}?vfs=litestream&replica={}&sync_interval={sync_interval}",
            self.db.display(),
            self.url
        )
    }

    /// The replica restored to a file of its own.
    fn restored(&self) -> PathBuf {
        let restored = self.dir.path().join("restored.db");
        litestream_restore(&self.url, &restored, &[]).unwrap();
        restored
    }

    /// Level 0 is contiguous and the replica restores to the database, `rows` rows.
    fn assert_restores_to(&self, rows: &str) {
        assert_contiguous(&level0_ranges(&self.replica));
        let restored = self.restored();
        assert_eq!(count(&restored), rows);
        assert_eq!(dump(&restored), dump(&self.db));
    }
}

/// No snapshot asked for in `shell`'s log.
fn assert_no_snapshot_taken(shell: &LiveShell) {
    let log = shell.stderr();
    assert!(!log.contains("taking a snapshot"), "{log}");
}

fn count(db: &Path) -> String {
    plain_sqlite(db, "SELECT count(*) FROM t").trim().to_string()
}

#[test]
fn a_follower_takes_over_when_the_replicating_process_is_killed_and_uploads_what_it_captured() {
    let rig = Rig::new();
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open());
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open());
    assert_eq!(status(&mut b)["role"], "follower");
    assert_eq!(status(&mut b)["replicated_by_pid"], a.pid());
    // A captures commits nobody writes after, and dies before uploading them.
    let captured: u64 = a
        .run("INSERT INTO t(v) VALUES ('a1'); INSERT INTO t(v) VALUES ('a2'); SELECT litestream_txid();")
        .trim()
        .parse()
        .unwrap();
    a.kill();
    let took = wait_for_txid(&rig.replica, captured, Duration::from_millis(2 * INTERVAL_MS + 1000));
    let s = status(&mut b);
    assert_eq!(s["role"], "primary", "{s}");
    assert_eq!(s["pid"], b.pid());
    // The survivor's own commits are replicated from then on.
    let out = b.run("INSERT INTO t(v) VALUES ('b1'); SELECT litestream_sync();");
    let synced: u64 = out
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {out:?}: {}", b.stderr()));
    assert!(synced > captured);
    drop(b);
    rig.assert_restores_to("3");
    println!(
        "takeover: {} ms from the kill to the dead process's commits stored",
        took.as_millis()
    );
}

#[test]
fn a_clean_close_hands_replication_over_within_one_sync_interval() {
    let rig = Rig::new();
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open());
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open());
    assert_eq!(status(&mut b)["role"], "follower");
    let closed = Instant::now();
    drop(a); // .quit: the last connection of A closes
    let mut handed_over = None;
    while closed.elapsed() < Duration::from_millis(3 * INTERVAL_MS) {
        if status(&mut b)["role"] == "primary" {
            handed_over = Some(closed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let handed_over = handed_over.expect("B became the replicating process");
    assert!(
        handed_over <= Duration::from_millis(INTERVAL_MS),
        "hand-over took {handed_over:?}"
    );
    let synced: u64 = b
        .run("INSERT INTO t(v) VALUES ('b'); SELECT litestream_sync();")
        .trim()
        .parse()
        .unwrap();
    assert!(synced >= 2);
    println!("hand-over after a clean close: {} ms", handed_over.as_millis());
}

/// A follower that commits after the replicating process closed, and closes before its
/// leadership turn takes replication over (a connection per request in several
/// processes): its close takes over and stores the commit. It stayed in the hand-off
/// records until the database was next opened (a tester: the last 1-3 commits in 4 runs
/// of 9).
#[test]
fn a_follower_closing_after_the_replicating_process_closed_stores_its_commits() {
    let rig = Rig::new();
    // Leadership turns a sync_interval apart: B's close comes long before its turn.
    let open = rig.open_every("10s");
    let mut a = LiveShell::start(rig.dir.path(), "a", &open);
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &open);
    assert_eq!(status(&mut b)["role"], "follower");
    drop(a);
    b.run("INSERT INTO t(v) VALUES ('b');");
    let log = b.stderr();
    drop(b);
    assert!(
        !log.contains("this process replicates the database now"),
        "B took over before its close: {log}"
    );
    rig.assert_restores_to("2");
}

/// The same with a follower whose `replica=` names another replica: its close does not
/// move replication there. A tester's worker with another replica stored its own and
/// another worker's last commits in its replica, and the one the others use lacked them.
/// The commit waits for the next process that replicates to the database's replica.
#[test]
fn a_follower_with_another_replica_closing_does_not_take_replication_there() {
    let rig = Rig::new();
    let open = rig.open_every("10s");
    let elsewhere = rig.dir.path().join("elsewhere");
    let other = open.replace(&rig.url, &format!("file://{}", elsewhere.display()));
    let mut a = LiveShell::start(rig.dir.path(), "a", &open);
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('a'); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &other);
    assert_eq!(status(&mut b)["role"], "follower");
    drop(a);
    b.run("INSERT INTO t(v) VALUES ('b');");
    drop(b);
    let log = std::fs::read_to_string(rig.dir.path().join("b.stderr")).unwrap();
    assert!(log.contains("does not take replication over"), "{log}");
    assert!(
        !elsewhere.join("ltx").exists(),
        "B replicated to its own replica: {log}"
    );
    let mut c = LiveShell::start(rig.dir.path(), "c", &open);
    c.run("SELECT litestream_sync();");
    drop(c);
    rig.assert_restores_to("2");
}

#[test]
fn a_stopped_replicator_keeps_its_role_and_followers_see_their_commits_wait() {
    let rig = Rig::new();
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open());
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open());
    let mut c = LiveShell::start(rig.dir.path(), "c", &rig.open());
    a.signal(libc::SIGSTOP);
    for i in 0..20 {
        b.run(&format!("INSERT INTO t(v) VALUES ('b{i}');"));
        c.run(&format!("INSERT INTO t(v) VALUES ('c{i}');"));
        std::thread::sleep(Duration::from_millis(150));
    }
    // Three sync intervals later nobody took over: A still holds the lock.
    for shell in [&mut b, &mut c] {
        let s = status(shell);
        assert_eq!(s["role"], "follower", "{s}");
        assert_eq!(s["replicated_by_pid"], a.pid(), "{s}");
        assert!(
            s["unstored_seconds"].as_f64().unwrap() > 0.0,
            "the wait shows in the status: {s}"
        );
    }
    let before = replica_txid(&rig.replica);
    a.signal(libc::SIGCONT);
    let synced: u64 = b.run("SELECT litestream_sync(20000);").trim().parse().unwrap();
    assert!(
        synced >= before + 40,
        "everything committed meanwhile is stored: {synced} vs {before}"
    );
    drop(c);
    drop(b);
    drop(a);
    rig.assert_restores_to("40");
}

/// A takeover that comes while a connection of the surviving process is inside a write
/// transaction waits for that transaction to end: the transaction began writing as a
/// follower's (its WAL header, frames spilled from a small cache), and capture installed
/// in its middle would see the rest of its frames in a generation it never saw begin
/// (a needless snapshot, found by multi_process_crash).
#[test]
fn a_takeover_during_a_write_transaction_of_the_survivor_waits_for_its_end() {
    // The transaction writes the first header of an empty WAL.
    takeover_inside_a_survivors_transaction("PRAGMA wal_checkpoint(TRUNCATE);", 400);
}

/// As above, with the transaction restarting a checkpointed WAL: capture, still in the
/// old generation, met the new one's frames ("a frame of another WAL generation was
/// written over captured frames", seen once in 1,200 kills and unexplained until then).
#[test]
fn a_takeover_during_a_write_transaction_that_restarted_the_wal_waits_for_its_end() {
    takeover_inside_a_survivors_transaction(
        "INSERT INTO t(v) SELECT 'a' FROM generate_series(1, 10); SELECT litestream_sync(); \
         PRAGMA wal_checkpoint(PASSIVE);",
        410,
    );
}

/// A replicates and runs `before`; B, a follower, writes half of a transaction with
/// pages spilled into the WAL; A is killed; B's takeover check runs several times; B
/// commits the other half. No snapshot, and the replica restores to `rows` rows.
fn takeover_inside_a_survivors_transaction(before: &str, rows: u64) {
    let rig = Rig::new();
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open());
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    a.run(before);
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open());
    assert_eq!(status(&mut b)["role"], "follower");
    let header_before = wal_header(&rig.db);
    b.run(
        "PRAGMA cache_size=5; BEGIN IMMEDIATE; \
         INSERT INTO t(v) SELECT hex(randomblob(500)) FROM generate_series(1, 200);",
    );
    let header = wal_header(&rig.db);
    assert!(
        header.is_some() && header != header_before,
        "the transaction wrote a new WAL header before its commit"
    );
    a.kill();
    // Long enough for B's takeover check to run several times.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    b.run("INSERT INTO t(v) SELECT hex(randomblob(500)) FROM generate_series(1, 200); COMMIT;");
    let synced: u64 = b.run("SELECT litestream_sync(10000);").trim().parse().unwrap();
    let s = status(&mut b);
    assert_eq!(s["role"], "primary", "{s}");
    assert!(synced >= 2, "{s}");
    assert_no_snapshot_taken(&b);
    drop(b);
    rig.assert_restores_to(&rows.to_string());
}

/// A follower with `sync=commit` commits a transaction that a takeover waited for: its
/// sync is the new replicating process's (its own), not a request to the dead one.
/// Before, the commit asked the dead process, waited out `sync_timeout` while its own
/// takeover waited for it, and counted a miss.
#[test]
fn a_sync_commit_of_a_transaction_a_takeover_waited_for_is_stored_by_the_takeover() {
    let rig = Rig::new();
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open());
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    let mut b = LiveShell::start(
        rig.dir.path(),
        "b",
        &format!("{}&sync=commit&sync_timeout=5s", rig.open()),
    );
    assert_eq!(status(&mut b)["role"], "follower");
    b.run("BEGIN IMMEDIATE; INSERT INTO t(v) VALUES ('b1');");
    a.kill();
    // Long enough for B's takeover check to run several times.
    std::thread::sleep(Duration::from_millis(3 * INTERVAL_MS));
    b.run("COMMIT;");
    let s = status(&mut b);
    assert_eq!(s["role"], "primary", "{s}");
    let log = b.stderr();
    assert!(!log.contains("sync=commit"), "the commit's sync missed: {log}");
    drop(b);
    rig.assert_restores_to("1");
}

/// The WAL's 32-byte header, if it has one.
fn wal_header(db: &Path) -> Option<Vec<u8>> {
    let wal = std::fs::read(db.with_extension("db-wal")).ok()?;
    (wal.len() >= 32).then(|| wal[..32].to_vec())
}

/// A follower rewrites the header of a WAL whose only frames were never committed (their
/// writer was killed inside its transaction): the salts stay, the checksum seed changes.
/// The replicating process follows that follower's record into the new chain and is
/// killed before it saves a state there. The survivor's takeover must go from the saved
/// position through the record, not take the same salts for the same generation (the
/// saved frame's checksum no longer matches: a snapshot, multi_process_crash).
#[test]
fn a_takeover_after_a_header_rewrite_with_the_same_salts_follows_the_record() {
    let rig = Rig::new();
    let slow = rig.open_every("60s");
    let mut a = LiveShell::start(rig.dir.path(), "a", &slow);
    a.run("PRAGMA wal_autocheckpoint=0; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    // SQLite writes the checkpoint sequence of the writing connection into a WAL header,
    // and fresh salts only while that sequence is 0: B's is 1 (one truncation), K's 2.
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open());
    b.run("PRAGMA wal_autocheckpoint=0; INSERT INTO t(v) VALUES ('b1'); PRAGMA wal_checkpoint(TRUNCATE);");
    // K begins a generation on the emptied WAL, spills frames of a transaction and is
    // killed inside it.
    let mut k = LiveShell::start(rig.dir.path(), "k", &rig.open());
    k.run(
        "PRAGMA wal_autocheckpoint=0; \
         INSERT INTO t(v) VALUES ('k1'); PRAGMA wal_checkpoint(TRUNCATE); \
         INSERT INTO t(v) VALUES ('k2'); PRAGMA wal_checkpoint(TRUNCATE); \
         PRAGMA cache_size=5; BEGIN IMMEDIATE; \
         INSERT INTO t(v) SELECT hex(randomblob(500)) FROM generate_series(1, 200);",
    );
    let k_header = wal_header(&rig.db).expect("K wrote a header");
    k.kill();
    // A stages b1 and saves the new generation's first frame as its position.
    a.run("SELECT litestream_sync();");
    // B's commit rewrites the header: same salts, another checksum seed.
    b.run("INSERT INTO t(v) VALUES ('b2');");
    let b_header = wal_header(&rig.db).unwrap();
    assert_eq!(k_header[16..24], b_header[16..24], "the salts stayed");
    assert_ne!(k_header, b_header, "the header changed");
    // A follows B's record under its write lock, commits, and is killed before staging.
    a.run("INSERT INTO t(v) VALUES ('a1');");
    a.kill();
    let start = Instant::now();
    while status(&mut b)["role"] != "primary" {
        assert!(start.elapsed() < Duration::from_secs(10), "B took over");
        std::thread::sleep(Duration::from_millis(20));
    }
    b.run("INSERT INTO t(v) VALUES ('b3'); SELECT litestream_sync();");
    assert_no_snapshot_taken(&b);
    drop(b);
    rig.assert_restores_to("6");
}

/// `litestream_sync()` in the replicating process covers what other processes committed
/// before it, not only what capture had met (with a long `sync_interval`, nothing of a
/// follower's until the next turn or write).
#[test]
fn a_sync_in_the_replicating_process_stores_a_followers_earlier_commits() {
    let rig = Rig::new();
    let slow = rig.open_every("60s");
    let mut a = LiveShell::start(rig.dir.path(), "a", &slow);
    a.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &slow);
    b.run("INSERT INTO t(v) VALUES ('b1'); INSERT INTO t(v) VALUES ('b2');");
    let synced: u64 = a.run("SELECT litestream_sync();").trim().parse().unwrap();
    assert!(replica_txid(&rig.replica) >= synced);
    let restored = rig.restored();
    assert_eq!(
        count(&restored),
        "2",
        "the replica holds B's rows once A's sync returned"
    );
    drop(b);
    drop(a);
}

/// Two processes that each open the database, commit and close, over and over, hand
/// replication over at nearly every close, and each next one resumes from the state the
/// last one saved, through the records: no snapshot. A leader whose last connection
/// deleted the WAL used to save a clean close even after following the start of a
/// generation the other process began meanwhile, so the next leader found that
/// generation connected to nothing and took a full snapshot, dozens a minute (a tester:
/// 1.2 GiB of replica in a minute for a 20 MB database).
#[test]
fn processes_opening_and_closing_one_database_in_turn_hand_replication_over_without_snapshots() {
    let rig = Rig::new();
    // A few hundred pages, so that a full image is told from a commit's file below.
    let setup = "CREATE TABLE t(id INTEGER PRIMARY KEY, who TEXT, seq INT, pad BLOB); \
                 WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 300) \
                 INSERT INTO t(who, seq, pad) SELECT 'setup', i, randomblob(2000) FROM r;";
    open_and_sync(&rig.db, &rig.url, setup);
    let first = level0_ranges(&rig.replica).last().unwrap().1;
    // Level-0 files are kept for the check below.
    let params = "sync_interval=100ms&l0_retention=1h";
    let workers: Vec<_> = (0..2)
        .map(|i| {
            let log = rig.dir.path().join(format!("w{i}.log"));
            let child = std::process::Command::new(python())
                .arg(repo_root().join("tests/scripts/connection_per_request.py"))
                .args(["--ext", &extension().display().to_string()])
                .args(["--db", &rig.db.display().to_string()])
                .args(["--replica", &rig.url, "--params", params])
                .args(["--tag", &format!("w{i}"), "--seed", &(i + 1).to_string()])
                // 10 s of requests 0-20 ms apart: without the fix, 3-10 snapshots.
                .args(["--seconds", "10", "--pause", "0.02"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("python3 runs");
            (child, log)
        })
        .collect();
    let mut leads = Vec::new();
    for (child, log) in workers {
        let out = child.wait_with_output().unwrap();
        let stderr = std::fs::read_to_string(&log).unwrap();
        let summary = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            out.status.success() && !stderr.contains("error:"),
            "{summary}\n{stderr}"
        );
        assert!(!stderr.contains("taking a snapshot"), "{summary}\n{stderr}");
        let fields: Vec<&str> = summary.split(' ').collect();
        assert_eq!(fields[5], "0", "snapshots reported: {summary}\n{stderr}");
        leads.push(fields[3].parse::<u64>().unwrap());
    }
    // Replication changed hands many times, or the test proves nothing.
    assert!(leads.iter().all(|&n| n >= 10), "leads per process: {leads:?}");
    open_and_sync(&rig.db, &rig.url, "SELECT 1;");
    let full: Vec<(u64, u64)> = level0_ranges(&rig.replica)
        .into_iter()
        .filter(|r| r.0 > first && is_full_snapshot(&rig.replica, r.0))
        .collect();
    assert!(full.is_empty(), "full snapshots after the setup: {full:?}");
    let rows = count(&rig.db);
    rig.assert_restores_to(&rows);
}
