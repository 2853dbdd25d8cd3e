//! `litestream-vfs verify` against a replica our primary wrote on file://: a clean
//! replica checks (exit 0), one flipped byte in one file is named (exit 1) with the
//! newest TXID a restore still reaches, which `restore` names too; `--all` checks files
//! the restore plan does not use; `info` says how far back a restore goes.

mod harness;

use harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
        .args(args)
        .env_remove("LITESTREAM_LOG_LEVEL")
        .env_remove("LITESTREAM_ENCRYPTION_KEY")
        .env_remove("LITESTREAM_ENCRYPTION_KEY_FILE")
        .output()
        .expect("litestream-vfs runs")
}

/// Runs the tool expecting exit status `code`; returns (stdout, stderr).
fn cli_exits(args: &[&str], code: i32) -> (String, String) {
    let out = cli(args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "litestream-vfs {args:?}:\n{stdout}{stderr}"
    );
    (stdout, stderr)
}

/// A replica of three commits, each synced on its own: level-0 files ending at three
/// TXIDs, and the restore plan (compaction off: a level-1 window boundary passing during
/// the commits made the plan one level-1 file, and the tests' level-0 edits missed it in
/// clean-clone CI). Returns (temp dir, replica dir, URL).
fn replica_of_three_commits() -> (tempfile::TempDir, PathBuf, String) {
    replica_of_three_commits_with("")
}

/// The same with more URI parameters (`&encryption_key=...`).
fn replica_of_three_commits_with(params: &str) -> (tempfile::TempDir, PathBuf, String) {
    let tmp = tempfile::tempdir().unwrap();
    let replica = tmp.path().join("r");
    let url = format!("file://{}", replica.display());
    sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval=100ms&compaction=off{params}
         CREATE TABLE t(x);
         SELECT litestream_sync(30000);
         INSERT INTO t SELECT hex(randomblob(500)) FROM generate_series(1, 200);
         SELECT litestream_sync(30000);
         INSERT INTO t SELECT hex(randomblob(500)) FROM generate_series(1, 200);
         SELECT litestream_sync(30000);",
        tmp.path().join("app.db").display()
    ));
    assert!(level0_ranges(&replica).len() >= 3, "{:?}", level0_ranges(&replica));
    (tmp, replica, url)
}

fn level0_file(replica: &Path, (min, max): (u64, u64)) -> PathBuf {
    replica.join(format!("ltx/0/{min:016x}-{max:016x}.ltx"))
}

/// Flips one byte in the middle of `file`.
fn flip_a_byte(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(file, &bytes).unwrap();
}

#[test]
fn a_clean_replica_verifies_and_a_flipped_byte_is_named_with_the_newest_restorable_txid() {
    let (tmp, replica, url) = replica_of_three_commits();
    let ranges = level0_ranges(&replica);
    let newest = ranges.last().unwrap().1;
    let (out, _) = cli_exits(&["verify", &url], 0);
    assert!(out.contains("0 damaged, 0 unreadable"), "{out}");
    assert!(out.contains(&format!("newest restorable TXID: {newest:016x}")), "{out}");

    // The middle file: the one before it still restores.
    let (damaged, before) = (ranges[ranges.len() - 2], ranges[ranges.len() - 3].1);
    let file = level0_file(&replica, damaged);
    flip_a_byte(&file);
    let (out, err) = cli_exits(&["verify", &url], 1);
    let named = format!("DAMAGED level 0 file {:016x}-{:016x}.ltx", damaged.0, damaged.1);
    assert!(
        out.contains(&named) && out.contains(&file.display().to_string()),
        "{out}"
    );
    assert!(out.contains("1 damaged"), "{out}");
    assert!(err.contains(&format!("restore -txid {before:016x}")), "{err}");
    let (json, _) = cli_exits(&["verify", "--json", &url], 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["damaged"], 1);
    assert_eq!(json["failed_files"][0]["key"], file.display().to_string());
    assert_eq!(json["newest_restorable_txid_decimal"], before);

    // A restore through it says the same, and the TXID it names restores.
    let out_db = tmp.path().join("out.db");
    let (_, err) = cli_exits(&["restore", "-o", out_db.to_str().unwrap(), &url], 1);
    assert!(err.contains(&named["DAMAGED ".len()..]), "{err}");
    assert!(
        err.contains("is damaged") && err.contains(&format!("-txid {before:016x}")),
        "{err}"
    );
    assert!(!err.contains("merging"), "{err}");
    cli_exits(
        &[
            "restore",
            "-o",
            out_db.to_str().unwrap(),
            "-txid",
            &format!("{before:016x}"),
            &url,
        ],
        0,
    );
}

/// A copy of the first file as a level-9 snapshot: the plan starts from it and skips
/// level 0's first file, which --all still checks.
#[test]
fn all_checks_a_damaged_file_the_restore_plan_does_not_use() {
    let (_tmp, replica, url) = replica_of_three_commits();
    let first = level0_ranges(&replica)[0];
    assert_eq!(first.0, 1);
    let snapshot = replica.join(format!("ltx/9/{:016x}-{:016x}.ltx", first.0, first.1));
    std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
    std::fs::copy(level0_file(&replica, first), &snapshot).unwrap();
    flip_a_byte(&level0_file(&replica, first));
    let (out, _) = cli_exits(&["verify", &url], 0);
    assert!(
        out.contains("of the restore plan") && out.contains("0 damaged"),
        "{out}"
    );
    let (out, _) = cli_exits(&["verify", "-all", &url], 1);
    let named = format!("DAMAGED level 0 file {:016x}-{:016x}.ltx", first.0, first.1);
    assert!(out.contains(&named) && out.contains("of every level"), "{out}");
    // The snapshot holds the same TXIDs: the latest state is still restorable.
    let newest = level0_ranges(&replica).last().unwrap().1;
    assert!(out.contains(&format!("newest restorable TXID: {newest:016x}")), "{out}");
}

#[test]
fn verify_usage_errors_exit_2_and_help_describes_it() {
    let (_, err) = cli_exits(&["verify"], 2);
    assert!(err.contains("verify needs the replica URL"), "{err}");
    let (_, err) = cli_exits(&["verify", "--bogus", "file:///nowhere"], 2);
    assert!(err.contains("unknown flag --bogus"), "{err}");
    let (out, _) = cli_exits(&["help", "verify"], 0);
    assert!(
        out.contains("Usage: litestream-vfs verify") && out.contains("-all"),
        "{out}"
    );
    let (out, _) = cli_exits(&["--help"], 0);
    assert!(out.contains("litestream-vfs verify"), "{out}");
}

#[test]
fn info_says_the_oldest_restorable_txid_and_when_it_was_written() {
    let (_tmp, replica, url) = replica_of_three_commits();
    let first = level0_ranges(&replica)[0].1;
    let (out, _) = cli_exits(&["info", &url], 0);
    assert!(
        out.contains(&format!("oldest restorable: TXID {first:016x} ({first}, written 20")),
        "{out}"
    );
    let (json, _) = cli_exits(&["info", "-json", &url], 0);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["oldest_restorable"]["txid_decimal"], first);
    assert!(
        json["oldest_restorable"]["timestamp"].as_str().unwrap().ends_with('Z'),
        "{json}"
    );
    // The existing keys keep their meaning.
    assert_eq!(json["min_txid"], format!("{:016x}", 1));
}

/// RFC 9180 A.2's recipient key pair, and a key the replica is not encrypted to.
const KEY: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
const OTHER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// `verify -key WRONG` named a "newest restorable TXID" and `restore -txid` for it though
/// every file had failed for the same wrong key, and that restore failed with "wrong key"
/// (an operations tester, t17). With files the key does not open, no TXID is advised:
/// the summary says the key opens none of them (or how many it does not open).
#[test]
fn verify_with_a_wrong_key_advises_no_restore_txid_and_says_the_key_opens_none_of_the_files() {
    let (tmp, replica, url) = replica_of_three_commits_with(&format!("&encryption_key={KEY}"));
    let (out, _) = cli_exits(&["verify", "-key", KEY, &url], 0);
    let newest = level0_ranges(&replica).last().unwrap().1;
    assert!(out.contains(&format!("newest restorable TXID: {newest:016x}")), "{out}");

    let (out, err) = cli_exits(&["verify", "-key", OTHER_KEY, &url], 1);
    let both = format!("{out}{err}");
    assert!(!both.contains("restore -txid"), "{both}");
    assert!(
        out.contains("newest restorable TXID: not known with this key")
            && out.contains("it opens none of the")
            && out.contains("wrong key")
            && err.contains("opens none of the")
            && err.contains("private key the replica is encrypted to"),
        "{both}"
    );
    let (json, _) = cli_exits(&["verify", "-json", "-key", OTHER_KEY, &url], 1);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["wrong_key_files"], json["files_checked"], "{json}");
    assert!(json["newest_restorable_txid"].is_null(), "{json}");

    // One file to another key only (a rotation that skipped rekey): the key given opens
    // the others, and the summary says how many it does not open, still with no TXID.
    let other_pub = litestream_vfs::ltx::crypto::PrivateKey::from_hex(OTHER_KEY)
        .unwrap()
        .public_key()
        .to_hex();
    let newest_file = level0_file(&replica, *level0_ranges(&replica).last().unwrap());
    let moved = tmp.path().join("moved.ltx");
    cli_exits(
        &[
            "rekey",
            "-key",
            KEY,
            "-encrypt-to",
            &other_pub,
            "-o",
            moved.to_str().unwrap(),
            newest_file.to_str().unwrap(),
        ],
        0,
    );
    std::fs::rename(&moved, &newest_file).unwrap();
    let (out, err) = cli_exits(&["verify", "-key", KEY, &url], 1);
    assert!(
        out.contains("it does not open 1 of the") && !out.contains("restore -txid") && !err.contains("restore -txid"),
        "{out}{err}"
    );
}
