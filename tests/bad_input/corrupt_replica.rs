//! Corrupt replicas: a truncated LTX file, a smashed page frame, a restore from a corrupt
//! snapshot, a frame whose size field claims far more than a page.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `truncated_ltx_file` | last level-0 file cut in half | replica open refused, "corrupt replica" |
//! | `corrupt_page_frame` | bytes of one page frame smashed | that query is SQLITE_CORRUPT with a message, others work |
//! | `restore_from_corrupt_replica` | primary restoring a missing database from it | open refused, no database file left behind |
//! | `frame_claiming_a_huge_size` | index entry of an 8 MiB frame for one page | refused before fetching it, open and restore |

use super::*;
use litestream_vfs::ltx::{parse_tail, TailRead, Trailer, CHECKSUM_FLAG, END_MARKER, FRAME_FLAG_SIZE};
use std::time::{Duration, Instant};

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
        stderr.contains(&format!("restoring {}", fresh.display()))
            && stderr.contains("(TXIDs 1-1)")
            && stderr.contains("is damaged"),
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
    assert!(
        stderr.contains("(TXIDs 2-2)") && stderr.contains("is damaged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("8388608"),
        "the error names the claimed size:\n{stderr}"
    );
    assert_rows(&db, ROWS);
}
