//! Decoder for the payload of legacy page frames: one self-delimiting LZ4 *frame*
//! (Litestream 0.5.0/0.5.1 wrote pages this way, with no size field in front).
//!
//! We parse the frame format ourselves instead of using a streaming LZ4 reader because the
//! frame is embedded in the middle of an LTX file: a generic reader may read ahead past
//! its end (Go's needed a `LimitedReader` workaround for exactly that), and we must know
//! the exact number of bytes it occupied to check the page index. Parsing also lets us
//! bound every allocation by the page size before reading a byte of payload.
//!
//! Layout (all little-endian): magic `04 22 4D 18`, FLG, BD, [content size u64],
//! [dict id u32], header checksum byte, then blocks `u32 size (bit 31 = stored raw) |
//! data | [xxh32 of data]`, an end mark `u32 0`, and [xxh32 of the content].

use std::io::Read;

use super::error::{read_full, Error, Result};
use super::xxh32::xxh32;

const MAGIC: u32 = 0x184D_2204;

const FLG_VERSION_MASK: u8 = 0b1100_0000;
const FLG_VERSION_01: u8 = 0b0100_0000;
const FLG_BLOCK_INDEPENDENT: u8 = 0b0010_0000;
const FLG_BLOCK_CHECKSUM: u8 = 0b0001_0000;
const FLG_CONTENT_SIZE: u8 = 0b0000_1000;
const FLG_CONTENT_CHECKSUM: u8 = 0b0000_0100;
const FLG_RESERVED: u8 = 0b0000_0010;
const FLG_DICT_ID: u8 = 0b0000_0001;

const BD_RESERVED: u8 = 0b1000_1111;

const BLOCK_UNCOMPRESSED: u32 = 0x8000_0000;

/// Largest compressed size of one LZ4 block whose output is at most `n` bytes.
fn block_bound(n: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(n)
}

fn err(pgno: u32, reason: impl Into<String>) -> Error {
    Error::Decompress {
        pgno,
        reason: reason.into(),
    }
}

/// Counts bytes pulled from the underlying reader so the frame length is known exactly.
struct Counted<'a, R: Read + ?Sized> {
    r: &'a mut R,
    n: u64,
}

impl<R: Read + ?Sized> Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        read_full(self.r, buf, what)?;
        self.n += buf.len() as u64;
        Ok(())
    }

    fn u32_le(&mut self, what: &'static str) -> Result<u32> {
        let mut b = [0u8; 4];
        self.read(&mut b, what)?;
        Ok(u32::from_le_bytes(b))
    }
}

/// Reads one LZ4 frame from `r` and decompresses it into `out`, which it must fill
/// exactly. `scratch` is reused for compressed blocks. Returns the frame's length in bytes.
pub(crate) fn read_lz4_frame<R: Read + ?Sized>(
    r: &mut R,
    pgno: u32,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<u64> {
    let mut c = Counted { r, n: 0 };
    let magic = c.u32_le("LZ4 frame magic")?;
    if magic != MAGIC {
        return Err(err(pgno, format!("bad LZ4 frame magic {magic:#010x}")));
    }

    // Frame descriptor: FLG, BD, optional fields; its xxh32 >> 8 is the header checksum.
    let mut desc = [0u8; 2 + 8 + 4];
    c.read(&mut desc[..2], "LZ4 frame descriptor")?;
    let (flg, bd) = (desc[0], desc[1]);
    if flg & FLG_VERSION_MASK != FLG_VERSION_01 {
        return Err(err(pgno, format!("unsupported LZ4 frame version (FLG {flg:#04x})")));
    }
    if flg & FLG_RESERVED != 0 || bd & BD_RESERVED != 0 {
        return Err(err(pgno, "reserved LZ4 frame descriptor bits set"));
    }
    let max_block = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        other => return Err(err(pgno, format!("bad LZ4 block max size id {other}"))),
    };
    let mut desc_len = 2;
    if flg & FLG_CONTENT_SIZE != 0 {
        c.read(&mut desc[desc_len..desc_len + 8], "LZ4 content size")?;
        let mut b = [0u8; 8];
        b.copy_from_slice(&desc[desc_len..desc_len + 8]);
        let size = u64::from_le_bytes(b);
        if size != out.len() as u64 {
            return Err(Error::DecompressedSize {
                pgno,
                expected: out.len(),
                actual: usize::try_from(size).unwrap_or(usize::MAX),
            });
        }
        desc_len += 8;
    }
    if flg & FLG_DICT_ID != 0 {
        // Pages were never compressed against a dictionary; we could not decode it.
        return Err(err(pgno, "LZ4 frame needs a dictionary"));
    }
    let mut hc = [0u8; 1];
    c.read(&mut hc, "LZ4 header checksum")?;
    let want_hc = (xxh32(&desc[..desc_len], 0) >> 8) as u8;
    if hc[0] != want_hc {
        return Err(err(
            pgno,
            format!("LZ4 header checksum {:#04x}, expected {want_hc:#04x}", hc[0]),
        ));
    }

    let independent = flg & FLG_BLOCK_INDEPENDENT != 0;
    let mut pos = 0usize;
    loop {
        let word = c.u32_le("LZ4 block size")?;
        if word == 0 {
            break;
        }
        let raw = word & BLOCK_UNCOMPRESSED != 0;
        let size = (word & !BLOCK_UNCOMPRESSED) as usize;
        let room = out.len() - pos;
        // Bound the block before reading it: it must fit the frame's block size and
        // could only ever produce what is left of the page.
        let limit = if raw { room } else { block_bound(room) };
        if size > max_block || size > limit {
            return Err(Error::FrameTooLarge {
                pgno,
                len: size as u64,
                max: limit.min(max_block) as u64,
            });
        }
        if size == 0 {
            // Encoders never write empty blocks; refusing them also bounds the loop.
            return Err(err(pgno, "empty LZ4 block"));
        }
        let produced = if raw {
            c.read(&mut out[pos..pos + size], "LZ4 block")?;
            size
        } else {
            scratch.clear();
            scratch.resize(size, 0);
            c.read(scratch, "LZ4 block")?;
            let (prev, rest) = out.split_at_mut(pos);
            let res = if independent || pos == 0 {
                lz4_flex::block::decompress_into(scratch, rest)
            } else {
                // Linked blocks may copy from the previous blocks' output.
                lz4_flex::block::decompress_into_with_dict(scratch, rest, prev)
            };
            res.map_err(|e| err(pgno, e.to_string()))?
        };
        if produced == 0 {
            return Err(err(pgno, "empty LZ4 block"));
        }
        if flg & FLG_BLOCK_CHECKSUM != 0 {
            let stored = c.u32_le("LZ4 block checksum")?;
            let data: &[u8] = if raw { &out[pos..pos + size] } else { scratch };
            if xxh32(data, 0) != stored {
                return Err(err(pgno, "LZ4 block checksum mismatch"));
            }
        }
        pos += produced;
    }
    if pos != out.len() {
        return Err(Error::DecompressedSize {
            pgno,
            expected: out.len(),
            actual: pos,
        });
    }
    if flg & FLG_CONTENT_CHECKSUM != 0 {
        let stored = c.u32_le("LZ4 content checksum")?;
        if xxh32(out, 0) != stored {
            return Err(err(pgno, "LZ4 content checksum mismatch"));
        }
    }
    Ok(c.n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    use std::io::Write;

    fn page(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                if i % 64 < 40 {
                    (i / 64) as u8
                } else {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                }
            })
            .collect()
    }

    fn encode(data: &[u8], info: FrameInfo) -> Vec<u8> {
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn infos() -> Vec<FrameInfo> {
        let mut v = Vec::new();
        for block_checksums in [false, true] {
            for content_checksum in [false, true] {
                for content_size in [None, Some(4096u64)] {
                    for mode in [BlockMode::Independent, BlockMode::Linked] {
                        for bs in [BlockSize::Max64KB, BlockSize::Max4MB] {
                            let mut fi = FrameInfo::new()
                                .block_checksums(block_checksums)
                                .content_checksum(content_checksum)
                                .block_mode(mode)
                                .block_size(bs);
                            fi.content_size = content_size;
                            v.push(fi);
                        }
                    }
                }
            }
        }
        v
    }

    #[test]
    fn decodes_frames_from_another_encoder() {
        let mut scratch = Vec::new();
        for (i, info) in infos().into_iter().enumerate() {
            for data in [page(4096, i as u32), vec![0u8; 4096], page(4096, 99)] {
                let mut f = encode(&data, info.clone());
                let len = f.len();
                f.extend_from_slice(b"NEXTFRAME");
                let mut r = &f[..];
                let mut out = vec![0u8; 4096];
                let n = read_lz4_frame(&mut r, 3, &mut out, &mut scratch).unwrap();
                assert_eq!(n as usize, len, "info {i}");
                assert_eq!(out, data);
                assert_eq!(r, b"NEXTFRAME", "must not read past the frame");
            }
        }
    }

    #[test]
    fn multi_block_frames_linked_and_independent() {
        // Flushing mid-page forces several blocks; in linked mode later blocks may copy
        // from earlier ones, which exercises the dictionary path.
        let data: Vec<u8> = (0..8192).map(|i| ((i % 700) as u8) ^ 0x5a).collect();
        let mut scratch = Vec::new();
        for mode in [BlockMode::Linked, BlockMode::Independent] {
            let info = FrameInfo::new().block_mode(mode).block_checksums(true);
            let mut e = FrameEncoder::with_frame_info(info, Vec::new());
            for chunk in data.chunks(1500) {
                e.write_all(chunk).unwrap();
                e.flush().unwrap();
            }
            let f = e.finish().unwrap();
            let mut out = vec![0u8; data.len()];
            let n = read_lz4_frame(&mut &f[..], 1, &mut out, &mut scratch).unwrap();
            assert_eq!(n as usize, f.len());
            assert_eq!(out, data, "{mode:?}");
        }
    }

    #[test]
    fn every_truncation_and_flip_is_an_error_or_exact() {
        let data = page(4096, 7);
        let info = FrameInfo::new().block_checksums(true).content_checksum(true);
        let f = encode(&data, info);
        let mut scratch = Vec::new();
        let mut out = vec![0u8; 4096];
        for len in 0..f.len() {
            let mut r = &f[..len];
            assert!(read_lz4_frame(&mut r, 1, &mut out, &mut scratch).is_err());
        }
        // With both checksums on, any flipped byte must be caught.
        for i in 0..f.len() {
            let mut g = f.clone();
            g[i] ^= 0x40;
            let mut r = &g[..];
            assert!(
                read_lz4_frame(&mut r, 1, &mut out, &mut scratch).is_err(),
                "flip at {i}"
            );
        }
    }

    #[test]
    fn wrong_size_and_huge_blocks() {
        let mut scratch = Vec::new();
        let f = encode(&page(2048, 1), FrameInfo::new());
        let mut out = vec![0u8; 4096];
        assert!(matches!(
            read_lz4_frame(&mut &f[..], 1, &mut out, &mut scratch),
            Err(Error::DecompressedSize { .. })
        ));
        let mut out = vec![0u8; 1024];
        assert!(read_lz4_frame(&mut &f[..], 1, &mut out, &mut scratch).is_err());

        // Hand-made header claiming a 2 GiB-ish block: rejected before allocating.
        let mut h = MAGIC.to_le_bytes().to_vec();
        let desc = [FLG_VERSION_01 | FLG_BLOCK_INDEPENDENT, 7 << 4];
        h.extend_from_slice(&desc);
        h.push((xxh32(&desc, 0) >> 8) as u8);
        h.extend_from_slice(&0x7fff_fff0u32.to_le_bytes());
        let mut out = vec![0u8; 4096];
        assert!(matches!(
            read_lz4_frame(&mut &h[..], 1, &mut out, &mut scratch),
            Err(Error::FrameTooLarge { .. })
        ));
        assert!(scratch.capacity() < 1 << 20);
    }
}
