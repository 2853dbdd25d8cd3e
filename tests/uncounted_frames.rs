//! A commit frame SQLite never counted is not a commit. A writer killed after writing
//! its commit frame but before updating the wal-index leaves one: every checksum holds,
//! but SQLite ignores it and the next writer reuses its slot. Capture must take SQLite's
//! count (`mxFrame`), not the checksum chain, for the end of what is committed
//! (multi_process_crash found a replica holding such a row).

mod harness;

use harness::shell::LiveShell;
use harness::*;
use serde_json::Value;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

const INTERVAL_MS: u64 = 100;

fn status(shell: &mut LiveShell) -> Value {
    let text = shell.run("SELECT litestream_status();");
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("status {text:?}: {e}"))
}

/// SQLite's WAL checksum over `data` from `(s1, s2)`.
fn wal_checksum(big_endian: bool, data: &[u8], (mut s1, mut s2): (u32, u32)) -> (u32, u32) {
    let word = |b: &[u8]| {
        let b: [u8; 4] = b.try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    for pair in data.chunks_exact(8) {
        s1 = s1.wrapping_add(word(&pair[..4])).wrapping_add(s2);
        s2 = s2.wrapping_add(word(&pair[4..])).wrapping_add(s1);
    }
    (s1, s2)
}

/// Appends to `wal` a commit frame after its last valid one, as a writer that died before
/// updating the wal-index leaves it: the last frame's page with `from` replaced by `to`,
/// checksums continuing the chain. Returns the frame index written.
fn append_uncounted_commit(wal: &Path, from: &[u8], to: &[u8]) -> u64 {
    let bytes = std::fs::read(wal).unwrap();
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    let big_endian = be(0) & 1 == 1;
    let page_size = be(8) as usize;
    let salts = (be(16), be(20));
    let frame_size = 24 + page_size;
    let mut chain = (be(24), be(28));
    let mut last = None;
    let mut index = 0;
    while 32 + (index + 1) * frame_size <= bytes.len() {
        let at = 32 + index * frame_size;
        if (be(at + 8), be(at + 12)) != salts {
            break;
        }
        let sum = wal_checksum(big_endian, &bytes[at..at + 8], chain);
        let sum = wal_checksum(big_endian, &bytes[at + 24..at + frame_size], sum);
        if sum != (be(at + 16), be(at + 20)) {
            break;
        }
        chain = sum;
        last = Some(index);
        index += 1;
    }
    let last = last.expect("the WAL holds a frame");
    let at = 32 + last * frame_size;
    let mut frame = bytes[at..at + frame_size].to_vec();
    let page = &mut frame[24..];
    let hit = page
        .windows(from.len())
        .position(|w| w == from)
        .expect("the last frame's page holds the marker");
    page[hit..hit + to.len()].copy_from_slice(to);
    assert!(be(at + 4) > 0, "the last valid frame is a commit");
    let sum = wal_checksum(big_endian, &frame[..8], chain);
    let sum = wal_checksum(big_endian, &frame[24..], sum);
    frame[16..20].copy_from_slice(&sum.0.to_be_bytes());
    frame[20..24].copy_from_slice(&sum.1.to_be_bytes());
    let file = std::fs::OpenOptions::new().write(true).open(wal).unwrap();
    file.write_all_at(&frame, (32 + index * frame_size) as u64).unwrap();
    index as u64
}

#[test]
fn a_commit_frame_sqlite_never_counted_is_not_replicated_and_its_slot_is_reused_without_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let mut shell = LiveShell::start(
        dir.path(),
        "w",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval={INTERVAL_MS}ms",
            db.display()
        ),
    );
    shell.run("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('kept-row-one');");
    shell.run("SELECT litestream_sync();");
    let before = status(&mut shell);
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let slot = append_uncounted_commit(Path::new(&wal), b"kept-row-one", b"ORPHAN-row-1");
    // The frame is valid: SQLite's own recovery (a copy of the files without the
    // wal-index) takes it for a commit.
    let copy = dir.path().join("copy.db");
    std::fs::copy(&db, &copy).unwrap();
    std::fs::copy(&wal, dir.path().join("copy.db-wal")).unwrap();
    assert_eq!(
        plain_sqlite(&copy, "SELECT group_concat(v) FROM t").trim(),
        "ORPHAN-row-1"
    );
    // Many engine turns: each reads the WAL after capture's position.
    std::thread::sleep(Duration::from_millis(12 * INTERVAL_MS));
    let waited = status(&mut shell);
    assert_eq!(
        waited["txid"], before["txid"],
        "frame {slot} was taken for a commit: {waited}"
    );
    // The next commit goes where the uncounted frame lies, as SQLite puts it there.
    shell.run("INSERT INTO t(v) VALUES ('kept-row-two'); SELECT litestream_sync();");
    let after = status(&mut shell);
    assert_eq!(
        after["snapshots"], before["snapshots"],
        "the reused slot looked like an overwritten commit: {after}"
    );
    assert_eq!(
        after["txid"].as_u64(),
        before["txid"].as_u64().map(|t| t + 1),
        "{after}"
    );
    drop(shell);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(dump(&restored), dump(&db));
    assert_eq!(
        plain_sqlite(&restored, "SELECT group_concat(v) FROM t").trim(),
        "kept-row-one,kept-row-two"
    );
}

/// The count comes from the application's own mapping of the wal-index; a replicating
/// process whose application has not read the database has none. A follower's
/// `litestream_sync()` must still be answered (the count is then read through a
/// connection of the extension's own).
#[test]
fn a_followers_sync_is_answered_by_a_replicating_process_that_never_read_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let open = format!(
        ".open file:{}?vfs=litestream&replica={url}&sync_interval={INTERVAL_MS}ms",
        db.display()
    );
    plain_sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);",
    );
    let mut leader = LiveShell::start(dir.path(), "leader", &open);
    assert_eq!(status(&mut leader)["role"], "primary");
    let mut follower = LiveShell::start(dir.path(), "follower", &open);
    assert_eq!(status(&mut follower)["role"], "follower");
    let synced = follower.run("INSERT INTO t(v) VALUES ('from the follower'); SELECT litestream_sync(10000);");
    let synced: u64 = synced.trim().parse().unwrap_or_else(|_| {
        panic!(
            "the follower's sync was not answered: {synced:?}\n{}",
            follower.stderr()
        )
    });
    assert!(synced >= 2, "TXID {synced}");
    drop(follower);
    drop(leader);
    let restored = dir.path().join("restored.db");
    litestream_restore(&url, &restored, &[]).unwrap();
    assert_eq!(plain_sqlite(&restored, "SELECT v FROM t").trim(), "from the follower");
}
