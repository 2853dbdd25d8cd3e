//! Stores that do not stop a second primary, simulated by the fault proxy in front of moto
//! (which checks no signatures, so the proxy may edit requests): one that ignores
//! `If-None-Match` (Garage 2.5), one that checks and then writes, so that simultaneous
//! creates all win (OpenStack Swift's s3api, s3s-fs). The fencing probe finds each, and a
//! primary refuses to replicate there unless told `fencing=off`.

use std::time::Duration;

use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{probe_conditional_creates, ConditionalCreates};

use crate::common::fault_proxy::{Conditional, FaultPlan, FaultProxy};
use crate::common::s3::{CREDS, REGION};
use crate::common::shell::Shell;
use crate::harness::{dump, extension};
use crate::primary::{race_primaries, RACERS};
use crate::{litestream_restore, moto, store_at, Ctx};

/// moto behind a proxy that handles conditional creates as `mode` says.
fn behind(ctx: &Ctx, mode: Conditional) -> (FaultProxy, String) {
    let proxy = FaultProxy::start(
        ctx.s3.port(),
        FaultPlan {
            conditional: mode,
            ..FaultPlan::none()
        },
    );
    let url = format!(
        "s3://{}/app?endpoint={}&region={REGION}&forcePathStyle=true",
        ctx.bucket, proxy.endpoint
    );
    (proxy, url)
}

fn open_primary(ctx: &Ctx, db: &str, url: &str, extra: &str) -> Shell {
    Shell::start(
        &extension(),
        &ctx.path(&format!("{db}.stderr")),
        &CREDS,
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms{extra}",
            ctx.path(db).display()
        ),
    )
}

#[test]
fn a_store_that_ignores_if_none_match_is_refused_unless_fencing_is_off() {
    let ctx = Ctx::new(moto(), "ignores-conditional");
    let (_proxy, url) = behind(&ctx, Conditional::Ignored);
    assert_eq!(
        block_on(probe_conditional_creates(store_at(&url).as_ref())).unwrap(),
        ConditionalCreates::Ignored
    );

    let mut refused = open_primary(&ctx, "app.db", &url, "");
    refused.run("CREATE TABLE t(x);");
    let err = refused.stderr();
    assert!(err.contains("ignores conditional writes"), "{err}");
    assert!(err.contains("fencing=off"), "the error says how to go on: {err}");
    drop(refused);
    assert!(
        ctx.keys("app/").is_empty(),
        "nothing was replicated: {:?}",
        ctx.keys("app/")
    );

    let mut allowed = open_primary(&ctx, "app.db", &url, "&fencing=off");
    allowed.run("CREATE TABLE IF NOT EXISTS t(x); INSERT INTO t VALUES (1), (2);");
    assert!(
        allowed
            .run("SELECT litestream_sync(30000);")
            .trim()
            .parse::<u64>()
            .is_ok(),
        "{}",
        allowed.stderr()
    );
    let status: serde_json::Value = serde_json::from_str(&allowed.run("SELECT litestream_status();")).unwrap();
    assert_eq!(status["fencing"], "off", "{status}");
    assert!(
        allowed
            .stderr()
            .contains("a second primary writing to this replica would not be detected"),
        "a warning in the log: {}",
        allowed.stderr()
    );
    drop(allowed);
    litestream_restore(&url, &ctx.path("restored.db"), &[]);
    assert!(dump(&ctx.path("restored.db")) == dump(&ctx.path("app.db")));
}

/// What `fencing=off` gives up, on a store that ignores `If-None-Match`: primaries racing
/// onto one replica all go on replicating over each other, where a store that honours it
/// leaves one (`racing_primaries_leave_one_winner`).
#[test]
fn without_fencing_racing_primaries_all_go_on() {
    let ctx = Ctx::new(moto(), "unfenced-racing-primaries");
    let (_proxy, url) = behind(&ctx, Conditional::Ignored);
    let outputs = race_primaries(&ctx, &url, "&fencing=off");
    let going_on = outputs.iter().filter(|o| o.status.success()).count();
    assert!(
        going_on > 1,
        "{going_on} of {RACERS} primaries replicate: {:?}",
        outputs
            .iter()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect::<Vec<_>>()
    );
}

#[test]
fn a_store_whose_simultaneous_creates_all_win_is_found() {
    let ctx = Ctx::new(moto(), "racy-conditional");
    let (_proxy, url) = behind(&ctx, Conditional::CheckThenWrite(Duration::from_millis(200)));
    let store = store_at(&url);
    match block_on(probe_conditional_creates(store.as_ref())).unwrap() {
        ConditionalCreates::Racy { won, racers } => assert!(won > 1 && won <= racers),
        other => panic!("a check-then-write store probed as {other:?}"),
    }
    let mut refused = open_primary(&ctx, "app.db", &url, "");
    refused.run("CREATE TABLE t(x);");
    assert!(
        refused.stderr().contains("simultaneous conditional creates"),
        "{}",
        refused.stderr()
    );
}

#[test]
fn the_same_store_passed_through_untouched_is_fenced() {
    let ctx = Ctx::new(moto(), "honoured-through-proxy");
    let (_proxy, url) = behind(&ctx, Conditional::Honoured);
    assert_eq!(
        block_on(probe_conditional_creates(store_at(&url).as_ref())).unwrap(),
        ConditionalCreates::Honoured
    );
}
