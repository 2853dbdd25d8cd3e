//! Encryption at rest (LTX v4, issue 17), end to end through the extension, the store and
//! the command-line tool:
//!
//! | test | proves |
//! |---|---|
//! | `a_keyed_primary_stores_no_plaintext_and_restores_exactly` | every object on `file://` and on S3 (moto and SeaweedFS) is LTX4, holds no row text, no `SQLite format 3`, no piece of any page; `litestream_restore()` and `restore -key-file` give the primary's database; no key / a wrong key fail saying so; `litestream restore` 0.5.17 refuses it and writes nothing |
//! | `an_encrypted_replica_reads_hydrates_and_time_travels` | a read replica with the key serves the primary's state, a cold point query fetches as many pages as on a plaintext replica, hydration and a point-in-time view give exact states; without the key / with another key the replica refuses to open, saying why |
//! | `bad_bytes_and_bad_keys_are_clear_errors` | a flipped byte in a page is `SQLITE_CORRUPT` for that page (never wrong bytes), a changed index and a recipient block from another file refuse the open, a key of the wrong length / not hex / in a world-readable file is refused at open without echoing it |
//! | `turning_encryption_on_starts_with_an_encrypted_snapshot` | the next file over a plaintext replica is a full encrypted image, status says plaintext history remains, `info` names the encrypted files of the mixed plan, a restore reads the mix; a primary without the key refuses the encrypted replica |
//! | `keygen_ltx_and_rekey_from_the_command_line` | `keygen` prints a usable pair, `ltx` shows encryption, `info` summarizes an encrypted `file://` replica (text and JSON, with or without a key in the environment) and says a `-key` is not wanted, `restore -timestamp` reads its header times, `rekey` moves a replica to a new key that restores it while the old one no longer does, and `rekey -o` refuses an existing file unless `-overwrite` (a dry run too) and a directory always |
//! | `corrupt_recipients::a_changed_leading_recipient_block_is_reported_as_corruption_not_a_wrong_key` (`corrupt_recipients.rs`) | a flipped byte in a file's leading recipient block: `ltx -key` and `restore -key` say the file is corrupt (its two copies differ), not only "wrong key" |
//! | `follow_turn_on::a_keyless_replica_says_in_status_that_the_replica_turned_encrypted` (`follow_turn_on.rs`) | a keyless read replica whose primary turns encryption on says so in status `error`, shows `store_txid` above `latest_txid`, and logs the failing poll once, not at every poll |
//! | `rotation::a_rotation_that_skipped_rekey_is_refused_at_open_until_the_files_are_rekeyed` (`rotation.rs`) | a primary switched to key B while older files are to key A only is refused at open, naming the files, B's public key and `rekey`, never a private key; after that `rekey` it opens and B restores every row; `rekey` rekeys the files its key opens and names the others (exit 1) instead of stopping at the first, so one run with each key repairs a replica an earlier build left to each key alone; compaction that cannot open a file (one the open did not see) is the primary's status `error` |
//! | `cli_keys::ltx_of_a_replica_refuses_a_key_as_info_does` (`cli_keys.rs`) | `ltx -key` / `-key-file` with only replica URLs is a usage error (exit 2) as for `info`, never silently ignored; a key in the environment or with a local file among the arguments still works |
//! | `cli_keys::a_key_file_saved_from_keygen_restores_and_a_directory_is_named_a_directory` (`cli_keys.rs`) | a key file saved from `keygen` as it prints restores and verifies (its `private:` line); one with only the `public:` line is refused as a public key; a directory as the key file is named a directory, not a mode to chmod |
//! | `rotation::rekey_refuses_the_private_key_as_a_recipient_and_warns_when_the_key_given_is_dropped` (`rotation.rs`) | `rekey -encrypt-to` given the private key (from `-key`, `-key-file` or the environment) is refused (exit 2) without showing it and nothing is rewritten; leaving out the key given warns that it no longer opens the replica, and goes on |
//! | `recipients::nats_with_a_second_recipient` (`recipients.rs`) | a primary keyed with `encrypt_to=` another public key replicates to NATS: every object is LTX4 with no plaintext, nor is any in the server's own stream files; `ltx` and `info` say 2 recipients; the second key alone restores it and reads it as a replica |

#[path = "../common/mod.rs"]
mod common;
#[path = "../harness/mod.rs"]
mod harness;

mod cli_keys;
mod corrupt_recipients;
mod follow_turn_on;
mod recipients;
mod rotation;
mod staged_rotation;

use common::moto::Moto;
use common::s3::{S3Server, CREDS};
use common::seaweedfs::SeaweedFs;
use harness::*;
use litestream_vfs::ltx::crypto::PrivateKey;
use litestream_vfs::ltx::{parse_tail_of, Header, TailRead};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

/// RFC 9180 A.2's recipient key pair.
const KEY: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
/// A key the replicas are not encrypted to.
const OTHER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

fn cli(args: &[&str], envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LITESTREAM_")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).envs(envs.iter().copied()).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// What must not appear in any stored object: the SQLite magic, row text, and a 32-byte
/// piece of every non-empty page of the database.
fn secrets(db: &Path) -> Vec<Vec<u8>> {
    let mut needles = vec![b"SQLite format 3".to_vec()];
    // Names long enough not to turn up in random bytes by chance.
    for name in plain_sqlite(
        db,
        "SELECT name FROM items WHERE length(name) >= 10 ORDER BY id LIMIT 50;",
    )
    .lines()
    {
        needles.push(name.as_bytes().to_vec());
    }
    assert!(needles.len() > 10, "the workload wrote rows");
    let image = std::fs::read(db).unwrap();
    for page in image.chunks(4096) {
        if let Some(start) = page.iter().position(|&b| b != 0) {
            let piece = &page[start..(start + 32).min(page.len())];
            if piece.len() == 32 && piece.iter().filter(|&&b| b != 0).count() > 8 {
                needles.push(piece.to_vec());
            }
        }
    }
    needles
}

fn assert_no_plaintext(objects: &[(String, Vec<u8>)], needles: &[Vec<u8>]) {
    assert!(!objects.is_empty());
    for (name, bytes) in objects {
        assert_eq!(&bytes[..4], b"LTX4", "{name} is not encrypted");
        for n in needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{name} holds plaintext {:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
}

fn key_file(dir: &Path, hex: &str, mode: u32) -> PathBuf {
    let p = dir.join(format!("key-{mode:o}"));
    std::fs::write(&p, format!("{hex}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// The database as the `sqlite3` shell dumps it after a checkpoint through plain SQLite.
fn settled_dump(db: &Path) -> String {
    plain_sqlite(db, "PRAGMA wal_checkpoint(TRUNCATE);");
    dump(db)
}

#[test]
fn a_keyed_primary_stores_no_plaintext_and_restores_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let keyed = format!("encryption_key={KEY}");
    python_workload(&db, &url, 17, 150, &["sync_interval=100ms", &keyed]);
    let want = settled_dump(&db);
    let needles = secrets(&db);
    let objects: Vec<(String, Vec<u8>)> = files_under(&replica)
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    assert_no_plaintext(&objects, &needles);

    // litestream_restore() with the key from the environment.
    let out = dir.path().join("fn.db");
    let (_, stdout, stderr) = sqlite_output_env(
        &format!("SELECT litestream_restore('{url}', '{}') > 0;", out.display()),
        &[("LITESTREAM_ENCRYPTION_KEY", KEY)],
    );
    assert_eq!(stdout.trim(), "1", "{stderr}");
    assert_eq!(dump(&out), want);
    // The CLI with a key file; without a key, and with another, errors that say why.
    let file = key_file(dir.path(), KEY, 0o600);
    let out = dir.path().join("cli.db");
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key-file",
            file.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(dump(&out), want);
    let (ok, _, stderr) = cli(&["restore", "-o", dir.path().join("x.db").to_str().unwrap(), &url], &[]);
    assert!(
        !ok && stderr.contains("encrypted") && stderr.contains("no encryption key"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key",
            OTHER_KEY,
            "-o",
            dir.path().join("y.db").to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(!ok && stderr.contains("not one of"), "{stderr}");
    assert!(!stderr.contains(OTHER_KEY), "the key is never echoed: {stderr}");
    assert!(!dir.path().join("x.db").exists() && !dir.path().join("y.db").exists());
    // Litestream 0.5.17 knows only LTX1: it refuses the replica and writes nothing.
    let theirs = dir.path().join("litestream.db");
    let err = litestream_restore(&url, &theirs, &[]).unwrap_err();
    assert!(err.contains("invalid LTX file") && !theirs.exists(), "{err}");

    // The same on S3: moto, and SeaweedFS (a real store, which checks signatures).
    let moto = Moto::start();
    let stores: [&dyn S3Server; 2] = [&moto, SeaweedFs::shared()];
    for s3 in stores {
        s3.create_bucket("enc");
        let s3_url = s3.url("enc", "app");
        let s3_db = dir.path().join(format!("{}.db", s3.name()));
        let mut cmd = workload_command(&s3_db, &s3_url, 18, 100, &["sync_interval=100ms", &keyed]);
        cmd.envs(CREDS);
        let run = cmd.output().unwrap();
        assert!(
            run.status.success(),
            "{}: {}",
            s3.name(),
            String::from_utf8_lossy(&run.stderr)
        );
        let keys = s3.list_keys("enc", "app/");
        assert!(!keys.is_empty(), "{}: nothing stored", s3.name());
        let objects: Vec<(String, Vec<u8>)> = keys
            .iter()
            .map(|k| {
                let r = s3.raw("GET", &format!("/enc/{k}"), &[], b"");
                assert_eq!(r.status, 200, "{}: {k}", s3.name());
                (format!("{}: {k}", s3.name()), r.body)
            })
            .collect();
        assert_no_plaintext(&objects, &secrets(&s3_db));
        let out = dir.path().join(format!("{}-restored.db", s3.name()));
        let mut envs = CREDS.to_vec();
        envs.push(("LITESTREAM_ENCRYPTION_KEY", KEY));
        let (ok, _, stderr) = cli(&["restore", "-o", out.to_str().unwrap(), &s3_url], &envs);
        assert!(ok, "{}: {stderr}", s3.name());
        assert_eq!(dump(&out), settled_dump(&s3_db), "{}", s3.name());
    }
}

/// Requests and pages of one cold point query on a fresh replica connection.
fn cold_point_query(dir: &Path, url: &str, params: &str) -> (u64, u64, String) {
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}{params}\n\
             SELECT litestream_status() ->> '$.requests';\n\
             SELECT count(*) FROM items WHERE id = 40;\n\
             SELECT (litestream_status() ->> '$.requests') || ' ' || (litestream_status() ->> '$.pages_fetched');",
            dir.join(format!("cold-{}.db", params.len())).display()
        ),
        &[],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}\n{stderr}");
    let before: u64 = lines[0].parse().unwrap();
    let (after, pages) = lines[2].split_once(' ').unwrap();
    (
        after.parse::<u64>().unwrap() - before,
        pages.parse().unwrap(),
        lines[1].to_string(),
    )
}

#[test]
fn an_encrypted_replica_reads_hydrates_and_time_travels() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = format!("encryption_key={KEY}");
    // One database replicated twice, plaintext and encrypted: byte-identical images.
    let plain_db = dir.path().join("plain.db");
    let plain_url = format!("file://{}", dir.path().join("plain").display());
    python_workload(&plain_db, &plain_url, 23, 120, &["sync_interval=100ms"]);
    plain_sqlite(&plain_db, "PRAGMA wal_checkpoint(TRUNCATE);");
    let db = dir.path().join("app.db");
    std::fs::copy(&plain_db, &db).unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&{keyed}\nSELECT litestream_sync(30000) > 0;",
            db.display()
        ),
        &[],
    );
    assert_eq!(out.trim(), "1", "{stderr}");
    // Cold point query: the same pages and requests as plaintext (the same database:
    // before the encrypted one moves on).
    let (plain_requests, plain_pages, plain_row) = cold_point_query(dir.path(), &plain_url, "");
    let key_param = format!("&{keyed}");
    let (requests, pages, row) = cold_point_query(dir.path(), &url, &key_param);
    assert_eq!(row, plain_row);
    assert!(
        pages <= plain_pages + 1,
        "pages fetched: {pages} encrypted, {plain_pages} plaintext"
    );
    assert!(
        requests <= plain_requests + 1,
        "requests: {requests} encrypted, {plain_requests} plaintext"
    );

    let past = dir.path().join("past.db");
    plain_sqlite(&db, &format!("VACUUM INTO '{}';", past.display()));
    sleep(Duration::from_millis(1100));
    let between = litestream_vfs::storage::format_rfc3339_nano(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    sleep(Duration::from_millis(1100));
    python_workload(&db, &url, 24, 40, &["sync_interval=100ms", &keyed]);
    let want = settled_dump(&db);

    // Whole database, then hydrated, then as it was between the two workloads.
    let open = |name: &str, extra: &str| {
        format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&{keyed}{extra}",
            dir.path().join(name).display()
        )
    };
    let (_, out, stderr) = sqlite_output_env(&format!("{}\n.dump", open("view.db", "")), &[]);
    assert_eq!(out, want, "{stderr}");
    let hydrated = dir.path().join("hydrated.db");
    let mut shell = harness::shell::LiveShell::start(
        dir.path(),
        "hydrate",
        &open("view2.db", &format!("&hydrate={}", hydrated.display())),
    );
    let mut waited = 0;
    while shell
        .run("SELECT litestream_status() ->> '$.hydration.complete';")
        .trim()
        != "1"
    {
        waited += 1;
        assert!(waited < 600, "not hydrated:\n{}", shell.stderr());
        sleep(Duration::from_millis(50));
    }
    assert_eq!(shell.run(".dump"), want);
    drop(shell);
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            "{}\nSELECT litestream_set_time('{between}') > 0;\n.dump",
            open("view3.db", "")
        ),
        &[],
    );
    assert_eq!(out, format!("1\n{}", dump(&past)), "{stderr}");

    // No key, another key: the open fails and says why.
    for (params, expected) in [
        (String::new(), "the replica is encrypted"),
        (
            format!("&encryption_key={OTHER_KEY}"),
            "not one of the replica's 1 recipient",
        ),
    ] {
        let (_, out, stderr) = sqlite_output_env(
            &format!(
                ".open file:{}?vfs=litestream&role=replica&replica={url}{params}\nSELECT count(*) FROM items;",
                dir.path().join("refused.db").display()
            ),
            &[],
        );
        assert!(out.is_empty() && stderr.contains(expected), "{params}: {stderr}");
        // The shell repeats the URI it could not open; our own messages never hold a key.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("litestream")).collect();
        assert!(
            ours.iter()
                .all(|l| !l.contains(OTHER_KEY) || l.starts_with("Error: unable to open")),
            "{stderr}"
        );
    }
}

/// The level-0 files of a `file://` replica, oldest first.
fn level0(replica: &Path) -> Vec<PathBuf> {
    files_under(&replica.join("ltx/0"))
}

fn tail_of(bytes: &[u8]) -> litestream_vfs::ltx::FileTail {
    let h = Header::decode(bytes).unwrap();
    match parse_tail_of(&h, bytes.len() as u64, bytes).unwrap() {
        TailRead::Complete(t) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_bytes_and_bad_keys_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let keyed = format!("encryption_key={KEY}");
    // Compaction off: a level-1 window boundary passing during the session would merge
    // the level-0 files into a level-1 file, which the plan prefers, and the bytes this
    // test damages in a level-0 file would not be read.
    let replicate = |name: &str| -> (PathBuf, String) {
        let db = dir.path().join(format!("{name}.db"));
        let replica = dir.path().join(name);
        let url = format!("file://{}", replica.display());
        let (_, out, stderr) = sqlite_output_env(
            &format!(
                ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&compaction=off&{keyed}\n\
                 CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);\n\
                 INSERT INTO t(v) SELECT hex(randomblob(60)) FROM generate_series(1, 300);\n\
                 SELECT litestream_sync(10000) > 0;",
                db.display()
            ),
            &[],
        );
        assert_eq!(out.trim(), "1", "{stderr}");
        (replica, url)
    };
    let query = |url: &str| {
        sqlite_output_env(
            &format!(
                ".open file:{}?vfs=litestream&role=replica&replica={url}&{keyed}\n\
                 SELECT count(*) FROM sqlite_schema;\nSELECT count(*) FROM t;",
                dir.path().join("view.db").display()
            ),
            &[],
        )
    };

    // One flipped byte in page 2's sealed payload: that read is SQLITE_CORRUPT, with a
    // message; page 1 still reads.
    let (replica, url) = replicate("page");
    // The newest file holding page 2: the one the replica reads it from.
    let snapshot = level0(&replica)
        .into_iter()
        .rev()
        .find(|f| tail_of(&std::fs::read(f).unwrap()).index.get(2).is_some())
        .unwrap();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let e = *tail_of(&bytes).index.get(2).unwrap();
    bytes[e.offset as usize + 30] ^= 0x01;
    std::fs::write(&snapshot, &bytes).unwrap();
    let (_, out, stderr) = query(&url);
    assert_eq!(out, "1\n", "page 1 reads, page 2 must not: {stderr}");
    assert!(stderr.contains("database disk image is malformed"), "{stderr}");
    assert!(stderr.contains("page 2 failed authentication"), "{stderr}");
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key",
            KEY,
            "-o",
            dir.path().join("r1.db").to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(!ok && stderr.contains("page 2 failed authentication"), "{stderr}");

    // A changed index: the open fails (the tag is checked when the index is read).
    let (replica, url) = replicate("index");
    let snapshot = level0(&replica).pop().unwrap();
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let at = tail_of(&bytes).index_offset as usize;
    bytes[at] ^= 0x02; // the first entry's page number
    std::fs::write(&snapshot, &bytes).unwrap();
    let (_, out, stderr) = query(&url);
    assert!(
        !out.contains("300") && stderr.contains("page index authentication failed"),
        "{stderr}"
    );

    // The recipient blocks of another file (same key, another content key).
    let (replica, url) = replicate("swapped");
    let (other, _) = replicate("donor");
    let target = level0(&replica).pop().unwrap();
    let donor = std::fs::read(level0(&other).pop().unwrap()).unwrap();
    let mut bytes = std::fs::read(&target).unwrap();
    let (n, m) = (bytes.len(), donor.len());
    bytes[100..180].copy_from_slice(&donor[100..180]);
    bytes[n - 96..n - 16].copy_from_slice(&donor[m - 96..m - 16]);
    std::fs::write(&target, &bytes).unwrap();
    let (_, out, stderr) = query(&url);
    assert!(
        !out.contains("300") && stderr.contains("page index authentication failed"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key",
            KEY,
            "-o",
            dir.path().join("r2.db").to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(!ok && stderr.contains("failed authentication"), "{stderr}");
    assert!(!dir.path().join("r1.db").exists() && !dir.path().join("r2.db").exists());

    // Keys: wrong length, not hex, a world-readable file. Refused at open, not echoed.
    let db = dir.path().join("keys.db");
    let url = format!("file://{}", dir.path().join("keys").display());
    let loose = key_file(dir.path(), KEY, 0o644);
    for (param, expected) in [
        (
            format!("encryption_key={}", &KEY[..60]),
            "60 hex digits long, expected 64",
        ),
        (format!("encryption_key={}zz", &KEY[..62]), "not hexadecimal"),
        (
            format!("encryption_key_file={}", loose.display()),
            "readable by every user",
        ),
    ] {
        let (_, _, stderr) = sqlite_output_env(
            &format!(
                ".open file:{}?vfs=litestream&replica={url}&{param}\nCREATE TABLE x(y);",
                db.display()
            ),
            &[],
        );
        assert!(stderr.contains(expected), "{param}: {stderr}");
        // The shell repeats the URI it could not open; our message never holds the key.
        let ours = stderr.lines().find(|l| l.contains("cannot open")).unwrap_or_default();
        assert!(!ours.is_empty() && !ours.contains(&KEY[..60]), "{stderr}");
    }
}

#[test]
fn turning_encryption_on_starts_with_an_encrypted_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    python_workload(&db, &url, 31, 60, &["sync_interval=100ms"]);
    let plaintext_files = level0(&replica).len();
    // Compaction off: a level-1 window boundary passing during this session (or one the
    // workload's opens saved and did not reach, run at this open) would merge the
    // encrypted snapshot with what came before into a level-1 file, and the plan `info`
    // describes below would no longer be plaintext files then level-0 encrypted ones.
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&compaction=off&encryption_key={KEY}\n\
             INSERT INTO items(name, qty) VALUES ('after the switch', 1);\n\
             SELECT litestream_sync(10000) > 0;\n\
             SELECT litestream_status() ->> '$.encryption.plaintext_history';",
            db.display()
        ),
        &[],
    );
    assert_eq!(out, "1\n1\n", "{stderr}");
    let files = level0(&replica);
    assert!(files.len() > plaintext_files);
    let first_new = std::fs::read(&files[plaintext_files]).unwrap();
    let h = Header::decode(&first_new).unwrap();
    assert!(h.is_encrypted());
    let lock = litestream_vfs::ltx::lock_pgno(h.page_size);
    let full = h.commit as usize - usize::from(lock <= h.commit);
    assert_eq!(tail_of(&first_new).index.len(), full, "a full image of the database");
    for f in &files[plaintext_files..] {
        assert_eq!(&std::fs::read(f).unwrap()[..4], b"LTX4", "{}", f.display());
    }
    // info reads the mix without a key (headers are not sealed) and names the
    // encrypted files of the plan: the snapshot at the switch and what followed it.
    let (ok, info, stderr) = cli(&["info", &url], &[]);
    let first_encrypted = format!("{:016x}", h.min_txid);
    assert!(
        ok && info.contains("of the restore plan encrypted (LTX v4), to 1 recipient(s): L0"),
        "{info}{stderr}"
    );
    let line = info.lines().find(|l| l.contains("encryption:")).unwrap();
    assert!(
        line.contains(&format!(" {first_encrypted}-")) && line.ends_with("the others plaintext"),
        "{line}"
    );
    // A restore reads the mix.
    let out = dir.path().join("restored.db");
    let (ok, _, stderr) = cli(&["restore", "-key", KEY, "-o", out.to_str().unwrap(), &url], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(dump(&out), settled_dump(&db));
    // The primary without the key now refuses the replica, saying why.
    let (_, _, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}\nINSERT INTO items(name) VALUES ('no');",
            db.display()
        ),
        &[],
    );
    assert!(
        stderr.contains("is encrypted") && stderr.contains("no encryption key"),
        "{stderr}"
    );
}

#[test]
fn keygen_ltx_and_rekey_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, stderr) = cli(&["keygen"], &[]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = out.lines().collect();
    let public = lines[0].strip_prefix("public:  ").unwrap();
    let private = lines[1].strip_prefix("private: ").unwrap();
    assert!(public.len() == 64 && private.len() == 64, "{out}");
    assert_eq!(PrivateKey::from_hex(private).unwrap().public_key().to_hex(), public);

    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // Compaction off: `info` is checked below against the level-0 files as the restore
    // plan, which a level-1 window boundary passing during the workload would change.
    python_workload(
        &db,
        &url,
        41,
        40,
        &[
            "sync_interval=100ms",
            "compaction=off",
            &format!("encryption_key={KEY}"),
        ],
    );
    let (ok, out, stderr) = cli(&["ltx", &url], &[]);
    assert!(
        ok && out.contains("yes (1 recipient)") && !out.contains(" no\n"),
        "{out}{stderr}"
    );
    // info needs no key, with or without one in the environment, and says a key given
    // to it is not wanted rather than that it is an unknown flag.
    for envs in [&[][..], &[("LITESTREAM_ENCRYPTION_KEY", KEY)][..]] {
        let (ok, out, stderr) = cli(&["info", &url], envs);
        let files = level0(&replica).len();
        assert!(
            ok && out.contains(&format!(
                "{files} of {files} files of the restore plan encrypted (LTX v4), to 1 recipient(s)\n"
            )),
            "{out}{stderr}"
        );
        let (ok, out, stderr) = cli(&["info", "-json", &url], envs);
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        assert!(
            ok && doc["encryption"]["encrypted_plan_files"] == files,
            "{out}{stderr}"
        );
    }
    let (ok, _, stderr) = cli(&["info", "-key", KEY, &url], &[]);
    assert!(!ok && stderr.contains("info takes no key"), "{stderr}");
    // A point-in-time restore reads the same headers' timestamps (a local store keeps
    // no timestamp metadata).
    let at_now = dir.path().join("at-now.db");
    let now = litestream_vfs::storage::format_rfc3339_nano(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key",
            KEY,
            "-timestamp",
            &now,
            "-o",
            at_now.to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(dump(&at_now), settled_dump(&db));

    let file = level0(&replica).remove(0);
    let (ok, out, _) = cli(&["ltx", file.to_str().unwrap()], &[]);
    assert!(ok && out.contains("contents not verified"), "{out}");
    let (ok, out, _) = cli(&["ltx", "-key", KEY, file.to_str().unwrap()], &[]);
    assert!(ok && out.contains("every page and the index authenticated"), "{out}");

    // rekey -o onto an existing file: it was replaced silently while restore -o refuses
    // one (a tester, t40). Refused now, a dry run too, unless -overwrite.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, b"my notes, not an ltx file").unwrap();
    let one_file = |extra: &[&str]| {
        let args = [
            &[
                "rekey",
                "-key",
                KEY,
                "-encrypt-to",
                public,
                "-o",
                notes.to_str().unwrap(),
            ][..],
            extra,
            &[file.to_str().unwrap()],
        ]
        .concat();
        cli(&args, &[])
    };
    for extra in [&[][..], &["-dry-run"]] {
        let (ok, _, stderr) = one_file(extra);
        assert!(
            !ok && stderr.contains("notes.txt already exists") && stderr.contains("-overwrite"),
            "{extra:?}: {stderr}"
        );
        assert_eq!(std::fs::read(&notes).unwrap(), b"my notes, not an ltx file");
    }
    let (ok, _, stderr) = one_file(&["-overwrite"]);
    assert!(ok, "{stderr}");
    let (ok, out, _) = cli(&["ltx", "-key", private, notes.to_str().unwrap()], &[]);
    assert!(ok && out.contains("every page and the index authenticated"), "{out}");
    let (ok, _, stderr) = cli(
        &[
            "rekey",
            "-key",
            KEY,
            "-encrypt-to",
            public,
            "-overwrite",
            "-o",
            dir.path().to_str().unwrap(),
            file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok && stderr.contains("is a directory"), "{stderr}");

    // Rekey to the new pair: rewrapped (one recipient before and after).
    let (ok, out, stderr) = cli(&["rekey", "-key", KEY, "-encrypt-to", public, &url], &[]);
    assert!(
        ok && out.contains("re-encrypted") && stderr.contains("pages unchanged"),
        "{out}{stderr}"
    );
    let restored = dir.path().join("new.db");
    let (ok, _, stderr) = cli(
        &["restore", "-key", private, "-o", restored.to_str().unwrap(), &url],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(dump(&restored), settled_dump(&db));
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key",
            KEY,
            "-o",
            dir.path().join("old.db").to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(!ok && stderr.contains("not one of"), "{stderr}");
}
