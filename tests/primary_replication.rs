//! Issue 3 acceptance: what a primary replicates, `litestream restore` (0.5.17)
//! restores to exactly the primary's database.

mod harness;

use harness::*;
use std::path::Path;

fn assert_restores_equal(db: &Path, url: &str, dir: &Path) {
    let out = dir.join("restored.db");
    let _ = std::fs::remove_file(&out);
    litestream_restore(url, &out, &[]).unwrap();
    assert_eq!(integrity(&out), "ok");
    assert_eq!(dump(&out), dump(db), "litestream's restore differs from the primary");
}

#[test]
fn shell_and_python_workloads_restore_equal_with_litestream_from_file_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms",
        db.display()
    );
    // The shell: rollbacks, a spilled large transaction, VACUUM, checkpoints.
    let out = sqlite(&format!(
        "{open}
        PRAGMA cache_size=10;
        CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);
        INSERT INTO t(body) SELECT hex(randomblob(300)) FROM generate_series(1, 3000);
        BEGIN; DELETE FROM t WHERE id % 2 = 0; ROLLBACK;
        BEGIN; UPDATE t SET body = body || 'x'; INSERT INTO t(body) SELECT body FROM t LIMIT 500; COMMIT;
        DELETE FROM t WHERE id % 5 = 0;
        VACUUM;
        PRAGMA wal_checkpoint(TRUNCATE);
        INSERT INTO t(body) VALUES ('after checkpoint');
        SELECT litestream_sync(30000) > 0;"
    ));
    assert!(out.ends_with("1\n"), "{out}");
    // Python: a randomized workload over several reopenings.
    for seed in 1..=3 {
        python_workload(&db, &url, seed, 150, &["sync_interval=100ms"]);
    }
    assert_contiguous(&level0_ranges(&replica));
    assert_restores_equal(&db, &url, dir.path());
}

#[test]
fn a_database_that_existed_before_replication_is_snapshotted_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("old.db");
    let status = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE t(x); INSERT INTO t SELECT value FROM generate_series(1, 5000);")
        .status()
        .unwrap();
    assert!(status.success());
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}\nPRAGMA journal_mode;\nINSERT INTO t VALUES (-1);\nSELECT litestream_sync(30000);",
        db.display()
    ));
    // Commits made before the first snapshot is taken are part of it.
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "wal", "converted to WAL mode");
    assert!(lines[1].parse::<u64>().unwrap() >= 1);
    assert_restores_equal(&db, &url, dir.path());
}

#[test]
fn a_missing_local_database_is_restored_from_the_replica_then_continues() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    python_workload(&db, &url, 7, 100, &[]);
    let count = |db: &Path| {
        let out = std::process::Command::new("sqlite3")
            .arg(db)
            .arg("SELECT count(*) FROM items")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().parse::<u64>().unwrap()
    };
    let before = count(&db);
    std::fs::remove_file(&db).unwrap();
    std::fs::remove_dir_all(dir.path().join("app.db-litestream")).unwrap();
    // Opened by a relative path, at the default log level: the restore is a warning
    // naming the absolute path and the replica, so a copy made in the wrong working
    // directory does not go unseen.
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".cd {}\n.open file:app.db?vfs=litestream&replica={url}\nSELECT count(*) > 0 FROM items;\nINSERT INTO items(name) VALUES ('new');\nSELECT litestream_sync(30000) > 0;",
            dir.path().display()
        ),
        &[],
    );
    assert_eq!(out, "1\n1\n", "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("WARN") && l.contains("is missing or empty: restoring it from its replica"))
        .unwrap_or_else(|| panic!("no warning of the restore: {stderr}"));
    assert!(
        warning.contains(&format!("the database {} is missing", db.display())) && warning.contains(&url),
        "{warning}"
    );
    assert_eq!(
        count(&db),
        before + 1,
        "the restored database continues where the replica was"
    );
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    assert_restores_equal(&db, &url, dir.path());
}

#[test]
fn a_second_primary_on_the_same_replica_is_refused_and_the_replica_stays_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let first = dir.path().join("first.db");
    python_workload(&first, &url, 1, 60, &[]);
    // A different, existing database pointed at the same replica.
    let second = dir.path().join("second.db");
    let created = std::process::Command::new("sqlite3")
        .arg(&second)
        .arg("CREATE TABLE mine(x)")
        .status()
        .unwrap();
    assert!(created.success());
    let err = sqlite_result(&format!(
        ".open file:{}?vfs=litestream&replica={url}\nCREATE TABLE other(x);",
        second.display()
    ))
    .unwrap_err();
    assert!(err.contains("already holds TXIDs"), "{err}");
    python_workload(&first, &url, 2, 30, &[]);
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    assert_restores_equal(&first, &url, dir.path());
}

#[test]
fn bad_parameters_fail_the_open_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    for (params, expected) in [
        ("", "no replica URL"),
        (
            "&replica=file:///tmp/r&sync_intervl=1s",
            "unknown URI parameter 'sync_intervl'",
        ),
        ("&replica=ftp://host/x", "scheme"),
        ("&replica=file:///tmp/r&sync=sometimes", "sync: must be"),
    ] {
        let err = sqlite_result(&format!(
            ".open file:{}?vfs=litestream{params}\nCREATE TABLE t(x);",
            db.display()
        ))
        .unwrap_err();
        assert!(err.contains(expected), "{params}: {err}");
    }
}

/// A `file://` replica counts a TXID as stored only once its file and the directories
/// leading to it are fsynced (object_store's local store renames without any fsync):
/// what `litestream_sync()` reports stored survives a power loss.
#[test]
fn a_file_replica_fsyncs_what_litestream_sync_reports_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let trace = dir.path().join("strace.log");
    let sql = format!(
        ".open file:{}?vfs=litestream&replica=file://{}\nCREATE TABLE t(x);\nINSERT INTO t VALUES (1);\nSELECT litestream_sync(30000);\n",
        db.display(),
        replica.display()
    );
    let mut child = std::process::Command::new("strace")
        .args(["-f", "-y", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["sqlite3", "-batch", "-bail", "-cmd"])
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace runs (tools/setup.sh installs it)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(&trace).unwrap();
    let fsynced = |path: &std::path::Path| {
        log.lines()
            .any(|l| (l.contains("fsync(") || l.contains("fdatasync(")) && l.contains(&format!("<{}>", path.display())))
    };
    let level0 = replica.join("ltx/0");
    let files: Vec<_> = std::fs::read_dir(&level0).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!files.is_empty());
    for f in &files {
        assert!(fsynced(f), "{} was not fsynced:\n{log}", f.display());
    }
    for d in [&level0, &replica.join("ltx"), &replica] {
        assert!(fsynced(d), "directory {} was not fsynced:\n{log}", d.display());
    }
}

/// A writer that commits faster than the worker can stage (zstd at level 19 encodes a
/// few MB/s) waits for the worker to take the queue, so the commits held in memory stay
/// within `max_queue`: they grew without bound as long as the writer kept ahead (172 MB
/// against the 64 MiB default). No commit is lost on the way.
#[test]
fn a_writer_faster_than_staging_waits_and_the_queue_stays_within_max_queue() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    const MAX_QUEUE: u64 = 256 << 10;
    const COMMITS: usize = 200;
    let mut script = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=10s&max_queue={MAX_QUEUE}&compression=zstd:19
CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB);
SELECT litestream_sync(30000) > 0;
",
        db.display()
    );
    for _ in 0..COMMITS {
        script.push_str(
            "INSERT INTO t(v) VALUES (randomblob(65536));\nSELECT litestream_status() ->> '$.pending_bytes';\n",
        );
    }
    script.push_str("SELECT litestream_sync(60000) = litestream_txid();\n");
    let out = sqlite(&script);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), COMMITS + 2, "{out}");
    assert_eq!(lines[COMMITS + 1], "1", "every commit reached the replica");
    let pending: Vec<u64> = lines[1..=COMMITS].iter().map(|l| l.parse().unwrap()).collect();
    // One commit of a 64 KiB blob: 17 pages of 4 KiB (overflow pages, the leaf).
    let one_commit = 20 * 4096;
    // `pending_bytes` counts the batch being staged too: the queue and that batch, each
    // within `max_queue` and a commit (README, `max_queue`).
    let peak = *pending.iter().max().unwrap();
    assert!(
        peak <= 2 * (MAX_QUEUE + one_commit),
        "commits held reached {peak} bytes with max_queue={MAX_QUEUE}: the writer was not held back"
    );
    // zstd frames are ours: Litestream cannot read them, our restore can.
    let restored = dir.path().join("restored.db");
    sql_restore(&url, &restored, &[]);
    assert_eq!(dump(&restored), dump(&db));
}

/// README's alert table names `compaction.errors` and `compaction.last_error`: they are
/// there from the open, 0 and null, not only after the first failure (a tester found
/// neither key on a healthy primary); with compaction off `compaction` is null.
#[test]
fn a_primarys_compaction_status_names_its_error_fields_before_any_failure() {
    let dir = tempfile::tempdir().unwrap();
    let replica = format!("file://{}", dir.path().join("replica").display());
    let status = |name: &str, extra: &str| {
        let out = sqlite(&format!(
            ".open file:{}?vfs=litestream&replica={replica}/{name}{extra}
            CREATE TABLE t(x);
            SELECT litestream_sync(30000) > 0;
            SELECT json_extract(litestream_status(), '$.compaction');",
            dir.path().join(name).display()
        ));
        let line = out.lines().last().unwrap_or_default().to_string();
        (out, line)
    };
    let (out, compaction) = status("on.db", "");
    let compaction: serde_json::Value = serde_json::from_str(&compaction).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(compaction["errors"], 0, "{compaction}");
    // Not 0: a window boundary may pass while the test runs.
    assert!(compaction["compactions"].is_u64(), "{compaction}");
    assert_eq!(compaction["gaps"], 0, "{compaction}");
    for key in ["last_error", "last_gap"] {
        assert!(
            compaction.get(key).is_some_and(serde_json::Value::is_null),
            "{key} missing or set: {compaction}"
        );
    }
    let (out, off) = status("off.db", "&compaction=off");
    assert_eq!(
        off, "",
        "compaction off: null, which the shell prints as nothing: {out}"
    );
}
