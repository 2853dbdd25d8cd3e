//! Hostile input: truncation at every length, every byte flipped, structurally wrong but
//! checksum-valid files, an index disagreeing with the frames. Each is a typed error, never
//! a panic or wrong pages.

use super::checksum::{Crc64, CHECKSUM_FLAG};
use super::test_files::*;
use super::*;

#[test]
fn truncated_at_every_length() {
    for f in [small_file(), encode(header(512, 0, 1, 1), &[], Compression::Zstd(1), 0)] {
        for len in 0..f.len() {
            let e = decode_file(&f[..len]).unwrap_err();
            assert!(matches!(e, Error::Truncated(_) | Error::BadIndex(_)), "len {len}: {e}");
            // The tail parser either asks for more, or errors, but never panics.
            if len > 0 {
                let _ = parse_tail(len as u64, &f[..len]);
            }
        }
        // Trailing garbage.
        let mut g = f.clone();
        g.push(0);
        assert!(matches!(decode_file(&g), Err(Error::TrailingData)));
        g.extend_from_slice(&[7; 100]);
        assert!(matches!(decode_file(&g), Err(Error::TrailingData)));
    }
}

#[test]
fn every_byte_flip_is_detected() {
    let f = small_file();
    let want = decode_file(&f).unwrap();
    // LZ4 payload bytes are the only place a flip can go unnoticed, and only when it
    // does not change the decompressed page (e.g. a match distance moved inside a run of
    // equal bytes): the checksum covers pages, not their encoding, as in the reference.
    let payload = |i: usize| {
        want.index.entries().iter().any(|e| {
            let start = (e.offset as usize) + FRAME_HEADER_SIZE + FRAME_SIZE_FIELD;
            (start..e.offset as usize + e.size as usize).contains(&i)
        })
    };
    let mut benign = 0;
    for i in 0..f.len() {
        for x in [0x01u8, 0x80, 0xff] {
            let mut g = f.clone();
            g[i] ^= x;
            match decode_file(&g) {
                Err(_) => {}
                Ok(d) => {
                    assert!(payload(i), "flip {x:#x} at {i} outside a payload accepted");
                    assert_eq!(d.pages, want.pages, "flip {x:#x} at {i} changed pages");
                    assert_eq!(d.trailer, want.trailer);
                    benign += 1;
                }
            }
            let len = g.len() as u64;
            let _ = parse_tail(len, &g);
        }
    }
    assert!(benign < f.len() / 50, "{benign} benign flips");
}

#[test]
fn hostile_structures_give_typed_errors() {
    let mut rng = Rng::new(3);
    let p1 = page(&mut rng, 512);
    let p2 = page(&mut rng, 512);
    let inc = header(512, 10, 2, 2);
    let snap = header(512, 2, 1, 1);

    // Bad magic.
    let mut f = small_file();
    f[0] = b'X';
    assert!(matches!(decode_file(&f), Err(Error::BadMagic(_))));
    // Unknown header flags (file otherwise consistent).
    let mut hb = inc.encode();
    hb[7] |= 0x01;
    let f = raw_file(&hb, &[], 0);
    assert!(matches!(decode_file(&f), Err(Error::UnknownHeaderFlags(3))));
    // Non-ascending and duplicate pages.
    let f = raw_file(&inc.encode(), &[at(lz4_frame(&p1), 5), at(lz4_frame(&p2), 3)], 0);
    assert!(matches!(
        decode_file(&f),
        Err(Error::PageOutOfOrder { prev: 5, pgno: 3 })
    ));
    let f = raw_file(&inc.encode(), &[at(lz4_frame(&p1), 5), at(lz4_frame(&p2), 5)], 0);
    assert!(matches!(decode_file(&f), Err(Error::PageOutOfOrder { .. })));
    // Above commit.
    let f = raw_file(&inc.encode(), &[at(lz4_frame(&p1), 11)], 0);
    assert!(matches!(
        decode_file(&f),
        Err(Error::PageAboveCommit { pgno: 11, commit: 10 })
    ));
    // Lock page.
    let lock = lock_pgno(512);
    let big = header(512, lock + 5, 2, 2);
    let f = raw_file(&big.encode(), &[at(lz4_frame(&p1), lock)], 0);
    assert!(matches!(decode_file(&f), Err(Error::LockPage { .. })));
    // Page number 0 with flags set.
    let f = raw_file(&inc.encode(), &[at(lz4_frame(&p1), 0)], 0);
    assert!(matches!(decode_file(&f), Err(Error::ZeroPgno { .. })));
    // Unknown frame flags.
    let mut fr = at(lz4_frame(&p1), 1);
    fr.flags = 0x0005;
    let f = raw_file(&inc.encode(), &[fr], 0);
    assert!(matches!(
        decode_file(&f),
        Err(Error::UnknownFrameFlags { flags: 5, .. })
    ));
    // Snapshot with a hole or missing its last page.
    let f = raw_file(&snap.encode(), &[at(lz4_frame(&p2), 2)], 0);
    assert!(matches!(
        decode_file(&f),
        Err(Error::SnapshotIncomplete { missing: 1, next: 2 })
    ));
    let f = raw_file(&snap.encode(), &[at(lz4_frame(&p1), 1)], 0);
    assert!(matches!(
        decode_file(&f),
        Err(Error::SnapshotIncomplete { missing: 2, next: 0 })
    ));
    // Payload decompressing to less / more than a page.
    let f = raw_file(
        &inc.encode(),
        &[RawFrame {
            pgno: 1,
            flags: FRAME_FLAG_SIZE,
            payload: lz4_flex::block::compress(&p1[..500]),
            page: p1.clone(),
        }],
        0,
    );
    assert!(matches!(decode_file(&f), Err(Error::DecompressedSize { .. })));
    let mut bomb = vec![0u8; 1 << 20];
    bomb[0] = 1;
    let zbomb = zstd::bulk::compress(&bomb, 3).unwrap();
    let f = raw_file(
        &inc.encode(),
        &[RawFrame {
            pgno: 1,
            flags: FRAME_FLAG_SIZE | FRAME_FLAG_ZSTD,
            payload: zbomb,
            page: p1.clone(),
        }],
        0,
    );
    assert!(matches!(decode_file(&f), Err(Error::Decompress { .. })));
    // Garbage payload.
    let f = raw_file(
        &inc.encode(),
        &[RawFrame {
            pgno: 1,
            flags: FRAME_FLAG_SIZE,
            payload: vec![0xff; 40],
            page: p1.clone(),
        }],
        0,
    );
    assert!(matches!(decode_file(&f), Err(Error::Decompress { .. })));
    // Huge claimed frame size: refused before reading it.
    let mut f = inc.encode().to_vec();
    f.extend_from_slice(&FrameHeader { pgno: 1, flags: 1 }.encode());
    f.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(decode_file(&f), Err(Error::FrameTooLarge { .. })));
    // Checksummed snapshot whose pages do not add up.
    let mut sh = snap;
    sh.flags = 0;
    let f = raw_file(
        &sh.encode(),
        &[at(lz4_frame(&p1), 1), at(lz4_frame(&p2), 2)],
        CHECKSUM_FLAG | 1,
    );
    assert!(matches!(decode_file(&f), Err(Error::PostApplyChecksumMismatch { .. })));
    // NoChecksum file with a post-apply checksum.
    let f = raw_file(&inc.encode(), &[], CHECKSUM_FLAG | 1);
    assert!(matches!(decode_file(&f), Err(Error::InvalidTrailer(_))));
}

/// Rewrites the index region of a valid file and fixes the file checksum, so only the
/// index is wrong.
fn with_index(f: &[u8], entries: &[(u64, u64, u64)]) -> Vec<u8> {
    let d = decode_file(f).unwrap();
    let start = d.index.entries().last().map_or(100, |e| e.offset + e.size as u64) as usize;
    let mut out = f[..start].to_vec();
    out.extend_from_slice(&END_MARKER);
    let mut idx = Vec::new();
    for &(p, o, s) in entries {
        super::varint::put(&mut idx, p);
        super::varint::put(&mut idx, o);
        super::varint::put(&mut idx, s);
    }
    idx.push(0);
    out.extend_from_slice(&idx);
    out.extend_from_slice(&(idx.len() as u64).to_be_bytes());
    out.extend_from_slice(&d.trailer.post_apply_checksum.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    rehash(&mut out);
    out
}

/// Recomputes the file checksum (last 8 bytes) of a file with sized frames, whatever the
/// index says: walks the frames from offset 100 to the end marker.
fn rehash(f: &mut [u8]) {
    let ps = u32::from_be_bytes([f[8], f[9], f[10], f[11]]);
    let mut h = Crc64::new();
    h.update(&f[..HEADER_SIZE]);
    let mut pos = HEADER_SIZE;
    let mut page = vec![0u8; ps as usize];
    let mut dec = PageDecompressor::new();
    loop {
        let mut fh = [0u8; 6];
        fh.copy_from_slice(&f[pos..pos + 6]);
        let fh = FrameHeader::parse(&fh);
        if fh.is_end() {
            break;
        }
        let len = u32::from_be_bytes([f[pos + 6], f[pos + 7], f[pos + 8], f[pos + 9]]) as usize;
        h.update(&f[pos..pos + 10]);
        dec.decompress_sized(fh.pgno, fh.flags, &f[pos + 10..pos + 10 + len], &mut page)
            .unwrap();
        h.update(&page);
        pos += 10 + len;
    }
    let n = f.len();
    h.update(&f[pos..n - 8]);
    f[n - 8..].copy_from_slice(&(CHECKSUM_FLAG | h.finish()).to_be_bytes());
}

#[test]
fn index_disagreeing_with_frames() {
    let f = small_file();
    let d = decode_file(&f).unwrap();
    let e: Vec<(u64, u64, u64)> = d
        .index
        .entries()
        .iter()
        .map(|e| (e.pgno as u64, e.offset, e.size as u64))
        .collect();
    // Sanity: rebuilding with the right entries is accepted.
    decode_file(&with_index(&f, &e)).unwrap();
    let len = f.len() as u64;
    let bad_sets: Vec<Vec<(u64, u64, u64)>> = vec![
        vec![e[0], e[1]],                               // missing an entry
        vec![e[0], e[2], e[1]],                         // out of order
        vec![(e[0].0, e[0].1 + 1, e[0].2), e[1], e[2]], // offset off by one
        vec![e[0], e[1], (e[2].0, e[2].1, len * 2)],    // points outside the file
        vec![(e[0].0, 5, e[0].2), e[1], e[2]],          // into the header
        vec![e[0], e[1], (9, e[2].1, e[2].2)],          // wrong pgno
    ];
    for (i, set) in bad_sets.iter().enumerate() {
        let g = with_index(&f, set);
        assert!(
            matches!(decode_file(&g), Err(Error::BadIndex(_))),
            "set {i}: {:?}",
            decode_file(&g)
        );
        let r = parse_tail(g.len() as u64, &g);
        // The tail parser sees only the index: it must reject what it can tell is wrong
        // (everything but a wrong pgno), and never panic.
        if i != 5 {
            assert!(matches!(r, Err(Error::BadIndex(_))), "set {i}: {r:?}");
        }
    }
}
