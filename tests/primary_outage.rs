//! Invariant 6: the store can fail for as long as it likes; commits keep working,
//! `litestream_sync` and `litestream_status()` say what is wrong, and replication
//! catches up with no gap once the store is back.

mod harness;

use harness::*;

/// The replica path is a symlink so an outage can be switched on and off atomically
/// (a shell `rm` + `mv` would race with the uploader's retries): pointing it at a
/// plain file makes every store operation fail with "Not a directory".
fn outage_fixture(dir: &std::path::Path) -> (String, String) {
    std::fs::create_dir(dir.join("replica.real")).unwrap();
    std::fs::write(dir.join("blocker"), b"not a directory").unwrap();
    std::os::unix::fs::symlink(dir.join("replica.real"), dir.join("replica")).unwrap();
    let d = dir.display();
    (
        format!(".shell ln -s {d}/blocker {d}/swap && mv -T {d}/swap {d}/replica"),
        format!(".shell ln -s {d}/replica.real {d}/swap && mv -T {d}/swap {d}/replica"),
    )
}

#[test]
fn commits_continue_while_the_store_is_down_and_replication_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let db = dir.path().join("app.db");
    let url = format!("file://{d}/replica");
    let (outage_on, outage_off) = outage_fixture(dir.path());
    let (_, out, stderr) = sqlite_output(&format!(
        "\
.open file:{d}/app.db?vfs=litestream&replica={url}&sync_interval=50ms
CREATE TABLE t(x);
INSERT INTO t VALUES (1);
SELECT 'synced', litestream_sync(10000) > 0;
{outage_on}
INSERT INTO t VALUES (2);
INSERT INTO t SELECT value FROM generate_series(3, 1000);
SELECT 'commits work', count(*) FROM t;
SELECT 'sync fails', litestream_sync(1500);
SELECT 'status error', litestream_status() ->> '$.error' IS NOT NULL, litestream_status() ->> '$.uploaded_txid' < litestream_txid();
{outage_off}
SELECT 'caught up', litestream_sync(30000) = litestream_txid(), litestream_status() ->> '$.error' IS NULL;"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        stderr.contains("litestream_sync: timed out"),
        "sync says why it failed: {stderr}"
    );
    assert!(
        stderr.contains("Not a directory"),
        "the store's error is reported: {stderr}"
    );
    assert_eq!(lines[0], "synced|1", "{out}{stderr}");
    assert_eq!(lines[1], "commits work|1000");
    assert_eq!(lines[2], "status error|1|1", "{out}");
    assert_eq!(lines[3], "caught up|1|1", "{out}");
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn a_close_on_a_store_that_fails_says_it_failed_and_does_not_blame_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (outage_on, _) = outage_fixture(dir.path());
    let started = std::time::Instant::now();
    let (_, out, stderr) = sqlite_output(&format!(
        "\
.open file:{d}/app.db?vfs=litestream&replica=file://{d}/replica&sync_timeout=30s
CREATE TABLE t(x);
SELECT 'synced', litestream_sync(10000) > 0;
{outage_on}
INSERT INTO t VALUES (1);
.open :memory:
SELECT 'closed';"
    ));
    let took = started.elapsed();
    assert_eq!(out, "synced|1\nclosed\n", "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("staged but not stored"))
        .unwrap_or_else(|| panic!("the close says what it left staged: {stderr}"));
    // The store answered every request with an error at once: the close gave up on
    // that, well within its 30 s, and says so with the store's error.
    assert!(took < std::time::Duration::from_secs(20), "took {took:?}: {stderr}");
    assert!(
        warning.contains("(the store failed: ") && warning.contains("Not a directory"),
        "{warning}"
    );
    assert!(!warning.contains("sync_timeout"), "{warning}");
}

#[test]
fn a_store_that_fails_at_the_first_open_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(dir.path().join("replica"), b"not a directory").unwrap();
    let err = sqlite_result(&format!(
        ".open file:{d}/app.db?vfs=litestream&replica=file://{d}/replica/inner\nCREATE TABLE t(x);"
    ))
    .unwrap_err();
    assert!(err.contains("cannot open") && err.contains("listing replica"), "{err}");
}

#[test]
fn sync_commit_mode_returns_only_after_the_commit_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let check = |mode: &str| {
        sqlite(&format!(
            "\
.open file:{d}/{mode}.db?vfs=litestream&replica=file://{d}/{mode}-replica&sync={mode}&sync_interval=10s
CREATE TABLE t(x);
SELECT litestream_sync(30000) > 0;
INSERT INTO t VALUES (1);
SELECT litestream_status() ->> '$.uploaded_txid' = litestream_txid();"
        ))
    };
    // The first snapshot is uploaded at once in both modes; the INSERT after it is
    // uploaded before the commit returns only with sync=commit (the interval is 10 s).
    assert_eq!(check("commit"), "1\n1\n");
    assert_eq!(
        check("async"),
        "1\n0\n",
        "without sync=commit the upload waits for the interval"
    );
}

#[test]
fn staging_is_bounded_and_a_snapshot_reseeds_the_replica_after_a_long_outage() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let db = dir.path().join("app.db");
    let url = format!("file://{d}/replica");
    let (outage_on, outage_off) = outage_fixture(dir.path());
    let (_, out, stderr) = sqlite_output(&format!(
        "\
.open file:{d}/app.db?vfs=litestream&replica={url}&sync_interval=50ms&max_staging=64k
CREATE TABLE t(x);
SELECT 'synced', litestream_sync(10000) > 0;
{outage_on}
INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);
INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);
SELECT litestream_sync(300);
INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);
SELECT litestream_sync(300);
INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);
SELECT litestream_sync(300);
SELECT 'staging bounded', (SELECT sum(1) FROM pragma_table_info('t')) = 1;
.shell ls {d}/app.db-litestream/ltx | wc -l
{outage_off}
SELECT 'caught up', litestream_sync(30000) = litestream_txid();"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "synced|1", "{out}{stderr}");
    let staged_files: u32 = lines[2].trim().parse().unwrap();
    assert!(
        staged_files <= 3,
        "staging kept growing while the store was down: {staged_files} files"
    );
    assert_eq!(lines[3], "caught up|1", "{out}{stderr}");
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// With staging over `max_staging` and a snapshot pending, there is nothing to do but
/// wait for the store: the worker used to take that for success and ask for its next
/// turn at once, spinning a core for as long as the outage lasted.
#[test]
fn a_full_staging_waits_for_uploads_without_spinning_and_then_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let db = dir.path().join("app.db");
    let url = format!("file://{d}/replica");
    let (outage_on, outage_off) = outage_fixture(dir.path());
    let status = "litestream_status()";
    let (_, out, stderr) = sqlite_output(&format!(
        "\
.open file:{d}/app.db?vfs=litestream&replica={url}&sync_interval=50ms&max_staging=64k
CREATE TABLE t(x);
SELECT 'synced', litestream_sync(10000) > 0;
{outage_on}
INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);
SELECT litestream_sync(300);
INSERT INTO t SELECT randomblob(1000) FROM generate_series(1, 200);
SELECT litestream_sync(300);
.shell sleep 1
SELECT 'full', {status} ->> '$.snapshot_pending' IS NOT NULL, {status} ->> '$.staging_full';
SELECT 'turns', {status} ->> '$.engine.turns', {status} ->> '$.snapshots';
.shell sleep 2
SELECT 'turns', {status} ->> '$.engine.turns';
{outage_off}
SELECT 'caught up', litestream_sync(30000) = litestream_txid(), {status} ->> '$.staging_full' IS NULL, {status} ->> '$.snapshots';"
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "synced|1", "{out}{stderr}");
    let full: Vec<&str> = lines[1].split('|').collect();
    assert_eq!(full[..2], ["full", "1"], "{out}{stderr}");
    assert!(
        full[2].starts_with("staging is full (")
            && full[2].ends_with("limit 65536): uploads are failing: new commits are dropped, and a snapshot follows"),
        "the status says why nothing is staged: {out}"
    );
    let turns = |line: &str| -> u64 { line.split('|').nth(1).unwrap().parse().unwrap() };
    let (before, after) = (turns(lines[2]), turns(lines[3]));
    // The worker retries at most once a second here (an idle one would turn every
    // 50 ms, 40 times in 2 s); the spinning one made thousands of turns.
    assert!(
        after - before <= 20,
        "{} engine turns in 2 s of a full staging: the worker spins",
        after - before
    );
    assert_eq!(
        stderr.matches("staging is full").count(),
        1,
        "one warning for the whole episode: {stderr}"
    );
    let snapshots_before: u64 = lines[2].split('|').nth(2).unwrap().parse().unwrap();
    let caught_up: Vec<&str> = lines[4].split('|').collect();
    assert_eq!(caught_up[..3], ["caught up", "1", "1"], "{out}{stderr}");
    assert_eq!(
        caught_up[3].parse::<u64>().unwrap(),
        snapshots_before + 1,
        "uploads drained staging, then the snapshot was taken: {out}"
    );
    assert_contiguous(&level0_ranges(&dir.path().join("replica")));
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

/// A staged file damaged before it went up (a disk or file system that did not keep what
/// was fsynced) is never stored: stored, every restore through it failed until a
/// snapshot happened to come. It is dropped, said as an error, and a full snapshot at
/// the next TXID, stored at level 9 too, covers its commits.
#[test]
fn a_staged_file_damaged_before_upload_is_not_stored_and_a_snapshot_covers_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let db = dir.path().join("app.db");
    let url = format!("file://{d}/replica");
    let (outage_on, outage_off) = outage_fixture(dir.path());
    let mut shell = harness::shell::LiveShell::start(
        dir.path(),
        "primary",
        &format!(".open file:{d}/app.db?vfs=litestream&replica={url}&sync_interval=50ms"),
    );
    let synced = shell.run("CREATE TABLE t(x); INSERT INTO t VALUES (1); SELECT litestream_sync(10000);");
    let before: u64 = synced
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{synced}{}", shell.stderr()));
    shell.run(&outage_on);
    for i in 2..=6 {
        shell.run(&format!("INSERT INTO t VALUES ({i}); SELECT litestream_sync(300);"));
    }
    let staging = dir.path().join("app.db-litestream/ltx");
    let mut staged: Vec<_> = std::fs::read_dir(&staging)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
        .collect();
    staged.sort();
    assert!(
        staged.len() >= 2,
        "commits wait in staging during the outage: {staged:?}"
    );
    let damaged = &staged[0];
    let mut bytes = std::fs::read(damaged).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(damaged, &bytes).unwrap();
    shell.run(&outage_off);
    let out = shell.run(
        "SELECT 'caught up', litestream_sync(30000) = litestream_txid(); \
         SELECT 'status', litestream_status() ->> '$.error' IS NULL;",
    );
    let stderr = shell.stderr();
    assert!(out.contains("caught up|1"), "{out}{stderr}");
    assert!(
        stderr.contains("is damaged") && stderr.contains(&damaged.file_name().unwrap().to_string_lossy().to_string()),
        "the damaged file is named: {stderr}"
    );
    let snapshots = std::fs::read_dir(dir.path().join("replica.real/ltx/9")).map_or(0, |d| d.count());
    assert!(snapshots >= 1, "a level-9 snapshot starts restores past the gap");
    for restore in ["ours", "litestream"] {
        let restored = dir.path().join(format!("restored-{restore}.db"));
        match restore {
            "ours" => assert!(our_cli_restore(&url, &restored, &[]).status.success()),
            _ => drop(litestream_restore(&url, &restored, &[]).unwrap()),
        };
        assert_eq!(dump(&restored), dump(&db), "{restore} restores the database");
    }
    let earlier = dir.path().join("earlier.db");
    litestream_restore(&url, &earlier, &["-txid", &format!("{before:016x}")]).unwrap();
    assert!(dump(&earlier).contains("INSERT INTO t VALUES(1);"));
}
