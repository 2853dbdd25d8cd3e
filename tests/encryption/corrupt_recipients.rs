//! A changed byte in an encrypted file's leading recipient block, the copy a streaming
//! decode opens: `ltx -key` and `restore -key` called it a wrong key (found by a tester).
//! The copy at the end of the file disagrees, so both now say the file is corrupt.

use super::*;

#[test]
fn a_changed_leading_recipient_block_is_reported_as_corruption_not_a_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    // Compaction off: a level-1 window boundary passing during the session would merge
    // the level-0 files into a level-1 file, which the restore below would read instead
    // of the damaged one.
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&compaction=off&encryption_key={KEY}\n\
             CREATE TABLE t(v TEXT);\nINSERT INTO t SELECT hex(randomblob(50)) FROM generate_series(1, 100);\n\
             SELECT litestream_sync(10000) > 0;",
            db.display()
        ),
        &[],
    );
    assert_eq!(out.trim(), "1", "{stderr}");
    let file = level0(&replica).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[100 + 40] ^= 0x01; // inside the leading block's first entry
    std::fs::write(&file, &bytes).unwrap();

    let (ok, _, stderr) = cli(&["ltx", "-key", KEY, file.to_str().unwrap()], &[]);
    assert!(
        !ok && stderr.contains("the file is corrupt") && stderr.contains("not a wrong key"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(
        &[
            "restore",
            "-key",
            KEY,
            "-o",
            dir.path().join("r.db").to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert!(!ok && stderr.contains("; corrupt: level 0 file 1-"), "{stderr}");
}
