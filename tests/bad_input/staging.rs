//! The staging directory: one the open cannot create, one two databases' processes share,
//! one that fills up while the application commits.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `unwritable_staging_directory` | `staging=` under a regular file | open refused, names the directory |
//! | `one_staging_directory_for_two_databases` | `LITESTREAM_STAGING_DIR` shared by two databases' processes | the second open refused, names both databases; the first replicates, restores equal |
//! | `disk_full_while_staging` | 2 MiB tmpfs staging directory, filled | commits go on, sync fails with ENOSPC, catches up after |
//! | `a_sync_waiting_while_the_backlog_is_dropped` | a sync waits while a full staging tmpfs drops the backlog for a snapshot, then space returns | the sync returns the snapshot's TXID, above every TXID the dropped commits were given; none is given twice |
//! | `disk_full_for_long_while_committing` | 4 MiB tmpfs staging directory, filled; 40 MB of commits over `max_queue=1MiB` | memory stays bounded, sync and status say ENOSPC, a snapshot catches up once there is room for it; restore equal |

use super::*;
use common::shell::Shell;

#[test]
fn unwritable_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    std::fs::write(dir.path().join("blocker"), b"a file, not a directory").unwrap();
    let staging = dir.path().join("blocker/staging");
    assert_open_refused(
        &db,
        &format!(
            "replica={}&staging={}",
            file_url(&dir.path().join("replica")),
            staging.display()
        ),
        &[],
        &["staging directory", &staging.display().to_string(), "Not a directory"],
    );
    assert_rows(&db, ROWS);
}

/// Before: the second database's process took the first one's replication lock for
/// its own and became its "follower": never replicated, its `litestream_sync()` answered
/// with the first database's TXIDs, its WAL hand-off records read as the first's.
#[test]
fn one_staging_directory_for_two_databases() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b"] {
        std::fs::create_dir(dir.path().join(name)).unwrap();
    }
    let a = seeded_db(&dir.path().join("a"));
    let b = seeded_db(&dir.path().join("b"));
    let staging = dir.path().join("staging");
    let env = [("LITESTREAM_STAGING_DIR", staging.to_str().unwrap())];
    let url_a = file_url(&dir.path().join("replica-a"));
    let mut first = harness::shell::LiveShell::start_with(
        dir.path(),
        "a",
        &env,
        None,
        &format!(
            ".open file:{}?vfs=litestream&replica={url_a}&sync_interval=50ms",
            a.display()
        ),
    );
    assert_eq!(first.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    let stderr = assert_open_refused(
        &b,
        &format!("replica={}", file_url(&dir.path().join("replica-b"))),
        &env,
        &["staging directory", "belongs to the database", "a/app.db", "b/app.db"],
    );
    assert!(!stderr.contains("another process replicates"), "{stderr}");
    assert_rows(&b, ROWS);
    first.run("INSERT INTO t(v) VALUES ('after');");
    assert_eq!(first.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    drop(first);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url_a, &restored, &[]).unwrap();
    assert_rows(&restored, ROWS + 1);
}

/// Writes `path` until its file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
}

/// A `file://` replica on a full 1 MiB tmpfs: a store that refuses every upload until
/// [`RefusingReplica::take_again`].
struct RefusingReplica {
    dir: tempfile::TempDir,
    db: PathBuf,
    replica: PathBuf,
    _tmpfs: Tmpfs,
    url: String,
}

impl RefusingReplica {
    fn mount(test: &str) -> Option<RefusingReplica> {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let tmpfs = Tmpfs::mount_or_skip(&replica, "1m", test)?;
        fill(&replica.join("filler"));
        Some(RefusingReplica {
            db: dir.path().join("app.db"),
            url: file_url(&replica),
            replica,
            _tmpfs: tmpfs,
            dir,
        })
    }

    /// The store takes uploads again: the filler gone and room for `size`.
    fn take_again(replica: &Path, size: &str) {
        std::fs::remove_file(replica.join("filler")).unwrap();
        let grown = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(replica)
            .status()
            .unwrap();
        assert!(grown.success());
    }
}

/// A tmpfs mounted for one test and unmounted after it.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs at `dir`, or says why it cannot.
    /// [`Tmpfs::mount`], or `None` with a SKIPPED line naming `test` when it cannot be
    /// mounted (not root).
    fn mount_or_skip(dir: &Path, size: &str, test: &str) -> Option<Tmpfs> {
        Tmpfs::mount(dir, size)
            .map_err(|why| println!("SKIPPED {test}: {why}"))
            .ok()
    }

    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        let uid = Command::new("id").arg("-u").output().map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root, cannot mount a tmpfs".into());
        }
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn disk_full_while_staging() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let staging = dir.path().join("staging");
    let Some(_tmpfs) = Tmpfs::mount_or_skip(&staging, "2m", "disk_full_while_staging") else {
        return;
    };
    let url = file_url(&dir.path().join("replica"));
    let mut sh = Shell::start(
        &extension(),
        &dir.path().join("shell.stderr"),
        &[],
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&staging={}&sync_interval=50ms",
            db.display(),
            staging.display()
        ),
    );
    assert_eq!(
        sh.run("SELECT litestream_sync(10000) > 0;").trim(),
        "1",
        "{}",
        sh.stderr()
    );

    // Fill the staging filesystem to the last byte.
    let filler = staging.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    sh.run("INSERT INTO t(v) SELECT hex(randomblob(400)) FROM generate_series(1, 300);");
    assert_eq!(
        sh.run("SELECT count(*) FROM t;").trim(),
        (ROWS + 300).to_string(),
        "commits stop when staging is full: {}",
        sh.stderr()
    );
    sh.run("SELECT litestream_sync(1500);");
    let status = sh.run("SELECT litestream_status() ->> '$.error';");
    let log = sh.stderr();
    assert!(log.contains("litestream_sync: timed out"), "{log}");
    assert!(
        log.contains("No space left on device") && status.contains("No space left on device"),
        "the error must say the disk is full:\n{status}\n{log}"
    );

    std::fs::remove_file(&filler).unwrap();
    assert_eq!(
        sh.run("SELECT litestream_sync(30000) = litestream_txid(), litestream_status() ->> '$.error' IS NULL;")
            .trim(),
        "1|1",
        "no catch-up once space is back: {}",
        sh.stderr()
    );
    drop(sh);
    assert_rows(&db, ROWS + 300);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// Anonymous memory of process `pid` (heap, stacks; not mapped files), in KiB.
fn rss_anon_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Before: while the staging filesystem stayed full, every captured commit was kept in
/// memory (a tester's 2,000 commits of 100 KB with `max_queue=8MiB`: 466 MB of anonymous
/// memory at the peak, no writer ever held back), and `pending_bytes` showed only the
/// part not being staged. Now the commits over `max_queue` are dropped while staging
/// fails, and a full snapshot covers them once there is room for it.
#[test]
fn disk_full_for_long_while_committing() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let staging = dir.path().join("staging");
    let Some(_tmpfs) = Tmpfs::mount_or_skip(&staging, "4m", "disk_full_for_long_while_committing") else {
        return;
    };
    let url = file_url(&dir.path().join("replica"));
    let mut sh = harness::shell::LiveShell::start(
        dir.path(),
        "app",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&staging={}&sync_interval=50ms&max_queue=1MiB",
            db.display(),
            staging.display()
        ),
    );
    sh.run("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);");
    assert_eq!(
        sh.run("SELECT litestream_sync(10000) > 0;").trim(),
        "1",
        "{}",
        sh.stderr()
    );

    let filler = staging.join("filler");
    fill(&filler);
    // 400 commits of 100 KB of new pages (a queue merges rewrites of one page).
    const COMMITS: u32 = 400;
    let pid = sh.pid();
    let baseline = rss_anon_kib(pid);
    let mut peak = baseline;
    for _ in 0..COMMITS {
        sh.run("INSERT INTO big(v) VALUES (randomblob(100000));");
        peak = peak.max(rss_anon_kib(pid));
    }
    let grew_mib = (peak - baseline) / 1024;
    let status = sh.run(
        "SELECT litestream_status() ->> '$.error', litestream_status() ->> '$.pending_bytes', \
         litestream_status() ->> '$.snapshot_pending' IS NOT NULL;",
    );
    println!("40 MB of commits on a full staging disk: RssAnon grew by at most {grew_mib} MiB; status {status}");
    assert!(
        grew_mib < 16,
        "memory grew by {grew_mib} MiB with 40 MB committed on a full disk (max_queue 1 MiB)\n{}",
        sh.stderr()
    );
    let fields: Vec<&str> = status.trim().split('|').collect();
    assert!(
        fields[0].contains("No space left on device"),
        "the status must say the disk is full: {status}"
    );
    assert!(
        fields[1].parse::<u64>().unwrap() <= 4 << 20,
        "pending_bytes says what is held: {status}"
    );
    assert_eq!(fields[2], "1", "a snapshot is due: {status}");
    sh.run("SELECT litestream_sync(1000);");
    let log = sh.stderr();
    let timed_out = log
        .lines()
        .find(|l| l.contains("litestream_sync: timed out"))
        .unwrap_or_else(|| panic!("the sync must fail during the outage:\n{log}"));
    assert!(timed_out.contains("No space left on device"), "{timed_out}");

    // Room for the snapshot: the database's copy and its LTX file.
    std::fs::remove_file(&filler).unwrap();
    let grown = Command::new("mount")
        .args(["-o", "remount,size=128m"])
        .arg(&staging)
        .status()
        .unwrap();
    assert!(grown.success());
    assert_eq!(
        sh.run("SELECT litestream_sync(30000) = litestream_txid(), litestream_status() ->> '$.error' IS NULL;")
            .trim(),
        "1|1",
        "no catch-up once space is back: {}",
        sh.stderr()
    );
    drop(sh);
    assert_rows(&db, ROWS);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// A `litestream_sync()` that began waiting while staging was full returns once the
/// snapshot that covers the dropped backlog is stored (it once timed out "waiting for
/// TXID 7 (uploaded: 3)"), and `litestream_snapshot(0)` names the snapshot it waits for.
/// The dropped commits keep the TXIDs `litestream_txid()` gave them: the snapshot spans
/// them, and no later commit is given one again (they were: a `-txid` restore of a TXID
/// an application had recorded gave rows committed minutes later; a tester).
#[test]
fn a_sync_waiting_while_the_backlog_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    let Some(_tmpfs) = Tmpfs::mount_or_skip(&staging, "2m", "a_sync_waiting_while_the_backlog_is_dropped") else {
        return;
    };
    let out = Command::new(harness::python())
        .arg(harness::repo_root().join("tests/scripts/sync_across_drop.py"))
        .arg("--ext")
        .arg(extension())
        .arg("--db")
        .arg(dir.path().join("app.db"))
        .arg("--replica")
        .arg(file_url(&dir.path().join("replica")))
        .arg("--staging")
        .arg(&staging)
        .arg("--filler")
        .arg(staging.join("filler"))
        .output()
        .unwrap();
    let stdout = harness::check("sync_across_drop.py", out);
    let got: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(
        got["snapshot_pending"].is_string(),
        "the backlog was not dropped: {got}"
    );
    let (waiting, after) = (&got["waiting"], &got["after"]);
    assert_eq!(waiting[0], "ok", "{got}");
    assert_eq!(waiting, after, "the waiting sync returns the snapshot's TXID: {got}");
    // The commits made while the snapshot was owed were given its TXID: the state the
    // snapshot stores holds them. The ones captured and dropped before keep theirs.
    let (dropped, snapshot) = (got["txid_dropped"].as_u64().unwrap(), waiting[1].as_u64().unwrap());
    assert!(
        dropped > got["txid_before"].as_u64().unwrap() && snapshot == dropped,
        "the snapshot took another TXID than the one commits were given while it was owed: {got}"
    );
    assert!(
        got["txid_next"].as_u64().unwrap() > snapshot,
        "a commit after the snapshot was given a TXID again: {got}"
    );
    // Timing out at once, it names the snapshot it waits for, or, when the worker staged
    // that snapshot in between (a loaded machine), the snapshot's own TXID: after the
    // waiting sync's and at most one after the last commit's (the worker may have
    // numbered that commit first), never a TXID given back with dropped commits.
    let snapshot0 = got["snapshot0"].as_str().unwrap();
    let named = snapshot0
        .split("waiting for TXID ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    let (synced, last) = (after[1].as_u64().unwrap(), got["txid_next"].as_u64().unwrap());
    assert!(
        snapshot0.contains("waiting for a snapshot of the database")
            || named.is_some_and(|t| t > synced && t <= last + 1),
        "{snapshot0}: {got}"
    );
}

/// A store that refuses every upload for long (a full `file://` replica disk) under
/// `max_staging`. Before (a tester, 4 of 4): each WAL restart while the snapshot was
/// owed wrote a hand-off tail of the whole generation into `<db>-litestream/` and nothing
/// removed them (12.5 MB beside a 2 MiB `max_staging`, on the database's own disk, then
/// SQLITE_FULL and refused opens); and the commits dropped for the snapshot gave their
/// TXIDs back, so after the reopen later commits were given them again (a `-txid`
/// restore of one gave rows committed minutes later).
#[test]
fn a_long_outage_over_max_staging_keeps_no_hand_off_records_and_gives_no_txid_twice() {
    let Some(RefusingReplica {
        dir,
        db,
        replica,
        _tmpfs,
        url,
    }) = RefusingReplica::mount("a_long_outage_over_max_staging")
    else {
        return;
    };
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&max_staging=256k",
        db.display()
    );
    let mut sh = harness::shell::LiveShell::start(dir.path(), "app", &open);
    sh.run("CREATE TABLE big(id INTEGER PRIMARY KEY, v BLOB);");
    // 30 MB of new pages: the WAL restarts every 1,000 pages (4 MB).
    for _ in 0..300 {
        sh.run("INSERT INTO big(v) VALUES (randomblob(100000));");
    }
    let handoff = dir.path().join("app.db-litestream/handoff");
    let records: u64 = std::fs::read_dir(&handoff)
        .map(|d| d.flatten().map(|e| e.metadata().map_or(0, |m| m.len())).sum())
        .unwrap_or(0);
    let status = sh.run("SELECT litestream_status() ->> '$.snapshot_pending' IS NOT NULL, litestream_txid();");
    let fields: Vec<&str> = status.trim().split('|').collect();
    assert_eq!(
        fields[0],
        "1",
        "the backlog was not dropped for a snapshot: {status}\n{}",
        sh.stderr()
    );
    let dropped: u64 = fields[1].parse().unwrap();
    println!("30 MB committed over a refusing store: hand-off records {records} bytes; TXID {dropped}");
    assert!(
        records < 256 << 10,
        "{records} bytes of WAL hand-off records kept while a snapshot is owed\n{}",
        sh.stderr()
    );
    drop(sh);

    RefusingReplica::take_again(&replica, "128m");
    let mut sh = harness::shell::LiveShell::start(dir.path(), "app", &open);
    sh.run("INSERT INTO big(v) VALUES ('after');");
    let txid: u64 = sh.run("SELECT litestream_txid();").trim().parse().unwrap();
    assert!(
        txid >= dropped,
        "TXID {txid} after the reopen is below the {dropped} the last process gave\n{}",
        sh.stderr()
    );
    assert_eq!(
        sh.run("SELECT litestream_sync(30000) = litestream_txid();").trim(),
        "1",
        "{}",
        sh.stderr()
    );
    // The snapshot owed is expected, not a failure to warn of at every open (it was, at
    // each request of a connection per request during an outage).
    assert!(
        !sh.stderr().contains("resuming from the saved state failed"),
        "{}",
        sh.stderr()
    );
    drop(sh);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
    // The TXID the application was given after its last commit holds that commit (it
    // once named the state of an older TXID, or a later state after the reopen).
    let at = dir.path().join("at-dropped.db");
    litestream_restore(&url, &at, &["-txid", &format!("{dropped:016x}")]).unwrap();
    // The reopen's commit, made while the same snapshot was owed, is in that TXID too.
    let rows = check(
        "count",
        Command::new("sqlite3")
            .arg(&at)
            .arg("SELECT count(*) >= 300 FROM big;")
            .output()
            .unwrap(),
    );
    assert_eq!(
        rows.trim(),
        "1",
        "TXID {dropped} lacks commits made before it was given"
    );
}

/// After an outage that dropped commits, a database larger than `max_staging` takes one
/// snapshot, not one a second. Its snapshot, staged over the limit, made the next stage
/// drop the commits made meanwhile for another snapshot, though the store answered
/// again: a full image every second while commits went on (a tester: 2.9 GB uploaded in
/// 2 minutes for a 10 MB database with `max_staging=1MiB`).
#[test]
fn after_an_outage_a_database_larger_than_max_staging_takes_one_snapshot() {
    let Some(RefusingReplica {
        dir,
        db,
        replica,
        _tmpfs,
        url,
    }) = RefusingReplica::mount("after_an_outage_…_one_snapshot")
    else {
        return;
    };
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&max_staging=256k&l0_retention=1h",
        db.display()
    );
    let mut sh = harness::shell::LiveShell::start(dir.path(), "app", &open);
    // About 2 MB: every full image is over max_staging.
    sh.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); INSERT INTO t(v) SELECT randomblob(4000) FROM generate_series(1, 500);");
    for _ in 0..20 {
        sh.run("INSERT INTO t(v) VALUES (randomblob(100));");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    RefusingReplica::take_again(&replica, "256m");
    // Commits go on while the store catches up.
    for _ in 0..100 {
        sh.run("INSERT INTO t(v) VALUES (randomblob(100));");
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert_eq!(
        sh.run("SELECT litestream_sync(30000) = litestream_txid();").trim(),
        "1",
        "{}",
        sh.stderr()
    );
    drop(sh);
    let images = std::fs::read_dir(replica.join("ltx/0"))
        .unwrap()
        .flatten()
        .filter(|e| e.metadata().is_ok_and(|m| m.len() > 1 << 20))
        .count();
    println!("full images at level 0 after the outage: {images}");
    // The first one (made while the store refused) and the one after the outage.
    assert!(images <= 2, "{images} full images uploaded for one outage");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}
