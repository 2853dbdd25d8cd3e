//! Invariant 5 and the "clear error, never a silently unreplicated database" rule, one
//! row per kind of bad input, each through the real `sqlite3` shell with the extension:
//!
//! | case | input | expected |
//! |---|---|---|
//! | `unknown_uri_parameter` | `&bogus=1` | open refused, names the parameter |
//! | `sqlites_own_uri_parameters_pass` | `&readonly_shm=0&psow=1` | opens: SQLite's own parameters are not ours to refuse |
//! | `unknown_url_scheme` | `ftp://` replica | open refused, names the scheme |
//! | `missing_credentials` | S3 URL, no keys in the environment | open refused, says which variables |
//! | `unreachable_endpoint` | S3 endpoint where nothing listens | first open refused, says connection refused |
//! | `missing_bucket` | S3 bucket that does not exist | open refused, says the bucket does not exist |
//! | `unwritable_staging_directory` | `staging=` under a regular file | open refused, names the directory |
//! | `one_staging_directory_for_two_databases` | `LITESTREAM_STAGING_DIR` shared by two databases' processes | the second open refused, names both databases; the first replicates, restores equal |
//! | `disk_full_while_staging` | 2 MiB tmpfs staging directory, filled | commits go on, sync fails with ENOSPC, catches up after |
//! | `page_sizes_differ_inside_the_replica` | LTX files of 4096- and 1024-byte pages | replica open refused, says page size |
//! | `page_size_changed_outside_the_vfs` | VACUUM to 1024-byte pages without the VFS | snapshot at the next TXID, also stored as a level-9 snapshot; replica and restore (ours and Litestream's) equal |
//! | `truncated_ltx_file` | last level-0 file cut in half | replica open refused, "corrupt replica" |
//! | `corrupt_page_frame` | bytes of one page frame smashed | that query is SQLITE_CORRUPT with a message, others work |
//! | `restore_from_corrupt_replica` | primary restoring a missing database from it | open refused, no database file left behind |
//! | `object_names_outside_the_scheme_in_a_file_replica` | junk names, a directory named like a file | skipped with a warning, replica reads right, primary goes on |
//! | `object_names_outside_the_scheme_in_s3` | junk and nested keys; then a `..` key | skipped; the `..` key is a LIST error naming it |
//! | `frame_claiming_a_huge_size` | index entry of an 8 MiB frame for one page | refused before fetching it, open and restore |
//! | `restore_over_an_open_database` | `litestream_restore(…, 'overwrite')` and `restore -overwrite` onto a database open through the VFS, or in a plain `sqlite3` | refused, names who holds it; the database keeps its rows and later commits; allowed once closed |
//!
//! Every case also checks that no panic reached SQLite and that the local database still
//! holds its rows. URL parsing itself is covered case by case in `storage_url.rs`, the
//! codec's own bounds in `src/ltx`; these rows prove the errors reach the application.

mod common;
mod harness;

use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY};
use common::shell::Shell;
use harness::*;
use litestream_vfs::ltx::{
    format_name, parse_tail, Compression, Encoder, Header, TailRead, Trailer, CHECKSUM_FLAG, END_MARKER,
    FLAG_NO_CHECKSUM, FRAME_FLAG_SIZE,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ROWS: u32 = 100;
const CREDS: [(&str, &str); 2] = [
    ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
    ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
];

/// A database with `ROWS` rows, made by plain SQLite.
fn seeded_db(dir: &Path) -> PathBuf {
    let db = dir.join("app.db");
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg(format!(
            "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); \
             INSERT INTO t(v) SELECT hex(randomblob(50)) FROM generate_series(1, {ROWS});"
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    db
}

/// Nothing lost: the database file still holds `rows` rows and is intact.
fn assert_rows(db: &Path, rows: u32) {
    let out = Command::new("sqlite3")
        .arg(db)
        .arg("SELECT count(*) FROM t; PRAGMA integrity_check;")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{rows}\nok\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `sql` through the shell with the extension, the environment cleared of AWS_* and
/// LITESTREAM_* variables except `envs`; returns (stdout, stderr). Panics if a Rust panic
/// was reported (the trampolines catch them, but one means a bug all the same).
fn shell(sql: &str, envs: &[(&str, &str)]) -> (String, String) {
    let mut cmd = Command::new("sqlite3");
    for (key, _) in std::env::vars() {
        if key.starts_with("AWS_") || key.starts_with("LITESTREAM_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .envs(envs.iter().copied())
        .args(["-batch", "-cmd"])
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("panic"),
        "a panic reached SQLite:\n{stderr}"
    );
    (stdout, stderr)
}

/// Opens `db` as a primary with `params` and reads the table; asserts the open failed
/// with a message containing every one of `needles`.
fn assert_open_refused(db: &Path, params: &str, envs: &[(&str, &str)], needles: &[&str]) -> String {
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&{params}\nSELECT count(*) FROM t;",
            db.display()
        ),
        envs,
    );
    assert!(
        stdout.trim().is_empty(),
        "the open should have failed, got rows: {stdout}"
    );
    assert!(stderr.contains("unable to open database"), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "the error does not say {needle:?}:\n{stderr}");
    }
    stderr
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// Replicates the seeded database to a file:// replica and closes it; returns the URL.
fn replicated(dir: &Path, db: &Path) -> String {
    let url = file_url(&dir.join("replica"));
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\nSELECT litestream_sync(10000) > 0;",
            db.display()
        ),
        &[],
    );
    assert_eq!(stdout.trim(), "1", "{stderr}");
    url
}

/// The level-0 files of a file:// replica, oldest first.
fn level0_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("replica/ltx/0"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Opens a read replica of `url` and runs `sql`; returns (stdout, stderr).
fn replica_shell(dir: &Path, url: &str, sql: &str) -> (String, String) {
    shell(
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}\n{sql}",
            dir.join("view.db").display()
        ),
        &[],
    )
}

#[test]
fn unknown_uri_parameter() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = file_url(&dir.path().join("replica"));
    assert_open_refused(
        &db,
        &format!("replica={url}&bogus=1"),
        &[],
        &["unknown URI parameter 'bogus'"],
    );
    assert_rows(&db, ROWS);
}

/// The other side of the row above: parameters SQLite itself reads from a URI (here
/// `readonly_shm`, which the unix VFS reads, and `psow`) are not ours to refuse. SQLite's
/// own walro.test found `readonly_shm` refused.
#[test]
fn sqlites_own_uri_parameters_pass() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = file_url(&dir.path().join("replica"));
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&readonly_shm=0&psow=1\nSELECT count(*) FROM t;",
            db.display()
        ),
        &[],
    );
    assert_eq!(stdout.trim(), ROWS.to_string(), "{stderr}");
}

#[test]
fn unknown_url_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    assert_open_refused(
        &db,
        "replica=ftp://host/app",
        &[],
        &["unsupported replica URL scheme \"ftp\""],
    );
    assert_rows(&db, ROWS);
}

#[test]
fn missing_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    assert_open_refused(
        &db,
        "replica=s3://bucket/app&endpoint=http://127.0.0.1:9&region=us-east-1",
        &[],
        &["no S3 credentials", "LITESTREAM_ACCESS_KEY_ID"],
    );
    assert_rows(&db, ROWS);
}

#[test]
fn unreachable_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let port = common::server::free_port();
    let started = Instant::now();
    assert_open_refused(
        &db,
        &format!("replica=s3://bucket/app&endpoint=http://127.0.0.1:{port}&region={REGION}"),
        &CREDS,
        &["listing replica", "Connection refused"],
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?} to say so",
        started.elapsed()
    );
    assert_rows(&db, ROWS);
}

#[test]
fn missing_bucket() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    assert_open_refused(
        &db,
        &format!("replica={}", moto.url("no-such-bucket", "app")),
        &CREDS,
        &["the bucket or container does not exist"],
    );
    assert_rows(&db, ROWS);
}

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

/// A tmpfs mounted for one test and unmounted after it.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a `size` tmpfs at `dir`, or says why it cannot.
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
    let _tmpfs = match Tmpfs::mount(&staging, "2m") {
        Ok(t) => t,
        Err(why) => {
            println!("SKIPPED disk_full_while_staging: {why}");
            return;
        }
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

/// An LTX file of `page_size`-byte pages, each page filled with its number.
fn ltx(page_size: u32, min: u64, max: u64, commit: u32, pages: &[u32]) -> Vec<u8> {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
    for &pgno in pages {
        enc.write_page(pgno, &vec![pgno as u8; page_size as usize]).unwrap();
    }
    enc.finish(0).unwrap().0
}

fn put_l0(dir: &Path, min: u64, max: u64, bytes: &[u8]) {
    let level = dir.join("replica/ltx/0");
    std::fs::create_dir_all(&level).unwrap();
    std::fs::write(level.join(format_name(min, max)), bytes).unwrap();
}

#[test]
fn page_sizes_differ_inside_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    put_l0(dir.path(), 1, 1, &ltx(4096, 1, 1, 2, &[1, 2]));
    put_l0(dir.path(), 2, 2, &ltx(1024, 2, 2, 8, &[3]));
    let url = file_url(&dir.path().join("replica"));
    let (_, stderr) = replica_shell(dir.path(), &url, "SELECT 1;");
    assert!(stderr.contains("unable to open database"), "{stderr}");
    assert!(
        stderr.contains("page size 1024 differs from 4096"),
        "the error must name both page sizes:\n{stderr}"
    );
}

/// The database rebuilt with another page size outside the VFS: the primary reseeds at the
/// next TXID and also stores that image as a level-9 snapshot, so restore plans (ours and
/// Litestream's) start from it instead of meeting 1024-byte pages after 4096-byte ones.
/// (Before: the replica became unreadable while `litestream_sync()` reported success.)
#[test]
fn page_size_changed_outside_the_vfs() {
    page_size_changed_after(&[]);
}

/// Sessions that never touch the database leave SQLite's empty `-wal` behind (only a
/// connection that opened the WAL deletes it): each must still record the database
/// file's identity at close, or a change made outside the VFS afterwards goes unseen.
#[test]
fn page_size_changed_outside_the_vfs_after_sessions_that_never_read() {
    page_size_changed_after(&["SELECT 1;", "SELECT litestream_txid() > 0;"]);
}

fn page_size_changed_after(sessions: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    for sql in sessions {
        let (stdout, stderr) = shell(
            &format!(".open file:{}?vfs=litestream&replica={url}\n{sql}", db.display()),
            &[],
        );
        assert_eq!(stdout.trim(), "1", "{stderr}");
    }
    let out = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA journal_mode=delete; PRAGMA page_size=1024; VACUUM; PRAGMA page_size;")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().last(), Some("1024"));
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n\
             INSERT INTO t(v) VALUES ('after the page size change');\n\
             SELECT litestream_sync(10000) = litestream_txid();",
            db.display()
        ),
        &[("LITESTREAM_LOG_LEVEL", "info")],
    );
    assert_eq!(stdout.trim(), "1", "{stderr}");
    assert!(stderr.contains("changed while it was not open"), "{stderr}");
    assert_rows(&db, ROWS + 1);
    let (view, log) = replica_shell(dir.path(), &url, "PRAGMA page_size;\n.dump");
    assert_eq!(view, format!("1024\n{}", dump(&db)), "{log}");
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
}

#[test]
fn truncated_ltx_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    let last = level0_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() / 2]).unwrap();
    let (stdout, stderr) = replica_shell(dir.path(), &url, "SELECT count(*) FROM t;");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("corrupt replica"), "{stderr}");
    assert!(
        stderr.contains(&format_name(1, 1)),
        "the error names the file:\n{stderr}"
    );
    assert_rows(&db, ROWS);
}

#[test]
fn corrupt_page_frame() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    // Smash the payload of the frame holding page 2 (the table's first leaf page).
    let snapshot = level0_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let TailRead::Complete(tail) = parse_tail(bytes.len() as u64, &bytes).unwrap() else {
        panic!("whole file given")
    };
    let frame = *tail.index.get(2).expect("page 2 in the snapshot");
    let start = frame.offset as usize + 10;
    for b in &mut bytes[start..start + 16] {
        *b ^= 0xa5;
    }
    std::fs::write(&snapshot, &bytes).unwrap();

    let (stdout, stderr) = replica_shell(
        dir.path(),
        &url,
        "SELECT 'schema', count(*) FROM sqlite_schema;\nSELECT count(*) FROM t;",
    );
    assert_eq!(stdout, "schema|1\n", "page 1 reads, page 2 must not:\n{stderr}");
    assert!(stderr.contains("database disk image is malformed"), "{stderr}");
    assert!(
        stderr.contains(&format!("level 0 file {}: page 2", format_name(1, 1))),
        "the log says which file and page:\n{stderr}"
    );
    assert_rows(&db, ROWS);
}

#[test]
fn restore_from_corrupt_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    let snapshot = level0_files(dir.path()).remove(0);
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snapshot, &bytes).unwrap();
    let fresh = dir.path().join("fresh.db");
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}\nSELECT count(*) FROM t;",
            fresh.display()
        ),
        &[],
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!("restoring {}", fresh.display())) && stderr.contains("level 0 file 1-1"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("fresh.db"))
        .filter(|n| std::fs::metadata(dir.path().join(n)).is_ok_and(|m| m.is_file() && m.len() > 0))
        .collect();
    assert!(left.is_empty(), "a failed restore left {left:?} behind");
    assert_rows(&db, ROWS);
}

#[test]
fn object_names_outside_the_scheme_in_a_file_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    let level = dir.path().join("replica/ltx/0");
    let junk = ltx(4096, 5, 5, 2, &[1, 2]);
    for name in [
        "garbage.ltx",
        "0000000000000005-0000000000000005.LTX",
        "0000000000000006-0000000000000005.ltx",
        "0000000000000005-0000000000000005.ltx.tmp",
        "000000000000005-0000000000000005.ltx",
    ] {
        std::fs::write(level.join(name), &junk).unwrap();
    }
    std::fs::create_dir(level.join("0000000000000005-0000000000000006.ltx")).unwrap();
    let (view, log) = replica_shell(dir.path(), &url, ".dump");
    assert_eq!(view, dump(&db), "{log}");
    assert!(
        log.contains("skipping object whose name is not an LTX file name"),
        "{log}"
    );
    // The primary carries on past the junk, at the next TXID.
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n\
             INSERT INTO t(v) VALUES ('past the junk');\nSELECT litestream_sync(10000);",
            db.display()
        ),
        &[],
    );
    assert_eq!(stdout.trim(), "2", "{stderr}");
    assert_rows(&db, ROWS + 1);
}

/// Junk names next to the levels are skipped, as in a file replica. A key with a `..`
/// segment is different: object_store refuses to parse the whole LIST page holding it, so
/// the replica cannot be listed at all until it is removed (Litestream skips such keys).
/// That is a clear error naming the key, at the replica's and at the primary's open, and
/// the local database is untouched.
#[test]
fn object_names_outside_the_scheme_in_s3() {
    let moto = Moto::start();
    moto.create_bucket("names");
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = moto.url("names", "app");
    let primary = |sql: &str| {
        shell(
            &format!(
                ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms\n{sql}",
                db.display()
            ),
            &CREDS,
        )
    };
    let view = dir.path().join("view.db");
    let replica = |sql: &str| {
        shell(
            &format!(
                ".open file:{}?vfs=litestream&role=replica&replica={url}\n{sql}",
                view.display()
            ),
            &CREDS,
        )
    };
    let (stdout, stderr) = primary("SELECT litestream_sync(10000);");
    assert_eq!(stdout.trim(), "1", "{stderr}");

    let junk = ltx(4096, 5, 5, 2, &[1, 2]);
    let put = |key: &str| {
        let r = moto.raw("PUT", &format!("/names/{key}"), &[], &junk);
        assert_eq!(r.status, 200, "PUT {key}: {}", r.text());
    };
    for key in [
        "app/0000/sub/0000000000000005-0000000000000005.ltx",
        "app/0000/garbage.ltx",
        "app/0000/0000000000000005-0000000000000005.ltx.part",
        "app/0000/0000000000000005-0000000000000005.LTX",
    ] {
        put(key);
    }
    let (out, log) = replica(".dump");
    assert_eq!(out, dump(&db), "{log}");
    assert!(
        log.contains("skipping object whose name is not an LTX file name"),
        "{log}"
    );
    let (stdout, stderr) = primary("INSERT INTO t(v) VALUES ('past the junk');\nSELECT litestream_sync(10000);");
    assert_eq!(stdout.trim(), "2", "{stderr}");

    put("app/0000/%2E%2E/0000000000000005-0000000000000005.ltx");
    let keys = moto.list_keys("names", "app/0000/");
    assert!(
        keys.iter().any(|k| k.contains("/../")),
        "moto kept no '..' key: {keys:?}"
    );
    let illegal = "illegal character sequence \"..\"";
    let (out, log) = replica("SELECT count(*) FROM t;");
    assert!(
        out.is_empty() && log.contains(illegal) && log.contains("app/0000/../"),
        "{out}{log}"
    );
    let (out, log) = primary("SELECT count(*) FROM t;");
    assert!(
        out.is_empty() && log.contains("listing replica") && log.contains(illegal),
        "{out}{log}"
    );
    assert_rows(&db, ROWS + 1);
}

/// An LTX file for one page whose single frame is `payload_len` bytes of zeros behind a
/// size field that says so: far more than any page compresses to.
fn bomb(min: u64, commit: u32, payload_len: u32) -> Vec<u8> {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: 4096,
        commit,
        min_txid: min,
        max_txid: min,
        timestamp_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let mut b = header.encode().to_vec();
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&FRAME_FLAG_SIZE.to_be_bytes());
    b.extend_from_slice(&payload_len.to_be_bytes());
    b.resize(b.len() + payload_len as usize, 0);
    b.extend_from_slice(&END_MARKER);
    // Page index: pgno 1 at offset 100, frame size; terminator; index size.
    let mut index = Vec::new();
    for v in [1u64, 100, 10 + u64::from(payload_len)] {
        let mut v = v;
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                index.push(byte);
                break;
            }
            index.push(byte | 0x80);
        }
    }
    index.push(0);
    b.extend_from_slice(&index);
    b.extend_from_slice(&(index.len() as u64).to_be_bytes());
    b.extend_from_slice(
        &Trailer {
            post_apply_checksum: 0,
            file_checksum: CHECKSUM_FLAG,
        }
        .encode(),
    );
    b
}

#[test]
fn frame_claiming_a_huge_size() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    let pages: u32 = Command::new("sqlite3")
        .arg(&db)
        .arg("PRAGMA page_count")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().parse().unwrap())
        .unwrap();
    put_l0(dir.path(), 2, 2, &bomb(2, pages, 8 << 20));

    // The lazy replica: refused from the page index, before any GET of the frame.
    let started = Instant::now();
    let (stdout, stderr) = replica_shell(dir.path(), &url, "SELECT count(*) FROM t;");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains("corrupt replica") && stderr.contains("more than any 4096-byte page takes"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20));

    // A restore (the primary's database is missing): the streaming decoder refuses the
    // size field before allocating for it.
    let fresh = dir.path().join("fresh.db");
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}\nSELECT count(*) FROM t;",
            fresh.display()
        ),
        &[],
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("level 0 file 2-2"), "{stderr}");
    assert!(
        stderr.contains("8388608"),
        "the error names the claimed size:\n{stderr}"
    );
    assert_rows(&db, ROWS);
}

/// Restoring over a database some connection has open replaced the file under it and
/// deleted its WAL: the connection's next commit went into a new WAL that the restored
/// file then took for its own (a database without its tables, measured). Refused now,
/// from SQL in the process holding it, from the CLI beside it, and beside a plain SQLite.
#[test]
fn restore_over_an_open_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    let cli = |db: &Path| our_cli_restore(&url, db, &["-overwrite"]);
    let mut app = common::shell::Shell::start(
        &extension(),
        &dir.path().join("app.stderr"),
        &[],
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    app.run("INSERT INTO t(v) VALUES ('before');");
    app.run(&format!(
        "SELECT litestream_restore('{url}', '{}', 'latest', 'overwrite');",
        db.display()
    ));
    assert!(
        app.stderr().contains("is open: this process holds a lock"),
        "{}",
        app.stderr()
    );
    let beside = cli(&db);
    let why = String::from_utf8_lossy(&beside.stderr);
    assert!(!beside.status.success() && why.contains("is open: process"), "{why}");
    app.run("INSERT INTO t(v) VALUES ('after');");
    drop(app);
    assert_rows(&db, ROWS + 2);

    let mut plain = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = plain.stdin.take().unwrap();
    use std::io::{BufRead, Write};
    writeln!(stdin, "SELECT count(*) FROM t;").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(plain.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), (ROWS + 2).to_string());
    let beside_plain = cli(&db);
    assert!(
        !beside_plain.status.success() && String::from_utf8_lossy(&beside_plain.stderr).contains("is open"),
        "{}",
        String::from_utf8_lossy(&beside_plain.stderr)
    );
    drop(stdin);
    plain.wait().unwrap();
    assert_rows(&db, ROWS + 2);

    let closed = cli(&db);
    assert!(closed.status.success(), "{}", String::from_utf8_lossy(&closed.stderr));
    assert_rows(&db, ROWS + 2);
}
