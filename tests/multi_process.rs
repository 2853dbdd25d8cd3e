//! Several processes on one database, the way web-server workers use it: each opens the
//! database through the VFS, writes (every other one from two threads), updates, deletes,
//! shrinks the file (incremental vacuum, VACUUM), checkpoints (PASSIVE, RESTART,
//! TRUNCATE), opens and closes extra connections, exits normally and is started again;
//! now and then plain SQLite (no VFS) commits beside them and checkpoints its commits away.
//! Afterwards the primary
//! passes `integrity_check`, no process ever saw "malformed" or "not a database", and the
//! replica (restored by us and by `litestream restore`) equals the primary.
//!
//! This is what corrupted users' databases when the VFS opened and closed its own
//! descriptor of the live database (issue 13): closing any descriptor of a file drops
//! every POSIX lock the process holds on it, so the last process to close believed it
//! was alone, checkpointed and deleted `-wal`/`-shm` under the others.
//!
//! `LITESTREAM_CHURN_SECONDS` sets the length of the churn (40 s here, 600 in `make
//! torture`).

mod common;
mod harness;

use common::figures::{record, seconds_from_env};
use harness::shell::LiveShell;
use harness::*;
use litestream_vfs::restore::restore_latest;
use litestream_vfs::storage::{open_store_with_env, StoreOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Level-0 files are kept for the whole run (the 10-minute version outlives the default
/// 5 minutes), so that their TXIDs can be checked from 1.
const PARAMS: &str = "sync_interval=100ms&l0_retention=1h";

/// One run of `tests/scripts/churn_worker.py`; its stderr goes to `log`.
fn spawn_worker(db: &Path, url: &str, tag: &str, seed: u64, lifetime_ms: u64, log: &Path) -> Child {
    Command::new(python())
        .arg(repo_root().join("tests/scripts/churn_worker.py"))
        .arg("--ext")
        .arg(extension())
        .arg("--db")
        .arg(db)
        .arg("--replica")
        .arg(url)
        .arg("--tag")
        .arg(tag)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--lifetime")
        .arg(format!("{:.3}", lifetime_ms as f64 / 1000.0))
        .arg("--params")
        .arg(PARAMS)
        // Every other process writes from two threads at once.
        .arg("--threads")
        .arg((1 + seed % 2).to_string())
        // Now and then a commit by plain SQLite beside them (a tool without the VFS),
        // half of them checkpointed away at once (docs/reliability.md).
        .arg("--outsider")
        .arg("0.002")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("python3 runs")
}

/// What a churn run saw.
struct Churn {
    runs: usize,
    /// Every "error: ..." line any worker printed, with its run's tag.
    errors: Vec<String>,
}

/// `workers` slots, each running one worker process after another (lifetimes 0.3-2 s,
/// normal exits) for `seconds`.
fn churn(dir: &Path, db: &Path, url: &str, workers: usize, seconds: u64, seed: u64) -> Churn {
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut rng = Rng(seed | 1);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut slots: Vec<Option<(Child, PathBuf, String)>> = (0..workers).map(|_| None).collect();
    let mut runs = 0;
    let mut errors = Vec::new();
    loop {
        let running = Instant::now() < deadline;
        for (i, slot) in slots.iter_mut().enumerate() {
            if let Some((child, log, tag)) = slot {
                if child.try_wait().unwrap().is_none() {
                    continue;
                }
                let stderr = std::fs::read_to_string(&*log).unwrap_or_default();
                // The script's own "error: ..." lines, and any error the extension logged.
                let bad = stderr
                    .lines()
                    .filter(|l| l.starts_with("error:") || l.contains(" ERROR "));
                errors.extend(bad.map(|l| format!("{tag}: {l}")));
                *slot = None;
            }
            if running {
                runs += 1;
                let tag = format!("w{i}r{runs}");
                let log = logs.join(format!("{tag}.log"));
                let lifetime = 300 + rng.next() % 1700;
                let child = spawn_worker(db, url, &tag, rng.next(), lifetime, &log);
                *slot = Some((child, log, tag));
            }
        }
        if !running && slots.iter().all(Option::is_none) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Churn { runs, errors }
}

/// Opens the database once more through the VFS (alone: it replicates), and waits until
/// everything is uploaded. Returns the TXID.
fn final_sync(db: &Path, url: &str) -> u64 {
    let script = format!(
        "import sqlite3\n\
         l = sqlite3.connect(':memory:'); l.enable_load_extension(True); l.load_extension({ext:?})\n\
         c = sqlite3.connect({uri:?}, uri=True, isolation_level=None, timeout=60)\n\
         print(c.execute('SELECT litestream_sync(60000)').fetchone()[0])\n\
         c.close()\n",
        ext = extension().display().to_string(),
        uri = format!("file:{}?vfs=litestream&replica={url}&{PARAMS}", db.display()),
    );
    let out = Command::new(python()).arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "final sync failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a TXID")
}

#[test]
fn worker_processes_that_come_and_go_never_corrupt_the_primary() {
    let dir = tempfile::tempdir().unwrap();
    // LITESTREAM_CHURN_KEEP=<dir>: run there and leave everything for inspection.
    let kept = std::env::var_os("LITESTREAM_CHURN_KEEP").map(PathBuf::from);
    let dir_path = kept.as_deref().unwrap_or(dir.path());
    std::fs::create_dir_all(dir_path).unwrap();
    let db = dir_path.join("app.db");
    let replica = dir_path.join("replica");
    let url = format!("file://{}", replica.display());
    let seconds = seconds_from_env("LITESTREAM_CHURN_SECONDS", 40).as_secs();
    let outcome = churn(dir_path, &db, &url, 3, seconds, 0x5eed_1337);
    let corrupt: Vec<&String> = outcome
        .errors
        .iter()
        .filter(|e| e.contains("malformed") || e.contains("not a database") || e.contains("disk I/O"))
        .collect();
    assert!(
        corrupt.is_empty(),
        "{} of {} worker runs saw a damaged database, e.g.:\n{}",
        corrupt.len(),
        outcome.runs,
        corrupt
            .iter()
            .take(20)
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        integrity(&db),
        "ok",
        "the primary is corrupt after {} worker runs",
        outcome.runs
    );
    assert!(
        outcome.errors.is_empty(),
        "workers saw errors:\n{}",
        outcome.errors.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    let rows: u64 = plain_sqlite(&db, "SELECT count(*) FROM churn").trim().parse().unwrap();
    assert!(rows > 0, "the workers wrote nothing");

    let txid = final_sync(&db, &url);
    assert_contiguous(&level0_ranges(&replica));
    let ours = dir_path.join("ours.db");
    let store = open_store_with_env(&url, &StoreOptions::default(), &|_| None).unwrap();
    restore_latest(&store, &ours).unwrap();
    assert_eq!(integrity(&ours), "ok");
    assert_eq!(
        dump(&ours),
        dump(&db),
        "our restore differs from the primary (TXID {txid})"
    );
    let theirs = dir_path.join("theirs.db");
    litestream_restore(&url, &theirs, &[]).unwrap();
    assert_eq!(dump(&theirs), dump(&db), "litestream restore differs from the primary");
    record(
        "multi_process",
        &format!(
            "churn: 3 workers, {} normal exits and restarts in {seconds} s, {rows} rows, final TXID {txid}: \
             integrity ok, 0 errors, both restores equal the primary",
            outcome.runs
        ),
    );
}

/// Runs `tests/scripts/proc_locks.py` on `db` through `uri`; returns its (label, locks)
/// lines.
fn locks_while_connecting(db: &Path, uri: &str, pool_seconds: u32) -> Vec<(String, u32)> {
    let out = Command::new(python())
        .arg(repo_root().join("tests/scripts/proc_locks.py"))
        .arg("--ext")
        .arg(extension())
        .arg("--uri")
        .arg(uri)
        .arg("--db")
        .arg(db)
        .arg("--pool-seconds")
        .arg(pool_seconds.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "proc_locks.py failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<(String, u32)> = stdout
        .lines()
        .map(|l| {
            let (label, n) = l.rsplit_once(' ').expect("label count");
            assert!(label != "error", "a connection failed: {l}");
            (label.to_string(), n.parse().unwrap_or(u32::MAX))
        })
        .collect();
    assert!(
        lines.iter().any(|(l, _)| l == "after-pool"),
        "incomplete output: {stdout}"
    );
    lines
}

/// Every line shows the shared lock held, as the first (one connection after a read) does.
fn assert_locks_kept(who: &str, lines: &[(String, u32)]) {
    assert_eq!(
        lines[0].1, 1,
        "{who}: a connection in WAL mode holds a shared lock on the database: {lines:?}"
    );
    let lost: Vec<&(String, u32)> = lines.iter().filter(|(_, held)| *held != 1).collect();
    assert!(
        lost.is_empty(),
        "{who}: the process lost its shared lock on the database: {lost:?}"
    );
}

fn create_table(db: &Path, url: &str) {
    sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n",
        db.display()
    ));
}

#[test]
fn a_follower_keeps_its_locks_on_the_database_however_many_connections_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    create_table(&db, &url);
    // Another process holds the database open and replicates it: the script's process
    // is a follower, which is where every open used to read the header with a
    // descriptor of its own.
    let mut leader = LiveShell::start(
        dir.path(),
        "leader",
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    assert_eq!(leader.run("SELECT litestream_status() ->> '$.role';").trim(), "primary");
    let uri = format!("file:{}?vfs=litestream&replica={url}", db.display());
    let lines = locks_while_connecting(&db, &uri, 10);
    assert_locks_kept("follower", &lines);
    assert_eq!(integrity(&db), "ok");
}

#[test]
fn the_replicating_process_keeps_its_locks_on_the_database_however_many_connections_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    create_table(&db, &url);
    let uri = format!("file:{}?vfs=litestream&replica={url}", db.display());
    let lines = locks_while_connecting(&db, &uri, 10);
    assert_locks_kept("replicating process", &lines);
}

/// A worker that wrote a new database before any process had switched it to WAL mode
/// left it in rollback mode; the next process to open it through the VFS switches it, and
/// must wait for another connection's write transaction rather than fail. SQLite's
/// `PRAGMA journal_mode=WAL` fails such a switch at once, whatever the busy timeout (the
/// churn above saw "PRAGMA journal_mode=WAL: database is locked" in about one run of two).
#[test]
fn opening_waits_for_another_connections_write_before_switching_to_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}/replica", dir.path().display());
    // Plain SQLite (the shell's default VFS), rollback mode, a write transaction open.
    let mut holder = LiveShell::start(dir.path(), "holder", &format!(".open {}", db.display()));
    holder.run(".timeout 30000\nCREATE TABLE t(v TEXT);\nBEGIN IMMEDIATE;\nINSERT INTO t VALUES ('held');");
    let opener = {
        let sql = format!(
            ".open file:{}?vfs=litestream&replica={url}\n.timeout 30000\nINSERT INTO t VALUES ('vfs');\nPRAGMA journal_mode;\n",
            db.display()
        );
        std::thread::spawn(move || sqlite_result(&sql))
    };
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!opener.is_finished(), "the open did not wait for the write transaction");
    holder.run("COMMIT;");
    let out = opener
        .join()
        .unwrap()
        .expect("the open waits for the write, then succeeds");
    assert_eq!(out.trim(), "wal");
    drop(holder);
    assert_eq!(plain_sqlite(&db, "SELECT group_concat(v) FROM t").trim(), "held,vfs");
    assert_eq!(integrity(&db), "ok");
}
