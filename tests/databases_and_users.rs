//! Boundaries between databases of one process, and between users of one machine.
//!
//! - `ATTACH` and `VACUUM INTO` on a primary configured by `LITESTREAM_REPLICA_URL`:
//!   SQLite opens both like a main database, through the connection's VFS. A replica
//!   location belongs to one database; a database opened without its own `replica=`
//!   while another is open through the VFS is left alone.
//! - A private database (0600) stays private: every file and directory we create for it
//!   gets its permission bits (directories with the matching execute bits), whatever
//!   the umask, and as root its owner.

mod harness;

use harness::shell::LiveShell;
use harness::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A primary configured by the environment alone, as an application that cannot change
/// its connection strings would run it, holding `ROWS` (synced): the database, its
/// replica directory and URL, and the shell.
fn env_primary_with_rows(dir: &Path) -> (PathBuf, PathBuf, String, LiveShell) {
    let (db, replica) = (dir.join("app.db"), dir.join("replica"));
    let url = format!("file://{}", replica.display());
    let mut shell = LiveShell::start_with(
        dir,
        "app",
        &[("LITESTREAM_REPLICA_URL", &url), ("LITESTREAM_SYNC_INTERVAL", "100ms")],
        None,
        &format!(".open file:{}?vfs=litestream", db.display()),
    );
    run_ok(&mut shell, &format!("{ROWS} SELECT litestream_sync();"));
    (db, replica, url, shell)
}

/// Runs `sql`, failing the test on any error the shell reports ("Runtime error near
/// line N", "Parse error", "Error: ..." in older shells).
fn run_ok(shell: &mut LiveShell, sql: &str) -> String {
    let out = shell.run(sql);
    let stderr = shell.stderr();
    let failed = stderr
        .lines()
        .any(|l| l.starts_with("Error") || l.starts_with("Runtime error") || l.starts_with("Parse error"));
    assert!(!failed, "{sql}\nstderr:\n{stderr}");
    out
}

/// The replica holds exactly the primary's history: TXIDs 1, 2, 3, ... from one writer,
/// and it restores (with the real Litestream) to the primary's contents.
fn assert_replica_is_the_primarys(dir: &Path, db: &Path, replica: &Path, url: &str) {
    assert_contiguous(&level0_ranges(replica));
    let restored = dir.join("restored.db");
    let _ = fs::remove_file(&restored);
    litestream_restore(url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(db), "the replica restores to the primary");
}

/// Directories beside the databases that look like staging directories.
fn staging_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with("-litestream"))
        .collect();
    names.sort();
    names
}

const ROWS: &str = "CREATE TABLE t(x); \
    WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500) \
    INSERT INTO t SELECT i FROM n;";

#[test]
fn attach_under_the_environment_leaves_the_scratch_database_and_the_replica_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica, url, mut app) = env_primary_with_rows(dir.path());

    let scratch = dir.path().join("scratch.db");
    let tables = run_ok(
        &mut app,
        &format!(
            "ATTACH '{}' AS s; CREATE TABLE s.notes(y); INSERT INTO s.notes VALUES ('scratch'); \
             SELECT group_concat(name) FROM s.sqlite_master; DETACH s;",
            scratch.display()
        ),
    );
    assert_eq!(
        tables.trim(),
        "notes",
        "the scratch database starts empty, not as a copy of the main one"
    );
    run_ok(&mut app, "INSERT INTO t VALUES (501); SELECT litestream_sync();");
    drop(app);

    assert_eq!(
        staging_dirs(dir.path()),
        ["app.db-litestream"],
        "only the main database is replicated"
    );
    assert_eq!(plain_sqlite(&scratch, "SELECT y FROM notes").trim(), "scratch");
    assert_eq!(
        plain_sqlite(&scratch, "PRAGMA journal_mode").trim(),
        "delete",
        "left as plain SQLite made it"
    );
    assert_replica_is_the_primarys(dir.path(), &db, &replica, &url);
}

#[test]
fn vacuum_into_under_the_environment_writes_a_plain_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica, url, mut app) = env_primary_with_rows(dir.path());

    let copy = dir.path().join("copy.db");
    run_ok(&mut app, &format!("VACUUM INTO '{}';", copy.display()));
    // Temporary files (a temp table on disk, the temp database of a plain VACUUM) carry
    // no main-database flag: they pass through as well.
    run_ok(
        &mut app,
        "PRAGMA temp_store=FILE; CREATE TEMP TABLE tt AS SELECT * FROM t; VACUUM; \
         INSERT INTO t SELECT x + 500 FROM tt; SELECT litestream_sync();",
    );
    let main_sum = run_ok(&mut app, "SELECT count(*), sum(x) FROM t;");
    drop(app);

    assert_eq!(
        plain_sqlite(&copy, "SELECT count(*), sum(x) FROM t").trim(),
        "500|125250"
    );
    assert_eq!(main_sum.trim(), "1000|500500");
    assert_eq!(integrity(&copy), "ok");
    assert_eq!(
        plain_sqlite(&copy, "PRAGMA journal_mode").trim(),
        "delete",
        "a plain copy"
    );
    assert_eq!(staging_dirs(dir.path()), ["app.db-litestream"]);
    assert_replica_is_the_primarys(dir.path(), &db, &replica, &url);
}

#[test]
fn an_attached_database_with_its_own_replica_is_a_primary_and_a_taken_location_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica, url, mut app) = env_primary_with_rows(dir.path());

    let other = dir.path().join("other.db");
    let other_replica = dir.path().join("other-replica");
    run_ok(
        &mut app,
        &format!(
            "ATTACH 'file:{}?replica=file://{}&sync_interval=100ms' AS o; CREATE TABLE o.u(z); \
             INSERT INTO o.u VALUES (1), (2); SELECT litestream_sync(30000, 'o');",
            other.display(),
            other_replica.display()
        ),
    );
    let taken = app.run(&format!(
        "ATTACH 'file:{}?replica={url}' AS bad;",
        dir.path().join("third.db").display()
    ));
    assert!(taken.is_empty());
    assert!(
        app.stderr().contains("unable to open database"),
        "a second database on the main database's location is refused: {}",
        app.stderr()
    );
    drop(app);
    // The attached primary's commits reached its own replica.
    assert_contiguous(&level0_ranges(&other_replica));
    let restored = dir.path().join("other-restored.db");
    litestream_restore(&format!("file://{}", other_replica.display()), &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&other));
    assert!(!dir.path().join("third.db-litestream").exists());
    assert_replica_is_the_primarys(dir.path(), &db, &replica, &url);
}

/// Another spelling of the main database's replica location (a `..`, a doubled or a `.`
/// segment, a trailing `/`, a symlink) names the same directory: a database attached on it
/// is refused at open like the same spelling, before it is restored from that replica,
/// and the replica stays the primary's. It was let in: restored from the replica (its
/// file did not exist), it wrote its own files there and the replica forked.
#[test]
fn another_spelling_of_a_taken_replica_location_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (db, replica, url, mut app) = env_primary_with_rows(dir.path());
    fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
    let alias = dir.path().join("alias");
    std::os::unix::fs::symlink(&replica, &alias).unwrap();
    let d = dir.path().display();
    let spellings = [
        format!("file://{d}/elsewhere/../replica"),
        format!("file://{d}//replica"),
        format!("file://{d}/./replica"),
        format!("file://{d}/replica/"),
        format!("file://{}", alias.display()),
    ];
    for (i, spelling) in spellings.iter().enumerate() {
        let tenant = dir.path().join(format!("tenant{i}.db"));
        let before = app.stderr().len();
        let out = app.run(&format!(
            "ATTACH 'file:{}?replica={spelling}' AS t{i}; SELECT count(*) FROM t{i}.sqlite_master;",
            tenant.display()
        ));
        let said = app.stderr()[before..].to_string();
        assert!(out.trim().is_empty(), "{spelling}: the attach went through: {out}");
        assert!(said.contains("belongs to one database"), "{spelling}: {said}");
        assert!(!tenant.exists(), "{spelling}: restored from the taken replica");
    }
    // The refusals above are in the log: the primary's own commit is judged by its sync.
    let synced = app.run("INSERT INTO t VALUES ('after'); SELECT litestream_sync();");
    assert!(synced.trim().parse::<u64>().is_ok(), "{synced}\n{}", app.stderr());
    drop(app);
    assert_replica_is_the_primarys(dir.path(), &db, &replica, &url);
}

// ---- private databases ----------------------------------------------------------------

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .mode()
        & 0o777
}

/// A database only its owner may read, made with the plain shell.
fn private_database(path: &Path, sql: &str) {
    plain_sqlite(path, sql);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

/// A private database (`ROWS`) replicated to `file://<dir>/replica` by a shell running
/// under umask 022, synced: the database, the replica URL and the shell.
fn private_primary_synced(dir: &Path) -> (PathBuf, String, LiveShell) {
    let db = dir.join("app.db");
    let url = format!("file://{}", dir.join("replica").display());
    private_database(&db, ROWS);
    let mut shell = LiveShell::start_with(
        dir,
        "app",
        &[],
        Some("022"),
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    run_ok(&mut shell, "SELECT litestream_sync();");
    (db, url, shell)
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// Waits until `dir` holds a file, returns them all.
fn wait_for_files(dir: &Path, shell: &LiveShell) -> Vec<PathBuf> {
    let started = Instant::now();
    loop {
        let files = files_in(dir);
        if !files.is_empty() {
            return files;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "nothing in {}: {}",
            dir.display(),
            shell.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_modes(what: &str, paths: &[PathBuf], expected: u32) {
    assert!(!paths.is_empty(), "no {what} to check");
    for p in paths {
        assert_eq!(mode(p), expected, "{what} {}: {:o}", p.display(), mode(p));
    }
}

#[test]
fn a_private_databases_staging_and_file_replica_are_private_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    private_database(&db, ROWS);
    let replica = dir.path().join("replica");
    let mut app = LiveShell::start_with(
        dir.path(),
        "app",
        &[],
        Some("022"),
        &format!(
            ".open file:{}?vfs=litestream&replica=file://{}&sync_interval=100ms&l1_interval=1s",
            db.display(),
            replica.display()
        ),
    );
    let staging = dir.path().join("app.db-litestream");
    // Level-0 files pass through the staging directory and the level cache until level 1
    // (written by compaction every second) has consumed them: note every file seen
    // while commits go on.
    let mut seen: BTreeMap<PathBuf, u32> = BTreeMap::new();
    let watched = ["ltx", "levels/0", "levels/1"].map(|d| staging.join(d));
    let started = Instant::now();
    let in_dir = |seen: &BTreeMap<PathBuf, u32>, d: &Path| seen.keys().filter(|p| p.parent() == Some(d)).count();
    while in_dir(&seen, &watched[1]) == 0 || in_dir(&seen, &watched[2]) == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{seen:?}\n{}",
            app.stderr()
        );
        run_ok(&mut app, "INSERT INTO t VALUES (random()); SELECT litestream_sync();");
        for file in watched.iter().flat_map(|d| files_in(d)) {
            if let Ok(meta) = fs::metadata(&file) {
                seen.insert(file, meta.mode() & 0o777);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // A second process writing the database: it asks the replicating process for its
    // syncs (`sync/`) and hands off the WAL frames its checkpoint destroys (`handoff/`).
    let mut follower = LiveShell::start_with(
        dir.path(),
        "follower",
        &[],
        Some("022"),
        &format!(
            ".open file:{}?vfs=litestream&replica=file://{}&sync_interval=100ms&l1_interval=1s",
            db.display(),
            replica.display()
        ),
    );
    run_ok(
        &mut follower,
        "INSERT INTO t VALUES (-1); SELECT litestream_sync(); PRAGMA wal_checkpoint(TRUNCATE);",
    );
    drop(follower);
    let replica_level1 = wait_for_files(&replica.join("ltx/1"), &app);
    for (file, bits) in &seen {
        assert_eq!(*bits, 0o600, "staged or cached file {}: {bits:o}", file.display());
    }

    let dirs = |root: &Path, names: &[&str]| -> Vec<PathBuf> { names.iter().map(|n| root.join(n)).collect() };
    assert_modes(
        "staging directory",
        &dirs(&staging, &["", "ltx", "levels", "levels/0", "levels/1"]),
        0o700,
    );
    assert_modes(
        "state file",
        &dirs(
            &staging,
            &["state.json", "uploaded.json", "leader.json", "lock", "handoff/seq"],
        ),
        0o600,
    );
    assert_modes("message directory", &dirs(&staging, &["sync", "handoff"]), 0o700);
    assert_modes(
        "replica directory",
        &dirs(&replica, &["", "ltx", "ltx/0", "ltx/1"]),
        0o700,
    );
    assert_modes("replica file", &files_in(&replica.join("ltx/0")), 0o600);
    assert_modes("replica file", &replica_level1, 0o600);
    // SQLite's own files, for comparison: the same rule.
    assert_modes("SQLite's WAL", &[dir.path().join("app.db-wal")], 0o600);
    drop(app);
}

#[test]
fn a_private_databases_snapshot_copy_is_private() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    // Big enough that the snapshot's copy lives for a while (tens of milliseconds or more).
    private_database(
        &db,
        "CREATE TABLE big(b); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) \
         INSERT INTO big SELECT randomblob(4000) FROM n;",
    );
    let copy = dir.path().join("app.db-litestream/snapshot.db.tmp");
    let watcher = std::thread::spawn({
        let copy = copy.clone();
        move || -> Option<u32> {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(60) {
                if let Ok(meta) = fs::metadata(&copy) {
                    return Some(meta.mode() & 0o777);
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            None
        }
    });
    let mut app = LiveShell::start_with(
        dir.path(),
        "app",
        &[],
        Some("022"),
        &format!(
            ".open file:{}?vfs=litestream&replica=file://{}&sync_interval=100ms",
            db.display(),
            dir.path().join("replica").display()
        ),
    );
    // The first snapshot copies the database; the watcher sees the copy while it exists.
    run_ok(&mut app, "SELECT litestream_sync();");
    let seen = watcher.join().unwrap();
    assert_eq!(seen, Some(0o600), "the snapshot copy of {}", copy.display());
    drop(app);
}

#[test]
fn restoring_over_a_private_database_keeps_it_private() {
    let dir = tempfile::tempdir().unwrap();
    let (db, url, mut app) = private_primary_synced(dir.path());
    let target = dir.path().join("copy.db");
    private_database(&target, "CREATE TABLE old(o)");
    run_ok(
        &mut app,
        &format!(
            "SELECT litestream_restore('{url}', '{}', NULL, 'overwrite');",
            target.display()
        ),
    );
    assert_eq!(mode(&target), 0o600, "the restored database replaced a private one");
    // A new file gets what SQLite would give a new database: 0644 less the umask.
    let fresh = dir.path().join("fresh.db");
    run_ok(
        &mut app,
        &format!("SELECT litestream_restore('{url}', '{}');", fresh.display()),
    );
    assert_eq!(mode(&fresh), 0o644);
    drop(app);
    assert_eq!(dump(&target), dump(&db));
}

#[test]
fn a_hydration_file_is_readable_by_its_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url, app) = private_primary_synced(dir.path());
    let hydrated = dir.path().join("hydrated.db");
    let mut view = LiveShell::start_with(
        dir.path(),
        "view",
        &[],
        Some("022"),
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&hydrate={}",
            dir.path().join("view.db").display(),
            hydrated.display()
        ),
    );
    assert_eq!(run_ok(&mut view, "SELECT count(*) FROM t;").trim(), "500");
    assert_eq!(mode(&hydrated), 0o600);
    drop((app, view));
}

#[test]
fn as_root_everything_created_for_a_database_belongs_to_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    private_database(&db, ROWS);
    if fs::metadata(&db).unwrap().uid() != 0 {
        eprintln!("not running as root: only root may give files to another user; skipped");
        return;
    }
    const NOBODY: u32 = 65534;
    std::os::unix::fs::chown(&db, Some(NOBODY), Some(NOBODY)).unwrap();
    let replica = dir.path().join("replica");
    let mut app = LiveShell::start_with(
        dir.path(),
        "app",
        &[],
        Some("022"),
        &format!(
            ".open file:{}?vfs=litestream&replica=file://{}&sync_interval=100ms",
            db.display(),
            replica.display()
        ),
    );
    run_ok(&mut app, "INSERT INTO t VALUES (501); SELECT litestream_sync();");
    let staging = dir.path().join("app.db-litestream");
    let mut paths = vec![
        staging.clone(),
        staging.join("ltx"),
        staging.join("levels/0"),
        staging.join("state.json"),
        staging.join("lock"),
        replica.clone(),
        replica.join("ltx/0"),
        dir.path().join("app.db-wal"),
    ];
    paths.extend(files_in(&replica.join("ltx/0")));
    paths.extend(files_in(&staging.join("levels/0")));
    for p in &paths {
        let meta = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "owner of {}", p.display());
    }
    drop(app);
}

/// Runs `sql` in a `sqlite3` shell with the extension loaded as user `nobody` when the
/// tests run as root (permission bits do not stop root), as ourselves otherwise:
/// (succeeded, stdout and stderr).
fn sqlite_as_nobody(sql: &str) -> (bool, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let root = fs::metadata("/proc/self").unwrap().uid() == 0;
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "sqlite3"]);
        c
    } else {
        Command::new("sqlite3")
    };
    let mut child = command
        .args(["-batch", "-bail", "-cmd"])
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 runs");
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && !text.contains("Error"), text)
}

#[test]
fn a_database_opened_while_read_only_can_be_written_through_the_vfs_once_it_is_writable_again() {
    let dir = tempfile::tempdir().unwrap();
    if fs::metadata(dir.path()).unwrap().uid() == 0 {
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    }
    let db = dir.path().join("app.db");
    let open = format!(
        ".open file:{}?vfs=litestream&replica=file://{}",
        db.display(),
        dir.path().join("replica").display()
    );
    let (ok, out) = sqlite_as_nobody(&format!(
        "{open}\nCREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT litestream_sync();"
    ));
    assert!(ok, "{out}");
    let staging = dir.path().join("app.db-litestream");
    // Read-only for a while (an operator's chmod, a deploy), and looked at meanwhile.
    fs::set_permissions(&db, fs::Permissions::from_mode(0o444)).unwrap();
    let (ok, out) = sqlite_as_nobody(&format!("{open}\nSELECT count(*) FROM t;"));
    assert!(ok && out.trim() == "1", "{out}");
    // Ours keep owner write (directories owner rwx); group and other read as the
    // database. Before: lock and leader.json 0444, ltx/ and levels/ 0555.
    assert_eq!(mode(&staging.join("lock")), 0o644);
    assert_eq!(mode(&staging), 0o755);
    assert_eq!(mode(&staging.join("ltx")), 0o755);
    fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
    for companion in ["app.db-wal", "app.db-shm"] {
        let _ = fs::remove_file(dir.path().join(companion));
    }
    let (ok, out) = sqlite_as_nobody(&format!(
        "{open}\nINSERT INTO t VALUES (2); SELECT litestream_sync(); SELECT count(*) FROM t;"
    ));
    assert!(ok, "writable again, the open failed: {out}");
    // A lock file an older version left read-only is its owner's to open again.
    fs::set_permissions(staging.join("lock"), fs::Permissions::from_mode(0o444)).unwrap();
    let (ok, out) = sqlite_as_nobody(&format!("{open}\nINSERT INTO t VALUES (3); SELECT litestream_sync();"));
    assert!(ok, "a 0444 lock file of ours locked the database out: {out}");
    assert_eq!(mode(&staging.join("lock")), 0o644);
}

/// A replica directory the application's user may not read for a while (an operator's
/// chmod, a remount), for a database that replicated there before: a new process opens it
/// from local state and catches up once it may again. Every open (a connection per
/// request) failed with "unable to open database file" for as long as it lasted, and
/// after the replicating process was killed no process could take over (a tester). A
/// first replication there is still refused: that is a setting to fix.
#[test]
fn a_replica_the_user_may_not_read_for_a_while_does_not_lock_the_database_out() {
    let dir = tempfile::tempdir().unwrap();
    if fs::metadata(dir.path()).unwrap().uid() == 0 {
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    }
    let (db, replica) = (dir.path().join("app.db"), dir.path().join("replica"));
    let open = format!(
        ".open file:{}?vfs=litestream&replica=file://{}",
        db.display(),
        replica.display()
    );
    let (ok, out) = sqlite_as_nobody(&format!(
        "{open}\nCREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT litestream_sync();"
    ));
    assert!(ok, "{out}");
    fs::set_permissions(&replica, fs::Permissions::from_mode(0o000)).unwrap();
    let (ok, out) = sqlite_as_nobody(&format!("{open}\nINSERT INTO t VALUES (2); SELECT count(*) FROM t;"));
    assert!(ok && out.contains("continuing from local state"), "{out}");
    let first = dir.path().join("first.db");
    let (ok, out) = sqlite_as_nobody(&format!(
        ".open file:{}?vfs=litestream&replica=file://{}/elsewhere\nCREATE TABLE t(x);",
        first.display(),
        replica.display()
    ));
    assert!(
        !ok && out.contains("Permission denied"),
        "a first replication is refused: {out}"
    );
    fs::set_permissions(&replica, fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, out) = sqlite_as_nobody(&format!("{open}\nSELECT litestream_sync() = litestream_txid();"));
    assert!(ok && out.trim() == "1", "{out}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&format!("file://{}", replica.display()), &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}
