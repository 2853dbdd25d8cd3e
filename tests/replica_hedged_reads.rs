//! A read replica's query does not wait for one request the store holds: a read that has
//! not answered within the hedge delay gets a second, identical request beside it, and
//! the first answer wins. Before, the query waited the store's silence limit
//! (`LITESTREAM_STORE_SILENCE_LIMIT`, 30 s by default, 20 s here) for the held GET, and
//! the read path's 5 s retry deadline was then past: the query failed.

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::figures::record;
use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use common::shell::Shell;
use harness::extension;
use std::time::{Duration, Instant};

const ENV: [(&str, &str); 3] = [
    ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
    ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
    ("LITESTREAM_STORE_SILENCE_LIMIT", "20s"),
];

/// The longest a query (or the replica's open) may take with half the store's GETs held:
/// a few hedge delays (at most 1.5 s each) and loopback answers, far below the 20 s limit.
const QUICK: Duration = Duration::from_secs(5);

const ROWS: u32 = 3000;

#[test]
fn replica_queries_do_not_wait_for_gets_the_store_holds() {
    let moto = Moto::start();
    moto.create_bucket("hedge");
    let proxy = FaultProxy::start(moto.port, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "s3://hedge/app?endpoint={}&region={REGION}&forcePathStyle=true",
        proxy.endpoint
    );

    // A table of a few hundred leaf pages under interior pages: a point query reads pages
    // beyond the first ones the replica gets with the page indexes at open.
    let db = dir.path().join("app.db");
    let mut primary = Shell::start(
        &extension(),
        &dir.path().join("primary.stderr"),
        &ENV,
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    let synced = primary.run(&format!(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);\n\
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         INSERT INTO t SELECT i, printf('row %06d ', i) || hex(randomblob(300)) FROM n;\n\
         SELECT litestream_sync(30000) > 0;"
    ));
    assert_eq!(synced.trim(), "1", "{}", primary.stderr());
    // Closed: its own requests stay out of the proxy's count.
    primary.run(".open :memory:");

    // Every other GET (page reads, LISTs) is held 30 s, longer than the silence limit; the
    // same request again (a hedge, a retry) is answered.
    proxy.set_plan(FaultPlan {
        stall: Duration::from_secs(30),
        methods: Some(vec!["GET"]),
        spare_repeats: true,
        seed: 7,
        ..FaultPlan::of(&[Fault::Stall], 50)
    });
    let started = Instant::now();
    let mut replica = Shell::start(
        &extension(),
        &dir.path().join("replica.stderr"),
        &ENV,
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}",
            dir.path().join("view.db").display()
        ),
    );
    let open = started.elapsed();
    assert!(
        open < QUICK,
        "the replica's open waited {open:?} for held LISTs and indexes: {}",
        replica.stderr()
    );
    let mut took = Vec::new();
    for id in [1234, 2890, 17, 2001, 777] {
        let started = Instant::now();
        let out = replica.run(&format!("SELECT substr(body, 1, 10) FROM t WHERE id = {id};"));
        let elapsed = started.elapsed();
        assert_eq!(out.trim(), format!("row {id:06}"), "{}", replica.stderr());
        assert!(
            elapsed < QUICK,
            "a point query waited {elapsed:?} for a GET the store held: {}",
            replica.stderr()
        );
        took.push(elapsed);
    }
    let status: serde_json::Value =
        serde_json::from_str(replica.run("SELECT litestream_status();").trim()).expect("status is JSON");
    let hedged = status["hedged_requests"].as_u64().unwrap_or(0);
    let requests = status["requests"].as_u64().unwrap_or(0);
    let stalls = proxy.stats().injected.get(&Fault::Stall).copied().unwrap_or(0);
    assert!(stalls > 0, "the proxy held no request: {}", proxy.stats().summary());
    assert!(
        hedged > 0 && hedged <= requests,
        "hedged_requests {hedged} of {requests}: {status}"
    );
    let ms: Vec<String> = took.iter().map(|d| format!("{}", d.as_millis())).collect();
    record(
        "replica_hedged_reads",
        &format!(
            "half the GETs held 30 s (silence limit 20 s): open {} ms, point queries [{}] ms, \
             {requests} requests of which {hedged} hedges, {stalls} GETs held by the proxy",
            open.as_millis(),
            ms.join(", ")
        ),
    );
}
