//! Soak: mixed writes with syncs every few dozen milliseconds, compaction and retention on
//! a shrunk ladder, and a read replica (hydrating to a local file) following and querying
//! all the while, both talking to a real S3 server (moto) through the fault-injecting
//! proxy, each through its own, with a moderate mix of every kind of fault.
//!
//! What must hold: the writer's and the reader's RSS and open file descriptors stay flat
//! after warm-up; the replica stays within a bounded lag of what the primary has synced;
//! every state the reader sees is the primary's state at that TXID (the writer logs each
//! TXID's state, the reader checks each state against itself and reports it); reads fail
//! only rarely and only with an I/O error that has a message; and at the end the replica
//! restores (with Litestream 0.5.17 and with ours) to exactly the primary's database.
//!
//! `LITESTREAM_SOAK_SECONDS` (default 40; `make torture` runs 1800) sets the length;
//! figures are printed and appended to `target/figures/soak.txt`. The same soak runs on a
//! SeaweedFS cluster losing a volume server in `make torture`
//! (`a_seaweedfs_cluster_losing_a_volume_server_loses_nothing`, figures in
//! `target/figures/soak-cluster.txt`).

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::figures::{record, seconds_from_env};
use common::moto::Moto;
use common::s3::{S3Server, CREDS, REGION};
use common::seaweedfs::SeaweedCluster;
use common::usage::{percentile, usage, Series};
use harness::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SUITE: &str = "soak";
const BUCKET: &str = "soak";

/// Compaction every second, retention of two minutes: a soak of minutes goes through
/// every level, snapshot and retention pass many times over. Level-0 files stay 30 s
/// after compaction: the replica re-lists every level only every 30 polls (6 s at 200 ms,
/// more when polls retry), and a level-0 file of its plan deleted before that makes a
/// query in flight re-plan and fetch every page again (Litestream's defaults keep them
/// 5 minutes; at 10 s the soak measured 5-20 s queries and a p99 lag of 15 s).
const LADDER: &str = "l1_interval=1s&l2_interval=5s&l3_interval=20s&snapshot_interval=60s&retention=120s\
                      &l0_retention=30s&sync_interval=200ms";

/// Share of requests (%) that fail, for the writer and for the reader: every kind of fault
/// shows up many times a minute, yet retries keep replication up with the writes.
const FAULT_RATE: u32 = 4;

/// The replica may be this far (seconds) behind what the primary has synced, counting the
/// state a slow query answered from. Most of the time it is a poll interval. The spikes
/// were long queries fetching pages one GET at a time: after a re-plan onto compacted
/// files (fixed: cached pages and hydrated slots carry over, src/replica/carry.rs), and
/// when a query pinned to a TXID fell behind hydration, which overwrote the versions it
/// read while readers wrote older versions back (fixed: slots only move forward, and a
/// replaced version goes to the page cache), and when a transaction's files vanished
/// mid-query and its stand-in plan found nothing hydrated under the new names (fixed:
/// slots carry to the stand-in plan too). Last 150 s run: p99 1.9 s, max 2.4 s.
/// Replication falling behind would grow without bound; these stay put.
const MAX_LAG_S: f64 = 45.0;
/// ... and 99% of the time within this.
const P99_LAG_S: f64 = 15.0;
/// Read queries that may fail (%), all with an I/O error that says why.
const MAX_ERROR_PERCENT: u64 = 2;
/// Growth allowed after warm-up: allocator noise and caches filling, not a leak.
const RSS_SLACK_KB: u64 = 32 * 1024;
/// Connections in flight (a stall holds one for a second) come and go.
const FD_SLACK: u64 = 8;
/// A burst allowed above the warm-up peak: compaction and snapshots read many files at
/// once, one connection each (a 15-minute run saw 52 against a peak of 18, back to 10
/// right after). A leak shows in the late median instead, which must stay flat.
const FD_BURST: u64 = 64;

fn fault_plan(seed: u64) -> FaultPlan {
    FaultPlan {
        seed,
        stall: Duration::from_secs(1),
        ..FaultPlan::of(&Fault::ALL, FAULT_RATE)
    }
}

/// A child process killed when dropped, so a failed assertion leaves nothing running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a tests/scripts/ python script, stdout piped, stderr into `stderr`.
fn spawn_script(script: &str, args: &[String], stderr: &Path) -> Proc {
    Proc(
        Command::new(python())
            .arg(repo_root().join("tests/scripts").join(script))
            .args(args)
            .envs(CREDS)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The JSON lines of a child's stdout, collected on a thread.
fn json_lines(child: &mut Child) -> std::thread::JoinHandle<Vec<Value>> {
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
            .collect()
    })
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The writer's ledger: TXID -> (rows, sum of qty, sum of name lengths) at that TXID.
/// TXID -> the writer's ledger after it; a TXID logged several times keeps its last line.
fn read_ledger(path: &Path) -> BTreeMap<u64, [i64; 3]> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<i64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
            (v[0] as u64, [v[1], v[2], v[3]])
        })
        .collect()
}

/// How far behind the store the replica was at each report, and when the slowest query
/// between two reports answered: the time since the primary first synced a TXID newer
/// than the one shown (0 when it showed the newest). A query answers from the TXID its
/// transaction started with, so a slow one shows an old state. (wall-clock ms, seconds)
fn staleness(syncs: &[(i64, u64)], reports: &[&Value]) -> Vec<(i64, f64)> {
    let at = |t: &Value| (t.as_f64().unwrap() * 1000.0) as i64;
    let samples = reports.iter().flat_map(|r| {
        let report = (at(&r["t"]), r["txid"].as_u64().unwrap());
        let slowest = r["slowest"].as_array().map(|q| (at(&q[0]), q[1].as_u64().unwrap()));
        std::iter::once(report).chain(slowest)
    });
    samples
        .map(|(at_ms, seen)| {
            let newer = syncs.partition_point(|&(_, txid)| txid <= seen);
            let lag = match syncs.get(newer) {
                Some(&(ms, _)) if ms < at_ms => (at_ms - ms) as f64 / 1000.0,
                _ => 0.0,
            };
            (at_ms, lag)
        })
        .collect()
}

/// The store, the fault proxies the writer and the reader talk to it through (none: they
/// talk to it directly), a scratch directory.
struct Rig<S: S3Server> {
    store: S,
    proxies: Option<(FaultProxy, FaultProxy)>,
    dir: tempfile::TempDir,
}

impl Rig<Moto> {
    /// moto, one fault proxy for the writer and one for the reader.
    fn start() -> Rig<Moto> {
        let moto = Moto::start();
        moto.create_bucket(BUCKET);
        Rig {
            proxies: Some((
                FaultProxy::start(moto.port, fault_plan(17)),
                FaultProxy::start(moto.port, fault_plan(29)),
            )),
            store: moto,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Rig<SeaweedCluster> {
    /// A SeaweedFS cluster (master, two volume servers keeping every object twice, filer,
    /// S3 gateway), talked to directly: the fault is a volume server lost mid-run.
    fn cluster() -> Rig<SeaweedCluster> {
        let cluster = SeaweedCluster::start();
        cluster.create_bucket(BUCKET);
        Rig {
            store: cluster,
            proxies: None,
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl<S: S3Server> Rig<S> {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The replica's URL at `endpoint` (a proxy's, or the store's own).
    fn url(endpoint: &str) -> String {
        format!("s3://{BUCKET}/db?endpoint={endpoint}&region={REGION}&forcePathStyle=true")
    }

    fn writer_url(&self) -> String {
        Self::url(
            &self
                .proxies
                .as_ref()
                .map_or(self.store.endpoint(), |p| p.0.endpoint.clone()),
        )
    }

    fn reader_url(&self) -> String {
        Self::url(
            &self
                .proxies
                .as_ref()
                .map_or(self.store.endpoint(), |p| p.1.endpoint.clone()),
        )
    }

    /// What the writer's proxy saw, if there is one.
    fn writer_faults(&self) -> String {
        self.proxies
            .as_ref()
            .map_or_else(|| "no proxy".into(), |p| p.0.stats().summary())
    }
}

/// What the writer and the reader printed, and the writer's usage sampled from outside.
struct Run {
    elapsed: Duration,
    reader_secs: u64,
    writer: Vec<Value>,
    reader: Vec<Value>,
    writer_rss: Series,
    writer_fds: Series,
}

/// Runs the writer for `secs` and, from its first upload on, the reader. `each_second`
/// gets the store and the time since the start once a second while the writer runs.
fn run<S: S3Server>(rig: &mut Rig<S>, secs: u64, mut each_second: impl FnMut(&mut S, Duration)) -> Run {
    let started = Instant::now();
    let writer_uri = format!(
        "file:{}?vfs=litestream&replica={}&{LADDER}",
        rig.path("app.db").display(),
        rig.writer_url()
    );
    let ext = extension().display().to_string();
    let ledger = rig.path("ledger.txt").display().to_string();
    let mut writer = spawn_script(
        "soak_writer.py",
        &[ext.clone(), writer_uri, secs.to_string(), "11".into(), ledger],
        &rig.path("writer.stderr"),
    );
    let writer_lines = json_lines(&mut writer.0);
    let writer_log = |rig: &Rig<S>| format!("{}\n{}", rig.writer_faults(), tail(&rig.path("writer.stderr"), 40));

    let t = Instant::now();
    while rig.store.list_keys(BUCKET, "db/0000/").is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no replica after 60 s: {}",
            writer_log(rig)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let reader_uri = format!(
        "file:{}?vfs=litestream&role=replica&replica={}&poll_interval=200ms&cache_size=4MB&hydrate={}",
        rig.path("view.db").display(),
        rig.reader_url(),
        rig.path("hydrated.db").display()
    );
    let reader_secs = secs.saturating_sub(started.elapsed().as_secs() + 2).max(10);
    let mut reader = spawn_script(
        "soak_reader.py",
        &[ext, reader_uri, reader_secs.to_string()],
        &rig.path("reader.stderr"),
    );
    let reader_lines = json_lines(&mut reader.0);

    let (mut writer_rss, mut writer_fds) = (Series(vec![]), Series(vec![]));
    while writer.0.try_wait().unwrap().is_none() {
        if let Some((rss, fds)) = usage(writer.0.id()) {
            writer_rss.0.push(rss);
            writer_fds.0.push(fds);
        }
        each_second(&mut rig.store, started.elapsed());
        std::thread::sleep(Duration::from_secs(1));
    }
    assert!(
        writer.0.wait().unwrap().success(),
        "writer failed: {}\n{}",
        writer_log(rig),
        rig.store.log_tail()
    );
    assert!(
        reader.0.wait().unwrap().success(),
        "reader failed:\n{}",
        tail(&rig.path("reader.stderr"), 40)
    );
    Run {
        elapsed: started.elapsed(),
        reader_secs,
        writer: writer_lines.join().unwrap(),
        reader: reader_lines.join().unwrap(),
        writer_rss,
        writer_fds,
    }
}

/// The states (TXID, ledger) the reader reported that are not the writer's state at that
/// TXID, or are past the writer's last TXID; and how many states were checked.
fn states_the_primary_never_had(
    reader: &[Value],
    ledger: &BTreeMap<u64, [i64; 3]>,
    final_txid: u64,
) -> (Vec<String>, usize) {
    let observed: Vec<(u64, [i64; 3])> = reader
        .iter()
        .filter_map(|v| {
            let o = v.get("obs")?.as_array()?;
            let n = |i: usize| o[i].as_i64().unwrap();
            Some((o[0].as_u64().unwrap(), [n(1), n(2), n(3)]))
        })
        .collect();
    let wrong = observed
        .iter()
        .filter_map(|&(txid, seen)| {
            // A TXID with no line of its own is a snapshot: the state of the one before.
            let want = ledger.range(..=txid).next_back().map(|(_, s)| *s);
            (want != Some(seen) || txid > final_txid)
                .then(|| format!("TXID {txid}: saw {seen:?}, primary had {want:?}"))
        })
        .collect();
    (wrong, observed.len())
}

/// Restores the replica straight from the store with Litestream 0.5.17 and with ours;
/// both must pass integrity_check and dump exactly like the primary.
fn assert_restores_equal_the_primary<S: S3Server>(rig: &Rig<S>) {
    let primary = dump(&rig.path("app.db"));
    let url = Rig::<S>::url(&rig.store.endpoint());
    let ours = rig.path("restored-ours.db");
    let theirs = rig.path("restored-litestream.db");
    sql_restore(&url, &ours, &CREDS);
    litestream_restore_env(&url, &theirs, &[], &CREDS).unwrap();
    for (who, out) in [("ours", ours), ("litestream 0.5.17", theirs)] {
        assert_eq!(integrity(&out), "ok", "{who}: restored database");
        assert!(dump(&out) == primary, "{who}: the restore differs from the primary");
    }
}

#[test]
fn rss_fds_and_lag_stay_flat_under_mixed_load_and_network_faults() {
    let secs = seconds_from_env("LITESTREAM_SOAK_SECONDS", 40).as_secs();
    let mut rig = Rig::start();
    let run = run(&mut rig, secs, |_, _| {});
    check(&rig, &run, secs, None);
}

/// The soak on a SeaweedFS cluster (`LITESTREAM_CLUSTER_SOAK_SECONDS`, default 120) whose
/// second volume server is SIGKILLed a third of the way in and restarted
/// `LITESTREAM_CLUSTER_OUTAGE_SECONDS` (default 20) later: replication stalls while the
/// cluster notices and then goes on; no acknowledged commit is lost, the replica never shows
/// a state the primary did not have, both restores equal the primary. The lag limits hold
/// outside the outage and the 45 s after it.
#[test]
#[ignore = "make torture: a SeaweedFS cluster losing a volume server"]
fn a_seaweedfs_cluster_losing_a_volume_server_loses_nothing() {
    let secs = seconds_from_env("LITESTREAM_CLUSTER_SOAK_SECONDS", 120).as_secs();
    let down = seconds_from_env("LITESTREAM_CLUSTER_OUTAGE_SECONDS", 20);
    let kill_at = Duration::from_secs(secs / 3);
    let mut rig = Rig::cluster();
    let (mut killed, mut restarted) = (None, None);
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let run = run(&mut rig, secs, |cluster, t| {
        if killed.is_none() && t >= kill_at {
            cluster.kill_volume(1);
            killed = Some(now_ms());
            println!("volume server 1 killed at {:.0} s", t.as_secs_f64());
        } else if restarted.is_none() && t >= kill_at + down {
            cluster.restart_volume(1);
            restarted = Some(now_ms());
            println!("volume server 1 back at {:.0} s", t.as_secs_f64());
        }
    });
    let (Some(from_ms), Some(back_ms)) = (killed, restarted) else {
        panic!("the run ended before the volume server was killed and restarted: make it longer");
    };
    check(&rig, &run, secs, Some(Outage { from_ms, back_ms }));
}

/// When the store lost a server and got it back (wall-clock ms). From the loss until
/// [`SETTLE_MS`] after the return, lag and sync time are the store's, not ours.
struct Outage {
    from_ms: i64,
    back_ms: i64,
}

const SETTLE_MS: i64 = 45_000;

/// Everything the soak asserts and records, for a run on `rig` (during `outage`, if any).
fn check<S: S3Server>(rig: &Rig<S>, run: &Run, secs: u64, outage: Option<Outage>) {
    let suite = if outage.is_some() { "soak-cluster" } else { SUITE };
    // The writer's figures.
    let fin = run.writer.iter().find(|v| v.get("final").is_some()).unwrap_or_else(|| {
        panic!(
            "the writer printed no final line:\n{}",
            tail(&rig.path("writer.stderr"), 40)
        )
    });
    let final_txid = fin["final"].as_u64().unwrap();
    let status = &fin["status"];
    let compaction = &status["compaction"];
    let syncs: Vec<(i64, u64)> = run
        .writer
        .iter()
        .filter_map(|v| Some((v.get("ms")?.as_i64()?, v.get("sync")?.as_u64()?)))
        .collect();

    // Every state the reader saw.
    let impossible: Vec<&Value> = run.reader.iter().filter(|v| v.get("wrong").is_some()).collect();
    let ledger = read_ledger(&rig.path("ledger.txt"));
    let (never_had, states_checked) = states_the_primary_never_had(&run.reader, &ledger, final_txid);

    // The reader's figures.
    let reports: Vec<&Value> = run.reader.iter().filter(|v| v.get("rss_kb").is_some()).collect();
    let errors: Vec<&Value> = run.reader.iter().filter(|v| v.get("error").is_some()).collect();
    // SQLite gives the application only "disk I/O error"; the VFS logs why.
    let logged: Vec<String> = std::fs::read_to_string(rig.path("reader.stderr"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("litestream: replica ").map(|(_, why)| why.to_string()))
        .collect();
    let slow: Vec<&Value> = run.reader.iter().filter(|v| v.get("slow").is_some()).collect();
    let last = *reports.last().expect("the reader reported nothing");
    let queries = last["queries"].as_u64().unwrap();
    // During an outage the store decides the lag: the limits hold outside it, and the
    // outage's own samples only have to come back (the maximum allows for its length).
    let samples = staleness(&syncs, &reports);
    let during = |at: i64| {
        outage
            .as_ref()
            .is_some_and(|o| at >= o.from_ms && at <= o.back_ms + SETTLE_MS)
    };
    let mut stale: Vec<f64> = samples.iter().filter(|(at, _)| !during(*at)).map(|s| s.1).collect();
    stale.sort_by(f64::total_cmp);
    let mut in_outage: Vec<f64> = samples.iter().filter(|(at, _)| during(*at)).map(|s| s.1).collect();
    in_outage.sort_by(f64::total_cmp);
    let outage_s = outage
        .as_ref()
        .map_or(0.0, |o| (o.back_ms + SETTLE_MS - o.from_ms) as f64 / 1000.0);
    // Syncs that gave up after 60 s (allowed during an outage only), and how long after
    // the server came back the first sync returned.
    let sync_timeouts: Vec<i64> = run
        .writer
        .iter()
        .filter(|v| v.get("sync_timeout").is_some())
        .filter_map(|v| v["ms"].as_i64())
        .collect();
    let caught_up_s = outage.as_ref().and_then(|o| {
        let first = syncs.iter().find(|(ms, _)| *ms > o.back_ms)?;
        Some((first.0 - o.back_ms) as f64 / 1000.0)
    });
    let (p50, p99, pmax) = (
        percentile(&stale, 0.5),
        percentile(&stale, 0.99),
        percentile(&stale, 1.0),
    );
    let longest_sync_gap = syncs.windows(2).map(|w| w[1].0 - w[0].0).max().unwrap_or(0) as f64 / 1000.0;
    let own_lag_max = reports.iter().map(|v| v["lag"].as_i64().unwrap()).max().unwrap();
    let mut error_kinds: BTreeMap<String, u64> = BTreeMap::new();
    for e in &errors {
        *error_kinds
            .entry(e["error"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let (wr, wf) = (run.writer_rss.flatness(), run.writer_fds.flatness());
    let (rr, rf) = (
        Series(reports.iter().map(|v| v["rss_kb"].as_u64().unwrap()).collect()).flatness(),
        Series(reports.iter().map(|v| v["fds"].as_u64().unwrap()).collect()).flatness(),
    );

    let figures =
        [
            format!(
                "duration={:.0}s commits={} syncs={} final_txid={final_txid} uploads={} snapshots={} \
             compactions={} retention_deleted={} compaction_errors={}",
                run.elapsed.as_secs_f64(),
                fin["commits"],
                syncs.len(),
                status["uploads"],
                status["snapshots"],
                compaction["compactions"],
                compaction["deleted_files"],
                compaction["errors"].as_u64().unwrap_or(0),
            ),
            format!(
                "store: {}; writer proxy: {}; reader proxy: {}",
                rig.store.name(),
                rig.writer_faults(),
                rig.proxies.as_ref().map_or_else(|| "no proxy".into(), |p| p.1.stats().summary())
            ),
            format!("writer RSS kB {wr}; fds {wf}"),
            format!("reader RSS kB {rr}; fds {rf}"),
            format!(
            "lag behind synced TXIDs p50={p50:.2}s p99={p99:.2}s max={pmax:.2}s; litestream_lag() max={own_lag_max}s; \
             outage window {outage_s:.0}s: {} samples, max lag {:.2}s; longest gap between two syncs {longest_sync_gap:.1}s; \
             sync timeouts {}; first sync after the server came back {caught_up_s:?}s",
            in_outage.len(),
            percentile(&in_outage, 1.0).max(0.0),
            sync_timeouts.len(),
        ),
            format!(
            "reader queries={queries} errors={} {error_kinds:?} states_checked={states_checked} query_ms mean={:.0} \
             max={:.0} slow(>5s)={} polls={} poll_errors={} read_errors={} hydrated_pages={}/{}",
            errors.len(),
            reports.iter().map(|v| v["query_ms_sum"].as_f64().unwrap()).sum::<f64>() / queries.max(1) as f64,
            reports.iter().map(|v| v["query_ms_max"].as_f64().unwrap()).fold(0.0, f64::max),
            slow.len(),
            last["status"]["polls"],
            last["status"]["poll_errors"],
            last["status"]["read_errors"],
            last["status"]["hydration"]["pages_local"],
            last["status"]["hydration"]["pages"],
        ),
        ];
    for line in &figures {
        record(suite, &format!("{secs}s {line}"));
    }
    println!("last compaction error: {}", compaction["last_error"]);
    for e in errors.iter().take(20) {
        println!("reader error: {e}");
    }
    for why in logged.iter().take(20) {
        println!("reader error, as logged: {why}");
    }
    for s in &slow {
        println!("slow reader query: {s}");
    }

    assert!(
        impossible.is_empty(),
        "the reader saw impossible states: {impossible:?}"
    );
    assert!(
        never_had.is_empty(),
        "the reader saw states the primary never had: {never_had:?}"
    );
    assert!(states_checked >= 10, "the reader saw only {states_checked} states");
    if let Some((writer_proxy, reader_proxy)) = &rig.proxies {
        assert!(
            writer_proxy.stats().total_injected() > 0 && reader_proxy.stats().total_injected() > 0,
            "no faults injected: the soak proved nothing about them"
        );
    }
    // A report comes between two queries, so at most a query's time late.
    assert!(
        reports.len() as u64 >= run.reader_secs / 3,
        "{} reader reports",
        reports.len()
    );
    for e in &errors {
        let name = e["error"].as_str().unwrap_or_default();
        let message = e["message"].as_str().unwrap_or_default();
        assert!(
            name.starts_with("SQLITE_IOERR"),
            "a read failed with {e}, not an I/O error"
        );
        assert!(!message.is_empty(), "an error without a message: {e}");
    }
    assert!(
        logged.len() >= errors.len(),
        "{} read errors, {} explained in the log",
        errors.len(),
        logged.len()
    );
    assert!(
        errors.len() as u64 * 100 <= queries * MAX_ERROR_PERCENT,
        "{} of {queries} reads failed",
        errors.len()
    );
    assert!(
        sync_timeouts.iter().all(|&ms| during(ms)),
        "litestream_sync() gave up outside an outage ({} times)",
        sync_timeouts.len()
    );
    assert!(pmax <= MAX_LAG_S, "the replica fell {pmax:.1} s behind");
    assert!(p99 <= P99_LAG_S, "the replica's p99 lag was {p99:.1} s");
    let in_outage_max = percentile(&in_outage, 1.0);
    assert!(
        in_outage.is_empty() || in_outage_max <= MAX_LAG_S + outage_s,
        "the replica fell {in_outage_max:.1} s behind during a {outage_s:.0} s outage"
    );
    assert!(
        own_lag_max as f64 <= MAX_LAG_S + outage_s,
        "litestream_lag() reached {own_lag_max} s"
    );
    for (who, rss, fds) in [("writer", &wr, &wf), ("reader", &rr, &rf)] {
        assert!(
            rss.max_after <= rss.warm + RSS_SLACK_KB,
            "{who} RSS grew after warm-up: {rss}"
        );
        assert!(
            fds.late <= fds.warm + FD_SLACK && fds.max_after <= fds.warm + FD_BURST,
            "{who} fds grew after warm-up: {fds}"
        );
    }
    assert_restores_equal_the_primary(rig);
}
