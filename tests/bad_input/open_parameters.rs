//! The open's own inputs: URI parameters, the replica URL and its scheme, credentials, an
//! endpoint where nothing listens, a bucket that does not exist.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `unknown_uri_parameter` | `&bogus=1` | open refused, names the parameter |
//! | `a_refused_opens_reason_is_in_the_status_of_any_connection_until_it_opens` | `&sync_intervl=1s` | `failed_opens` of `litestream_status()` on `:memory:` names the database and the reason; gone once it opens |
//! | `sqlites_own_uri_parameters_pass` | `&readonly_shm=0&psow=1` | opens: SQLite's own parameters are not ours to refuse |
//! | `unknown_url_scheme` | `ftp://` replica | open refused, names the scheme; nothing made beside the database |
//! | `missing_credentials` | S3 URL, no keys in the environment | open refused, says which variables; nothing made beside the database |
//! | `unreachable_endpoint` | S3 endpoint where nothing listens | first open refused, says connection refused |
//! | `missing_bucket` | S3 bucket that does not exist | open refused, says the bucket does not exist |

use super::*;
use common::moto::Moto;
use common::s3::{S3Server, REGION};
use std::time::{Duration, Instant};

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

/// SQLite gives the application only "unable to open database file"; the reason is in
/// `litestream_status()` of any other connection of the process until the database
/// opens.
#[test]
fn a_refused_opens_reason_is_in_the_status_of_any_connection_until_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = file_url(&dir.path().join("replica"));
    let failed = "SELECT value FROM json_each(litestream_status(), '$.failed_opens');";
    let (stdout, stderr) = shell(
        &format!(
            ".open file:{db}?vfs=litestream&replica={url}&sync_intervl=1s\n.open :memory:\n{failed}\n\
             .open file:{db}?vfs=litestream&replica={url}&sync_interval=1s\nSELECT count(*) FROM t;\n{failed}\n",
            db = db.display()
        ),
        &[],
    );
    let mut lines = stdout.lines();
    let listed: serde_json::Value = serde_json::from_str(lines.next().unwrap_or("null")).unwrap();
    assert_eq!(listed["path"], db.display().to_string(), "{stdout}\n{stderr}");
    assert!(
        listed["error"]
            .as_str()
            .unwrap()
            .contains("unknown URI parameter 'sync_intervl'"),
        "{listed}"
    );
    assert_eq!(listed["times"], 1);
    assert_eq!(lines.next(), Some(ROWS.to_string().as_str()), "{stdout}\n{stderr}");
    assert_eq!(lines.next(), None, "still listed after the database opened:\n{stdout}");
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
    assert_nothing_made_beside(&db);
}

/// An open refused for its replica URL leaves no `<db>-litestream` directory (the
/// replication lock and `leader.json` were left behind before 2026-12-06).
fn assert_nothing_made_beside(db: &Path) {
    let beside = PathBuf::from(format!("{}-litestream", db.display()));
    assert!(!beside.exists(), "a refused open left {}", beside.display());
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
    assert_nothing_made_beside(&db);
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
