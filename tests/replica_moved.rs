//! A database whose replication continues into a replica that lacks what it already
//! replicated: `replica=` changed between two opens, a replica emptied or put back from
//! an older copy (between two opens, or under the live primary), or a process naming
//! another replica taking over. The next file must
//! be one a restore can start from (a snapshot, also stored at level 9), never an
//! increment after TXIDs the replica does not hold. And a process whose commits go
//! elsewhere than its settings say is told so: its `litestream_sync()` fails instead of
//! acknowledging commits stored in another replica, or in plaintext.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEY: &str = "5d1fa6c1c4a1b0e39d7f0f0d2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d";

struct Rig {
    dir: tempfile::TempDir,
    db: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        Rig { dir, db }
    }

    fn replica(&self, name: &str) -> (PathBuf, String) {
        let path = self.dir.path().join(name);
        let url = format!("file://{}", path.display());
        (path, url)
    }

    fn open(&self, url: &str, extra: &str) -> String {
        format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=200ms{extra}",
            self.db.display()
        )
    }

    /// One process opens the database on `url`, runs `sql`, syncs and closes.
    fn run(&self, url: &str, sql: &str) {
        let out = sqlite(&format!("{}\n{sql}\nSELECT litestream_sync();", self.open(url, "")));
        assert!(out.trim().parse::<u64>().is_ok(), "{out}");
    }

    /// The replica at `url` restores (ours and Litestream's) to the database.
    fn assert_restores_to_the_database(&self, url: &str, envs: &[(&str, &str)]) {
        let ours = self.dir.path().join("ours.db");
        let _ = std::fs::remove_file(&ours);
        sql_restore(url, &ours, envs);
        assert_eq!(dump(&ours), dump(&self.db), "our restore of {url}");
        if envs.is_empty() {
            let theirs = self.dir.path().join("theirs.db");
            let _ = std::fs::remove_file(&theirs);
            litestream_restore(url, &theirs, &[]).unwrap();
            assert_eq!(dump(&theirs), dump(&self.db), "litestream restore of {url}");
        }
    }
}

/// The level-9 snapshots of a `file://` replica, as (min, max) TXIDs.
fn level9(replica: &Path) -> Vec<(u64, u64)> {
    let mut found: Vec<(u64, u64)> = std::fs::read_dir(replica.join("ltx/9"))
        .map(|d| {
            d.filter_map(|e| litestream_vfs::ltx::parse_name(e.ok()?.file_name().to_str()?).ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

fn status(shell: &mut LiveShell) -> Value {
    let text = shell.run("SELECT litestream_status();");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status {text:?}: {e}"))
}

#[test]
fn a_database_opened_with_another_replica_starts_it_with_a_snapshot_restores_start_from() {
    let rig = Rig::new();
    let (_, first) = rig.replica("first");
    let (second_dir, second) = rig.replica("second");
    rig.run(&first, "CREATE TABLE t(v); INSERT INTO t VALUES ('one');");
    rig.run(&first, "INSERT INTO t VALUES ('two');");
    // The backups move: the same database, a new replica.
    rig.run(&second, "INSERT INTO t VALUES ('three');");
    let snapshots = level9(&second_dir);
    assert_eq!(
        snapshots.len(),
        1,
        "a level-9 snapshot starts the new replica: {snapshots:?}"
    );
    assert_eq!(snapshots[0].0, 1);
    rig.run(&second, "INSERT INTO t VALUES ('four');");
    rig.assert_restores_to_the_database(&second, &[]);
    assert_eq!(plain_sqlite(&rig.db, "SELECT count(*) FROM t").trim(), "4");
}

/// The same, in one process: the database on replica A, then B, then A again within a
/// minute. The check of A at the first open must not stand for the third (the state
/// moved on with TXIDs A never got): before, A was left with a gap no restore crosses
/// (ours: "has a gap after TXID"; Litestream: "non-contiguous ltx files") and no error.
#[test]
fn a_replica_left_and_come_back_to_in_one_process_is_checked_again_and_restores() {
    let rig = Rig::new();
    let (_, a) = rig.replica("a");
    let (_, b) = rig.replica("b");
    let session = |url: &str, sql: &str| {
        format!(
            "{}\n{sql}\nSELECT 'synced', litestream_sync() > 0;\n.open :memory:\n",
            rig.open(url, "&compaction=off")
        )
    };
    let script = [
        session(&a, "CREATE TABLE t(v); INSERT INTO t VALUES ('a1'), ('a2');"),
        session(&b, "INSERT INTO t VALUES ('b1');"),
        session(&a, "INSERT INTO t VALUES ('a3');"),
    ]
    .concat();
    let out = sqlite(&script);
    assert_eq!(out.matches("synced|1").count(), 3, "{out}");
    rig.assert_restores_to_the_database(&a, &[]);
}

/// In one process: the replica plaintext, then encrypted by a keyed open, then an open
/// without the key within a minute. The third is refused as across processes (before: it
/// wrote plaintext after the encrypted files, and compaction failed from then on).
#[test]
fn an_open_without_the_key_after_a_keyed_one_in_the_same_process_is_refused() {
    let rig = Rig::new();
    let (_, a) = rig.replica("a");
    let session = |extra: &str, sql: &str| {
        format!(
            "{}\n{sql}\nSELECT 'synced', litestream_sync() > 0;\n.open :memory:\n",
            rig.open(&a, extra)
        )
    };
    let script = [
        session("", "CREATE TABLE t(v); INSERT INTO t VALUES ('plain');"),
        session(&format!("&encryption_key={KEY}"), "INSERT INTO t VALUES ('keyed');"),
        session("", "INSERT INTO t VALUES ('keyless');"),
    ]
    .concat();
    let (_, stdout, stderr) = sqlite_output(&script);
    assert_eq!(stdout.matches("synced|1").count(), 2, "{stdout}\n{stderr}");
    assert!(stderr.contains("encrypted"), "{stdout}\n{stderr}");
    assert_eq!(
        plain_sqlite(&rig.db, "SELECT group_concat(v) FROM t").trim(),
        "plain,keyed"
    );
}

/// Files staged while the store failed, then `staging=` moved away and `takeover=1`
/// (which renumbers from a snapshot), then the old staging again: its files are numbered
/// with TXIDs the replica now holds from the takeover's history. They are dropped for a
/// snapshot; uploaded (before), they put a second history under the same TXIDs, and
/// `-txid` restores gave states out of order (a settings tester).
#[test]
fn files_staged_before_a_takeover_renumbered_the_replica_are_not_uploaded_into_its_history() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    let many = |tag: &str, n: usize| -> String {
        (0..n)
            .map(|i| format!("INSERT INTO t VALUES ('{tag}{i}');\n"))
            .collect()
    };
    let session = |extra: &str, sql: &str| {
        sqlite(&format!(
            "{}\n{sql}SELECT 'synced', litestream_sync() > 0;\n",
            rig.open(&url, extra)
        ))
    };
    session("", &format!("CREATE TABLE t(v);\n{}", many("a", 20)));
    // The store fails under an open primary: 30 commits stay staged in the default
    // staging directory.
    let mut shell = LiveShell::start(rig.dir.path(), "primary", &rig.open(&url, "&sync_timeout=1s"));
    let aside = rig.dir.path().join("replica-aside");
    std::fs::rename(&replica, &aside).unwrap();
    std::fs::write(&replica, b"not a directory").unwrap();
    shell.run(&many("b", 30));
    drop(shell);
    std::fs::remove_file(&replica).unwrap();
    std::fs::rename(&aside, &replica).unwrap();
    let staging2 = rig.dir.path().join("staging2");
    let out = session(&format!("&staging={}&takeover=1", staging2.display()), &many("c", 10));
    assert!(out.contains("synced|1"), "{out}");
    let out = session("", &many("d", 25));
    assert!(out.contains("synced|1"), "{out}");

    // Inserts only: a later TXID never holds fewer rows.
    let mut counts = Vec::new();
    for (_, max) in level0_ranges(&replica) {
        let out_db = rig.dir.path().join(format!("at-{max}.db"));
        let restored = our_cli_restore(&url, &out_db, &["-txid", &max.to_string()]);
        assert!(restored.status.success(), "{restored:?}");
        let has_t = plain_sqlite(&out_db, "SELECT count(*) FROM sqlite_master WHERE name = 't'");
        let rows = match has_t.trim() {
            "1" => plain_sqlite(&out_db, "SELECT count(*) FROM t"),
            _ => "0".into(),
        };
        counts.push((max, rows.trim().parse::<u64>().unwrap()));
    }
    counts.sort();
    assert!(
        counts.windows(2).all(|w| w[0].1 <= w[1].1),
        "states out of order (TXID, rows): {counts:?}"
    );
    rig.assert_restores_to_the_database(&url, &[]);
}

/// `staging=` moved while the default staging directory held commits not yet stored: the
/// open says where the state is and to open once with it (before: "written by another
/// database", advising takeover=1, which renumbers the history); doing so stores them.
#[test]
fn an_open_with_staging_moved_away_from_unstored_commits_says_to_open_once_with_the_old_one() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    rig.run(&url, "CREATE TABLE t(v); INSERT INTO t VALUES ('stored');");
    let mut shell = LiveShell::start(rig.dir.path(), "primary", &rig.open(&url, "&sync_timeout=1s"));
    let aside = rig.dir.path().join("replica-aside");
    std::fs::rename(&replica, &aside).unwrap();
    std::fs::write(&replica, b"not a directory").unwrap();
    shell.run("INSERT INTO t VALUES ('staged');");
    drop(shell);
    std::fs::remove_file(&replica).unwrap();
    std::fs::rename(&aside, &replica).unwrap();

    let elsewhere = rig.dir.path().join("staging2");
    let (ok, _, stderr) = sqlite_output(&format!(
        "{}\nINSERT INTO t VALUES ('moved');",
        rig.open(&url, &format!("&staging={}", elsewhere.display()))
    ));
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("replication state is in") && stderr.contains("Open once with the staging it was written with"),
        "{stderr}"
    );
    rig.run(&url, "INSERT INTO t VALUES ('after');");
    rig.assert_restores_to_the_database(&url, &[]);
    assert_eq!(
        plain_sqlite(&rig.db, "SELECT group_concat(v) FROM t").trim(),
        "stored,staged,after"
    );
}

#[test]
fn a_replica_put_back_from_an_older_copy_is_reseeded_with_a_snapshot() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    rig.run(&url, "CREATE TABLE t(v); INSERT INTO t VALUES ('one');");
    let old = rig.dir.path().join("old-copy");
    copy_dir(&replica, &old);
    rig.run(&url, "INSERT INTO t VALUES ('two');");
    rig.run(&url, "INSERT INTO t VALUES ('three');");
    std::fs::remove_dir_all(&replica).unwrap();
    std::fs::rename(&old, &replica).unwrap();
    rig.run(&url, "INSERT INTO t VALUES ('four');");
    assert!(!level9(&replica).is_empty(), "a level-9 snapshot after the gap");
    rig.assert_restores_to_the_database(&url, &[]);
}

#[test]
fn an_emptied_encrypted_replica_is_reseeded_with_an_encrypted_snapshot() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    let keyed = format!("{url}&encryption_key={KEY}");
    rig.run(&keyed, "CREATE TABLE t(v); INSERT INTO t VALUES ('one');");
    std::fs::remove_dir_all(&replica).unwrap();
    rig.run(&keyed, "INSERT INTO t VALUES ('two');");
    assert!(!level9(&replica).is_empty(), "a level-9 snapshot after the gap");
    rig.assert_restores_to_the_database(&url, &[("LITESTREAM_ENCRYPTION_KEY", KEY)]);
}

/// Waits up to 20 s until `stored` (a level-9 snapshot the test looks for is in the
/// replica) and the primary has uploaded everything it committed; its status then.
fn wait_for_snapshot(shell: &mut LiveShell, failure: &str, stored: impl Fn() -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = status(shell);
        if stored() && status["uploaded_txid"] == status["txid"] {
            return status;
        }
        assert!(Instant::now() < deadline, "{failure}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Under a live primary nothing lists the replica from TXID 1 but the level-9 snapshot
/// step: it found no plan to merge (every day, an error), or merged the older state a
/// put-back copy ended at. It now has the primary take a snapshot of the database.
#[test]
fn a_replica_emptied_under_a_live_primary_is_reseeded_at_the_next_snapshot_step() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    let mut shell = LiveShell::start(rig.dir.path(), "primary", &rig.open(&url, "&snapshot_interval=1s"));
    shell.run("CREATE TABLE t(v); INSERT INTO t VALUES ('one'); SELECT litestream_sync();");
    std::fs::remove_dir_all(&replica).unwrap();
    shell.run("INSERT INTO t VALUES ('two'); SELECT litestream_sync();");
    // The replica was emptied: any level-9 snapshot in it is the reseed's.
    wait_for_snapshot(&mut shell, "no snapshot reseeded the replica", || {
        !level9(&replica).is_empty()
    });
    assert!(shell.stderr().contains("no restore reaches") || shell.stderr().contains("no snapshot to start from"));
    shell.run("INSERT INTO t VALUES ('three'); SELECT litestream_sync();");
    drop(shell);
    rig.assert_restores_to_the_database(&url, &[]);
}

/// The same with the default daily snapshot step: a replica emptied under a live
/// primary that goes on committing held only increments after the TXIDs it lost, and
/// compaction merged them on without a word (found by a tester: every restore failed
/// "has no snapshot to start from" for up to a day). Compaction, which lists level 0
/// for its window anyway, now finds that nothing before its input holds the TXIDs it
/// needs, and has the primary take a snapshot, stored at level 9 too.
#[test]
fn a_replica_emptied_under_a_live_primary_is_reseeded_at_the_next_compaction_window() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    let mut shell = LiveShell::start(rig.dir.path(), "primary", &rig.open(&url, "&levels=1s"));
    shell.run("CREATE TABLE t(v); INSERT INTO t VALUES ('one'); SELECT litestream_sync();");
    std::fs::remove_dir_all(&replica).unwrap();
    shell.run("INSERT INTO t VALUES ('two'); SELECT litestream_sync();");
    let status = wait_for_snapshot(&mut shell, "no snapshot reseeded the replica", || {
        !level9(&replica).is_empty()
    });
    assert!(status["compaction"]["gaps"].as_u64() >= Some(1), "{status}");
    assert!(
        shell.stderr().contains("holds no file before TXID"),
        "{}",
        shell.stderr()
    );
    shell.run("INSERT INTO t VALUES ('three'); SELECT litestream_sync();");
    drop(shell);
    rig.assert_restores_to_the_database(&url, &[]);
}

/// A level-0 file lost from the middle of the replica (deleted; a mount gone from under
/// the primary for a while): compaction logged "level 0 has a gap" and merged on from
/// past it, no snapshot followed, and every restore of the latest state stopped at the
/// gap (found by a tester). It now has the primary take a snapshot past the gap, counted
/// in its status and metrics; the replica restores to the database again. The file goes
/// right after its upload, just after a window boundary, so that the window merges the
/// files around it, not it (tried again with new files if a window took it anyway).
#[test]
fn a_level0_file_lost_under_a_live_primary_has_compaction_take_a_snapshot_past_the_gap() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    let mut shell = LiveShell::start(rig.dir.path(), "primary", &rig.open(&url, "&levels=3s"));
    shell.run("CREATE TABLE t(v); INSERT INTO t VALUES ('one'); SELECT litestream_sync();");
    let window_ms = 3000;
    let mut lost = None;
    for attempt in 0..3 {
        while now_ms() % window_ms > 200 {
            std::thread::sleep(Duration::from_millis(10));
        }
        shell.run(&format!(
            "INSERT INTO t VALUES ('a{attempt}'); SELECT litestream_sync();"
        ));
        let synced = shell.run(&format!(
            "INSERT INTO t VALUES ('b{attempt}'); SELECT litestream_sync();"
        ));
        let txid: u64 = synced.trim().parse().unwrap();
        let file = *level0_ranges(&replica).iter().find(|r| r.1 == txid).unwrap();
        std::fs::remove_file(
            replica
                .join("ltx/0")
                .join(litestream_vfs::ltx::format_name(file.0, file.1)),
        )
        .unwrap();
        let merged = level_ranges(&replica, 1).iter().any(|r| r.0 <= file.0 && file.1 <= r.1);
        if !merged {
            lost = Some(file);
            break;
        }
    }
    let lost = lost.expect("a window merged the file before it was removed, three times");
    shell.run("INSERT INTO t VALUES ('c'); SELECT litestream_sync();");
    let status = wait_for_snapshot(&mut shell, "no snapshot past the gap", || {
        level9(&replica).iter().any(|s| s.1 > lost.1)
    });
    assert_eq!(status["compaction"]["gaps"], 1, "{status}");
    assert!(
        status["compaction"]["last_gap"]["why"]
            .as_str()
            .unwrap_or_default()
            .contains("has a gap after TXID"),
        "{status}"
    );
    let metrics = shell.run("SELECT litestream_metrics();");
    assert!(metrics.contains("litestream_replica_gaps_total{"), "{metrics}");
    shell.run("INSERT INTO t VALUES ('d'); SELECT litestream_sync();");
    // Mended: `last_error` no longer says a snapshot follows (an alert on it stayed on
    // long after the repair); `last_gap` and the count keep the history.
    let after = shell.run("SELECT litestream_status() -> '$.compaction';");
    let after: serde_json::Value = serde_json::from_str(after.trim()).unwrap();
    assert!(after["last_error"].is_null(), "{after}");
    assert!(after["last_error_at_ms"].is_u64() && after["gaps"] == 1, "{after}");
    drop(shell);
    rig.assert_restores_to_the_database(&url, &[]);
}

/// The same file lost while no process has the database open: the next open, which
/// lists every level anyway, finds that no restore reaches the replica's newest TXID
/// and starts with a snapshot, also at level 9 (it went on after the gap before, and a
/// reopen healed nothing). With compaction off, so that only the open can mend it.
#[test]
fn a_level0_file_lost_while_closed_is_mended_by_a_snapshot_at_the_next_open() {
    let rig = Rig::new();
    let (replica, url) = rig.replica("replica");
    for sql in [
        "CREATE TABLE t(v); INSERT INTO t VALUES ('one');",
        "INSERT INTO t VALUES ('two');",
        "INSERT INTO t VALUES ('three');",
    ] {
        rig.run(&format!("{url}&compaction=off"), sql);
    }
    let ranges = level0_ranges(&replica);
    let lost = ranges[ranges.len() - 2];
    std::fs::remove_file(
        replica
            .join("ltx/0")
            .join(litestream_vfs::ltx::format_name(lost.0, lost.1)),
    )
    .unwrap();
    let (ok, _, stderr) = sqlite_output(&format!(
        "{}\nINSERT INTO t VALUES ('four'); SELECT litestream_sync();",
        rig.open(&url, "&compaction=off")
    ));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("has a gap after TXID"), "{stderr}");
    assert!(!level9(&replica).is_empty(), "a level-9 snapshot past the gap");
    rig.assert_restores_to_the_database(&url, &[]);
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// TXID ranges of a level of the `file://` replica at `replica`, sorted.
fn level_ranges(replica: &Path, level: u8) -> Vec<(u64, u64)> {
    let mut found: Vec<(u64, u64)> = std::fs::read_dir(replica.join(format!("ltx/{level}")))
        .map(|d| {
            d.filter_map(|e| litestream_vfs::ltx::parse_name(e.ok()?.file_name().to_str()?).ok())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// A follower whose settings name another replica (`extra` its own parameters) is told
/// so by its status and its `litestream_sync()`; when the replicating process dies it
/// takes over into its own replica, which then restores to the database.
fn a_follower_with_other_settings(rig: &Rig, follower_url: &str, extra: &str, leader_url: &str, expected: &str) {
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open(leader_url, ""));
    a.run("CREATE TABLE t(v); INSERT INTO t VALUES ('a'); SELECT litestream_sync();");
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open(follower_url, extra));
    let s = status(&mut b);
    assert_eq!(s["role"], "follower", "{s}");
    let error = s["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains(expected), "{s}");
    b.run("INSERT INTO t VALUES ('b');");
    let started = Instant::now();
    let answer = b.run("SELECT litestream_sync(5000);");
    assert!(
        answer.trim().parse::<u64>().is_err(),
        "a sync acknowledged commits stored elsewhere: {answer}"
    );
    assert!(b.stderr().contains(expected), "{}", b.stderr());
    assert!(started.elapsed() < Duration::from_secs(4), "the sync failed at once");
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&mut b)["role"] != "primary" {
        assert!(Instant::now() < deadline, "the follower did not take over");
        std::thread::sleep(Duration::from_millis(20));
    }
    let synced = b.run("INSERT INTO t VALUES ('b2'); SELECT litestream_sync();");
    assert!(synced.trim().parse::<u64>().is_ok(), "{synced}");
    assert!(status(&mut b)["error"].is_null());
}

#[test]
fn a_follower_naming_another_replica_is_refused_its_syncs_and_starts_its_replica_with_a_snapshot_when_it_takes_over() {
    let rig = Rig::new();
    let (_, leader) = rig.replica("leader");
    let (ours_dir, ours) = rig.replica("ours");
    a_follower_with_other_settings(&rig, &ours, "", &leader, "in another replica");
    assert!(
        !level9(&ours_dir).is_empty(),
        "the takeover started the replica with a snapshot"
    );
    rig.assert_restores_to_the_database(&ours, &[]);
}

#[test]
fn a_follower_with_a_key_is_refused_its_syncs_while_the_replicating_process_stores_plaintext() {
    let rig = Rig::new();
    let (_, url) = rig.replica("replica");
    let extra = format!("&encryption_key={KEY}");
    a_follower_with_other_settings(&rig, &url, &extra, &url, "in the same replica, unencrypted");
    // The takeover turned encryption on: the next file is an encrypted snapshot.
    rig.assert_restores_to_the_database(&url, &[("LITESTREAM_ENCRYPTION_KEY", KEY)]);
}
