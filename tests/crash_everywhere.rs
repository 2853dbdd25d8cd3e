//! SIGKILL everywhere: a writer with the compaction ladder shrunk to milliseconds (so a
//! kill lands during a commit, staging, an upload, a compaction, a level-9 snapshot or a
//! retention pass), a restore in progress, and a hydrating read replica, in random
//! order, cycle after cycle. Afterwards: no acknowledged transaction is lost (the
//! replica's latest state equals the primary, which holds every acknowledged commit),
//! TXIDs are contiguous, every restore passes `integrity_check`, a killed restore never
//! leaves a file under its final name, a killed hydration is redone from scratch.
//!
//! `LITESTREAM_CRASH_CYCLES` (default 60 here) sets the cycles, `LITESTREAM_CRASH_SEED` the
//! kill schedule; `make torture` runs 1000.

mod harness;

use harness::*;
use litestream_vfs::restore::Listing;
use litestream_vfs::storage::open_store;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PARAMS: [&str; 7] = [
    "l1_interval=60ms",
    "l2_interval=180ms",
    "l3_interval=540ms",
    "snapshot_interval=1s",
    "retention=2s",
    "l0_retention=300ms",
    "sync_interval=30ms",
];

fn cycles() -> u64 {
    crash_cycles(60)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn kill_after(mut cmd: Command, after: Duration) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill(); // SIGKILL (it may have finished already)
    child.wait().unwrap();
}

fn kill_after_logged(mut cmd: Command, after: Duration, log: std::fs::File) {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::from(log)).spawn().unwrap();
    std::thread::sleep(after);
    let _ = child.kill();
    child.wait().unwrap();
}

/// The `sqlite3` shell with the extension loaded, running `script` (dot-commands and SQL,
/// one per line). The script goes in a file read with `.read`: a command-line argument holds
/// one dot-command or plain SQL only; the file is rewritten by the next call, and a multi-line script there never ran (the hydration
/// kills of this test once exercised nothing).
fn shell(dir: &std::path::Path, script: &str) -> Command {
    let file = dir.join("script.sql");
    std::fs::write(&file, format!("{script}\n")).unwrap();
    let mut cmd = Command::new("sqlite3");
    cmd.arg("-batch")
        .arg("-cmd")
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .arg(format!(".read {}", file.display()));
    cmd
}

/// The whole ladder, level-9 snapshots and retention deleting behind them. This found a
/// primary killed while it owed a snapshot (after a discontinuity) whose saved state let the
/// next start resume from the WAL as if the snapshot had been taken: the commits it skipped
/// never reached the replica (test `a_snapshot_killed_before_it_was_staged_is_taken_after_the_restart`).
#[test]
fn sigkill_with_snapshots_and_retention_keeps_the_replica_consistent() {
    run(&PARAMS);
}

/// Compaction into levels 1-3 and level-0 retention under SIGKILL (no level-9 snapshots,
/// so retention keeps levels 1-3).
#[test]
fn sigkill_during_writes_compaction_restore_and_hydration_loses_nothing() {
    run(&[
        "sync_interval=30ms",
        "l1_interval=60ms",
        "l2_interval=180ms",
        "l3_interval=540ms",
        "snapshot_interval=1h",
        "retention=2h",
        "l0_retention=300ms",
    ]);
}

/// `LITESTREAM_CRASH_KEEP=<dir>`: run in `<dir>` and keep it, hard-link every replica file
/// into `<dir>/archive/<level>/` as it appears (so files retention deletes can still be
/// examined after a failure) and append the writers' logs to `<dir>/writer.log`.
fn keep_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("LITESTREAM_CRASH_KEEP").map(Into::into)
}

fn archive_replica(replica: std::path::PathBuf, archive: std::path::PathBuf) {
    std::thread::spawn(move || loop {
        for level in 0..10 {
            let Ok(entries) = std::fs::read_dir(replica.join("ltx").join(level.to_string())) else {
                continue;
            };
            let dest = archive.join(level.to_string());
            let _ = std::fs::create_dir_all(&dest);
            for e in entries.flatten() {
                let to = dest.join(e.file_name());
                if !to.exists() {
                    let _ = std::fs::hard_link(e.path(), to);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    });
}

fn run(default_params: &[&str]) {
    let temp = tempfile::tempdir().unwrap();
    let kept = keep_dir();
    let dir_path = kept.clone().unwrap_or_else(|| temp.path().to_path_buf());
    struct D(std::path::PathBuf);
    impl D {
        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    let dir = D(dir_path);
    if let Some(k) = &kept {
        std::fs::create_dir_all(k).unwrap();
        archive_replica(k.join("replica"), k.join("archive"));
    }
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let acks = dir.path().join("acks.txt");
    // LITESTREAM_CRASH_PARAMS replaces the parameters (e.g. to take compaction out).
    let custom = std::env::var("LITESTREAM_CRASH_PARAMS").ok();
    let params: Vec<&str> = match &custom {
        Some(p) => p.split('&').collect(),
        None => default_params.to_vec(),
    };
    // LITESTREAM_CRASH_SEED varies the kill schedule (timing varies it anyway).
    let seed = std::env::var("LITESTREAM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0x2545_f491_4f6c_dd1d);
    let mut rng = Rng(seed | 1);
    let (mut writer_kills, mut restore_kills, mut hydrate_kills) = (0, 0, 0);
    let mut partial_restores = 0;
    let started = Instant::now();
    // The first cycle always writes, so there is a replica to restore and follow.
    for cycle in 0..cycles() {
        let mode = if cycle == 0 { 0 } else { rng.next() % 4 };
        let after = Duration::from_millis(50 + rng.next() % 600);
        match mode {
            0 | 1 => {
                let mut cmd = workload_command(&db, &url, cycle + 1, 0, &params);
                cmd.arg("--sync-every").arg("5").arg("--ack-file").arg(&acks);
                if kept.is_some() {
                    let log = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(dir.path().join("writer.log"))
                        .unwrap();
                    cmd.env("LITESTREAM_LOG_LEVEL", "info");
                    kill_after_logged(cmd, after, log);
                } else {
                    kill_after(cmd, after);
                }
                writer_kills += 1;
            }
            2 => {
                let out = dir.path().join(format!("restore-{cycle}.db"));
                let script = format!("SELECT litestream_restore('{url}', '{}');", out.display());
                kill_after(shell(dir.path(), &script), Duration::from_millis(rng.next() % 150));
                restore_kills += 1;
                // Under its final name a restore is whole, or it is not there at all.
                if out.exists() {
                    assert_eq!(integrity(&out), "ok", "restore {cycle}");
                } else {
                    partial_restores += 1;
                }
            }
            _ => {
                let local = dir.path().join("hydrated.db");
                let script = format!(
                    ".open file:{}?vfs=litestream&role=replica&replica={url}&hydrate={}&cache_size=8k\n\
                     SELECT count(*) FROM items;\nSELECT count(*) FROM items;",
                    dir.path().join("replica-view.db").display(),
                    local.display()
                );
                kill_after(shell(dir.path(), &script), after);
                hydrate_kills += 1;
            }
        }
    }
    // Restart the writer, replicate what is left, and check everything.
    let final_txid = python_workload(&db, &url, 999, 10, &params);
    assert_eq!(integrity(&db), "ok");
    let acked = std::fs::read_to_string(&acks).unwrap_or_default();
    let max_acked = acked
        .lines()
        .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    assert!(
        max_acked > 0 && max_acked <= final_txid,
        "acked {max_acked}, final {final_txid}"
    );

    // TXIDs contiguous: the latest plan reaches the final TXID through a gap-free chain,
    // and the level-0 files retention kept follow each other.
    let store = open_store(&url, &Default::default()).unwrap();
    let listing = litestream_vfs::runtime::block_on(Listing::fetch(store.as_ref())).unwrap();
    let plan = litestream_vfs::restore::plan(&listing, Some(final_txid)).unwrap();
    assert_eq!(plan.last().unwrap().max_txid, final_txid);
    for pair in listing.level(0).windows(2) {
        assert_eq!(pair[1].min_txid, pair[0].max_txid + 1, "level-0 gap: {pair:?}");
    }

    // Ours and Litestream's restores equal the primary.
    let ours = dir.path().join("ours.db");
    let txid: u64 = sqlite(&format!("SELECT litestream_restore('{url}', '{}');", ours.display()))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(txid, final_txid);
    assert_eq!(integrity(&ours), "ok");
    assert_eq!(dump(&ours), dump(&db));
    let theirs = dir.path().join("theirs.db");
    litestream_restore(&url, &theirs, &[]).unwrap();
    assert_eq!(dump(&theirs), dump(&db));

    // A replica hydrating after all those kills serves the primary's rows.
    let local = dir.path().join("hydrated.db");
    let count = sqlite(&format!(
        ".open file:{}?vfs=litestream&role=replica&replica={url}&hydrate={}\nSELECT count(*), sum(qty) FROM items;",
        dir.path().join("replica-view.db").display(),
        local.display()
    ));
    let expected = Command::new("sqlite3")
        .arg(&db)
        .arg("SELECT count(*), sum(qty) FROM items;")
        .output()
        .unwrap();
    assert_eq!(count.trim(), String::from_utf8_lossy(&expected.stdout).trim());
    eprintln!(
        "crash everywhere: {} cycles in {:?}: {writer_kills} writer kills (commit/stage/upload/compaction/retention), \
         {restore_kills} restore kills ({partial_restores} left nothing, the rest were whole), {hydrate_kills} \
         hydration kills; {} acknowledged syncs (max TXID {max_acked}), final TXID {final_txid}, plan of {} files, \
         0 lost",
        cycles(),
        started.elapsed(),
        acked.lines().count(),
        plan.len()
    );
}
