//! Invariants 2, 3 and 6 under a misbehaving network: the primary and the read replica
//! talk to a real S3 server (moto) through a proxy of our own that resets connections,
//! stalls, trickles bytes, answers 5xx, and loses responses to requests the store applied.
//!
//! Each primary test runs the randomized workload under a steady rate of one kind of fault
//! (every `litestream_sync` in it must succeed), then takes a full outage of that kind while
//! commits continue, then measures how long the primary takes to catch up. The replica in S3
//! must then hold every TXID exactly once, in order, and restore (with Litestream 0.5.17,
//! straight from moto) to exactly the primary's database.
//!
//! Knobs (the defaults are the short version in `make test`; `make torture` raises them):
//! `FAULT_SECONDS` keeps the workload running under fire that long (default: one round),
//! `FAULT_OUTAGE_SECONDS` is the length of the full outage (default 2),
//! `FAULT_READ_QUERIES` the number of replica queries under fire (default 80).

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::figures::{record, seconds_from_env};
use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use common::shell::Shell;
use harness::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BUCKET: &str = "faults";
const SUITE: &str = "network_faults";
const CREDS: [(&str, &str); 2] = [
    ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
    ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
];

/// moto, a proxy in front of it, and a scratch directory.
struct Rig {
    moto: Moto,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
}

impl Rig {
    fn start() -> Rig {
        let moto = Moto::start();
        moto.create_bucket(BUCKET);
        let proxy = FaultProxy::start(moto.port, FaultPlan::none());
        Rig {
            moto,
            proxy,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The replica URL through the proxy.
    fn url(&self, path: &str) -> String {
        format!(
            "s3://{BUCKET}/{path}?endpoint={}&region={REGION}&forcePathStyle=true",
            self.proxy.endpoint
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// TXID ranges per level, read from moto directly (not through the proxy).
    fn levels(&self, path: &str) -> BTreeMap<u8, Vec<(u64, u64)>> {
        let mut levels: BTreeMap<u8, Vec<(u64, u64)>> = BTreeMap::new();
        for key in self.moto.list_keys(BUCKET, &format!("{path}/")) {
            let rest = &key[path.len() + 1..];
            let (level, name) = rest.split_once('/').unwrap_or_else(|| panic!("unexpected key {key}"));
            let level = u8::from_str_radix(level, 16).unwrap_or_else(|_| panic!("unexpected key {key}"));
            let range = litestream_vfs::storage::parse_name(name).unwrap_or_else(|| panic!("unexpected key {key}"));
            levels.entry(level).or_default().push(range);
        }
        for ranges in levels.values_mut() {
            ranges.sort();
        }
        levels
    }

    /// `litestream restore` 0.5.17 straight from moto.
    fn restore_with_litestream(&self, path: &str, out: &Path) {
        let url = format!(
            "s3://{BUCKET}/{path}?endpoint={}&region={REGION}&forcePathStyle=true",
            self.moto.endpoint
        );
        let restore = Command::new(litestream_bin())
            .env_remove("AWS_CA_BUNDLE")
            .envs(CREDS)
            .args(["restore", "-o"])
            .arg(out)
            .arg(&url)
            .output()
            .unwrap();
        assert!(
            restore.status.success(),
            "litestream restore: {}",
            String::from_utf8_lossy(&restore.stderr)
        );
    }
}

fn plan(kinds: &[Fault], rate_percent: u32, seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        stall: Duration::from_millis(1500),
        ..FaultPlan::of(kinds, rate_percent)
    }
}

/// Level-0 TXIDs run 1, 2, 3, ... up to `txid` with no gap and no TXID twice.
fn assert_every_txid_once(levels: &BTreeMap<u8, Vec<(u64, u64)>>, txid: u64) {
    let l0 = levels.get(&0).cloned().unwrap_or_default();
    assert_contiguous(&l0);
    assert_eq!(
        l0.last().map(|r| r.1),
        Some(txid),
        "the replica ends at the primary's TXID: {levels:?}"
    );
}

/// The primary under a steady rate of `kinds` faults, a full outage, and catch-up.
fn primary_catches_up_through(label: &str, kinds: &[Fault], rate_percent: u32) {
    let fire = seconds_from_env("FAULT_SECONDS", 0);
    let outage = seconds_from_env("FAULT_OUTAGE_SECONDS", 2);
    let rig = Rig::start();
    let db = rig.path("app.db");
    let url = rig.url("app");

    // Under fire: every litestream_sync() in the workload must get through.
    rig.proxy.set_plan(plan(kinds, rate_percent, 7));
    let started = Instant::now();
    let mut rounds = 0u64;
    loop {
        rounds += 1;
        let mut cmd = workload_command(&db, &url, rounds, 40, &["sync_interval=100ms"]);
        cmd.args(["--sync-every", "10"]).envs(CREDS);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{label}: workload round {rounds} failed under fire ({}):\n{}",
            rig.proxy.stats().summary(),
            String::from_utf8_lossy(&out.stderr)
        );
        if started.elapsed() >= fire {
            break;
        }
    }
    let under_fire = started.elapsed();

    // A full outage of the same kind: commits keep working, sync cannot finish.
    let mut shell = Shell::start(
        &extension(),
        &rig.path("shell.stderr"),
        &CREDS,
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            db.display()
        ),
    );
    rig.proxy.set_plan(plan(kinds, 100, 11));
    let outage_started = Instant::now();
    let mut commits = 0;
    while commits < 3 || outage_started.elapsed() < outage {
        shell.run("INSERT INTO items(name, qty) SELECT 'outage', value FROM generate_series(1, 20);");
        commits += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let outage = outage_started.elapsed();
    assert_eq!(
        shell
            .run("SELECT count(*) >= 60 FROM items WHERE name = 'outage';")
            .trim(),
        "1",
        "{label}: commits stopped working during the outage: {}",
        shell.stderr()
    );

    // Back to the steady fault rate: how long until everything committed is stored?
    rig.proxy.set_plan(plan(kinds, rate_percent, 13));
    let catch_up_started = Instant::now();
    let synced = shell.run("SELECT litestream_sync(120000) = litestream_txid(), litestream_txid();");
    let catch_up = catch_up_started.elapsed();
    let (ok, txid) = synced.trim().split_once('|').unwrap_or_else(|| {
        panic!(
            "{label}: no catch-up within 120 s ({}):\n{}",
            rig.proxy.stats().summary(),
            shell.stderr()
        )
    });
    assert_eq!(ok, "1", "{label}: {synced}");
    let txid: u64 = txid.parse().unwrap();
    drop(shell);

    let stats = rig.proxy.stats();
    assert!(
        kinds.iter().all(|k| stats.injected.get(k).copied().unwrap_or(0) > 0),
        "{label}: some fault was never injected, the test proved nothing: {}",
        stats.summary()
    );
    assert_every_txid_once(&rig.levels("app"), txid);
    let restored = rig.path("restored.db");
    rig.restore_with_litestream("app", &restored);
    assert_eq!(integrity(&restored), "ok");
    assert_eq!(
        dump(&restored),
        dump(&db),
        "{label}: the restore differs from the primary"
    );
    record(
        SUITE,
        &format!(
            "primary {label:<13} rate={rate_percent}% rounds={rounds} under_fire={:.1}s outage={:.1}s \
             catch_up={}ms txid={txid} {}",
            under_fire.as_secs_f64(),
            outage.as_secs_f64(),
            catch_up.as_millis(),
            stats.summary()
        ),
    );
}

#[test]
fn primary_catches_up_through_connection_resets() {
    primary_catches_up_through("reset", &[Fault::Reset], 30);
}

#[test]
fn primary_catches_up_through_stalls() {
    primary_catches_up_through("stall", &[Fault::Stall], 20);
}

#[test]
fn primary_catches_up_through_slow_bytes() {
    primary_catches_up_through("slow-bytes", &[Fault::SlowBytes], 50);
}

#[test]
fn primary_catches_up_through_5xx_bursts() {
    primary_catches_up_through("5xx", &[Fault::ServerError], 40);
}

#[test]
fn primary_catches_up_when_responses_to_applied_puts_are_lost() {
    primary_catches_up_through("lost-response", &[Fault::LostResponse], 30);
}

#[test]
fn primary_catches_up_through_a_mixed_schedule() {
    primary_catches_up_through("mixed", &Fault::ALL, 30);
}

/// The replica VFS reading through every kind of fault: each query either returns exactly
/// what the primary returns, or fails with an SQLite I/O error that has a message. Then a
/// full outage, where reads that need the store must fail that way, and recovery.
#[test]
fn replica_reads_through_faults_are_right_or_clear_errors() {
    let queries: usize = std::env::var("FAULT_READ_QUERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    let rig = Rig::start();
    let db = rig.path("primary.db");
    let url = rig.url("reads");
    // ~1.5 MB over ~400 pages; the replica's 256 KiB cache holds a sixth of them.
    let made = Command::new("sqlite3")
        .envs(CREDS)
        .args(["-batch", "-bail", "-cmd"])
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .arg(format!(".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms", db.display()))
        .arg("CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, b BLOB)")
        .arg("INSERT INTO t SELECT value, hex(randomblob(8)), randomblob(200 + value % 1000) FROM generate_series(1, 2000)")
        .arg("CREATE INDEX t_k ON t(k)")
        .arg("SELECT litestream_sync(60000) > 0")
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));

    // The script of commands: queries under a steady fault rate, then full-table scans
    // during an outage, then more queries once the store is back.
    let outage_scans = 2;
    let mut commands: Vec<&str> = vec!["next"; queries];
    commands.extend(std::iter::repeat_n("scan", outage_scans));
    commands.extend(std::iter::repeat_n("next", 10));
    let mut expected = Reader::start(&db.display().to_string(), None, &rig.path("expected.stderr"));
    let want: Vec<serde_json::Value> = commands.iter().map(|c| expected.ask(c)).collect();
    assert!(
        want.iter().all(|r| r.get("ok").is_some()),
        "the primary answers every query"
    );

    let view = rig.path("replica-view.db");
    let mut replica = Reader::start(
        &format!(
            "file:{}?vfs=litestream&role=replica&replica={url}&cache_size=256k&poll_interval=1s",
            view.display()
        ),
        Some(&extension()),
        &rig.path("replica.stderr"),
    );
    rig.proxy.set_plan(FaultPlan {
        stall: Duration::from_millis(400),
        ..plan(&Fault::ALL, 15, 5)
    });
    let started = Instant::now();
    let mut errors: BTreeMap<String, u32> = BTreeMap::new();
    let mut right = 0;
    let mut outage_errors = 0;
    for (i, (command, want)) in commands.iter().zip(&want).enumerate() {
        let in_outage = i >= queries && i < queries + outage_scans;
        if i == queries {
            rig.proxy.set_plan(plan(&[Fault::Reset, Fault::ServerError], 100, 9));
        } else if i == queries + outage_scans {
            rig.proxy.set_plan(FaultPlan::none());
        }
        let have = replica.ask(command);
        if let Some(value) = have.get("ok") {
            assert_eq!(
                value, &want["ok"],
                "query {i} ({command}) returned a wrong answer through the faults"
            );
            assert!(
                !in_outage,
                "a full-table scan cannot be served from a 256 KiB cache during an outage"
            );
            right += 1;
        } else {
            let name = have["error"].as_str().unwrap_or_default();
            let message = have["message"].as_str().unwrap_or_default();
            assert!(
                name.starts_with("SQLITE_IOERR"),
                "query {i}: a network fault must be an I/O error, not {have}"
            );
            assert!(!message.is_empty(), "query {i}: an error without a message: {have}");
            assert!(
                i < queries + outage_scans,
                "query {i}: still failing after the store came back: {have}"
            );
            outage_errors += usize::from(in_outage);
            *errors.entry(name.to_string()).or_default() += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(outage_errors, outage_scans);
    let stats = rig.proxy.stats();
    assert!(stats.total_injected() > 0, "no fault injected: {}", stats.summary());
    assert!(
        right * 10 >= queries * 9,
        "retries should answer nearly every query: {right} of {queries} right, errors {errors:?}"
    );
    let log = replica.stderr();
    assert!(!log.contains("panicked"), "{log}");
    record(
        SUITE,
        &format!(
            "replica reads queries={} right={right} errors={errors:?} elapsed={:.1}s {}",
            commands.len(),
            elapsed.as_secs_f64(),
            stats.summary()
        ),
    );
}

/// `tests/scripts/replica_reads.py`, driven one command at a time.
struct Reader {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: std::io::BufReader<std::process::ChildStdout>,
    stderr_path: PathBuf,
}

impl Reader {
    fn start(uri: &str, ext: Option<&Path>, stderr_path: &Path) -> Reader {
        let mut cmd = Command::new(python());
        cmd.arg(repo_root().join("tests/scripts/replica_reads.py"))
            .args(["--db", uri, "--seed", "3"])
            .envs(CREDS)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(stderr_path).unwrap());
        if let Some(ext) = ext {
            cmd.arg("--ext").arg(ext);
        }
        let mut child = cmd.spawn().unwrap();
        Reader {
            stdin: child.stdin.take().unwrap(),
            stdout: std::io::BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    fn ask(&mut self, command: &str) -> serde_json::Value {
        use std::io::{BufRead, Write};
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("replica_reads.py: {e}: {line:?}\n{}", self.stderr()))
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A reopen while the store cannot be listed continues from local state; a sync right
/// after it must see that everything staged before was already stored, not wait for
/// uploads that happened in the previous session (it used to time out).
#[test]
fn a_reopen_that_cannot_list_the_replica_still_knows_what_is_uploaded() {
    let rig = Rig::start();
    let db = rig.path("app.db");
    let url = rig.url("app");
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
        db.display()
    );
    let mut first = Shell::start(&extension(), &rig.path("first.stderr"), &CREDS, &open);
    let synced = first.run("CREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT litestream_sync(10000);");
    let txid = synced.trim().to_string();
    assert!(txid.parse::<u64>().is_ok_and(|t| t >= 1), "{synced}{}", first.stderr());
    drop(first);

    // A reset connection, and one dropped unanswered (object_store's error for it used to
    // look permanent, so this reopen was refused instead of continuing).
    for fault in [Fault::Reset, Fault::LostResponse] {
        rig.proxy.set_plan(FaultPlan {
            methods: Some(vec!["GET"]),
            ..FaultPlan::of(&[fault], 100)
        });
        let stderr = rig.path(&format!("{}.stderr", fault.name()));
        let mut again = Shell::start(&extension(), &stderr, &CREDS, &open);
        rig.proxy.set_plan(FaultPlan::none());
        assert!(
            again.stderr().contains("continuing from local state"),
            "{}: the reopen did not continue from local state: {}",
            fault.name(),
            again.stderr()
        );
        assert_eq!(
            again.run("SELECT litestream_sync(3000);").trim(),
            txid,
            "{}: a sync with nothing new to upload: {}",
            fault.name(),
            again.stderr()
        );
        assert_eq!(
            again.run("SELECT litestream_status() ->> '$.uploaded_txid';").trim(),
            txid
        );
    }
}
