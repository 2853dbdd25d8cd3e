//! Object names outside the LTX scheme in a replica: skipped with a warning, except an S3
//! key with a `..` segment, which no listing can parse.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `object_names_outside_the_scheme_in_a_file_replica` | junk names, a directory named like a file | skipped with a warning, replica reads right, primary goes on |
//! | `object_names_outside_the_scheme_in_s3` | junk and nested keys; then a `..` key | skipped; the `..` key is a LIST error naming it |

use super::*;
use common::moto::Moto;
use common::s3::S3Server;

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
    // The primary, which replicated there before, is not locked out of its database by
    // a store it cannot list: it goes on from local state and says why.
    let (out, log) = primary("SELECT count(*) FROM t;");
    assert!(
        out.trim() == (ROWS + 1).to_string() && log.contains("continuing from local state") && log.contains(illegal),
        "{out}{log}"
    );
    assert_rows(&db, ROWS + 1);
}
