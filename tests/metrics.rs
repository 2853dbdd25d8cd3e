//! Prometheus metrics: `litestream_metrics()` and a scrape of `metrics_addr` both parse
//! with prometheus_client's text parser (`tests/scripts/parse_metrics.py`), carry
//! Litestream's names labelled by database path, agree with `litestream_txid()`; and
//! the live recovery point rises while the store is down (a fault proxy in front of
//! moto resets every request) and falls back to 0 once it is back.

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::http::request;
use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use common::server::free_port;
use common::shell::Shell;
use harness::{extension, repo_root};
use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Sample {
    name: String,
    kind: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `text` with prometheus_client (in .venv); panics with the text if it cannot.
fn parse(text: &str) -> Vec<Sample> {
    let mut child = Command::new(repo_root().join(".venv/bin/python"))
        .arg(repo_root().join("tests/scripts/parse_metrics.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the parser runs (make setup installs prometheus_client)");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap().to_string(),
            kind: s["type"].as_str().unwrap().to_string(),
            labels: serde_json::from_value(s["labels"].clone()).unwrap(),
            value: match &s["value"] {
                serde_json::Value::String(v) if v == "inf" => f64::INFINITY,
                v => v.as_f64().unwrap(),
            },
        })
        .collect()
}

/// The value of the sample `name` whose labels include all of `labels`. prometheus_client
/// reads a counter sample as `<name>_total` whatever it was called in the text (Litestream's
/// `litestream_sync_count`, say): either spelling finds it.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let total = format!("{name}_total");
    samples
        .iter()
        .find(|s| {
            (s.name == name || (s.kind == "counter" && s.name == total))
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

fn scrape(port: u16) -> (String, String) {
    let response = request(port, "GET", "/metrics", &[], b"").expect("the metrics listener answers");
    assert_eq!(response.status, 200, "{}", response.text());
    let content_type = response.header("content-type").unwrap_or_default().to_string();
    (content_type, response.text())
}

/// The text `litestream_metrics()` returns on the shell's connection.
fn sql_metrics(shell: &mut Shell) -> String {
    shell.run(".mode list\nSELECT litestream_metrics();")
}

#[test]
fn sql_and_scraped_metrics_parse_and_name_every_open_database() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let port = free_port();
    let replica = format!("file://{d}/replica");
    let mut shell = Shell::start(
        &extension(),
        &dir.path().join("shell.stderr"),
        &[],
        &format!(
            ".open file:{d}/app.db?vfs=litestream&replica={replica}&sync_interval=100ms&metrics_addr=127.0.0.1:{port}"
        ),
    );
    let txid: f64 = shell
        .run(
            "CREATE TABLE t(x);\nINSERT INTO t SELECT value FROM generate_series(1, 500);\n\
             SELECT litestream_sync(30000);",
        )
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("sync failed: {}", shell.stderr()));
    // A read replica in the same process, attached to the same connection.
    shell.run(&format!(
        "ATTACH 'file:{d}/view.db?vfs=litestream&role=replica&replica={replica}' AS view;\n\
         SELECT count(*) FROM view.t;"
    ));

    // litestream_sync returns once the upload is acknowledged; the worker's round that
    // made it counts itself as a sync when it ends, a moment later (an upload handed
    // off to the I/O runtime ends in the round after it).
    let app = format!("{d}/app.db");
    let mut from_sql = parse(&sql_metrics(&mut shell));
    for _ in 0..100 {
        if value(&from_sql, "litestream_sync_count", &[("db", app.as_str())]).unwrap_or(0.0) >= 1.0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        from_sql = parse(&sql_metrics(&mut shell));
    }
    let (content_type, text) = scrape(port);
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    let scraped = parse(&text);

    let view = format!("{d}/view.db");
    for samples in [&from_sql, &scraped] {
        let db = |name| value(samples, name, &[("db", app.as_str())]);
        assert_eq!(db("litestream_txid"), Some(txid), "{text}");
        assert_eq!(db("litestream_uploaded_txid"), Some(txid));
        assert_eq!(db("litestream_recovery_point_seconds"), Some(0.0));
        assert!(db("litestream_db_size").unwrap() >= 4096.0);
        assert!(db("litestream_sync_count").unwrap() >= 1.0);
        assert_eq!(db("litestream_sync_error_count"), Some(0.0));
        let replica = |name| value(samples, name, &[("db", view.as_str())]);
        assert_eq!(replica("litestream_read_replica_txid"), Some(txid));
        assert!(replica("litestream_read_replica_fetched_bytes_total").unwrap() > 0.0);
        // The query's page reads were counted: since a cold open fetches a small database
        // whole with its plan (issue 20), they may all be hits, so neither kind alone is
        // sure to be non-zero.
        let reads = replica("litestream_read_replica_cache_hits_total").unwrap()
            + replica("litestream_read_replica_cache_misses_total").unwrap();
        assert!(reads >= 2.0, "the count(*) read {reads} pages");
        assert!(replica("litestream_read_replica_requests_total").unwrap() > 0.0);
        let put = [("replica_type", "file"), ("operation", "PUT")];
        assert!(value(samples, "litestream_replica_operation_total", &put).unwrap() >= 1.0);
        assert!(value(samples, "litestream_replica_operation_bytes", &put).unwrap() > 0.0);
        let types: BTreeMap<&str, &str> = samples.iter().map(|s| (s.name.as_str(), s.kind.as_str())).collect();
        assert_eq!(types["litestream_sync_count_total"], "counter");
        assert_eq!(types["litestream_txid"], "gauge");
        assert_eq!(
            types["litestream_replica_operation_duration_seconds_bucket"],
            "histogram"
        );
    }
    // Litestream's counters keep their exact names in the text, so its dashboards match.
    for name in [
        "litestream_sync_count{",
        "litestream_replica_operation_bytes{",
        "litestream_txid{",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "no {name} sample:\n{text}");
    }
    // The same families and series either way (values may have moved in between).
    let series = |samples: &[Sample]| -> Vec<(String, String)> {
        let mut v: Vec<_> = samples
            .iter()
            .map(|s| (s.name.clone(), format!("{:?}", s.labels)))
            .collect();
        v.sort();
        v
    };
    assert_eq!(series(&from_sql), series(&scraped));

    let missing = request(port, "GET", "/other", &[], b"").unwrap();
    assert_eq!(missing.status, 404);
    let post = request(port, "POST", "/metrics", &[], b"").unwrap();
    assert_eq!(post.status, 405);
}

#[test]
fn a_bad_metrics_address_is_an_error_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let err = harness::sqlite_result(&format!(
        ".open file:{d}/app.db?vfs=litestream&replica=file://{d}/replica&metrics_addr=localhost\nCREATE TABLE t(x);"
    ))
    .unwrap_err();
    assert!(err.contains("metrics_addr: 'localhost'"), "{err}");
}

#[test]
fn the_recovery_point_rises_while_the_store_is_down_and_falls_back_after() {
    const BUCKET: &str = "metrics";
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = FaultProxy::start(moto.port, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let db_label = db.display().to_string();
    let port = free_port();
    let url = format!(
        "s3://{BUCKET}/app?endpoint={}&region={REGION}&forcePathStyle=true",
        proxy.endpoint
    );
    // The other way to ask for the listener, in Litestream's spelling (loopback here).
    let addr = format!(":{port}");
    let creds = [
        ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
        ("LITESTREAM_METRICS_ADDR", addr.as_str()),
    ];
    let mut shell = Shell::start(
        &extension(),
        &dir.path().join("shell.stderr"),
        &creds,
        &format!(".open file:{db_label}?vfs=litestream&replica={url}&sync_interval=100ms"),
    );
    let synced = shell.run("CREATE TABLE t(x);\nSELECT litestream_sync(30000) > 0;");
    assert_eq!(synced.trim(), "1", "{}", shell.stderr());
    let metric = |name: &str| {
        let (_, text) = scrape(port);
        value(&parse(&text), name, &[("db", db_label.as_str())])
            .unwrap_or_else(|| panic!("no {name} for {db_label}:\n{text}"))
    };
    assert_eq!(metric("litestream_recovery_point_seconds"), 0.0);

    // The store goes down: every request is reset. Commits go on; nothing reaches it.
    proxy.set_plan(FaultPlan::of(&[Fault::Reset], 100));
    shell.run("INSERT INTO t VALUES (1);");
    let down = Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    let first = metric("litestream_recovery_point_seconds");
    std::thread::sleep(Duration::from_millis(1500));
    shell.run("INSERT INTO t VALUES (2);");
    let second = metric("litestream_recovery_point_seconds");
    assert!(first >= 1.0, "1.5 s into the outage the recovery point is {first}");
    assert!(
        second >= first + 1.0 && second <= down.elapsed().as_secs_f64() + 0.5,
        "it rises with the outage: {first} then {second} after {:?}",
        down.elapsed()
    );
    assert!(metric("litestream_uploaded_txid") < metric("litestream_txid"));
    assert!(proxy.stats().total_injected() > 0, "the outage never happened");

    // Back up: replication catches up and the recovery point returns to 0.
    proxy.set_plan(FaultPlan::none());
    let caught_up = shell.run("SELECT litestream_sync(60000) = litestream_txid();");
    assert_eq!(caught_up.trim(), "1", "{}", shell.stderr());
    assert_eq!(metric("litestream_recovery_point_seconds"), 0.0);
    assert_eq!(metric("litestream_uploaded_txid"), metric("litestream_txid"));
    let (_, text) = scrape(port);
    let samples = parse(&text);
    assert!(
        value(&samples, "litestream_sync_error_count", &[("db", db_label.as_str())]).unwrap() >= 1.0,
        "the failed uploads were counted"
    );
    let s3_put = [("replica_type", "s3"), ("operation", "PUT")];
    assert!(value(&samples, "litestream_replica_operation_errors_total", &s3_put).unwrap() >= 1.0);
    drop(shell);
    drop(moto);
}
