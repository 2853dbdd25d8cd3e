//! The codec against the spec's vectors and itself: round trips at every page size and
//! compression, random access to each frame, legacy LZ4 frames, the encoder's and decoder's
//! rules for their callers.

use std::io::Write;

use super::checksum::{CHECKSUM_FLAG, EMPTY_DB_CHECKSUM};
use super::test_files::*;
use super::*;

/// A 26-byte LZ4 block for 1024 copies of `b`: 13 literals, a 1006-byte match at
/// distance 1, 5 closing literals. Go's compressor happens to emit 26 bytes for this page,
/// which is what gives the spec vector its 36-byte frames.
fn lz4_block_26(b: u8) -> Vec<u8> {
    let mut v = vec![0xdf]; // 13 literals, match length nibble 15
    v.extend_from_slice(&[b; 13]);
    v.extend_from_slice(&[1, 0]); // offset 1
    v.extend_from_slice(&[255, 255, 255, 222]); // 15+4+255*3+222 = 1006
    v.push(0x50); // final: 5 literals
    v.extend_from_slice(&[b; 5]);
    v
}

#[test]
fn spec_snapshot_vector() {
    let pages = vec![(1, vec![b'2'; 1024]), (2, vec![b'3'; 1024])];
    let mut h = header(1024, 2, 1, 1);
    h.flags = 0;
    h.timestamp_ms = 1000;
    // Our encoder refuses a checksummed snapshot whose post-apply checksum is wrong, so
    // encoding at all proves the vector.
    let ours = encode(h, &pages, Compression::Lz4, 0xe189_9b6d_587a_aaaa);
    assert!(matches!(
        Encoder::new(Vec::new(), h, Compression::Lz4).and_then(|mut e| {
            for (p, d) in &pages {
                e.write_page(*p, d)?;
            }
            e.finish(0xe189_9b6d_587a_aaab)
        }),
        Err(Error::PostApplyChecksumMismatch { .. })
    ));
    let d = decode_file(&ours).unwrap();
    assert_eq!(d.trailer.post_apply_checksum, 0xe189_9b6d_587a_aaaa);
    assert_eq!(d.pages, pages);
    let e = d.index.entries();
    assert_eq!(e[0].offset, 100);
    assert_eq!(e[1].offset, 100 + e[0].size as u64);

    // The reference layout: 26-byte LZ4 blocks, frames of 36 bytes at 100 and 136.
    let go = raw_file(
        &h.encode(),
        &[
            RawFrame {
                pgno: 1,
                flags: FRAME_FLAG_SIZE,
                payload: lz4_block_26(b'2'),
                page: vec![b'2'; 1024],
            },
            RawFrame {
                pgno: 2,
                flags: FRAME_FLAG_SIZE,
                payload: lz4_block_26(b'3'),
                page: vec![b'3'; 1024],
            },
        ],
        0xe189_9b6d_587a_aaaa,
    );
    let d = decode_file(&go).unwrap();
    assert_eq!(d.pages, pages);
    let got: Vec<(u32, u64, u32)> = d.index.entries().iter().map(|e| (e.pgno, e.offset, e.size)).collect();
    assert_eq!(got, vec![(1, 100, 36), (2, 136, 36)]);
    let mut out = vec![0u8; 1024];
    read_page_frame(&go[136..172], 2, 1024, &mut out).unwrap();
    assert_eq!(out, vec![b'3'; 1024]);
}

#[test]
fn spec_two_512_pages_vector_through_codec() {
    let pages = vec![(1, vec![b'2'; 512]), (2, vec![b'3'; 512])];
    let mut h = header(512, 2, 1, 2);
    h.flags = 0;
    let f = encode(h, &pages, Compression::Lz4, 0x8b87_423e_eeee_eeee);
    assert_eq!(decode_file(&f).unwrap().pages, pages);
}

#[test]
fn round_trips() {
    let mut rng = Rng::new(1);
    for &ps in &[512u32, 1024, 4096, 65536] {
        for c in [Compression::Lz4, Compression::Zstd(1), Compression::Zstd(3)] {
            for checksummed in [false, true] {
                // Snapshot.
                let commit = 5;
                let pages: Vec<(u32, Vec<u8>)> = (1..=commit).map(|p| (p, page(&mut rng, ps as usize))).collect();
                let mut h = header(ps, commit, 1, 3);
                let post = if checksummed {
                    h.flags = 0;
                    db_checksum(&pages)
                } else {
                    0
                };
                let f = encode(h, &pages, c, post);
                let d = decode_file(&f).unwrap();
                assert_eq!(d.header, h);
                assert_eq!(d.pages, pages);
                assert_eq!(d.trailer.post_apply_checksum, post);
                check_random_access(&f, &d);

                // Incremental: sparse pages, commit grows.
                let pages: Vec<(u32, Vec<u8>)> = [2u32, 3, 9, 40]
                    .iter()
                    .map(|&p| (p, page(&mut rng, ps as usize)))
                    .collect();
                let mut h = header(ps, 40, 4, 6);
                h.wal_offset = 32;
                h.wal_size = 4 * (ps as i64 + 24);
                h.wal_salt1 = 7;
                h.wal_salt2 = 8;
                h.node_id = 99;
                let post = if checksummed {
                    h.flags = 0;
                    h.pre_apply_checksum = CHECKSUM_FLAG | 12345;
                    CHECKSUM_FLAG | 777
                } else {
                    0
                };
                let f = encode(h, &pages, c, post);
                let d = decode_file(&f).unwrap();
                assert_eq!(d.header, h);
                assert_eq!(d.pages, pages);
                check_random_access(&f, &d);
            }
        }
    }
}

/// Every tail length gives the decoder's index (after at most one "need more"), and each
/// frame decodes on its own.
fn check_random_access(f: &[u8], d: &DecodedFile) {
    let len = f.len() as u64;
    for tail_len in [0usize, 1, 23, 24, 30, 64, 200, f.len()] {
        let tail_len = tail_len.min(f.len());
        let mut tail = &f[f.len() - tail_len..];
        let mut asked = 0;
        let t = loop {
            match parse_tail(len, tail).unwrap() {
                TailRead::Complete(t) => break t,
                TailRead::NeedFrom(o) => {
                    asked += 1;
                    assert!(asked <= 2, "asked too often");
                    assert!(o < len - tail.len() as u64);
                    tail = &f[o as usize..];
                }
            }
        };
        assert_eq!(t.index, d.index);
        assert_eq!(t.trailer, d.trailer);
    }
    d.index.check_header(&d.header).unwrap();
    let ps = d.header.page_size;
    let mut out = vec![0u8; ps as usize];
    let mut dec = PageDecompressor::new();
    for (e, (pgno, data)) in d.index.entries().iter().zip(&d.pages) {
        let frame = &f[e.offset as usize..e.offset as usize + e.size as usize];
        read_page_frame_with(&mut dec, frame, *pgno, ps, &mut out).unwrap();
        assert_eq!(&out, data);
        // A frame cut short or read with extra bytes is refused.
        assert!(read_page_frame(&frame[..frame.len() - 1], *pgno, ps, &mut out).is_err());
        let mut longer = frame.to_vec();
        longer.push(0);
        assert!(read_page_frame(&longer, *pgno, ps, &mut out).is_err());
        assert!(read_page_frame(frame, *pgno + 1, ps, &mut out).is_err());
    }
}

#[test]
fn empty_database() {
    for checksummed in [false, true] {
        let mut h = header(4096, 0, 1, 1);
        let post = if checksummed {
            h.flags = 0;
            EMPTY_DB_CHECKSUM
        } else {
            0
        };
        let f = encode(h, &[], Compression::Lz4, post);
        assert_eq!(f.len() as u64, MIN_FILE_SIZE);
        let d = decode_file(&f).unwrap();
        assert!(d.pages.is_empty() && d.index.is_empty());
        check_random_access(&f, &d);
        let mut db = vec![1u8; 8192];
        let mut a = Applier::new(std::mem::take(&mut db));
        a.apply(&f[..]).unwrap();
        assert!(a.into_sink().is_empty());
    }
}

#[test]
fn legacy_lz4_frames_decode() {
    use lz4_flex::frame::{FrameEncoder, FrameInfo};
    let mut rng = Rng::new(5);
    let h = header(4096, 3, 1, 1);
    let pages: Vec<(u32, Vec<u8>)> = (1..=3).map(|p| (p, page(&mut rng, 4096))).collect();
    let frames: Vec<RawFrame> = pages
        .iter()
        .map(|(p, d)| {
            let mut e = FrameEncoder::with_frame_info(FrameInfo::new().content_checksum(true), Vec::new());
            e.write_all(d).unwrap();
            RawFrame {
                pgno: *p,
                flags: 0,
                payload: e.finish().unwrap(),
                page: d.clone(),
            }
        })
        .collect();
    let f = raw_file(&h.encode(), &frames, 0);
    let d = decode_file(&f).unwrap();
    assert_eq!(d.pages, pages);
    assert_eq!(d.index.entries()[0].size as usize, 6 + frames[0].payload.len());
    check_random_access(&f, &d);
}

#[test]
fn encoder_rules() {
    let p = vec![0u8; 512];
    let mut e = Encoder::new(Vec::new(), header(512, 10, 2, 2), Compression::Lz4).unwrap();
    assert!(matches!(e.write_page(0, &p), Err(Error::ZeroPgno { .. })));
    assert!(matches!(e.write_page(11, &p), Err(Error::PageAboveCommit { .. })));
    assert!(matches!(
        e.write_page(1, &p[..100]),
        Err(Error::PageSizeMismatch { .. })
    ));
    e.write_page(5, &p).unwrap();
    assert!(matches!(e.write_page(5, &p), Err(Error::PageOutOfOrder { .. })));
    assert!(matches!(e.finish(CHECKSUM_FLAG), Err(Error::InvalidTrailer(_))));

    let lock = lock_pgno(512);
    let mut e = Encoder::new(Vec::new(), header(512, lock + 2, 2, 2), Compression::Lz4).unwrap();
    assert!(matches!(e.write_page(lock, &p), Err(Error::LockPage { .. })));

    let mut e = Encoder::new(Vec::new(), header(512, 3, 1, 1), Compression::Lz4).unwrap();
    assert!(matches!(
        e.write_page(2, &p),
        Err(Error::SnapshotIncomplete { missing: 1, next: 2 })
    ));
    let mut e = Encoder::new(Vec::new(), header(512, 3, 1, 1), Compression::Lz4).unwrap();
    e.write_page(1, &p).unwrap();
    assert!(matches!(
        e.finish(0),
        Err(Error::SnapshotIncomplete { missing: 2, next: 0 })
    ));
    let mut bad = header(512, 3, 1, 1);
    bad.page_size = 1000;
    assert!(Encoder::new(Vec::new(), bad, Compression::Lz4).is_err());
}

#[test]
fn decoder_api_details() {
    let f = small_file();
    let mut d = Decoder::new(&f[..]).unwrap();
    let mut small = vec![0u8; 100];
    assert!(matches!(d.next_page(&mut small), Err(Error::PageSizeMismatch { .. })));
    assert!(d.next_page(&mut vec![0u8; 512]).is_err(), "poisoned");
    // finish() without reading pages verifies them all.
    let s = Decoder::new(&f[..]).unwrap().finish().unwrap();
    assert_eq!(s.index.len(), 3);
    assert_eq!(verify(&f[..]).unwrap(), s);
}
