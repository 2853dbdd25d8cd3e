//! The `litestream-vfs` command-line tool against replicas our primary wrote on file://:
//! restores to the latest state, a TXID and a time; refuses to overwrite; names bad
//! URLs and flags; `ltx` verifies a file and lists a replica; `info` summarizes one.

mod harness;

use harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
        .args(args)
        .env_remove("LITESTREAM_LOG_LEVEL")
        .output()
        .expect("litestream-vfs runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs the tool and insists it succeeded; returns stdout.
fn cli_ok(args: &[&str]) -> String {
    let out = cli(args);
    assert!(
        out.status.success(),
        "litestream-vfs {args:?} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs the tool expecting exit status `code`; returns stderr.
fn cli_fails(args: &[&str], code: i32) -> String {
    let out = cli(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "litestream-vfs {args:?}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stderr)
}

/// A database replicated by our primary in two sessions, with the TXID, `.dump` and a
/// time between them after the first, and the same after the second.
struct Replicated {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    url: String,
    replica: PathBuf,
    first: (u64, String),
    between_ms: i64,
    last: (u64, String),
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One shell session through the VFS: runs `sql`, syncs, and returns (TXID, `.dump`).
fn session(db: &Path, url: &str, sql: &str) -> (u64, String) {
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms\n{sql}\nSELECT litestream_sync(30000);\n.dump\n",
        db.display()
    ));
    let (txid, dump) = out.split_once('\n').expect("TXID line then the dump");
    (
        txid.parse().expect("litestream_sync returns the TXID"),
        dump.to_string(),
    )
}

fn replicated() -> Replicated {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    let url = format!("file://{}", replica.display());
    let first = session(
        &db,
        &url,
        "CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO t(body) SELECT hex(randomblob(300)) FROM generate_series(1, 2000);",
    );
    std::thread::sleep(std::time::Duration::from_millis(50));
    let between_ms = now_ms();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let last = session(
        &db,
        &url,
        "UPDATE t SET body = 'changed' WHERE id % 3 = 0;
         DELETE FROM t WHERE id % 7 = 0;
         INSERT INTO t(body) SELECT hex(randomblob(100)) FROM generate_series(1, 300);",
    );
    assert!(
        last.0 > first.0,
        "the second session committed: {} -> {}",
        first.0,
        last.0
    );
    assert_ne!(first.1, last.1);
    Replicated {
        _dir: tmp,
        dir,
        url,
        replica,
        first,
        between_ms,
        last,
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn restores_the_latest_state_an_exact_txid_and_a_point_in_time() {
    let r = replicated();
    let latest = r.dir.join("latest.db");
    let out = cli_ok(&["restore", "-o", path_str(&latest), &r.url]);
    assert!(
        out.contains(&format!("restored TXID {:016x} ({})", r.last.0, r.last.0)),
        "{out}"
    );
    assert!(out.contains("files:") && out.contains("downloaded:"), "{out}");
    assert_eq!(integrity(&latest), "ok");
    assert_eq!(dump(&latest), r.last.1, "latest restore differs from the primary");

    // Litestream's spelling: one dash, 16 hex digits.
    let at_first = r.dir.join("first.db");
    let hex = format!("{:016x}", r.first.0);
    cli_ok(&["restore", "-txid", &hex, "-o", path_str(&at_first), &r.url]);
    assert_eq!(dump(&at_first), r.first.1, "restore to TXID {hex} differs");

    // Ours: two dashes, the decimal TXID litestream_sync() returned, JSON summary.
    let decimal = r.dir.join("decimal.db");
    let json = cli_ok(&[
        "restore",
        "--json",
        &format!("--txid={}", r.first.0),
        "--output",
        path_str(&decimal),
        &r.url,
    ]);
    let summary: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(summary["txid_decimal"], r.first.0);
    assert_eq!(dump(&decimal), r.first.1);

    // A time between the sessions restores the first session's state.
    let at_time = r.dir.join("time.db");
    let ts = litestream_vfs::storage::format_rfc3339_nano(r.between_ms);
    cli_ok(&["restore", "-timestamp", &ts, "-o", path_str(&at_time), &r.url]);
    assert_eq!(
        dump(&at_time),
        r.first.1,
        "restore at {ts} differs from the first session"
    );
}

/// `restore -txid 0000000000000099` answered "cannot restore TXID 153: the newest TXID it
/// holds is 50", numbers the user had not typed, and a time before the oldest state said
/// only that there was no state then (an operations tester, t6). TXIDs are named as
/// typed and as `info` prints them, and the time names the oldest state a restore
/// reaches and when it was written.
#[test]
fn out_of_range_targets_name_txids_in_hex_and_decimal_and_the_oldest_restorable_time() {
    let r = replicated();
    let out = r.dir.join("never.db");
    let past = r.last.0 + 0x99;
    let hex = format!("{past:016x}");
    let err = cli_fails(&["restore", "-txid", &hex, "-o", path_str(&out), &r.url], 1);
    let newest = r.last.0;
    assert!(
        err.contains(&format!(
            "cannot restore TXID {past} ({hex}): the newest TXID it holds is {newest} ({newest:016x})"
        )),
        "{err}"
    );
    let info: serde_json::Value = serde_json::from_str(&cli_ok(&["info", "--json", &r.url])).unwrap();
    let oldest = info["oldest_restorable"]["txid_decimal"].as_u64().unwrap();
    let written = info["oldest_restorable"]["timestamp"].as_str().unwrap().to_string();
    let named = format!("the oldest state it can restore is TXID {oldest} ({oldest:016x}), written {written}");
    for args in [["-timestamp", "2001-01-01T00:00:00Z"], ["-time", "9000 days ago"]] {
        let err = cli_fails(&["restore", args[0], args[1], "-o", path_str(&out), &r.url], 1);
        assert!(
            err.contains("has no state at or before") && err.contains(&named),
            "{args:?}: {err}"
        );
    }
    // The time named restores.
    cli_ok(&["restore", "-timestamp", &written, "-o", path_str(&out), &r.url]);
    assert_eq!(integrity(&out), "ok");
}

#[test]
fn an_existing_database_is_kept_unless_overwrite_is_given() {
    let r = replicated();
    let dest = r.dir.join("existing.db");
    std::fs::write(&dest, b"keep me").unwrap();
    let err = cli_fails(&["restore", "-o", path_str(&dest), &r.url], 1);
    assert!(err.contains("already exists") && err.contains("-overwrite"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
    // -if-db-not-exists makes an existing file a success that restores nothing.
    cli_ok(&["restore", "-if-db-not-exists", "-o", path_str(&dest), &r.url]);
    assert_eq!(std::fs::read(&dest).unwrap(), b"keep me");
    // Litestream's -force is our -overwrite; a stale -wal beside the file goes too.
    let wal = r.dir.join("existing.db-wal");
    std::fs::write(&wal, b"stale").unwrap();
    cli_ok(&["restore", "-force", "-o", path_str(&dest), &r.url]);
    assert!(!wal.exists(), "the old database's WAL was removed");
    assert_eq!(dump(&dest), r.last.1);
}

/// `-o DIR`: the error advised -overwrite, which downloaded the whole plan, failed at
/// the rename ("Is a directory") and left `DIR.litestream-restore.tmp` (a tester, t40).
/// Refused now before the replica is even listed (this one does not exist, which would
/// otherwise be the error), whatever the flags, and nothing is created or removed.
#[test]
fn a_directory_as_the_restore_target_is_refused_before_anything_is_downloaded() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("file.txt"), b"important").unwrap();
    let missing = format!("file://{}", dir.path().join("no-replica").display());
    for flags in [&[][..], &["-overwrite"], &["-force"], &["-if-db-not-exists"]] {
        let args = [&["restore"][..], flags, &["-o", path_str(&target), &missing]].concat();
        let err = cli_fails(&args, 1);
        assert!(err.contains("it is a directory"), "{flags:?}: {err}");
        assert!(!err.contains("-overwrite replaces it"), "{flags:?}: {err}");
        assert!(!err.contains("no LTX files"), "{flags:?}: checked after listing: {err}");
    }
    assert_eq!(std::fs::read(target.join("file.txt")).unwrap(), b"important");
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["target"], "no temp file or anything else was left");

    // A directory where the database's -wal would be: an overwrite failed removing it,
    // after the download.
    let db = dir.path().join("app.db");
    std::fs::create_dir(dir.path().join("app.db-wal")).unwrap();
    let err = cli_fails(&["restore", "-overwrite", "-o", path_str(&db), &missing], 1);
    assert!(err.contains("app.db-wal is a directory"), "{err}");
    assert!(!db.exists());
}

#[test]
fn bad_urls_and_command_lines_fail_with_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    let out = path_str(&out);
    let err = cli_fails(&["restore", "-o", out, "not-a-url"], 1);
    assert!(err.contains("\"not-a-url\" has no scheme"), "{err}");
    // A local directory that is not there: said so, not only that it has no scheme,
    // which sent a tester to the URL syntax for a typo in a path.
    // (`ltx` takes a path for a file and says "No such file or directory" already.)
    let gone = dir.path().join("nonexist");
    let err = cli_fails(&["info", path_str(&gone)], 1);
    assert!(
        err.contains(&format!("{} does not exist", gone.display())) && err.contains("file:///path"),
        "{err}"
    );
    let err = cli_fails(&["restore", "-o", out, path_str(&gone)], 1);
    assert!(err.contains("does not exist"), "{err}");
    // A scheme-less spelling the URL parser reads is not taken for a missing directory.
    let err = cli_fails(&["info", &format!("file:{}", gone.display())], 1);
    assert!(!err.contains("does not exist"), "{err}");
    let err = cli_fails(&["restore", "-o", out, "ftp://host/path"], 1);
    assert!(err.contains("unsupported replica URL scheme \"ftp\""), "{err}");
    let err = cli_fails(&["restore", "-o", out, "s3://bucket/db?endpiont=http://x"], 1);
    assert!(err.contains("unknown parameter \"endpiont\""), "{err}");
    let empty = format!("file://{}", dir.path().join("nothing-here").display());
    let err = cli_fails(&["restore", "-o", out, &empty], 1);
    assert!(err.contains("has no LTX files"), "{err}");
    // ... unless the caller said an empty replica is fine.
    cli_ok(&["restore", "-if-replica-exists", "-o", out, &empty]);
    assert!(!Path::new(out).exists());

    // Usage errors: exit status 2 and a pointer to --help.
    let err = cli_fails(&["restore", "file:///x"], 2);
    assert!(err.contains("needs -o PATH") && err.contains("--help"), "{err}");
    let err = cli_fails(&["restore", "-txid", "5", "-time", "latest", "-o", out, "file:///x"], 2);
    assert!(err.contains("at most one of -txid, -timestamp and -time"), "{err}");
    let err = cli_fails(&["restore", "-txid", "nope", "-o", out, "file:///x"], 2);
    assert!(err.contains("not a TXID"), "{err}");
    let err = cli_fails(&["restore", "--bogus", "file:///x"], 2);
    assert!(err.contains("unknown flag --bogus"), "{err}");
    let err = cli_fails(&["frobnicate"], 2);
    assert!(err.contains("unknown command \"frobnicate\""), "{err}");
    cli_fails(&[], 2);

    let help = cli_ok(&["--help"]);
    for cmd in ["restore -o PATH", "ltx ", "info "] {
        assert!(help.contains(&format!("litestream-vfs {cmd}")), "{help}");
    }
    // `help help` said "no help for unknown command" (a tester): it is the general help.
    assert_eq!(cli_ok(&["help", "help"]), help);
    cli_fails(&["help", "frobnicate"], 2);
    assert!(cli_ok(&["restore", "--help"]).contains("-if-replica-exists"));
}

/// `LITESTREAM_LOG_LEVEL=verbose` was ignored in silence (a tester): one warning on
/// stderr names the accepted values, and the command still runs at warn.
#[test]
fn an_unknown_log_level_is_warned_about_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
        .arg("--version")
        .env("LITESTREAM_LOG_LEVEL", "verbose")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    let warning = "LITESTREAM_LOG_LEVEL=\"verbose\" is not a log level";
    assert_eq!(stderr.matches(warning).count(), 1, "{stderr}");
    assert!(stderr.contains("off, error, warn, info, debug, trace"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
        .arg("--version")
        .env("LITESTREAM_LOG_LEVEL", "INFO")
        .output()
        .unwrap();
    assert_eq!(text(&out.stderr), "", "a known level is not warned about");
}

/// The largest level-0 file: the one holding the 2000-row insert.
fn largest_level0_file(replica: &Path) -> PathBuf {
    level0_ranges(replica)
        .iter()
        .map(|(min, max)| replica.join(format!("ltx/0/{min:016x}-{max:016x}.ltx")))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("level-0 files")
}

#[test]
fn ltx_prints_and_verifies_a_local_file_and_rejects_a_corrupt_one() {
    let r = replicated();
    let file = largest_level0_file(&r.replica);
    let out = cli_ok(&["ltx", path_str(&file)]);
    for want in [
        "TXIDs:",
        "page size:           4096",
        "page index:",
        "LZ4 block",
        "verified:            ok",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let json: serde_json::Value = serde_json::from_str(&cli_ok(&["ltx", "-json", path_str(&file)])).unwrap();
    assert_eq!(json["verified"], true);
    assert_eq!(json["pages"], json["index_entries"]);
    assert!(json["pages"].as_u64().unwrap() > 100, "{json}");

    // One flipped byte in the middle of the page frames (they are most of the file).
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = 100 + (bytes.len() - 200) / 2;
    bytes[mid] ^= 0x55;
    let bad = r.dir.join("bad.ltx");
    std::fs::write(&bad, &bytes).unwrap();
    let err = cli_fails(&["ltx", path_str(&file), path_str(&bad)], 1);
    assert!(err.contains("bad.ltx: verification failed"), "{err}");
    assert!(err.contains("1 of 2 failed"), "{err}");
}

#[test]
fn ltx_lists_a_replicas_files_per_level_and_info_summarizes_it() {
    let r = replicated();
    let out = cli_ok(&["ltx", &r.url]);
    assert!(out.contains("level  min_txid"), "{out}");
    let level0 = level0_ranges(&r.replica);
    for (min, max) in &level0 {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("0      {min:016x}  {max:016x}"))),
            "level-0 file {min}-{max} not listed:\n{out}"
        );
    }
    // A local directory is the same replica.
    let only0: serde_json::Value =
        serde_json::from_str(&cli_ok(&["ltx", "-level", "0", "-json", path_str(&r.replica)])).unwrap();
    assert_eq!(only0["files"].as_array().unwrap().len(), level0.len());

    let info: serde_json::Value = serde_json::from_str(&cli_ok(&["info", "--json", &r.url])).unwrap();
    assert_eq!(info["max_txid_decimal"], r.last.0);
    assert_eq!(info["max_txid"], format!("{:016x}", r.last.0));
    assert_eq!(info["restore_plan"]["txid"], format!("{:016x}", r.last.0));
    assert!(info["restore_plan"]["files"].as_u64().unwrap() >= 1);
    let l0 = info["levels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["level"] == 0)
        .unwrap();
    assert_eq!(l0["files"], level0.len());
    let text = cli_ok(&["info", &r.url]);
    assert!(
        text.contains("restore plan: TXID") && text.contains("level 0:"),
        "{text}"
    );
    let err = cli_fails(&["info", &format!("file://{}", r.dir.join("none").display())], 1);
    assert!(err.contains("holds no LTX files"), "{err}");
    // ltx agrees with info on an empty replica (it exited 0, a tester), a local
    // directory included; an empty level of a replica with files is an answer.
    let empty = r.dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    for replica in [
        format!("file://{}", r.dir.join("none").display()),
        path_str(&empty).into(),
    ] {
        let err = cli_fails(&["ltx", &replica], 1);
        assert!(err.contains("holds no LTX files"), "{err}");
        cli_fails(&["ltx", "-level", "0", &replica], 1);
    }
    let out = cli_ok(&["ltx", "-level", "7", &r.url]);
    assert!(out.contains("(no LTX files at this level)"), "{out}");
}

/// A replica that lost a level-0 file from the middle (deleted, or a mount gone from
/// under the primary for a while; compaction off, so nothing covers it): a restore of the
/// latest state gave the state before the gap and exited 0 (found by a tester). It fails
/// now, naming the gap and how to get the state before it, which `-txid` still restores;
/// a TXID past the gap is said to be past it; `info` shows the plan stopping there.
#[test]
fn a_replica_with_a_hole_fails_a_latest_restore_naming_the_gap_and_restores_before_it_when_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let db = dir.join("app.db");
    let replica = dir.join("replica");
    let url = format!("file://{}", replica.display());
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms&compaction=off",
        db.display()
    );
    let mut states = Vec::new();
    for sql in [
        "CREATE TABLE t(v); INSERT INTO t VALUES ('one');",
        "INSERT INTO t VALUES ('two');",
        "INSERT INTO t VALUES ('three');",
        "INSERT INTO t VALUES ('four');",
    ] {
        let out = sqlite(&format!("{open}\n{sql}\nSELECT litestream_sync(30000);\n.dump\n"));
        let (txid, dump) = out.split_once('\n').unwrap();
        states.push((txid.parse::<u64>().unwrap(), dump.to_string()));
    }
    let (before, before_dump) = states[1].clone();
    let (lost, last) = (states[2].0, states[3].0);
    let ranges = level0_ranges(&replica);
    let hole = ranges.iter().find(|r| r.1 == lost).expect("the third session's file");
    assert!(hole.0 > before, "{ranges:?}");
    std::fs::remove_file(
        replica
            .join("ltx/0")
            .join(format!("{:016x}-{:016x}.ltx", hole.0, hole.1)),
    )
    .unwrap();

    let out = dir.join("latest.db");
    let err = cli_fails(&["restore", "-o", path_str(&out), &url], 1);
    for said in [
        format!("gap after TXID {before}"),
        format!("-txid {before:016x}"),
        format!("files go up to TXID {last}"),
    ] {
        assert!(err.contains(&said), "{said:?} not in: {err}");
    }
    assert!(!out.exists(), "nothing restored");
    // The same through SQL.
    let (_, _, sql_err) = sqlite_output(&format!("SELECT litestream_restore('{url}', '{}');", out.display()));
    assert!(sql_err.contains(&format!("gap after TXID {before}")), "{sql_err}");
    assert!(!out.exists(), "nothing restored");

    // The state before the gap, asked for explicitly, restores.
    let at_gap = dir.join("before.db");
    cli_ok(&["restore", "-txid", &before.to_string(), "-o", path_str(&at_gap), &url]);
    assert_eq!(dump(&at_gap), before_dump);
    // A TXID past it: said so, not blamed on a file merging several TXIDs.
    let err = cli_fails(&["restore", "-txid", &last.to_string(), "-o", path_str(&out), &url], 1);
    assert!(err.contains("past a gap") && !err.contains("merges"), "{err}");
    // So is a time after it.
    let now = litestream_vfs::storage::format_rfc3339_nano(now_ms());
    let err = cli_fails(&["restore", "-timestamp", &now, "-o", path_str(&out), &url], 1);
    assert!(err.contains("past a gap"), "{err}");

    let text = cli_ok(&["info", &url]);
    assert!(
        text.contains(&format!("restore plan: TXID {before:016x}")) && text.contains("stops at a gap"),
        "{text}"
    );
    let info: serde_json::Value = serde_json::from_str(&cli_ok(&["info", "--json", &url])).unwrap();
    assert_eq!(
        info["restore_plan"]["gap"]["after_txid"],
        format!("{before:016x}"),
        "{info}"
    );
}

/// `litestream-vfs ltx … | head`: the reader goes away early; the tool ends quietly, as
/// C tools do, instead of panicking with a backtrace on the broken pipe (found by
/// testers).
#[test]
fn a_closed_pipe_ends_the_tool_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let r = replicated();
    let file = largest_level0_file(&r.replica);
    let many: Vec<&str> = std::iter::repeat_n(path_str(&file), 400).collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
        .arg("ltx")
        .args(&many)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "the tool printed something first");
    // The reader is dropped here: the pipe is closed while the tool still writes.
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "not a panic's exit code: {stderr}");
}

/// An S3 endpoint that answers every request as S3 does a key it does not know: 403
/// InvalidAccessKeyId. Returns its port; the thread serves until the test ends.
fn s3_refusing_credentials() -> u16 {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            // The request line and headers; no request of a listing or a read has a body.
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InvalidAccessKeyId</Code>\
                        <Message>The AWS Access Key Id you provided does not exist in our records.</Message>\
                        <RequestId>1</RequestId></Error>";
            let _ = write!(
                conn,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// A 403 InvalidAccessKeyId / SignatureDoesNotMatch from S3 came through as a raw
/// "Generic S3 error … 403 Forbidden" (an operations tester, t14): each command that
/// reads the store now adds a hint naming where the access key and secret come from.
#[test]
fn s3_refusing_the_credentials_is_reported_with_a_hint_about_them() {
    let port = s3_refusing_credentials();
    let url = format!("s3://bucket/app?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.db");
    for args in [
        vec!["restore", "-o", path_str(&out), &url],
        vec!["info", &url],
        vec!["verify", &url],
        vec!["ltx", &url],
    ] {
        let run = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
            .args(&args)
            .env_remove("LITESTREAM_LOG_LEVEL")
            .env_remove("LITESTREAM_ACCESS_KEY_ID")
            .env_remove("LITESTREAM_SECRET_ACCESS_KEY")
            .env("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG1")
            .env("AWS_SECRET_ACCESS_KEY", "badsecretbadsecretbadsecret")
            .output()
            .unwrap();
        let err = text(&run.stderr);
        assert_eq!(run.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("403")
                && err.contains("hint: the S3 store refused the request")
                && err.contains("AWS_ACCESS_KEY_ID")
                && err.contains("a replica URL takes no credentials"),
            "{args:?}: {err}"
        );
        assert!(!err.contains("badsecret"), "the secret was shown: {err}");
        assert_eq!(err.matches("hint:").count(), 1, "{err}");
    }
}
