//! Isolation (issue 15): one database whose store stalls and then goes down must not
//! delay the uploads of the other databases of its process, nor must a busy one. Fifty
//! primaries on `file://` replicas commit steadily beside one that commits 64 KiB every
//! 5 ms, six whose S3 store (moto) sits behind the fault proxy, and six read replicas
//! of those six polling the same store;
//! each of the fifty keeps its replication lag within two sync intervals through a
//! stall (requests that hang) and an outage (requests refused), with compaction windows
//! passing on all of them at once; the stalled one catches up after and restores equal.
//!
//! Lag is judged from the replica, not from our own status: the time from a commit to
//! the change time of the level-0 file that holds its TXID. Everything lives on a tmpfs
//! when the machine has one (`/dev/shm`): fifty databases synced every 200 ms make a
//! thousand fsyncs a second, which measures the disk of a small machine, not the engine.

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use harness::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const BUCKET: &str = "isolation";
const CREDS: [(&str, &str); 2] = [
    ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
    ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
];
const STEADY: usize = 50;
/// Databases on the store that stalls: more than the engine has threads (4), so that
/// a thread held for each one's round trip would leave none for the others.
const FAULTY: usize = 6;
const SYNC_INTERVAL_MS: u64 = 200;
/// Each database commits this often.
const COMMIT_PERIOD_MS: u64 = 100;
/// How long each phase (calm, stall, outage, recovery) commits.
const PHASE_SECONDS: u64 = 5;

/// `tests/scripts/isolation.py`, one command at a time.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    stderr: std::path::PathBuf,
}

impl Driver {
    fn ask(&mut self, command: &str) -> serde_json::Value {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.read(command)
    }

    fn read(&mut self, what: &str) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "isolation.py gave no answer to {what:?}:\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            )
        })
    }
}

impl Driver {
    /// `steady` databases on `file://` and `faulty` on S3 through `proxy`, in one process.
    /// With `replicas` read replicas of the `faulty` ones open beside them.
    fn start(dir: &Path, proxy: &FaultProxy, steady: usize, faulty: usize, replicas: usize, params: &str) -> Driver {
        let url = format!(
            "s3://{BUCKET}/one{{i}}?endpoint={}&region={REGION}&forcePathStyle=true",
            proxy.endpoint
        );
        let stderr = dir.join("isolation.stderr");
        let mut child = Command::new(python())
            .arg(repo_root().join("tests/scripts/isolation.py"))
            .arg(extension())
            .arg(dir)
            .arg(steady.to_string())
            .arg(COMMIT_PERIOD_MS.to_string())
            .arg(params)
            .arg(faulty.to_string())
            .arg(&url)
            .arg(replicas.to_string())
            .envs(CREDS)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut driver = Driver {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            stderr,
        };
        assert_eq!(driver.read("start")["ready"], true);
        driver
    }
}

/// A scratch directory on a tmpfs when there is one.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in("/dev/shm")
        .or_else(|_| tempfile::tempdir())
        .unwrap()
}

#[test]
fn a_stalled_then_down_store_delays_no_other_database_and_catches_up() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = FaultProxy::start(moto.port, FaultPlan::none());
    let dir = scratch();
    // A level-1 window every 2 s: every database compacts at the same boundaries
    // (they are wall-clock aligned), several times a phase.
    let params = format!("sync_interval={SYNC_INTERVAL_MS}ms&l1_interval=2s");
    // Read replicas of the faulty store poll it too (every 500 ms): more of them than the
    // engine has threads.
    let mut driver = Driver::start(dir.path(), &proxy, STEADY, FAULTY, FAULTY, &params);
    let run = format!("run {PHASE_SECONDS}");
    let mut busy = Vec::new();
    let mut run = |driver: &mut Driver| busy.push(driver.ask(&run)["busy_commits"].as_u64().unwrap());

    run(&mut driver);
    // Stall: every request to the one store hangs for the whole phase.
    proxy.set_plan(FaultPlan {
        stall: Duration::from_secs(PHASE_SECONDS),
        ..FaultPlan::of(&[Fault::Stall], 100)
    });
    run(&mut driver);
    // Outage: every request is refused at once (resets and 5xx).
    proxy.set_plan(FaultPlan::of(&[Fault::Reset, Fault::ServerError], 100));
    run(&mut driver);
    // Staged and not uploaded, on disk: during the outage it only grows, so the status
    // asked after this listing counts at least as much.
    let staged: u64 = (0..FAULTY)
        .map(|j| staged_bytes(&dir.path().join(format!("db/one{j}.db-litestream"))))
        .sum();
    let in_outage = driver.ask("status");
    proxy.set_plan(FaultPlan::none());
    run(&mut driver);

    assert!(
        busy.iter().all(|n| *n >= 20),
        "the busy database was not busy (commits per phase: {busy:?})"
    );
    let synced = driver.ask("sync 60000");
    assert_eq!(
        synced["synced"], synced["txid"],
        "the stalled databases did not catch up: {synced}"
    );
    let engine = driver.ask("status");
    check_engine_status(&in_outage, &engine, &proxy.endpoint, staged);
    let lags = driver.ask("lags");
    drop(driver.stdin);
    let status = driver.child.wait().unwrap();
    let log = std::fs::read_to_string(&driver.stderr).unwrap_or_default();
    assert!(status.success(), "isolation.py failed:\n{log}");
    assert!(!log.contains("panicked"), "{log}");

    let stats = proxy.stats();
    assert!(
        stats.injected.get(&Fault::Stall).copied().unwrap_or(0) > 0
            && stats.injected.get(&Fault::Reset).copied().unwrap_or(0)
                + stats.injected.get(&Fault::ServerError).copied().unwrap_or(0)
                > 0,
        "the one store never saw the stall and the outage, the test proved nothing: {}",
        stats.summary()
    );
    assert_eq!(lags["missing"], 0, "commits never reached their replicas: {lags}");
    let worst: Vec<u64> = lags["worst_lag_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(worst.len(), STEADY);
    let limit = 2 * SYNC_INTERVAL_MS;
    let late: Vec<(usize, u64)> = worst
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, lag)| *lag > limit)
        .collect();
    assert!(
        late.is_empty(),
        "databases whose lag went over {limit} ms (2 x sync_interval) while another's store \
         stalled: {late:?}; worst per phase (calm, stall, outage, recovery) {}; engine {engine}; {}",
        lags["worst_by_phase_ms"],
        stats.summary()
    );

    // The stalled ones caught up in full: Litestream 0.5.17 restores them straight
    // from moto.
    for j in 0..FAULTY {
        let restored = dir.path().join(format!("one{j}-restored.db"));
        let direct = format!(
            "s3://{BUCKET}/one{j}?endpoint={}&region={REGION}&forcePathStyle=true",
            moto.endpoint
        );
        let out = Command::new(litestream_bin())
            .env_remove("AWS_CA_BUNDLE")
            .envs(CREDS)
            .args(["restore", "-o"])
            .arg(&restored)
            .arg(&direct)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(dump(&restored), dump(&dir.path().join(format!("db/one{j}.db"))));
    }
    for i in [0, STEADY / 2, STEADY - 1] {
        let restored = dir.path().join(format!("restored-{i}.db"));
        let url = format!("file://{}/replicas/{i}", dir.path().display());
        litestream_restore(&url, &restored, &[]).unwrap();
        assert_eq!(dump(&restored), dump(&dir.path().join(format!("db/{i}.db"))));
    }
    eprintln!(
        "worst lag {} ms of {STEADY} databases ({} commits), per phase {}; busy commits per phase {busy:?}; engine {engine}; {}",
        worst.iter().max().unwrap(),
        lags["commits"],
        lags["worst_by_phase_ms"],
        stats.summary()
    );
}

/// Bytes of the LTX files staged for upload under a database's staging directory.
fn staged_bytes(staging: &Path) -> u64 {
    std::fs::read_dir(staging.join("ltx"))
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "ltx"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The engine's part of `litestream_status()`: its few threads, the round trips the
/// stall made it hand off, and per store endpoint the budget, the requests and the
/// backlog: the down store's databases all waiting during the outage, none after.
fn check_engine_status(in_outage: &serde_json::Value, after: &serde_json::Value, endpoint: &str, staged: u64) {
    let store = |status: &serde_json::Value, name: &str| -> serde_json::Value {
        status["stores"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["endpoint"] == name).cloned())
            .unwrap_or_else(|| panic!("no store {name} in the engine's status {status}"))
    };
    let s3 = format!("s3://{BUCKET} at {endpoint}");
    let down = store(in_outage, &s3);
    assert_eq!(down["databases"], FAULTY, "{down}");
    assert_eq!(down["databases_waiting"], FAULTY, "{down}");
    assert!(down["txids_pending"].as_u64().unwrap() >= FAULTY as u64, "{down}");
    assert!(staged > 0, "nothing was staged during the outage");
    assert!(
        down["bytes_pending"].as_u64().unwrap() >= staged,
        "bytes_pending leaves out the {staged} bytes staged on disk: {down}"
    );
    let local = store(in_outage, "file://");
    assert_eq!(
        local["databases"],
        STEADY + 1,
        "the steady ones and the busy one: {local}"
    );
    assert_eq!(local["budget_per_second"], 0, "local stores are unpaced: {local}");

    let back = store(after, &s3);
    assert_eq!(back["databases_waiting"], 0, "{back}");
    assert_eq!(back["budget_per_second"], 1000, "{back}");
    assert!(back["requests"].as_u64().unwrap() > 0, "{back}");
    assert!(after["threads"].as_u64().unwrap() <= 4, "{after}");
    assert!(
        after["queued_jobs"].is_u64() && after["running_jobs"].is_u64(),
        "{after}"
    );
    assert!(after["requests_per_second"].as_f64().unwrap() > 0.0, "{after}");
    assert!(
        after["round_trips_handed_off"].as_u64().unwrap() > 0,
        "the stalled store's PUTs were never handed off: {after}"
    );
}

/// Pacing (issue 15): after an outage, four databases with a hundred staged files
/// between them catch up within the endpoint's budget of 20 requests a second. Judged by
/// counting: the process's S3 operations (its metrics) between any two samples are at
/// most the budget's burst plus its rate times the time between them, plus the requests
/// already out at the first sample (one per database). Without the budget the files go
/// up in well under a second. Once caught up, the idle databases make no request.
#[test]
fn catching_up_after_an_outage_keeps_to_the_request_budget() {
    const RATE: f64 = 20.0;
    const DATABASES: usize = 4;
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = FaultProxy::start(moto.port, FaultPlan::none());
    let dir = scratch();
    let params = format!("sync_interval=100ms&compaction=off&requests_per_second={RATE}");
    let mut driver = Driver::start(dir.path(), &proxy, 0, DATABASES, 0, &params);
    proxy.set_plan(FaultPlan::of(&[Fault::ServerError], 100));
    driver.ask("run 3");
    proxy.set_plan(FaultPlan::none());
    let samples: Vec<(f64, f64)> = driver.ask("watch 6")["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s[0].as_f64().unwrap(), s[1].as_f64().unwrap()))
        .collect();
    let synced = driver.ask("sync 120000");
    assert_eq!(synced["synced"], synced["txid"], "no catch-up: {synced}");
    // Caught up and idle: not one request more.
    let idle = driver.ask("watch 2")["samples"].clone();
    let counts: Vec<f64> = idle
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s[1].as_f64().unwrap())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] == w[1]),
        "idle databases made requests: {idle}"
    );
    drop(driver.stdin);
    assert!(driver.child.wait().unwrap().success());

    let burst = (RATE / 10.0).max(1.0);
    for (i, (t0, n0)) in samples.iter().enumerate() {
        for (t1, n1) in &samples[i + 1..] {
            let allowed = burst + RATE * (t1 - t0) + DATABASES as f64;
            assert!(
                n1 - n0 <= allowed,
                "{} requests in {:.2} s, over the budget of {RATE}/s (allowed {allowed:.0}): {samples:?}",
                n1 - n0,
                t1 - t0
            );
        }
    }
    let (first, last) = (samples[0], samples[samples.len() - 1]);
    assert!(
        last.1 - first.1 >= RATE * 2.0,
        "the catch-up made too few requests to show the budget at work: {samples:?}"
    );
    eprintln!(
        "catch-up: {} requests in {:.1} s at a budget of {RATE}/s",
        last.1 - first.1,
        last.0 - first.0
    );
}

/// Databases on one store share the process's HTTP connections (issue 15): twenty
/// primaries in one bucket, opened and synced one after another (about ten requests
/// each), reuse a few kept-alive connections. With a client (and connection pool) per
/// database, each would open at least its own.
#[test]
fn databases_on_one_store_share_its_connections() {
    const DATABASES: usize = 20;
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    // Connections kept open, as a real store keeps them.
    let proxy = FaultProxy::start(moto.port, FaultPlan::distant(Duration::ZERO));
    let dir = scratch();
    // Opens each database and syncs it, one after another.
    let driver = Driver::start(dir.path(), &proxy, 0, DATABASES, 0, "");
    let stats = proxy.stats();
    drop(driver.stdin);
    let mut child = driver.child;
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "isolation.py failed:\n{}",
        std::fs::read_to_string(&driver.stderr).unwrap_or_default()
    );
    assert!(
        stats.requests >= 3 * DATABASES as u64,
        "too few requests to judge: {}",
        stats.summary()
    );
    assert!(
        stats.connections < DATABASES as u64,
        "{} connections for {DATABASES} databases opened one after another on one store: \
         they do not share a client; {}",
        stats.connections,
        stats.summary()
    );
    eprintln!(
        "{DATABASES} databases on one store: {} connections for {} requests",
        stats.connections, stats.requests
    );
}
