//! Cold read replicas at the speed of round trips: ours against litestream-vfs 0.5.17 with
//! 0, 20 and 50 ms added to every request.
//!
//! One database (~1 KiB rows, an index on `customer`) is replicated by the real
//! `litestream replicate` 0.5.17 to a loopback S3 store (SeaweedFS's `weed mini` from the
//! venv when it is there, else moto: see `--store`), then a few more commits. Our primary
//! replicates a copy of it too. Between the readers and the store sits the test proxy
//! (`tests/common/fault_proxy/`), holding each request for the latency (a new connection
//! one more: its TCP handshake) and logging when each request arrived and was answered.
//!
//! Each measurement is a fresh process (Debian's `python3`, which can load extensions)
//! that loads one extension, opens the replica and runs one query, timed from the open to
//! the result:
//!
//! - `point`: one row by primary key (a 3-level b-tree);
//! - `range`: 1,000 consecutive rows by primary key (about 250 leaves);
//! - `count`: `SELECT count(*)` (the whole `customer` index).
//!
//! Readers: `litestream-vfs` (its VFS on Litestream's replica), `ours` (our VFS on the same
//! replica: the same bytes), `ours-own` (our VFS on the replica our primary wrote).
//! Reported per latency, query and reader, medians over `--runs`: wall time, requests,
//! bytes, and the longest chain of requests made one after another (from the proxy's log:
//! each request in the chain arrived after the previous one was answered). A query that
//! runs past `--max-seconds` is interrupted and marked.
//!
//! `cargo bench --bench cold_replica -- [--size-mib 256] [--runs 3] [--latencies 0,20,50]
//! [--queries point,range,count] [--readers ...] [--store seaweedfs|moto]
//! [--max-seconds 120] [--out bench/results-cold.json] [--keep] [--verbose]`, or
//! `make bench-cold`. Needs `make build` and `make setup`.

#[path = "../tests/common/mod.rs"]
mod common;

use common::fault_proxy::{describe_log, longest_chain, FaultPlan, FaultProxy};
use common::s3::S3Server;
use common::server::{free_port, Server};
use common::tools::{in_repo, litestream_path, litestream_vfs_extension_path};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "bench";
const KEY_ID: &str = "bench";
const SECRET: &str = "bench-secret";

/// One query: name, SQL, and whether it takes the run's id twice (range) or once.
const QUERIES: [(&str, &str); 3] = [
    (
        "point",
        "SELECT id, customer, amount, length(note) FROM orders WHERE id = :id",
    ),
    (
        "range",
        "SELECT count(*), sum(amount) FROM orders WHERE id BETWEEN :id AND :id + 999",
    ),
    ("count", "SELECT count(*) FROM orders"),
];
const READERS: [&str; 3] = ["litestream-vfs", "ours", "ours-own"];

/// The worker: loads the extension, then times open -> first row of one query. Prints JSON.
const WORKER: &str = r#"
import json, sqlite3, sys, time
spec = json.loads(sys.argv[1])
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(spec["ext"])
loader.close()
t0 = time.perf_counter()
conn = sqlite3.connect(spec["uri"], uri=True, isolation_level=None)
deadline = t0 + spec["max_seconds"]
conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 1000)
try:
    row = conn.execute(spec["sql"], {"id": spec["id"]}).fetchone()
    finished = True
except sqlite3.OperationalError as e:
    if "interrupt" not in str(e):
        raise
    row, finished = None, False
ms = (time.perf_counter() - t0) * 1e3
print(json.dumps({"ms": ms, "row": repr(row), "finished": finished}))
"#;

struct Args {
    size_mib: u64,
    runs: usize,
    latencies: Vec<u64>,
    queries: Vec<String>,
    readers: Vec<String>,
    store: String,
    max_seconds: u64,
    out: PathBuf,
    keep: bool,
    verbose: bool,
}

fn parse_args() -> Args {
    let weed = in_repo(".venv/bin/weed");
    let mut a = Args {
        size_mib: 256,
        runs: 3,
        latencies: vec![0, 20, 50],
        queries: QUERIES.iter().map(|q| q.0.to_string()).collect(),
        readers: READERS.iter().map(|r| r.to_string()).collect(),
        store: if weed.is_file() { "seaweedfs" } else { "moto" }.into(),
        max_seconds: 120,
        out: in_repo("bench/results-cold.json"),
        keep: false,
        verbose: false,
    };
    let list = |v: String| {
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--bench" => {} // cargo bench passes it
            "--size-mib" => a.size_mib = value().parse().expect("--size-mib N"),
            "--runs" => a.runs = value().parse().expect("--runs N"),
            "--latencies" => a.latencies = list(value()).iter().map(|v| v.parse().expect("ms")).collect(),
            "--queries" => a.queries = list(value()),
            "--readers" => a.readers = list(value()),
            "--store" => a.store = value(),
            "--max-seconds" => a.max_seconds = value().parse().expect("--max-seconds N"),
            "--out" => a.out = PathBuf::from(value()),
            "--keep" => a.keep = true,
            "--verbose" => a.verbose = true,
            other => panic!("unknown option {other} (see the top of benches/cold_replica.rs)"),
        }
    }
    a
}

/// The loopback S3 store the replicas live in.
enum Store {
    Seaweed(Server),
    Moto(common::moto::Moto),
}

impl Store {
    fn start(kind: &str) -> Store {
        match kind {
            "seaweedfs" => {
                let weed = in_repo(".venv/bin/weed");
                let ports: Vec<u16> = (0..7).map(|_| free_port()).collect();
                Store::Seaweed(Server::start(
                    "weed",
                    &weed,
                    |cmd, s3, dir| {
                        // Every port explicit: their defaults (and port + 10000 for gRPC)
                        // may be taken by another test's servers.
                        cmd.arg("mini")
                            .arg(format!("-dir={}", dir.display()))
                            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
                            .arg(format!("-s3.port={s3}"))
                            .arg(format!("-s3.port.grpc={}", ports[0]))
                            .arg(format!("-master.port={}", ports[1]))
                            .arg(format!("-master.port.grpc={}", ports[2]))
                            .arg(format!("-volume.port={}", ports[3]))
                            .arg(format!("-volume.port.grpc={}", ports[4]))
                            .arg(format!("-filer.port={}", ports[5]))
                            .arg(format!("-filer.port.grpc={}", ports[6]))
                            .args([
                                "-webdav=false",
                                "-admin.ui=false",
                                "-s3.port.iceberg=0",
                                "-s3.port.lance=0",
                            ])
                            .args(["-master.telemetry=false", &format!("-bucket={BUCKET}")]);
                    },
                    |port| {
                        common::http::request(port, "GET", &format!("/{BUCKET}?list-type=2"), &[], b"")
                            .is_ok_and(|r| r.status == 200)
                    },
                ))
            }
            "moto" => {
                let moto = common::moto::Moto::start();
                moto.create_bucket(BUCKET);
                Store::Moto(moto)
            }
            other => panic!("--store {other}: seaweedfs or moto"),
        }
    }

    fn port(&self) -> u16 {
        match self {
            Store::Seaweed(s) => s.port,
            Store::Moto(m) => m.port,
        }
    }
}

fn sh(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `rows` orders of ~1 KiB (960 hex characters of random bytes: four a 4 KiB page), then
/// an index on customer, as `bench/bench_replica.py` builds them.
fn build_database(db: &Path, rows: u64) {
    let mut sql = String::from(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note TEXT);",
    );
    for lo in (1..=rows).step_by(100_000) {
        let hi = (lo + 99_999).min(rows);
        sql.push_str(&format!(
            "WITH RECURSIVE n(i) AS (SELECT {lo} UNION ALL SELECT i + 1 FROM n WHERE i < {hi})
             INSERT INTO orders SELECT i, 'customer-' || (abs(random()) % 50000),
               (abs(random()) % 10000000) / 100.0, hex(randomblob(480)) FROM n;"
        ));
    }
    sql.push_str("CREATE INDEX orders_customer ON orders(customer); PRAGMA wal_checkpoint(TRUNCATE);");
    sh(Command::new("sqlite3").arg(db).arg(sql), "building the database");
}

/// A few small commits after the first replication: the plan a replica reads then has
/// level-0 files after its snapshot, as a live one does.
fn later_commit(i: u32) -> String {
    format!("UPDATE orders SET amount = amount + 1 WHERE id % 5003 = {i}; INSERT INTO orders(customer, amount, note) VALUES ('late-{i}', {i}, 'x');")
}

fn s3_url(port: u16, prefix: &str) -> String {
    format!("s3://{BUCKET}/{prefix}?endpoint=http://127.0.0.1:{port}&region=us-east-1&forcePathStyle=true")
}

fn creds(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("AWS_CA_BUNDLE")
        .env("LITESTREAM_ACCESS_KEY_ID", KEY_ID)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET)
}

/// Keys under `prefix` in the bucket (one LIST page is plenty here).
fn list(port: u16, prefix: &str) -> Vec<String> {
    let r = common::http::request(
        port,
        "GET",
        &format!("/{BUCKET}?list-type=2&prefix={prefix}/"),
        &[],
        b"",
    )
    .expect("LIST the bucket");
    r.text()
        .split("<Key>")
        .skip(1)
        .filter_map(|s| s.split("</Key>").next())
        .map(str::to_string)
        .collect()
}

/// `litestream replicate` until it has stored a snapshot (level 9), three more commits
/// and their level-0 files; then SIGTERM.
fn replicate_with_litestream(db: &Path, port: u16, dir: &Path) {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replicas:\n      - url: {}\n",
            db.display(),
            s3_url(port, "ls")
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("litestream.log")).unwrap();
    let mut child = creds(&mut Command::new(litestream_path()))
        .args(["replicate", "-config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start litestream");
    let wait_for = |what: &str, done: &dyn Fn(&[String]) -> bool| {
        let started = Instant::now();
        while !done(&list(port, "ls")) {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "litestream: no {what} after 600 s"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_for("snapshot", &|keys| keys.iter().any(|k| k.starts_with("ls/0009/")));
    for i in 0..3 {
        let before = list(port, "ls/0000").len();
        sh(Command::new("sqlite3").arg(db).arg(later_commit(i)), "a later commit");
        wait_for("level-0 file", &|_| list(port, "ls/0000").len() > before);
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

/// Our primary replicates `db` (a first snapshot), then three more commits.
fn replicate_with_ours(db: &Path, port: u16, ext: &Path) {
    let url = format!("s3://{BUCKET}/own&endpoint=http://127.0.0.1:{port}&region=us-east-1&force-path-style=true");
    let mut script = format!(
        ".open file:{}?vfs=litestream&replica={url}\nSELECT litestream_sync(600000);\n",
        db.display()
    );
    for i in 0..3 {
        script.push_str(&format!("{}\nSELECT litestream_sync(60000);\n", later_commit(i)));
    }
    common::shell::run_script(
        ext,
        &[
            ("LITESTREAM_ACCESS_KEY_ID", KEY_ID),
            ("LITESTREAM_SECRET_ACCESS_KEY", SECRET),
        ],
        &script,
    );
}

/// What one cold query cost.
#[derive(Clone, Debug)]
struct Sample {
    ms: f64,
    finished: bool,
    row: String,
    requests: usize,
    chain: usize,
    bytes: usize,
    new_connections: usize,
}

/// Runs one cold query in a fresh process through the proxy; its log is the sample's.
#[allow(clippy::too_many_arguments)]
fn cold_query(
    reader: &str,
    sql: &str,
    id: u64,
    proxy: &FaultProxy,
    dir: &Path,
    ext: &Path,
    max_seconds: u64,
    verbose: bool,
) -> Sample {
    let view = dir.join(format!("view-{reader}-{}.db", std::process::id() as u128 ^ nanos()));
    let proxy_port = proxy.port;
    let (ext_path, uri, env_url) = match reader {
        "litestream-vfs" => (
            litestream_vfs_extension_path(),
            format!("file:{}?vfs=litestream", view.display()),
            Some(s3_url(proxy_port, "ls")),
        ),
        "ours" | "ours-own" => (
            ext.with_extension(""),
            format!(
                "file:{}?vfs=litestream&role=replica&replica=s3://{BUCKET}/{}&endpoint=http://127.0.0.1:{proxy_port}\
                 &region=us-east-1&force-path-style=true",
                view.display(),
                if reader == "ours" { "ls" } else { "own" }
            ),
            None,
        ),
        other => panic!("unknown reader {other}"),
    };
    let spec = json!({
        "ext": ext_path, "uri": uri, "sql": sql, "id": id, "max_seconds": max_seconds,
    });
    proxy.record();
    let mut cmd = Command::new("/usr/bin/python3");
    creds(&mut cmd).arg("-c").arg(WORKER).arg(spec.to_string());
    if let Some(url) = env_url {
        cmd.env("LITESTREAM_REPLICA_URL", url);
    }
    let out = sh(&mut cmd, &format!("{reader} worker"));
    let log = proxy.recorded();
    let v: Value = serde_json::from_str(out.trim().lines().last().unwrap_or("")).expect("worker JSON");
    let chain = longest_chain(&log);
    if verbose {
        eprintln!("{}", describe_log(&log));
    }
    Sample {
        ms: v["ms"].as_f64().unwrap(),
        finished: v["finished"].as_bool().unwrap(),
        row: v["row"].as_str().unwrap_or("").to_string(),
        requests: log.len(),
        chain: chain.len(),
        bytes: log.iter().map(|e| e.body_bytes).sum(),
        new_connections: log.iter().filter(|e| e.new_connection).count(),
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn main() {
    let args = parse_args();
    let ext = in_repo("target/release/liblitestream_vfs.so");
    assert!(ext.is_file(), "{} missing: run make build", ext.display());
    let started = Instant::now();
    let tmp = tempfile::Builder::new().prefix("bench-cold-").tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    println!(
        "bench-cold: store {}, {} MiB, runs {}, loadavg {}",
        args.store,
        args.size_mib,
        args.runs,
        uptime()
    );
    if args.store == "moto" {
        println!("  caveat: moto reads a whole object for every ranged GET (~0.2 s on a 256 MiB snapshot): large files blur the chain's cost");
    }
    let store = Store::start(&args.store);
    let port = store.port();

    let db = dir.join("app.db");
    let rows = args.size_mib * 1024;
    let t = Instant::now();
    build_database(&db, rows);
    let db_bytes = std::fs::metadata(&db).unwrap().len();
    println!(
        "  built {} MiB: {rows} rows ({:.0} s)",
        db_bytes >> 20,
        t.elapsed().as_secs_f64()
    );
    let own_db = dir.join("own.db");
    std::fs::copy(&db, &own_db).unwrap();
    let t = Instant::now();
    replicate_with_litestream(&db, port, &dir);
    println!(
        "  litestream replicate: {:?} ({:.0} s)",
        list(port, "ls"),
        t.elapsed().as_secs_f64()
    );
    if args.readers.iter().any(|r| r == "ours-own") {
        let t = Instant::now();
        replicate_with_ours(&own_db, port, &ext);
        println!(
            "  our primary: {:?} ({:.0} s)",
            list(port, "own"),
            t.elapsed().as_secs_f64()
        );
    }

    let proxy = FaultProxy::start(port, FaultPlan::distant(Duration::ZERO));
    let mut results = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for &latency in &args.latencies {
        proxy.set_plan(FaultPlan::distant(Duration::from_millis(latency)));
        println!("\nlatency {latency} ms per request (loadavg {})", uptime());
        println!(
            "  {:<6} {:<15} {:>10} {:>8} {:>6} {:>10} {:>6} {:>9}",
            "query", "reader", "ms", "requests", "chain", "KiB", "conns", "vs ours"
        );
        for (name, sql) in QUERIES.iter().filter(|q| args.queries.iter().any(|n| n == q.0)) {
            let mut by_reader: Vec<(String, Vec<Sample>)> = Vec::new();
            for _ in 0..args.runs {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let id = 1 + rng % (rows - 1000);
                let mut rows_seen = Vec::new();
                for reader in &args.readers {
                    let s = cold_query(reader, sql, id, &proxy, &dir, &ext, args.max_seconds, args.verbose);
                    if s.finished {
                        rows_seen.push((reader.clone(), s.row.clone()));
                    }
                    match by_reader.iter_mut().find(|(r, _)| r == reader) {
                        Some((_, v)) => v.push(s),
                        None => by_reader.push((reader.clone(), vec![s])),
                    }
                }
                // Litestream's replica and ours hold the same rows.
                let first = rows_seen.first().map(|r| r.1.clone());
                for (reader, row) in &rows_seen {
                    assert_eq!(
                        Some(row),
                        first.as_ref(),
                        "{name} id {id}: {reader} answered differently"
                    );
                }
            }
            let ours_ms = by_reader
                .iter()
                .find(|(r, _)| r == "ours")
                .map(|(_, v)| median(v.iter().map(|s| s.ms).collect()));
            for (reader, samples) in &by_reader {
                let med = |f: &dyn Fn(&Sample) -> f64| median(samples.iter().map(f).collect());
                let ms = med(&|s| s.ms);
                let finished = samples.iter().filter(|s| s.finished).count();
                let vs = ours_ms.map_or(String::from("-"), |o| format!("{:.2}x", ms / o));
                println!(
                    "  {:<6} {:<15} {:>10} {:>8.0} {:>6.0} {:>10.0} {:>6.0} {:>9}",
                    name,
                    reader,
                    if finished == samples.len() {
                        format!("{ms:.0}")
                    } else {
                        format!(">{ms:.0} ({}/{} cut)", samples.len() - finished, samples.len())
                    },
                    med(&|s| s.requests as f64),
                    med(&|s| s.chain as f64),
                    med(&|s| s.bytes as f64) / 1024.0,
                    med(&|s| s.new_connections as f64),
                    vs
                );
                results.push(json!({
                    "latency_ms": latency, "query": name, "reader": reader,
                    "median_ms": ms, "finished": finished, "runs": samples.len(),
                    "median_requests": med(&|s| s.requests as f64),
                    "median_chain": med(&|s| s.chain as f64),
                    "median_bytes": med(&|s| s.bytes as f64),
                    "median_new_connections": med(&|s| s.new_connections as f64),
                    "samples": samples.iter().map(|s| json!({
                        "ms": s.ms, "finished": s.finished, "requests": s.requests,
                        "chain": s.chain, "bytes": s.bytes, "new_connections": s.new_connections,
                    })).collect::<Vec<_>>(),
                }));
            }
        }
    }
    let doc = json!({
        "benchmark": "cold replica under latency",
        "store": args.store,
        "database_bytes": db_bytes,
        "rows": rows,
        "runs": args.runs,
        "max_seconds": args.max_seconds,
        "loadavg_end": uptime(),
        "elapsed_s": started.elapsed().as_secs_f64(),
        "queries": QUERIES.iter().map(|(n, q)| json!({"name": n, "sql": q})).collect::<Vec<_>>(),
        "results": results,
    });
    std::fs::write(&args.out, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!(
        "\n  ms = open -> result, fresh process, median; chain = longest run of requests each sent after the \
         previous was answered\n  results: {} ({:.0} s, loadavg {})",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        uptime()
    );
    drop(proxy);
    drop(store);
    if args.keep {
        println!("  kept {}", tmp.keep().display());
    }
}
