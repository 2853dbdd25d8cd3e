//! LTX files built for the codec's tests: deterministic pages, the encoder in one call,
//! and files built byte by byte (any flags, any payload) with valid checksums and index.

use super::checksum::{Crc64, DbChecksum, CHECKSUM_FLAG};
use super::index::put_entry;
use super::*;

/// xorshift64*: deterministic test data without a dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A page that looks a little like a table page: runs of structure and random bytes.
pub(crate) fn page(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut p = vec![0u8; size];
    let mut i = 0;
    while i < size {
        let run = (rng.below(48) + 4) as usize;
        let end = (i + run).min(size);
        match rng.below(3) {
            0 => p[i..end].fill(rng.next() as u8),
            1 => {
                for b in &mut p[i..end] {
                    *b = b'a' + rng.below(26) as u8;
                }
            }
            _ => {
                for b in &mut p[i..end] {
                    *b = rng.next() as u8;
                }
            }
        }
        i = end;
    }
    p
}

pub(super) fn header(page_size: u32, commit: u32, min: u64, max: u64) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size,
        commit,
        min_txid: min,
        max_txid: max,
        timestamp_ms: 1_700_000_000_000 + max as i64,
        ..Header::default()
    }
}

pub(super) fn encode(h: Header, pages: &[(u32, Vec<u8>)], c: Compression, post: u64) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), h, c).unwrap();
    for (pgno, data) in pages {
        enc.write_page(*pgno, data).unwrap();
    }
    enc.finish(post).unwrap().0
}

pub(super) fn db_checksum(pages: &[(u32, Vec<u8>)]) -> u64 {
    let mut c = DbChecksum::new();
    for (p, d) in pages {
        c.toggle_page(*p, d);
    }
    c.value()
}

/// One frame of a hand-built file: any flags and payload, plus the decompressed page the
/// checksum must cover.
pub(super) struct RawFrame {
    pub(super) pgno: u32,
    pub(super) flags: u16,
    pub(super) payload: Vec<u8>,
    pub(super) page: Vec<u8>,
}

/// Builds a file byte by byte with a correct file checksum and index, so tests can feed
/// the decoder structurally wrong but checksum-valid files.
pub(super) fn raw_file(header: &[u8; HEADER_SIZE], frames: &[RawFrame], post: u64) -> Vec<u8> {
    let mut out = header.to_vec();
    let mut h = Crc64::new();
    h.update(header);
    let mut index = Vec::new();
    for f in frames {
        let offset = out.len() as u64;
        let fh = FrameHeader {
            pgno: f.pgno,
            flags: f.flags,
        }
        .encode();
        out.extend_from_slice(&fh);
        h.update(&fh);
        if f.flags & FRAME_FLAG_SIZE != 0 {
            let size = (f.payload.len() as u32).to_be_bytes();
            out.extend_from_slice(&size);
            h.update(&size);
        }
        out.extend_from_slice(&f.payload);
        h.update(&f.page);
        put_entry(
            &mut index,
            &PageIndexEntry {
                pgno: f.pgno,
                offset,
                size: (out.len() as u64 - offset) as u32,
            },
        );
    }
    let mut tail = END_MARKER.to_vec();
    tail.extend_from_slice(&index);
    tail.push(0);
    tail.extend_from_slice(&(index.len() as u64 + 1).to_be_bytes());
    tail.extend_from_slice(&post.to_be_bytes());
    h.update(&tail);
    out.extend_from_slice(&tail);
    out.extend_from_slice(&(CHECKSUM_FLAG | h.finish()).to_be_bytes());
    out
}

pub(super) fn lz4_frame(page: &[u8]) -> RawFrame {
    RawFrame {
        pgno: 0,
        flags: FRAME_FLAG_SIZE,
        payload: lz4_flex::block::compress(page),
        page: page.to_vec(),
    }
}

pub(super) fn at(mut f: RawFrame, pgno: u32) -> RawFrame {
    f.pgno = pgno;
    f
}

pub(super) fn small_file() -> Vec<u8> {
    let mut rng = Rng::new(9);
    let pages: Vec<(u32, Vec<u8>)> = (1..=3).map(|p| (p, page(&mut rng, 512))).collect();
    let mut h = header(512, 3, 1, 4);
    h.flags = 0;
    encode(h, &pages, Compression::Lz4, db_checksum(&pages))
}
