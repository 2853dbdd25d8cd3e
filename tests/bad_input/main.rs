//! Invariant 5 and the "clear error, never a silently unreplicated database" rule, one
//! row per kind of bad input, each through the real `sqlite3` shell with the extension.
//! Each file holds one family of inputs, with the table of its cases:
//!
//! - `open_parameters.rs`: URI parameters, replica URLs, credentials, endpoints, buckets;
//! - `staging.rs`: an unwritable, shared or full staging directory;
//! - `page_size.rs`: page sizes differing inside a replica or changed outside the VFS;
//! - `corrupt_replica.rs`: truncated and corrupt LTX files, a frame claiming a huge size;
//! - `encryption_settings.rs`: encryption keys given empty, or given where a key file goes;
//! - `object_names.rs`: names outside the scheme in a `file://` and an S3 replica;
//! - `restore_over_open.rs`: a restore onto a database somebody has open.
//!
//! Every case also checks that no panic reached SQLite and that the local database still
//! holds its rows. URL parsing itself is covered case by case in `storage_url.rs`, the
//! codec's own bounds in `src/ltx`; these rows prove the errors reach the application.
//!
//! This file holds what the cases share: a seeded database, the shell, the assertions.

#[path = "../common/mod.rs"]
mod common;
#[path = "../harness/mod.rs"]
mod harness;

mod corrupt_replica;
mod encryption_settings;
mod object_names;
mod open_parameters;
mod page_size;
mod restore_over_open;
mod staging;

use common::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use harness::*;
use litestream_vfs::ltx::{format_name, Compression, Encoder, Header, FLAG_NO_CHECKSUM};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
/// Compaction off: a level-1 window boundary passing during the session would copy the
/// level-0 file into a level-1 file of the same TXIDs, which restore plans prefer, and
/// the cases that damage the level-0 file would then read an intact copy.
fn replicated(dir: &Path, db: &Path) -> String {
    let url = file_url(&dir.join("replica"));
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&compaction=off\nSELECT litestream_sync(10000) > 0;",
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
