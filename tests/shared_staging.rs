//! Processes that write one database with different staging settings (`staging=` or
//! `LITESTREAM_STAGING_DIR` set for one of them, as for a web server's unit file and not
//! for a cron job or an admin's shell). The replication lock lived in the staging
//! directory, so each took a lock of its own and both replicated: into one replica the
//! second was refused at open (or, told to use `takeover=1`, wrote a second TXID
//! sequence into it), into two each snapshotted at every WAL restart of the other. Now
//! the lock lives beside the database: one process replicates, and the others use its
//! staging directory, so their commits, hand-off records and syncs reach it and a
//! takeover continues its chain.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Rig {
    dir: tempfile::TempDir,
    db: PathBuf,
    elsewhere: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let elsewhere = dir.path().join("staging-elsewhere");
        Rig { dir, db, elsewhere }
    }

    fn replica(&self, name: &str) -> String {
        format!("file://{}", self.dir.path().join(name).display())
    }

    /// An open of the database on `replica`, staging in `elsewhere` when `explicit`.
    fn open(&self, replica: &str, explicit: bool) -> String {
        let staging = match explicit {
            true => format!("&staging={}", self.elsewhere.display()),
            false => String::new(),
        };
        format!(
            ".open file:{}?vfs=litestream&replica={replica}&sync_interval=100ms{staging}",
            self.db.display()
        )
    }

    fn default_staging(&self) -> PathBuf {
        self.dir.path().join("app.db-litestream")
    }
}

fn status(shell: &mut LiveShell) -> Value {
    let text = shell.run("SELECT litestream_status();");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status {text:?}: {e}"))
}

fn synced(shell: &mut LiveShell, sql: &str) -> u64 {
    let out = shell.run(&format!("{sql} SELECT litestream_sync(10000);"));
    out.trim()
        .parse()
        .unwrap_or_else(|_| panic!("sync failed: {out:?}\n{}", shell.stderr()))
}

fn level9_files(replica: &Path) -> usize {
    std::fs::read_dir(replica.join("ltx/9")).map(|d| d.count()).unwrap_or(0)
}

/// The first process (`leader_explicit`: staging elsewhere) replicates; the second,
/// with the other setting, follows it: its commits are acknowledged, a WAL restart it
/// makes is handed to the replicating process (no snapshot), and when the first dies it
/// takes over and continues the chain (no snapshot either).
fn two_staging_settings_one_replication(leader_explicit: bool) {
    let rig = Rig::new();
    let url = rig.replica("replica");
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open(&url, leader_explicit));
    synced(&mut a, "CREATE TABLE t(v); INSERT INTO t VALUES ('a');");
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open(&url, !leader_explicit));
    let s = status(&mut b);
    assert_eq!(s["role"], "follower", "one process replicates: {s}");
    assert!(s["error"].is_null(), "{s}");
    let leaders_staging = match leader_explicit {
        true => rig.elsewhere.clone(),
        false => rig.default_staging(),
    };
    assert_eq!(
        s["replicated_by"]["staging"].as_str().map(PathBuf::from),
        Some(std::fs::canonicalize(&leaders_staging).unwrap()),
        "{s}"
    );
    assert!(
        b.stderr().contains("using"),
        "the follower says which staging directory it uses: {}",
        b.stderr()
    );
    let first = synced(&mut b, "INSERT INTO t VALUES ('b1');");
    // The follower restarts the WAL: its hand-off record must reach the replicating
    // process, or that one snapshots.
    b.run("PRAGMA wal_checkpoint(TRUNCATE);");
    let second = synced(&mut b, "INSERT INTO t VALUES ('b2');");
    assert!(second > first, "{first} then {second}");
    let leader = status(&mut a);
    assert_eq!(leader["role"], "primary", "{leader}");
    assert_eq!(
        leader["snapshots"], 1,
        "no snapshot after the follower's WAL restart: {leader}"
    );
    let unused = if leader_explicit {
        rig.default_staging().join("state.json")
    } else {
        rig.elsewhere.clone()
    };
    assert!(!unused.exists(), "{} was not used", unused.display());

    a.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&mut b)["role"] != "primary" {
        assert!(Instant::now() < deadline, "the follower did not take over");
        std::thread::sleep(Duration::from_millis(20));
    }
    let third = synced(&mut b, "INSERT INTO t VALUES ('b3');");
    assert!(third > second);
    let s = status(&mut b);
    assert_eq!(s["snapshots"], 0, "the takeover continued the chain: {s}");
    assert!(s["error"].is_null(), "{s}");
    drop(b);
    let replica_dir = rig.dir.path().join("replica");
    assert_eq!(level9_files(&replica_dir), 0, "no reseed");
    let ranges = level0_ranges(&replica_dir);
    assert_contiguous(&ranges);
    let ours = rig.dir.path().join("ours.db");
    sql_restore(&url, &ours, &[]);
    assert_eq!(dump(&ours), dump(&rig.db), "our restore");
    let theirs = rig.dir.path().join("theirs.db");
    litestream_restore(&url, &theirs, &[]).unwrap();
    assert_eq!(dump(&theirs), dump(&rig.db), "litestream restore");
    assert_eq!(plain_sqlite(&rig.db, "SELECT count(*) FROM t").trim(), "4");
}

#[test]
fn a_process_given_a_staging_directory_follows_one_replicating_from_the_default() {
    two_staging_settings_one_replication(false);
}

#[test]
fn a_process_with_the_default_staging_follows_one_replicating_from_another_directory() {
    two_staging_settings_one_replication(true);
}

/// Two staging settings and two replicas: before, both processes replicated (each into
/// its own replica, each snapshotting at the other's WAL restarts). Now the second is a
/// follower told that its commits go to the other replica.
#[test]
fn two_staging_settings_and_two_replicas_make_one_replicating_process() {
    let rig = Rig::new();
    let mut a = LiveShell::start(rig.dir.path(), "a", &rig.open(&rig.replica("ra"), false));
    synced(&mut a, "CREATE TABLE t(v); INSERT INTO t VALUES ('a');");
    let mut b = LiveShell::start(rig.dir.path(), "b", &rig.open(&rig.replica("rb"), true));
    let s = status(&mut b);
    assert_eq!(s["role"], "follower", "{s}");
    assert!(
        s["error"].as_str().unwrap_or_default().contains("another replica"),
        "{s}"
    );
    assert!(!rig.dir.path().join("rb").exists(), "nothing stored in rb");
}

/// `rm -rf app.db-litestream` under running workers (a clean-up script, an operator
/// taking it for a cache). Before, the replicating process kept its lock on the removed
/// file, so the next process to open the database made a new lock file, took it, and was
/// refused ("already holds TXIDs ... written by another database", advising to remove the
/// database), or with a note on the file replicated beside the first. Now the
/// replicating process makes the lock file again and takes it within seconds, the
/// followers see it, and a new process follows; after the replicating one dies, one of
/// them takes over, and every commit is in the replica.
#[test]
fn the_staging_directory_removed_under_running_workers_is_made_again_with_one_replicating() {
    let rig = Rig::new();
    let url = rig.replica("replica");
    let open = rig.open(&url, false);
    let mut a = LiveShell::start(rig.dir.path(), "a", &open);
    synced(&mut a, "CREATE TABLE t(v); INSERT INTO t VALUES ('a');");
    let mut b = LiveShell::start(rig.dir.path(), "b", &open);
    synced(&mut b, "INSERT INTO t VALUES ('b');");
    // Past the replicating process's first check of its lock file, soon after its open.
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_dir_all(rig.default_staging()).unwrap();
    synced(&mut b, "INSERT INTO t VALUES ('b2');");
    synced(&mut a, "INSERT INTO t VALUES ('a2');");
    let leader_json = rig.default_staging().join("leader.json");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !leader_json.exists() {
        assert!(
            Instant::now() < deadline,
            "the replicating process did not say again that it leads"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = LiveShell::start(rig.dir.path(), "c", &open);
    let s = status(&mut c);
    assert_eq!(s["role"], "follower", "the newcomer follows: {s}\n{}", c.stderr());
    assert!(s["error"].is_null(), "{s}");
    synced(&mut c, "INSERT INTO t VALUES ('c');");
    assert_eq!(status(&mut a)["role"], "primary");
    assert_eq!(status(&mut b)["role"], "follower");
    a.kill();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&mut b)["role"] != "primary" && status(&mut c)["role"] != "primary" {
        assert!(Instant::now() < deadline, "nobody took over");
        std::thread::sleep(Duration::from_millis(20));
    }
    let roles = [status(&mut b)["role"].clone(), status(&mut c)["role"].clone()];
    assert_eq!(roles.iter().filter(|r| *r == "primary").count(), 1, "{roles:?}");
    synced(&mut b, "INSERT INTO t VALUES ('b3');");
    synced(&mut c, "INSERT INTO t VALUES ('c2');");
    drop((b, c));
    let restored = rig.dir.path().join("restored.db");
    sql_restore(&url, &restored, &[]);
    assert_eq!(dump(&restored), dump(&rig.db));
    assert_eq!(plain_sqlite(&rig.db, "SELECT count(*) FROM t").trim(), "7");
}
