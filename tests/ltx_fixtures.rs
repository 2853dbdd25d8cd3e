//! The codec against files written by the real Litestream 0.5.17 (`tests/data/`), no
//! external tools needed.
//!
//! `tests/data/litestream-0.5.17/` is a replica directory produced by
//! `litestream replicate` on a 1024-byte-page database (`CREATE TABLE kv(k TEXT PRIMARY
//! KEY, v INT, note TEXT)`, 120 rows, then one UPDATE and one INSERT+DELETE, one sync
//! each), and `expected.db` is that database after `PRAGMA wal_checkpoint(TRUNCATE)`.
//! Litestream wrote TXID 1 three times: as the first L0 file, as an L1 compaction, and as
//! the L9 snapshot.

use std::fs;
use std::path::{Path, PathBuf};

use litestream_vfs::ltx::*;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/litestream-0.5.17")
}

/// `(level, min, max, bytes)` of every fixture file, by level then TXID.
fn fixtures() -> Vec<(Level, u64, u64, Vec<u8>)> {
    let root = fixture_dir();
    let mut out = Vec::new();
    for level in 0..=9u8 {
        let dir = root.join("ltx").join(level.to_string());
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let (min, max) = parse_name(&name).unwrap();
            out.push((Level::new(level).unwrap(), min, max, fs::read(e.path()).unwrap()));
        }
    }
    out.sort_by_key(|f| (f.0, f.1));
    assert!(out.len() >= 5, "fixtures missing under {}", root.display());
    out
}

#[test]
fn every_fixture_decodes_and_matches_its_name() {
    for (level, min, max, bytes) in fixtures() {
        let d = decode_file(&bytes).unwrap_or_else(|e| panic!("L{} {min}-{max}: {e}", level.get()));
        assert_eq!((d.header.min_txid, d.header.max_txid), (min, max));
        // What Litestream writes: NoChecksum, zero database checksums, 1 KiB pages here.
        assert!(d.header.no_checksum());
        assert_eq!(d.header.pre_apply_checksum, 0);
        assert_eq!(d.trailer.post_apply_checksum, 0);
        assert_eq!(d.header.page_size, 1024);
        d.index.check_header(&d.header).unwrap();
        // Random access from the tail alone agrees with the streaming decoder.
        let len = bytes.len() as u64;
        let tail = &bytes[bytes.len().saturating_sub(64)..];
        let t = match parse_tail(len, tail).unwrap() {
            TailRead::Complete(t) => t,
            TailRead::NeedFrom(o) => match parse_tail(len, &bytes[o as usize..]).unwrap() {
                TailRead::Complete(t) => t,
                TailRead::NeedFrom(_) => panic!("asked twice"),
            },
        };
        assert_eq!(t.index, d.index);
        let mut page = vec![0u8; 1024];
        for (e, (pgno, data)) in d.index.entries().iter().zip(&d.pages) {
            let frame = &bytes[e.offset as usize..(e.offset + e.size as u64) as usize];
            read_page_frame(frame, *pgno, 1024, &mut page).unwrap();
            assert_eq!(&page, data);
        }
    }
}

#[test]
fn restore_from_fixtures_matches_the_database() {
    let expected = fs::read(fixture_dir().join("expected.db")).unwrap();
    let files = fixtures();
    let level = |l: u8| {
        files
            .iter()
            .filter(move |f| f.0 == Level::new(l).unwrap())
            .map(|f| &f.3[..])
    };

    // Snapshot (L9) + the L0 files after it, as `litestream restore` plans it.
    let mut a = Applier::new(Vec::new());
    for f in level(9) {
        a.apply(f).unwrap();
    }
    for f in level(0).skip(1) {
        a.apply(f).unwrap();
    }
    assert_eq!(a.into_sink(), expected);

    // All of L0 (its first file is itself a snapshot).
    let mut a = Applier::new(Vec::new());
    for f in level(0) {
        a.apply(f).unwrap();
    }
    assert_eq!(a.into_sink(), expected);

    // Our compaction of Litestream's L0 files gives the same database.
    let c = compact(level(0).collect(), Vec::new(), Compression::Lz4).unwrap();
    assert!(c.header.is_snapshot() && c.header.no_checksum());
    let mut a = Applier::new(Vec::new());
    a.apply(&c.writer[..]).unwrap();
    assert_eq!(a.into_sink(), expected);
}

#[test]
fn fixture_truncations_and_flips_are_errors() {
    let files = fixtures();
    let (_, _, _, small) = files.iter().min_by_key(|f| f.3.len()).unwrap();
    let good = decode_file(small).unwrap();
    for len in 0..small.len() {
        assert!(decode_file(&small[..len]).is_err(), "len {len}");
    }
    for i in 0..small.len() {
        let mut g = small.clone();
        g[i] ^= 0x55;
        if let Ok(d) = decode_file(&g) {
            // Only a payload byte whose change leaves the page intact can pass.
            assert_eq!(d.pages, good.pages, "flip at {i}");
        }
        let _ = parse_tail(g.len() as u64, &g);
    }
}
