//! A writer that dies between its hand-off record and the WAL write the record precedes.
//! A process restarting, truncating or beginning the WAL records it first and then
//! writes; a SIGKILL in between (once in thousands of kills in `multi_process_crash`)
//! leaves a record that says the WAL moved on and a WAL that did not. Each case below
//! makes that window happen on purpose (`LITESTREAM_TEST_DIE_AFTER_RECORD`), then checks
//! that the replicating process goes on without a snapshot and that the replica restores
//! to the primary.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Rig {
    dir: tempfile::TempDir,
    db: std::path::PathBuf,
    url: String,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let url = format!("file://{}/replica", dir.path().display());
        Rig { dir, db, url }
    }

    fn open(&self, sync_interval: &str) -> String {
        format!(
            ".open file:{}?vfs=litestream&replica={}&sync_interval={sync_interval}",
            self.db.display(),
            self.url
        )
    }

    /// A process of its own runs `sql` and dies the moment it has put a hand-off record
    /// of `kind` in place.
    fn dies_after_record(&self, kind: &str, sql: &str) {
        self.dies_after_record_with(kind, sql, "60s", &[]);
    }

    /// [`Rig::dies_after_record`] with the dying process's `sync_interval` and more of
    /// its environment.
    fn dies_after_record_with(&self, kind: &str, sql: &str, sync_interval: &str, env: &[(&str, &str)]) {
        let script = format!("{}\nPRAGMA wal_autocheckpoint=0;\n{sql}\n", self.open(sync_interval));
        let env: Vec<(&str, &str)> = [("LITESTREAM_TEST_DIE_AFTER_RECORD", kind)]
            .into_iter()
            .chain(env.iter().copied())
            .collect();
        self.aborts_running(&script, &env, &format!("after its {kind} record"));
    }

    /// A process of its own (the extension loaded, `env` set) runs `script` and must
    /// die by SIGABRT, which the test seams raise; `when` says which, for the message.
    fn aborts_running(&self, script: &str, env: &[(&str, &str)], when: &str) {
        let path = self.dir.path().join("dying.sql");
        std::fs::write(&path, script).unwrap();
        let status = Command::new("sqlite3")
            .args(["-batch", "-cmd"])
            .arg(format!(".load {}", extension().display()))
            .arg(":memory:")
            .envs(env.iter().copied())
            .stdin(std::fs::File::open(&path).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.signal(), Some(6), "the process died {when}: {status:?}");
    }

    /// Closes the last connection, then checks the database holds `expected` (the
    /// values of `t` in order) and the replica restores to it.
    fn closed_holding(&self, last: LiveShell, expected: &str) {
        drop(last);
        assert_eq!(rows(&self.db), expected);
        self.assert_replica_equals_primary();
    }

    /// The replica restores to the primary's rows, with contiguous TXIDs.
    fn assert_replica_equals_primary(&self) {
        assert_contiguous(&level0_ranges(&self.dir.path().join("replica")));
        let restored = self.dir.path().join("restored.db");
        litestream_restore(&self.url, &restored, &[]).unwrap();
        assert_eq!(integrity(&restored), "ok");
        assert_eq!(dump(&restored), dump(&self.db), "the replica differs from the primary");
    }
}

fn status(shell: &mut LiveShell) -> Value {
    serde_json::from_str(shell.run("SELECT litestream_status();").trim()).unwrap()
}

fn rows(db: &Path) -> String {
    plain_sqlite(db, "SELECT group_concat(v, '') FROM t;")
        .trim()
        .to_string()
}

/// No snapshot beyond the first, and none asked for in the log.
fn assert_no_snapshot_forced(shell: &mut LiveShell, first: u64) {
    let status = status(shell);
    assert_eq!(status["snapshots"], first, "{status}");
    let log = shell.stderr();
    assert!(!log.contains("taking a snapshot"), "{log}");
}

const SETUP: &str = "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
                     INSERT INTO t(v) VALUES ('a'), ('b'); SELECT litestream_sync();";

/// A follower commits, checkpoints and restarts the WAL: it records the end of the
/// generation and dies before writing the new header.
const RESTART_AND_DIE: &str =
    "INSERT INTO t(v) VALUES ('c'); PRAGMA wal_checkpoint(PASSIVE); INSERT INTO t(v) VALUES ('never');";

#[test]
fn the_next_writer_restarts_a_wal_whose_restarting_writer_died_after_its_record() {
    let rig = Rig::new();
    // A long interval: the replicating process follows the record at its next write.
    let mut leader = LiveShell::start(rig.dir.path(), "leader", &rig.open("60s"));
    leader.run(SETUP);
    let first = status(&mut leader)["snapshots"].as_u64().unwrap();
    rig.dies_after_record("tail", RESTART_AND_DIE);
    // The wal-index says the new generation; the file still shows the old one.
    leader.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut leader, first);
    rig.closed_holding(leader, "abcd");
}

#[test]
fn a_wal_recovered_from_the_file_after_a_restarting_writer_died_goes_on_in_its_generation() {
    let rig = Rig::new();
    let mut leader = LiveShell::start(rig.dir.path(), "leader", &rig.open("60s"));
    leader.run(SETUP);
    rig.dies_after_record("tail", RESTART_AND_DIE);
    // SIGKILL: no process has the database open now. The next process recovers the
    // wal-index from the file, which still shows the generation the record ended, and
    // appends to it.
    leader.kill();
    let mut next = LiveShell::start(rig.dir.path(), "next", &rig.open("60s"));
    next.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut next, 0);
    rig.closed_holding(next, "abcd");
}

#[test]
fn a_generation_whose_writer_died_after_its_start_record_never_reached_the_wal() {
    let rig = Rig::new();
    // A short interval: the replicating process looks at the WAL between the start
    // record and its own next write, and finds it empty.
    let mut leader = LiveShell::start(rig.dir.path(), "leader", &rig.open("50ms"));
    leader.run(SETUP);
    let first = status(&mut leader)["snapshots"].as_u64().unwrap();
    rig.dies_after_record(
        "start",
        "INSERT INTO t(v) VALUES ('c'); PRAGMA wal_checkpoint(TRUNCATE); INSERT INTO t(v) VALUES ('never');",
    );
    std::thread::sleep(Duration::from_millis(400));
    leader.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut leader, first);
    rig.closed_holding(leader, "abcd");
}

#[test]
fn a_restart_whose_saved_state_is_past_the_record_goes_on_in_the_generation_the_wal_shows() {
    let rig = Rig::new();
    // A short interval: the replicating process follows the record and stages, so its
    // saved position is the start of the generation the record named.
    let mut leader = LiveShell::start(rig.dir.path(), "leader", &rig.open("50ms"));
    leader.run(SETUP);
    rig.dies_after_record("tail", RESTART_AND_DIE);
    std::thread::sleep(Duration::from_millis(400));
    leader.kill();
    let mut next = LiveShell::start(rig.dir.path(), "next", &rig.open("60s"));
    next.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut next, 0);
    rig.closed_holding(next, "abcd");
}

#[test]
fn a_restart_while_the_wal_index_already_names_the_next_generation_goes_on_from_its_saved_position() {
    let rig = Rig::new();
    let mut leader = LiveShell::start(rig.dir.path(), "leader", &rig.open("60s"));
    leader.run(SETUP);
    // A connection outside the VFS keeps the wal-index alive through the kills: it
    // goes on naming the generation the dead writer's restart put there.
    let mut bystander = LiveShell::start(rig.dir.path(), "bystander", &format!(".open {}", rig.db.display()));
    bystander.run("SELECT count(*) FROM t;");
    rig.dies_after_record("tail", RESTART_AND_DIE);
    leader.kill();
    let mut next = LiveShell::start(rig.dir.path(), "next", &rig.open("60s"));
    next.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut next, 0);
    drop(next);
    bystander.kill();
    assert_eq!(rows(&rig.db), "abcd");
    rig.assert_replica_equals_primary();
}

#[test]
fn a_number_taken_by_a_writer_that_died_before_its_record_does_not_hold_up_the_next_record() {
    let rig = Rig::new();
    let mut leader = LiveShell::start(rig.dir.path(), "leader", &rig.open("50ms"));
    leader.run(SETUP);
    let first = status(&mut leader)["snapshots"].as_u64().unwrap();
    // The follower takes the next record number and dies before its record is in
    // place: a hole in the numbers, and a WAL that still shows its generation.
    rig.dies_after_record("unnamed tail", RESTART_AND_DIE);
    leader.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    std::thread::sleep(Duration::from_millis(300)); // the worker follows the records again
    leader.run("INSERT INTO t(v) VALUES ('e'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut leader, first);
    rig.closed_holding(leader, "abcde");
}

#[test]
fn a_replicating_process_killed_inside_a_stage_a_restart_handed_off_from_goes_on_from_its_staged_file() {
    // The stage of 'c' holds between the staged file and the state; meanwhile 'd'
    // commits and the WAL restarts, which hands 'd' off as a batch record beginning at
    // the stage's cut, and the process dies there. The saved state is before 'c'; the WAL
    // no longer connects it to the batch.
    killed_in_a_stage_after_a_restart_record("batch", "LITESTREAM_TEST_PAUSE_STAGE_MS");
}

#[test]
fn a_replicating_process_killed_before_its_stage_file_was_in_place_left_a_restart_record_that_holds_the_stage() {
    // As above, but the stage of 'c' holds between its cut and its staged file: 'c' is
    // only in memory and in the frames the restart overwrites. The restart's record must
    // hold 'c' too (a batch once the file is in place, or a tail from the saved state),
    // not only 'd' (a batch from the cut).
    killed_in_a_stage_after_a_restart_record("batch,tail", "LITESTREAM_TEST_PAUSE_BEFORE_STAGED_FILE_MS");
}

/// The replicating process itself commits 'c', and its stage of 'c' holds for 2 s where
/// the seam `pause` holds it; meanwhile it commits 'd' and restarts the WAL, and dies the
/// moment that restart's record (of a kind in `kinds`) is in place. The next open goes on
/// without a snapshot and the replica restores to every row.
fn killed_in_a_stage_after_a_restart_record(kinds: &str, pause: &str) {
    let rig = Rig::new();
    rig.dies_after_record_with(
        kinds,
        &format!(
            "{SETUP}\nINSERT INTO t(v) VALUES ('c');\n.system sleep 0.5\n\
             INSERT INTO t(v) VALUES ('d'); PRAGMA wal_checkpoint(PASSIVE); INSERT INTO t(v) VALUES ('never');"
        ),
        "100ms",
        &[(pause, "2000")],
    );
    let mut next = LiveShell::start(rig.dir.path(), "next", &rig.open("60s"));
    next.run("INSERT INTO t(v) VALUES ('e'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut next, 0);
    rig.closed_holding(next, "abcde");
}

#[test]
fn a_replicating_process_killed_before_sqlite_counted_its_commit_never_staged_it() {
    let rig = Rig::new();
    let mut first = LiveShell::start(rig.dir.path(), "first", &rig.open("60s"));
    first.run(SETUP);
    first.kill();
    // A connection outside the VFS keeps the wal-index alive: it never counts the commit
    // the dying process wrote, and the next writer puts its own in that slot.
    let mut bystander = LiveShell::start(rig.dir.path(), "bystander", &format!(".open {}", rig.db.display()));
    bystander.run("SELECT count(*) FROM t;");
    // The replicating process writes 'c' and dies before SQLite counts it, with time for
    // several stages in between (50 ms interval).
    rig.aborts_running(
        &format!("{}\nINSERT INTO t(v) VALUES ('c');\n", rig.open("50ms")),
        &[("LITESTREAM_TEST_DIE_BEFORE_COUNT_MS", "400")],
        "before the count",
    );
    let mut next = LiveShell::start(rig.dir.path(), "next", &rig.open("60s"));
    next.run("INSERT INTO t(v) VALUES ('d'); SELECT litestream_sync();");
    assert_no_snapshot_forced(&mut next, 0);
    drop(next);
    bystander.kill();
    assert_eq!(rows(&rig.db), "abd");
    rig.assert_replica_equals_primary();
}
