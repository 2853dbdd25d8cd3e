//! A store that accepts connections and never answers (a hung load balancer, a
//! brownout) must not hold the application: an open waits for it at most 10 s and goes
//! on from saved state, the opens after it within a minute do not ask it again, a close
//! waits at most `sync_timeout` for its last upload, and what that left staged goes up
//! once the store answers again. Before, the open waited 10 minutes (object_store's
//! whole-request timeout) and so did the close.

mod common;
mod harness;

use common::fault_proxy::{Fault, FaultPlan, FaultProxy};
use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use common::shell::Shell;
use harness::{dump, extension, sql_restore};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const CREDENTIALS: [(&str, &str); 2] = [
    ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
    ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
];

/// moto with `bucket`, the fault proxy in front of it (no faults yet), a scratch
/// directory with the database's path, and the replica URL through the proxy.
struct Rig {
    _moto: Moto,
    proxy: FaultProxy,
    dir: tempfile::TempDir,
    db: PathBuf,
    url: String,
}

fn rig(bucket: &str) -> Rig {
    let moto = Moto::start();
    moto.create_bucket(bucket);
    let proxy = FaultProxy::start(moto.port, FaultPlan::none());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!(
        "s3://{bucket}/app?endpoint={}&region={REGION}&forcePathStyle=true",
        proxy.endpoint
    );
    Rig {
        _moto: moto,
        proxy,
        dir,
        db,
        url,
    }
}

/// Every request held `stall` before its connection closes.
fn stall_every_request(stall: Duration) -> FaultPlan {
    FaultPlan {
        stall,
        ..FaultPlan::of(&[Fault::Stall], 100)
    }
}

#[test]
fn opens_and_closes_do_not_wait_for_a_store_that_never_answers() {
    let Rig {
        proxy, dir, db, url, ..
    } = &rig("stalled");
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_timeout=2s",
        db.display()
    );
    let mut sh = Shell::start(&extension(), &dir.path().join("shell.stderr"), &CREDENTIALS, &open);
    let synced = sh.run("CREATE TABLE t(x); INSERT INTO t VALUES (1);\nSELECT litestream_sync(30000) > 0;");
    assert_eq!(synced.trim(), "1", "{}", sh.stderr());
    sh.run(".open :memory:");

    // Each request is held 45 s before its connection closes: longer than the open's and
    // the close's bounds, shorter than the test (a request already held is not released
    // when the plan changes; see the note at the end).
    proxy.set_plan(stall_every_request(Duration::from_secs(45)));
    let timed = |sh: &mut Shell, sql: &str| {
        let started = Instant::now();
        sh.run(sql);
        started.elapsed()
    };
    let first_open = timed(&mut sh, &open);
    assert!(
        first_open < Duration::from_secs(25),
        "the open waited {first_open:?} for a store that never answers"
    );
    assert_eq!(sh.run("INSERT INTO t VALUES (2); SELECT count(*) FROM t;").trim(), "2");
    let close = timed(&mut sh, ".open :memory:");
    assert!(
        close < Duration::from_secs(20),
        "the close waited {close:?} (sync_timeout 2s)"
    );
    assert!(
        sh.stderr()
            .contains("staged but not stored (the store did not take them within sync_timeout 2s"),
        "the close says what it left staged, and that the timeout ran out: {}",
        sh.stderr()
    );
    let second_open = timed(&mut sh, &open);
    assert!(
        second_open < Duration::from_secs(5),
        "an open within the minute asked the stalled store again: {second_open:?}"
    );
    sh.run("INSERT INTO t VALUES (3);");

    // The store answers again: what the close left staged, and the rest, go up once the
    // requests held during the stall have ended (an upload in flight is awaited, not
    // made twice).
    proxy.set_plan(FaultPlan::none());
    let caught_up = sh.run("SELECT litestream_sync(90000) = litestream_txid();");
    assert_eq!(caught_up.trim(), "1", "{}", sh.stderr());
    sh.run(".open :memory:");
    let restored = dir.path().join("restored.db");
    sql_restore(url, &restored, &CREDENTIALS);
    assert_eq!(dump(&restored), dump(db));
}

/// A request the store accepted and then stopped answering is abandoned after the silence
/// limit (`LITESTREAM_STORE_SILENCE_LIMIT`, 3 s here, 30 s by default) and made again:
/// the primary's background upload and a read replica's page read each go through within
/// seconds of the store answering again. Before, a held request was awaited for
/// object_store's whole-request timeout (10 minutes; here the proxy's 60 s stall): the
/// database's uploads stopped that long after the store was back, and so did the
/// replica's query.
#[test]
fn requests_the_store_stopped_answering_are_abandoned_and_made_again() {
    let Rig {
        proxy, dir, db, url, ..
    } = &rig("silent");
    let env = [CREDENTIALS[0], CREDENTIALS[1], ("LITESTREAM_STORE_SILENCE_LIMIT", "3s")];
    let open = format!(".open file:{}?vfs=litestream&replica={url}", db.display());
    let mut primary = Shell::start(&extension(), &dir.path().join("primary.stderr"), &env, &open);
    let synced = primary.run(
        "CREATE TABLE t(x); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
         INSERT INTO t SELECT randomblob(1000) FROM n;\n\
         SELECT litestream_sync(30000) > 0;",
    );
    assert_eq!(synced.trim(), "1", "{}", primary.stderr());
    let view = dir.path().join("view.db");
    let mut replica = Shell::start(
        &extension(),
        &dir.path().join("replica.stderr"),
        &env,
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&cache_size=64k",
            view.display()
        ),
    );
    assert_eq!(replica.run("SELECT count(*) FROM sqlite_master;").trim(), "1");

    // Every request is now held 60 s. The primary's next upload and the replica's page
    // reads go out into the silence; the store answers again 1.5 s later.
    proxy.set_plan(stall_every_request(Duration::from_secs(60)));
    primary.run("INSERT INTO t VALUES (randomblob(1000));");
    let (scan, scan_took) = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(1500));
            proxy.set_plan(FaultPlan::none());
        });
        let started = Instant::now();
        let scan = replica.run("SELECT count(*), sum(length(x)) FROM t;");
        (scan, started.elapsed())
    });
    assert_eq!(scan.trim(), "2000|2000000", "{}", replica.stderr());
    assert!(
        scan_took < Duration::from_secs(20),
        "the replica's query waited {scan_took:?} for requests the store held"
    );
    let started = Instant::now();
    let caught_up = primary.run("SELECT litestream_sync(20000) = litestream_txid();");
    assert_eq!(
        caught_up.trim(),
        "1",
        "the held upload was not abandoned and made again within 20 s of the store answering \
         ({:?}): {}",
        started.elapsed(),
        primary.stderr()
    );
    for (who, shell) in [("primary", &mut primary), ("replica", &mut replica)] {
        let silent = shell.run("SELECT json_extract(litestream_status(), '$.engine.silent_requests');");
        assert!(
            silent.trim().parse::<u64>().is_ok_and(|n| n >= 1),
            "the {who}'s status counts the requests it abandoned: {silent:?}"
        );
    }
    primary.run(".open :memory:");
    let restored = dir.path().join("restored.db");
    sql_restore(url, &restored, &CREDENTIALS);
    assert_eq!(dump(&restored), dump(db));
}

/// A store that holds the primary's upload without answering is the status `error`
/// within seconds, saying what waits and for how long. Before, `error` stayed null until
/// the request timed out (30 s), while a store refusing connections showed within a
/// second (an operations tester, 2 of 2).
#[test]
fn an_upload_the_store_does_not_answer_is_the_status_error_while_it_waits() {
    let Rig {
        proxy, dir, db, url, ..
    } = &rig("unanswered");
    let open = format!(".open file:{}?vfs=litestream&replica={url}", db.display());
    let mut sh = Shell::start(&extension(), &dir.path().join("shell.stderr"), &CREDENTIALS, &open);
    let synced = sh.run("CREATE TABLE t(x); INSERT INTO t VALUES (1);\nSELECT litestream_sync(30000) > 0;");
    assert_eq!(synced.trim(), "1", "{}", sh.stderr());
    proxy.set_plan(stall_every_request(Duration::from_secs(12)));
    sh.run("INSERT INTO t VALUES (2);");
    let started = Instant::now();
    let error = loop {
        let error = sh.run("SELECT litestream_status() ->> '$.error';");
        if !error.trim().is_empty() || started.elapsed() > Duration::from_secs(11) {
            break error;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        error.contains("no answer from") && error.contains("the upload of TXIDs"),
        "after {:?}: {error:?}",
        started.elapsed()
    );
    proxy.set_plan(FaultPlan::none());
    let caught_up = sh.run("SELECT litestream_sync(60000) = litestream_txid();");
    assert_eq!(caught_up.trim(), "1", "{}", sh.stderr());
    assert_eq!(sh.run("SELECT litestream_status() ->> '$.error' IS NULL;").trim(), "1");
}

/// A close while a compaction turn waits on the silent store: the turn's requests end at
/// once, and the close waits only for its own upload (`sync_timeout`). Before, it waited
/// for the turn's requests one after another, each until the silence limit (a store
/// tester: 100-136 s on a silent S3 or Azure, against `sync_timeout`'s 30 s).
#[test]
fn a_close_does_not_wait_for_a_compaction_turn_on_a_silent_store() {
    let Rig {
        proxy, dir, db, url, ..
    } = &rig("compacting");
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_timeout=2s&levels=1s",
        db.display()
    );
    let mut sh = Shell::start(&extension(), &dir.path().join("shell.stderr"), &CREDENTIALS, &open);
    let synced = sh.run("CREATE TABLE t(x); INSERT INTO t VALUES (1);\nSELECT litestream_sync(30000) > 0;");
    assert_eq!(synced.trim(), "1", "{}", sh.stderr());
    proxy.set_plan(stall_every_request(Duration::from_secs(60)));
    sh.run("INSERT INTO t VALUES (2);");
    // Level 1's windows end every second: a turn is now waiting on a LIST.
    std::thread::sleep(Duration::from_secs(3));
    let started = Instant::now();
    sh.run(".open :memory:");
    let close = started.elapsed();
    assert!(
        close < Duration::from_secs(15),
        "the close waited {close:?} (sync_timeout 2s, silence limit 30s): {}",
        sh.stderr()
    );
    assert!(sh.stderr().contains("staged but not stored"), "{}", sh.stderr());
}

/// A connection per request on a store that does not answer: no process lived to see its
/// own upload fail, so every new connection's status said nothing during the outage (a
/// tester: 0 of 85 samples in 90 s). The one that closes with commits not stored leaves
/// why, and the next one's status says it until it stores something itself.
#[test]
fn a_new_connections_status_says_why_the_last_one_closed_without_storing() {
    let Rig {
        proxy, dir, db, url, ..
    } = &rig("percall");
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_timeout=1s",
        db.display()
    );
    let mut sh = Shell::start(&extension(), &dir.path().join("shell.stderr"), &CREDENTIALS, &open);
    let synced = sh.run("CREATE TABLE t(x); INSERT INTO t VALUES (1);\nSELECT litestream_sync(30000) > 0;");
    assert_eq!(synced.trim(), "1", "{}", sh.stderr());
    // Held long enough for the close and the next status, not for the catch-up.
    proxy.set_plan(stall_every_request(Duration::from_secs(8)));
    sh.run("INSERT INTO t VALUES (2);");
    sh.run(".open :memory:"); // the close cannot store TXID 2
                              // The next request's connection (the same process: its recent check of the replica
                              // spares the open a LIST the stalled store would hold).
    sh.run(&open);
    let status = sh.run("SELECT litestream_status() ->> '$.error';");
    assert!(
        status.contains("the process that replicated it before") && status.contains("not stored"),
        "{status}\n{}",
        sh.stderr()
    );
    proxy.set_plan(FaultPlan::none());
    assert_eq!(
        sh.run("SELECT litestream_sync(60000) > 0;").trim(),
        "1",
        "{}",
        sh.stderr()
    );
    assert_eq!(sh.run("SELECT litestream_status() ->> '$.error' IS NULL;").trim(), "1");
}
