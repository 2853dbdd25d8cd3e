//! Page frames: `u32 pgno | u16 flags | [u32 compressed_len] | payload`.
//!
//! Three payload encodings are accepted on read:
//!
//! | flags    | payload                                                    | who writes it |
//! |----------|------------------------------------------------------------|---------------|
//! | `0x0001` | LZ4 raw block, length in the size field                    | Litestream ≥ 0.5.2, us (default) |
//! | `0x0000` | self-delimiting LZ4 frame, no size field ("legacy")        | Litestream 0.5.0/0.5.1 |
//! | `0x0003` | zstd frame, length in the size field                       | us, only when asked ([`Compression::Zstd`]) |
//!
//! The zstd encoding is our extension: `litestream restore` 0.5.17 refuses such files
//! (exit status 1, `invalid page header flags: 0x0003`, nothing written; see
//! `tests/ltx_interop.rs`), so it must only be used for replicas nothing else reads.
//!
//! Decompression is bounded: a size field larger than the worst-case compressed size of one
//! page is rejected before anything is allocated, and the output must be exactly one page.

use std::io::Read;

use super::checksum::Crc64;
use super::error::{read_full, Error, Result};
use super::lz4frame::read_lz4_frame;

/// Size of the `pgno | flags` frame header (also the size of the end marker).
pub const FRAME_HEADER_SIZE: usize = 6;
/// Size of the compressed-length field that follows the header when [`FRAME_FLAG_SIZE`] is set.
pub const FRAME_SIZE_FIELD: usize = 4;
/// Page-frame flag: a u32 compressed length follows the header (payload is not an LZ4 frame).
pub const FRAME_FLAG_SIZE: u16 = 0x0001;
/// Page-frame flag (our extension): the payload is zstd instead of an LZ4 block.
/// Only valid together with [`FRAME_FLAG_SIZE`].
pub const FRAME_FLAG_ZSTD: u16 = 0x0002;
/// The 6 zero bytes after the last page frame.
pub const END_MARKER: [u8; FRAME_HEADER_SIZE] = [0; FRAME_HEADER_SIZE];

/// How an encoder compresses pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// LZ4 raw block (flags 0x0001): what Litestream writes and reads. The default.
    #[default]
    Lz4,
    /// zstd at the given level (flags 0x0003): smaller, slower, and refused by Litestream
    /// (`invalid page header flags: 0x0003`).
    Zstd(i32),
}

/// The 6-byte frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Page number (0 only in the end marker).
    pub pgno: u32,
    /// Frame flags.
    pub flags: u16,
}

impl FrameHeader {
    /// Parses the first 6 bytes of `b` (which must be at least that long).
    pub fn parse(b: &[u8; FRAME_HEADER_SIZE]) -> FrameHeader {
        FrameHeader {
            pgno: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            flags: u16::from_be_bytes([b[4], b[5]]),
        }
    }

    /// Encodes the header.
    pub fn encode(&self) -> [u8; FRAME_HEADER_SIZE] {
        let mut b = [0u8; FRAME_HEADER_SIZE];
        b[..4].copy_from_slice(&self.pgno.to_be_bytes());
        b[4..].copy_from_slice(&self.flags.to_be_bytes());
        b
    }

    /// True for the end marker (pgno 0, flags 0).
    pub fn is_end(&self) -> bool {
        self.pgno == 0 && self.flags == 0
    }

    /// Checks the flags and the page number; the end marker is not a valid page header.
    pub fn validate(&self) -> Result<()> {
        if self.pgno == 0 {
            return Err(Error::ZeroPgno { flags: self.flags });
        }
        match self.flags {
            0 | FRAME_FLAG_SIZE => Ok(()),
            f if f == FRAME_FLAG_SIZE | FRAME_FLAG_ZSTD => Ok(()),
            flags => Err(Error::UnknownFrameFlags { pgno: self.pgno, flags }),
        }
    }
}

/// Largest compressed length accepted in a frame with `flags` for `page_size`-byte pages:
/// the worst-case output of the compressor for one page. Anything claiming more is not a
/// page, and is refused before a buffer is sized from it.
pub fn max_compressed_len(page_size: u32, flags: u16) -> usize {
    let n = page_size as usize;
    if flags & FRAME_FLAG_ZSTD != 0 {
        zstd::zstd_safe::compress_bound(n)
    } else {
        lz4_flex::block::get_maximum_output_size(n)
    }
}

/// Bytes a legacy frame (one LZ4 frame in one block, as Litestream 0.5.0/0.5.1 wrote each
/// page) adds around its compressed block: the largest frame header (magic, FLG, BD,
/// content size, dictionary id, header checksum), block size, block checksum, end mark and
/// content checksum.
const LEGACY_FRAME_OVERHEAD: usize = 19 + 4 + 4 + 4 + 4;

/// Largest page frame (header, size field or LZ4 frame overhead, payload) any writer
/// produces for one `page_size`-byte page. A page index entry claiming more points at
/// something that is not one page, and must be refused before a ranged GET of that size.
pub fn max_frame_len(page_size: u32) -> usize {
    let lz4 = max_compressed_len(page_size, FRAME_FLAG_SIZE);
    let zstd = max_compressed_len(page_size, FRAME_FLAG_SIZE | FRAME_FLAG_ZSTD);
    FRAME_HEADER_SIZE + (FRAME_SIZE_FIELD + lz4.max(zstd)).max(LEGACY_FRAME_OVERHEAD + lz4)
}

/// Reusable page compressor: keeps the LZ4 hash table, the zstd context and the output
/// buffer across pages so encoding allocates nothing per page.
pub struct PageCompressor {
    compression: Compression,
    page_size: usize,
    table: lz4_flex::block::CompressTable,
    zstd: Option<zstd::bulk::Compressor<'static>>,
    buf: Vec<u8>,
}

impl std::fmt::Debug for PageCompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCompressor")
            .field("compression", &self.compression)
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl PageCompressor {
    /// A compressor for pages of `page_size` bytes.
    pub fn new(compression: Compression, page_size: u32) -> Result<Self> {
        let flags = match compression {
            Compression::Lz4 => FRAME_FLAG_SIZE,
            Compression::Zstd(_) => FRAME_FLAG_SIZE | FRAME_FLAG_ZSTD,
        };
        let zstd = match compression {
            Compression::Lz4 => None,
            Compression::Zstd(level) => {
                Some(zstd::bulk::Compressor::new(level).map_err(|e| Error::Compress(e.to_string()))?)
            }
        };
        // The small (16-bit) table only works below 64 KiB of input.
        let table = if page_size as usize >= u16::MAX as usize {
            lz4_flex::block::CompressTable::large()
        } else {
            lz4_flex::block::CompressTable::small()
        };
        Ok(PageCompressor {
            compression,
            page_size: page_size as usize,
            table,
            zstd,
            buf: vec![0u8; max_compressed_len(page_size, flags)],
        })
    }

    /// The configured compression.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// Compresses one page; returns the frame flags to use and the payload.
    pub fn compress(&mut self, page: &[u8]) -> Result<(u16, &[u8])> {
        if page.len() != self.page_size {
            return Err(Error::PageSizeMismatch {
                expected: self.page_size as u32,
                actual: page.len(),
            });
        }
        match &mut self.zstd {
            None => {
                let n = lz4_flex::block::compress_into_with_table(page, &mut self.buf, &mut self.table)
                    .map_err(|e| Error::Compress(e.to_string()))?;
                Ok((FRAME_FLAG_SIZE, &self.buf[..n]))
            }
            Some(z) => {
                let n = z
                    .compress_to_buffer(page, &mut self.buf[..])
                    .map_err(|e| Error::Compress(e.to_string()))?;
                Ok((FRAME_FLAG_SIZE | FRAME_FLAG_ZSTD, &self.buf[..n]))
            }
        }
    }
}

/// Reusable page decompressor: holds the buffer for compressed bytes and a zstd context
/// (created on first use, since almost every file is LZ4).
#[derive(Default)]
pub struct PageDecompressor {
    buf: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

impl std::fmt::Debug for PageDecompressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageDecompressor").finish_non_exhaustive()
    }
}

impl PageDecompressor {
    /// A decompressor with empty buffers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Decompresses a sized payload (flags 0x0001 or 0x0003) into `out`, which must come
    /// out exactly full.
    pub fn decompress_sized(&mut self, pgno: u32, flags: u16, payload: &[u8], out: &mut [u8]) -> Result<()> {
        let n = if flags & FRAME_FLAG_ZSTD != 0 {
            if self.zstd.is_none() {
                self.zstd = Some(zstd::bulk::Decompressor::new().map_err(|e| Error::Decompress {
                    pgno,
                    reason: e.to_string(),
                })?);
            }
            let z = self.zstd.as_mut().ok_or(Error::Usage("zstd context"))?;
            // Writes at most out.len() bytes: a frame that would produce more fails here.
            z.decompress_to_buffer(payload, out).map_err(|e| Error::Decompress {
                pgno,
                reason: e.to_string(),
            })?
        } else {
            lz4_block_into(payload, out).map_err(|reason| Error::Decompress { pgno, reason })?
        };
        if n != out.len() {
            return Err(Error::DecompressedSize {
                pgno,
                expected: out.len(),
                actual: n,
            });
        }
        Ok(())
    }

    /// Reads the rest of a frame whose header `hdr` was already read (and hashed) from `r`:
    /// the size field if any, then the payload, decompressed into `out` (one page). Feeds
    /// the size field and the decompressed page to `hasher` (if any: a lone frame read by
    /// a lazy replica has no file checksum to feed), as the file checksum wants.
    /// Returns the number of bytes read after the header.
    pub(crate) fn read_payload<R: Read + ?Sized>(
        &mut self,
        r: &mut R,
        hdr: FrameHeader,
        out: &mut [u8],
        mut hasher: Option<&mut Crc64>,
    ) -> Result<u64> {
        let consumed = if hdr.flags & FRAME_FLAG_SIZE != 0 {
            let mut size = [0u8; FRAME_SIZE_FIELD];
            read_full(r, &mut size, "page frame size")?;
            if let Some(h) = hasher.as_deref_mut() {
                h.update(&size);
            }
            let len = u32::from_be_bytes(size);
            let max = max_compressed_len(out.len() as u32, hdr.flags);
            if len as usize > max {
                return Err(Error::FrameTooLarge {
                    pgno: hdr.pgno,
                    len: len as u64,
                    max: max as u64,
                });
            }
            // Grown, never cleared: zeroing a page's worth per frame showed in a
            // restore's profile.
            let mut buf = std::mem::take(&mut self.buf);
            let len = len as usize;
            if buf.len() < len {
                buf.resize(len, 0);
            }
            let res = read_full(r, &mut buf[..len], "page frame payload")
                .and_then(|()| self.decompress_sized(hdr.pgno, hdr.flags, &buf[..len], out));
            self.buf = buf;
            res?;
            (FRAME_SIZE_FIELD + len) as u64
        } else {
            read_lz4_frame(r, hdr.pgno, out, &mut self.buf)?
        };
        if let Some(h) = hasher {
            h.update(out);
        }
        Ok(consumed)
    }
}

/// Decompresses one LZ4 block into `out` (its capacity), returning the bytes produced.
///
/// liblz4's `LZ4_decompress_safe` rather than lz4_flex's decoder (which still encodes):
/// lz4_flex's fast decoder copies long literal runs slowly, and pages of random-looking
/// data (blobs, UUIDs, encrypted or compressed values) are nearly all literals —
/// 2.1 GiB/s against liblz4's 26 GiB/s on such pages, 2.6 against 2.9 on text-like ones.
/// It was the largest single cost of a restore.
fn lz4_block_into(payload: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    let capacity = i32::try_from(out.len()).map_err(|_| "page too large for LZ4".to_string())?;
    lz4::block::decompress_to_buffer(payload, Some(capacity), out).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(n: usize) -> Vec<u8> {
        (0..n).map(|i| ((i * 31) % 251) as u8 ^ (i / 97) as u8).collect()
    }

    #[test]
    fn header_flags() {
        for (flags, ok) in [
            (0u16, true),
            (1, true),
            (3, true),
            (2, false),
            (4, false),
            (0x8001, false),
        ] {
            let h = FrameHeader { pgno: 5, flags };
            assert_eq!(h.validate().is_ok(), ok, "{flags:#x}");
            assert_eq!(FrameHeader::parse(&h.encode()), h);
        }
        assert!(matches!(
            FrameHeader { pgno: 0, flags: 1 }.validate(),
            Err(Error::ZeroPgno { flags: 1 })
        ));
        assert!(FrameHeader::parse(&END_MARKER).is_end());
    }

    #[test]
    fn compress_round_trip_both_codecs() {
        let mut d = PageDecompressor::new();
        for c in [Compression::Lz4, Compression::Zstd(1), Compression::Zstd(3)] {
            for ps in [512u32, 4096, 65536] {
                let mut comp = PageCompressor::new(c, ps).unwrap();
                for data in [page(ps as usize), vec![0u8; ps as usize]] {
                    let (flags, payload) = comp.compress(&data).unwrap();
                    assert!(payload.len() <= max_compressed_len(ps, flags));
                    let payload = payload.to_vec();
                    let mut out = vec![1u8; ps as usize];
                    d.decompress_sized(9, flags, &payload, &mut out).unwrap();
                    assert_eq!(out, data);
                    // Too small / too large output buffers are typed errors.
                    let mut small = vec![0u8; ps as usize / 2];
                    assert!(d.decompress_sized(9, flags, &payload, &mut small).is_err());
                    let mut big = vec![0u8; ps as usize * 2];
                    assert!(matches!(
                        d.decompress_sized(9, flags, &payload, &mut big),
                        Err(Error::DecompressedSize { .. })
                    ));
                }
            }
        }
    }

    #[test]
    fn huge_size_field_is_refused_before_allocating() {
        let mut d = PageDecompressor::new();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xffff_fff0u32.to_be_bytes());
        let mut out = vec![0u8; 4096];
        let mut h = Crc64::new();
        let e = d
            .read_payload(
                &mut &bytes[..],
                FrameHeader { pgno: 1, flags: 1 },
                &mut out,
                Some(&mut h),
            )
            .unwrap_err();
        assert!(matches!(e, Error::FrameTooLarge { .. }), "{e}");
        assert!(d.buf.capacity() < 1 << 16);
    }

    #[test]
    fn wrong_page_size_to_compressor() {
        let mut c = PageCompressor::new(Compression::Lz4, 4096).unwrap();
        assert!(matches!(c.compress(&[0u8; 100]), Err(Error::PageSizeMismatch { .. })));
    }
}
