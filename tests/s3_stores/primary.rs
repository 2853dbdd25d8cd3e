//! The primary and the read replica on each store: replication, fencing of a second
//! primary, racing primaries, cold reads and following.

use std::process::{Command, Output, Stdio};

use litestream_vfs::runtime::block_on;

use crate::common::s3::{S3Server, CREDS};
use crate::common::shell::Shell;
use crate::harness::{assert_contiguous, copy_dir, dump, extension, integrity, plain_sqlite, workload_command};
use crate::{litestream_restore, our_restore, with_creds, Ctx};

/// Runs the randomized workload (`tests/scripts/workload.py`) on `db`; returns its TXID.
fn workload(ctx: &Ctx, db: &std::path::Path, url: &str, seed: u64, ops: u32) -> u64 {
    let out = with_creds(&mut workload_command(db, url, seed, ops, &["sync_interval=100ms"]))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: workload: {}\n{}",
        ctx.s3.name(),
        String::from_utf8_lossy(&out.stderr),
        ctx.log()
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The level-0 TXID ranges in the replica at `path`.
fn level0(ctx: &Ctx, path: &str) -> Vec<(u64, u64)> {
    let files = block_on(ctx.store(path).list(0)).unwrap();
    files.iter().map(|f| (f.min_txid, f.max_txid)).collect()
}

/// A `sqlite3` shell holding one connection to `db` as a primary of `url`.
fn primary_shell(ctx: &Ctx, db: &str, url: &str) -> Shell {
    Shell::start(
        &extension(),
        &ctx.path(&format!("{db}.stderr")),
        &CREDS,
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
            ctx.path(db).display()
        ),
    )
}

fn status(shell: &mut Shell) -> serde_json::Value {
    serde_json::from_str(&shell.run("SELECT litestream_status();")).unwrap()
}

/// Both restores, `litestream restore` 0.5.17's and ours, equal `db`.
pub fn assert_restores_equal(ctx: &Ctx, url: &str, db: &std::path::Path) {
    let primary = dump(db);
    for (who, out) in [
        ("litestream 0.5.17", ctx.path("restored-litestream.db")),
        ("ours", ctx.path("restored-ours.db")),
    ] {
        let _ = std::fs::remove_file(&out);
        if who == "ours" {
            our_restore(url, &out);
        } else {
            litestream_restore(url, &out, &[]);
        }
        assert_eq!(integrity(&out), "ok", "{}: {who}", ctx.s3.name());
        assert!(
            dump(&out) == primary,
            "{}: {who}'s restore differs from the primary",
            ctx.s3.name()
        );
    }
}

/// A randomized workload and the sqlite3 shell (a spilled transaction, a rollback, VACUUM)
/// replicate to the store; both restores equal the primary; the level-0 files hold every
/// TXID once; the fencing probe found the store honouring conditional creates and left
/// nothing behind.
pub fn replication_restores_equal_with_litestream(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "primary");
    let db = ctx.path("app.db");
    let url = ctx.url("app");
    for seed in 1..=3 {
        workload(&ctx, &db, &url, seed, 150);
    }
    let mut shell = primary_shell(&ctx, "app.db", &url);
    shell.run("PRAGMA cache_size=5;");
    shell.run("BEGIN; UPDATE items SET name = name || '!'; INSERT INTO items(name) SELECT name FROM items; COMMIT;");
    shell.run("BEGIN; DELETE FROM items; ROLLBACK;");
    shell.run("DELETE FROM items WHERE id % 3 = 0;");
    shell.run("VACUUM;");
    let synced = shell.run("SELECT litestream_sync(30000) > 0;");
    assert_eq!(synced.trim(), "1", "{}: {}", s3.name(), shell.stderr());
    assert_eq!(status(&mut shell)["fencing"], "on", "{}", s3.name());
    drop(shell);

    let keys = ctx.keys("");
    assert!(
        keys.iter().any(|k| k.starts_with("app/0000/0000000000000001-")),
        "{}: {keys:?}",
        s3.name()
    );
    assert!(
        keys.iter().all(|k| is_level_file(k, "app")),
        "{}: only LTX files in their levels (no probe marker left): {keys:?}",
        s3.name()
    );
    assert_contiguous(&level0(&ctx, "app"));
    assert_restores_equal(&ctx, &url, &db);
}

/// Whether `key` is an LTX file in one of the replica's levels under `path`. Which levels
/// hold files depends on the wall clock (level 2's 3-minute windows end wherever the run
/// happens to be), so any level 0–9 is accepted; a probe marker or stray object is not.
fn is_level_file(key: &str, path: &str) -> bool {
    let Some(rest) = key.strip_prefix(path).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let Some((level, name)) = rest.split_once('/') else {
        return false;
    };
    let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let named = name
        .strip_suffix(".ltx")
        .and_then(|n| n.split_once('-'))
        .is_some_and(|(min, max)| hex16(min) && hex16(max));
    level.len() == 4 && level.starts_with("000") && level.as_bytes()[3].is_ascii_digit() && named
}

/// A second primary on a replica is stopped: a different database at open (the replica
/// holds TXIDs it did not write), and a copy of the primary (a cloned machine: same
/// state, same position) by the conditional create it loses, after which it refuses
/// writes. The replica stays the winner's, every TXID once.
pub fn a_second_primary_is_fenced(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "second-primary");
    let url = ctx.url("app");
    let a = ctx.path("a.db");
    workload(&ctx, &a, &url, 1, 60);

    let other = ctx.path("other.db");
    plain_sqlite(&other, "CREATE TABLE mine(x)");
    let mut intruder = Shell::start(
        &extension(),
        &ctx.path("other.stderr"),
        &CREDS,
        &format!(".open file:{}?vfs=litestream&replica={url}", other.display()),
    );
    intruder.run("CREATE TABLE other(x);");
    assert!(
        intruder.stderr().contains("already holds TXIDs"),
        "{}: {}",
        s3.name(),
        intruder.stderr()
    );
    drop(intruder);

    // The clone: the database and its staging directory, copied while it is closed.
    std::fs::copy(&a, ctx.path("b.db")).unwrap();
    copy_dir(&ctx.path("a.db-litestream"), &ctx.path("b.db-litestream"));
    let mut first = primary_shell(&ctx, "a.db", &url);
    assert_eq!(first.run("SELECT count(*) > 0 FROM items;").trim(), "1");
    let mut clone = primary_shell(&ctx, "b.db", &url);
    clone.run("INSERT INTO items(name, qty) VALUES ('written by the clone', 1);");
    let clone_txid: u64 = clone
        .run("SELECT litestream_sync(30000);")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: the clone's sync: {}", s3.name(), clone.stderr()));

    first.run("INSERT INTO items(name, qty) VALUES ('written by the first', 2);");
    first.run("SELECT litestream_sync(30000);");
    assert!(
        first.stderr().contains("another primary wrote TXID"),
        "{}: the first primary was not fenced: {}",
        s3.name(),
        first.stderr()
    );
    let fenced = status(&mut first);
    assert_eq!(fenced["refusing_writes"], true, "{}: {fenced}", s3.name());
    first.run("INSERT INTO items(name, qty) VALUES ('refused', 3);");
    assert!(
        first.stderr().contains("attempt to write a readonly database") && first.stderr().contains("write refused"),
        "{}: a refused write says so, not a bare disk I/O error: {}",
        s3.name(),
        first.stderr()
    );
    assert_eq!(
        first.run("SELECT count(*) FROM items WHERE name = 'refused';").trim(),
        "0"
    );
    drop(first);

    clone.run("INSERT INTO items(name, qty) VALUES ('the clone goes on', 4);");
    let later: u64 = clone.run("SELECT litestream_sync(30000);").trim().parse().unwrap();
    assert!(later > clone_txid, "{}: {}", s3.name(), clone.stderr());
    drop(clone);
    assert_contiguous(&level0(&ctx, "app"));
    litestream_restore(&url, &ctx.path("restored.db"), &[]);
    assert!(
        dump(&ctx.path("restored.db")) == dump(&ctx.path("b.db")),
        "{}: the replica is not the clone's database",
        s3.name()
    );
}

/// How many primaries [`race_primaries`] starts.
pub const RACERS: usize = 4;

/// Starts [`RACERS`] primaries at once on the replica at `url`, each with its own
/// database (`p<i>.db`, table `t` holding `i`), URI parameters `extra`; each writes and
/// syncs. Returns what each `sqlite3` printed and how it exited. The databases exist
/// before: a primary whose database is missing restores it from the replica, which
/// would make a late racer a copy of the winner.
pub fn race_primaries(ctx: &Ctx, url: &str, extra: &str) -> Vec<Output> {
    for i in 0..RACERS {
        plain_sqlite(&ctx.path(&format!("p{i}.db")), "CREATE TABLE t(who)");
    }
    let racers: Vec<_> = (0..RACERS)
        .map(|i| {
            with_creds(&mut Command::new("sqlite3"))
                .args(["-batch", "-bail", "-cmd"])
                .arg(format!(".load {}", extension().display()))
                .arg(":memory:")
                .arg(format!(
                    ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms{extra}",
                    ctx.path(&format!("p{i}.db")).display()
                ))
                .arg(format!("INSERT INTO t VALUES ({i});"))
                .arg("SELECT litestream_sync(30000);")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    racers.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

/// Several primaries start on one empty replica at the same moment, each with its own
/// database: exactly one ends up replicating; each other one is refused at open or fenced
/// by a conditional create it lost, with an error that says so; the replica is the
/// winner's.
pub fn racing_primaries_leave_one_winner(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "racing-primaries");
    let url = ctx.url("app");
    let outputs = race_primaries(&ctx, &url, "");
    let winners: Vec<usize> = (0..RACERS).filter(|&i| outputs[i].status.success()).collect();
    let stderr = |i: usize| String::from_utf8_lossy(&outputs[i].stderr).into_owned();
    assert_eq!(
        winners.len(),
        1,
        "{}: {} racing primaries finished: {:?}",
        s3.name(),
        winners.len(),
        (0..RACERS).map(stderr).collect::<Vec<_>>()
    );
    let (mut at_open, mut by_create) = (0, 0);
    for i in (0..RACERS).filter(|i| *i != winners[0]) {
        let why = stderr(i);
        if why.contains("already holds TXIDs") {
            at_open += 1;
        } else if why.contains("another primary wrote TXID") {
            by_create += 1;
        } else {
            panic!("{}: racer {i} failed without saying why: {why}", s3.name());
        }
    }
    println!(
        "{}: {RACERS} racing primaries: 1 replicates, {at_open} refused at open, {by_create} fenced by a lost conditional create",
        s3.name()
    );
    assert_contiguous(&level0(&ctx, "app"));
    litestream_restore(&url, &ctx.path("restored.db"), &[]);
    assert_eq!(
        plain_sqlite(&ctx.path("restored.db"), "SELECT who FROM t").trim(),
        winners[0].to_string(),
        "{}: the replica is not the winner's",
        s3.name()
    );
}

/// A read replica opened on the store, with nothing local, shows what the primary
/// committed, follows it as it goes on, passes `integrity_check`, and creates no local
/// files; an empty prefix of the bucket is a clear error.
pub fn a_replica_reads_cold_and_follows(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "replica");
    let db = ctx.path("app.db");
    let url = ctx.url("app");
    let t1 = workload(&ctx, &db, &url, 1, 120);
    let view = ctx.path("view.db");
    let open = |name: &std::path::Path, url: &str| {
        format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=100ms",
            name.display()
        )
    };
    let mut r = Shell::start(&extension(), &ctx.path("view.stderr"), &CREDS, &open(&view, &url));
    assert_eq!(
        r.run("SELECT litestream_txid();").trim(),
        t1.to_string(),
        "{}: {}",
        s3.name(),
        r.stderr()
    );
    assert!(r.run(".dump") == dump(&db), "{}: the cold replica differs", s3.name());
    let t2 = workload(&ctx, &db, &url, 2, 120);
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string(),
        "{}: {}",
        s3.name(),
        r.stderr()
    );
    assert!(
        r.run(".dump") == dump(&db),
        "{}: the following replica differs",
        s3.name()
    );
    assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    drop(r);
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut p = view.as_os_str().to_owned();
        p.push(suffix);
        assert!(!std::path::Path::new(&p).exists(), "the replica created {p:?}");
    }
    let empty = Shell::start(
        &extension(),
        &ctx.path("empty.stderr"),
        &CREDS,
        &open(&ctx.path("empty.db"), &ctx.url("nothing")),
    );
    assert!(
        empty.stderr().contains("has no LTX files"),
        "{}: {}",
        s3.name(),
        empty.stderr()
    );
}
