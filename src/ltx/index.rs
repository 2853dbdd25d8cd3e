//! The page index, and random access to a file from its tail alone.
//!
//! A lazy replica never downloads whole files: it reads the last few KiB (trailer, index
//! size, index) with one ranged GET, then fetches single page frames `[offset,
//! offset+size)` on demand. Everything here works on such fragments and validates them
//! as strictly as the streaming decoder does, because storage may hand us anything.
//!
//! Tail layout: `… frames | end marker (6 zero bytes) | index entries | varint 0 |
//! u64 index length | u64 post-apply checksum | u64 file checksum`. An encrypted (v4)
//! file has `index tag (16) | recipient block (80 × recipients)` between the index
//! length and the trailer: the tail alone holds everything needed to open the file.

use super::crypto::{unwrap_content_key, FileKeys, PrivateKey, SEAL_OVERHEAD, TAG_SIZE};
use super::error::{Error, Result};
use super::frame::{
    max_compressed_len, max_frame_len, FrameHeader, PageDecompressor, FRAME_FLAG_SIZE, FRAME_HEADER_SIZE,
    FRAME_SIZE_FIELD,
};
use super::header::{Header, Trailer, HEADER_SIZE, TRAILER_SIZE};
use super::varint::{self, VarintError};

/// Bytes after the index entries: the u64 index length and the trailer.
pub const INDEX_FOOTER_SIZE: usize = 8 + TRAILER_SIZE;
/// Smallest possible LTX file: header, end marker, empty index (one 0 byte), footer.
pub const MIN_FILE_SIZE: u64 = (HEADER_SIZE + FRAME_HEADER_SIZE + 1 + INDEX_FOOTER_SIZE) as u64;
/// A reasonable first guess for how much of the tail to fetch (holds the index of a file
/// with a few thousand pages).
pub const DEFAULT_TAIL_GUESS: u64 = 32 * 1024;

/// Where one page frame lives in its file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageIndexEntry {
    /// Page number.
    pub pgno: u32,
    /// Absolute offset of the frame (its 6-byte header) in the file.
    pub offset: u64,
    /// Length of the whole frame: header, size field and payload.
    pub size: u32,
}

/// The page index of one file: entries in ascending page order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageIndex {
    entries: Vec<PageIndexEntry>,
}

impl PageIndex {
    /// The entries, ascending by page number (and by offset).
    pub fn entries(&self) -> &[PageIndexEntry] {
        &self.entries
    }

    /// Consumes the index, returning its entries.
    pub fn into_entries(self) -> Vec<PageIndexEntry> {
        self.entries
    }

    /// Number of pages in the file.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the file holds no pages.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The frame of `pgno`, if the file has it.
    pub fn get(&self, pgno: u32) -> Option<&PageIndexEntry> {
        self.entries
            .binary_search_by_key(&pgno, |e| e.pgno)
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Checks the index against the file's header (read separately by a lazy reader):
    /// no page above commit, no lock page, no frame larger than one page can compress
    /// to, and a snapshot lists every page.
    pub fn check_header(&self, header: &Header) -> Result<()> {
        let lock = header.lock_pgno();
        let max_frame = max_frame_len(header.page_size) + if header.is_encrypted() { SEAL_OVERHEAD } else { 0 };
        for e in &self.entries {
            if e.size as usize > max_frame {
                return Err(Error::index(format!(
                    "page {} has a {}-byte frame, more than any {}-byte page takes ({max_frame})",
                    e.pgno, e.size, header.page_size
                )));
            }
            if e.pgno > header.commit {
                return Err(Error::index(format!("page {} above commit {}", e.pgno, header.commit)));
            }
            if e.pgno == lock {
                return Err(Error::index(format!("lists the lock page {lock}")));
            }
        }
        if header.is_snapshot() {
            let want = header.commit as u64 - u64::from(header.commit >= lock);
            // Ascending, unique, within 1..=commit and lock-free: the count decides.
            if self.entries.len() as u64 != want {
                return Err(Error::index(format!(
                    "snapshot with commit {} lists {} pages",
                    header.commit,
                    self.entries.len()
                )));
            }
        }
        Ok(())
    }
}

/// Appends one index entry to `out`.
pub(crate) fn put_entry(out: &mut Vec<u8>, e: &PageIndexEntry) {
    varint::put(out, e.pgno as u64);
    varint::put(out, e.offset);
    varint::put(out, e.size as u64);
}

fn read_varint(b: &[u8], pos: &mut usize, what: &str) -> Result<u64> {
    match varint::get(&b[*pos..]) {
        Ok((v, n)) => {
            *pos += n;
            Ok(v)
        }
        Err(VarintError::Truncated) => Err(Error::index(format!("{what}: truncated varint"))),
        Err(VarintError::Overflow) => Err(Error::index(format!("{what}: varint overflows"))),
    }
}

/// Parses the index bytes (entries and terminator, exactly) of a file whose page frames
/// occupy `[frames_start, frames_end)` (`frames_start` is 100, or after the recipient
/// block of an encrypted file). Frames are laid end to end, so the entries must tile that
/// range exactly: the first at `frames_start`, each starting where the previous ended.
pub(crate) fn parse_index_bytes(b: &[u8], frames_start: u64, frames_end: u64) -> Result<PageIndex> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    let mut next_offset = frames_start;
    let mut prev_pgno = 0u32;
    loop {
        let pgno = read_varint(b, &mut pos, "page number")?;
        if pgno == 0 {
            break;
        }
        let offset = read_varint(b, &mut pos, "offset")?;
        let size = read_varint(b, &mut pos, "size")?;
        let pgno = u32::try_from(pgno).map_err(|_| Error::index(format!("page number {pgno} exceeds 32 bits")))?;
        if pgno <= prev_pgno {
            return Err(Error::index(format!("page {pgno} listed after page {prev_pgno}")));
        }
        if offset != next_offset {
            return Err(Error::index(format!(
                "page {pgno} at offset {offset}, expected {next_offset}"
            )));
        }
        let size32 = u32::try_from(size)
            .ok()
            .filter(|&s| s as usize > FRAME_HEADER_SIZE)
            .ok_or_else(|| Error::index(format!("page {pgno} has frame size {size}")))?;
        let end = offset.checked_add(size).filter(|&e| e <= frames_end).ok_or_else(|| {
            Error::index(format!(
                "page {pgno} frame [{offset}, +{size}) runs past the page frames (end {frames_end})"
            ))
        })?;
        entries.push(PageIndexEntry {
            pgno,
            offset,
            size: size32,
        });
        prev_pgno = pgno;
        next_offset = end;
    }
    if pos != b.len() {
        return Err(Error::index("bytes between the terminator and the index size"));
    }
    if next_offset != frames_end {
        return Err(Error::index(format!(
            "frames end at {frames_end} but the index covers up to {next_offset}"
        )));
    }
    Ok(PageIndex { entries })
}

/// Everything the tail of a file tells: the index and the trailer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileTail {
    /// The page index.
    pub index: PageIndex,
    /// The trailer (file checksum unverified: that needs the whole file).
    pub trailer: Trailer,
    /// Offset of the first index byte (just after the end marker).
    pub index_offset: u64,
    /// An encrypted file's tail: what opens and authenticates it.
    pub sealed: Option<SealedTail>,
}

/// The part of an encrypted file's tail that belongs to its encryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedTail {
    /// The index bytes the tag covers: entries, terminator and the u64 index length.
    pub index_bytes: Vec<u8>,
    /// The index tag.
    pub tag: [u8; TAG_SIZE],
    /// The trailing copy of the recipient block.
    pub recipient_block: Vec<u8>,
}

impl SealedTail {
    /// Checks the index tag with the file's keys ([`Error::IndexAuth`] if it does not
    /// match: a changed index, or a recipient block that is not this file's).
    pub fn authenticate(&self, keys: &FileKeys) -> Result<()> {
        keys.check_index_tag(&self.index_bytes, &self.tag)
    }
}

/// Result of [`parse_tail`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TailRead {
    /// The tail held the whole index.
    Complete(FileTail),
    /// Fetch the file from this offset to its end and call again.
    NeedFrom(u64),
}

/// Parses the page index from the last `tail.len()` bytes of a `file_len`-byte plaintext
/// file, or says which offset the tail must start at. A second call with at least that
/// much never asks again.
pub fn parse_tail(file_len: u64, tail: &[u8]) -> Result<TailRead> {
    parse_tail_of(&Header::default(), file_len, tail)
}

/// [`parse_tail`] for the file whose header is `header` (read separately): an encrypted
/// file's tail also holds the index tag and the recipient block ([`FileTail::sealed`]).
pub fn parse_tail_of(header: &Header, file_len: u64, tail: &[u8]) -> Result<TailRead> {
    parse_tail_inner(header, file_len, tail, None).map(|(read, _)| read)
}

/// [`parse_tail_of`] for an encrypted file, opened with `key`: the content key comes from
/// the trailing recipient block, and the index tag is checked *before* the index is
/// parsed, so a changed index is [`Error::IndexAuth`] whatever it was changed to. Returns
/// the file's keys with a complete tail. `head` is the file's first 100 bytes as stored.
pub fn open_tail(
    header: &Header,
    head: &[u8; HEADER_SIZE],
    file_len: u64,
    tail: &[u8],
    key: &PrivateKey,
) -> Result<(TailRead, Option<FileKeys>)> {
    parse_tail_inner(header, file_len, tail, Some((head, key)))
}

fn parse_tail_inner(
    header: &Header,
    file_len: u64,
    tail: &[u8],
    opener: Option<(&[u8; HEADER_SIZE], &PrivateKey)>,
) -> Result<(TailRead, Option<FileKeys>)> {
    let seal_tail = if header.is_encrypted() {
        (TAG_SIZE + header.recipient_block_size()) as u64
    } else {
        0
    };
    let frames_start = header.frames_offset();
    if tail.len() as u64 > file_len {
        return Err(Error::Usage("tail longer than the file"));
    }
    if file_len < MIN_FILE_SIZE + header.recipient_block_size() as u64 + seal_tail {
        return Err(Error::Truncated("file shorter than the smallest LTX file"));
    }
    let tail_start = file_len - tail.len() as u64;
    let footer_len = INDEX_FOOTER_SIZE as u64 + seal_tail;
    let footer_start = file_len - footer_len;
    if tail_start > footer_start {
        return Ok((TailRead::NeedFrom(footer_start), None));
    }
    let footer = &tail[tail.len() - footer_len as usize..];
    let mut n = [0u8; 8];
    n.copy_from_slice(&footer[..8]);
    let index_len = u64::from_be_bytes(n);
    let trailer = Trailer::decode(&footer[footer.len() - TRAILER_SIZE..])?;
    trailer.validate_file_checksum()?;

    // The index sits between the end marker and the footer; the end marker after the
    // header (and recipient block) at the earliest.
    let min_index_offset = frames_start + FRAME_HEADER_SIZE as u64;
    let index_offset = footer_start
        .checked_sub(index_len)
        .filter(|&o| index_len >= 1 && o >= min_index_offset)
        .ok_or_else(|| Error::index(format!("index length {index_len} does not fit a {file_len}-byte file")))?;
    // Fetch the end marker too: it pins down where the frames stop.
    let marker_offset = index_offset - FRAME_HEADER_SIZE as u64;
    if tail_start > marker_offset {
        return Ok((TailRead::NeedFrom(marker_offset), None));
    }
    let rel = (marker_offset - tail_start) as usize;
    let marker = &tail[rel..rel + FRAME_HEADER_SIZE];
    if marker.iter().any(|&b| b != 0) {
        return Err(Error::index("no end marker before the index"));
    }
    let index_end = tail.len() - footer_len as usize;
    let index_bytes = &tail[rel + FRAME_HEADER_SIZE..index_end];
    let keys = match opener.filter(|_| header.is_encrypted()) {
        Some((head, key)) => {
            let tag_at = index_end + 8;
            let block = &tail[tag_at + TAG_SIZE..tail.len() - TRAILER_SIZE];
            let keys = FileKeys::new(&unwrap_content_key(block, key)?, head);
            keys.check_index_tag(&tail[rel + FRAME_HEADER_SIZE..tag_at], &tail[tag_at..tag_at + TAG_SIZE])?;
            Some(keys)
        }
        None => None,
    };
    let index = parse_index_bytes(index_bytes, frames_start, marker_offset)?;
    let sealed = header.is_encrypted().then(|| {
        let tag_at = index_end + 8;
        let mut tag = [0u8; TAG_SIZE];
        tag.copy_from_slice(&tail[tag_at..tag_at + TAG_SIZE]);
        SealedTail {
            index_bytes: tail[rel + FRAME_HEADER_SIZE..tag_at].to_vec(),
            tag,
            recipient_block: tail[tag_at + TAG_SIZE..tail.len() - TRAILER_SIZE].to_vec(),
        }
    });
    Ok((
        TailRead::Complete(FileTail {
            index,
            trailer,
            index_offset,
            sealed,
        }),
        keys,
    ))
}

/// Decodes one page from the bytes `[offset, offset+size)` of a file, as listed in its
/// index: checks the frame header (page number must be `expected_pgno`), that the frame
/// is exactly `frame.len()` bytes, and decompresses into `out` (one page).
pub fn read_page_frame(frame: &[u8], expected_pgno: u32, page_size: u32, out: &mut [u8]) -> Result<()> {
    read_page_frame_with(&mut PageDecompressor::new(), frame, expected_pgno, page_size, out)
}

/// Checks what every lone frame must satisfy before its payload is read: `out` is one
/// page, the frame holds a valid header and it is page `expected_pgno`'s.
fn frame_header_of(frame: &[u8], expected_pgno: u32, page_size: u32, out: &[u8]) -> Result<[u8; FRAME_HEADER_SIZE]> {
    if out.len() != page_size as usize {
        return Err(Error::PageSizeMismatch {
            expected: page_size,
            actual: out.len(),
        });
    }
    if frame.len() < FRAME_HEADER_SIZE {
        return Err(Error::Truncated("page frame header"));
    }
    let mut h = [0u8; FRAME_HEADER_SIZE];
    h.copy_from_slice(&frame[..FRAME_HEADER_SIZE]);
    let hdr = FrameHeader::parse(&h);
    hdr.validate()?;
    if hdr.pgno != expected_pgno {
        return Err(Error::index(format!(
            "frame holds page {}, index says {expected_pgno}",
            hdr.pgno
        )));
    }
    Ok(h)
}

/// [`read_page_frame`] reusing a decompressor's buffers across calls.
pub fn read_page_frame_with(
    dec: &mut PageDecompressor,
    frame: &[u8],
    expected_pgno: u32,
    page_size: u32,
    out: &mut [u8],
) -> Result<()> {
    let hdr = FrameHeader::parse(&frame_header_of(frame, expected_pgno, page_size, out)?);
    let mut rest = &frame[FRAME_HEADER_SIZE..];
    // A lone frame has no file checksum to feed.
    dec.read_payload(&mut rest, hdr, out, None)?;
    if !rest.is_empty() {
        return Err(Error::index(format!(
            "frame of page {} is {} bytes shorter than its index entry",
            hdr.pgno,
            rest.len()
        )));
    }
    Ok(())
}

/// [`read_page_frame_with`] for a frame of an encrypted file, opened with its `keys`: any
/// changed byte of the frame (or a frame of another file or page) is
/// [`Error::PageAuth`], never a wrong page.
pub fn open_page_frame(
    dec: &mut PageDecompressor,
    keys: &FileKeys,
    frame: &[u8],
    expected_pgno: u32,
    page_size: u32,
    out: &mut [u8],
) -> Result<()> {
    let h = frame_header_of(frame, expected_pgno, page_size, out)?;
    let hdr = FrameHeader::parse(&h);
    if hdr.flags & FRAME_FLAG_SIZE == 0 {
        return Err(Error::UnknownFrameFlags {
            pgno: hdr.pgno,
            flags: hdr.flags,
        });
    }
    let head = FRAME_HEADER_SIZE + FRAME_SIZE_FIELD;
    if frame.len() < head {
        return Err(Error::Truncated("page frame size"));
    }
    let len = u32::from_be_bytes([frame[6], frame[7], frame[8], frame[9]]) as usize;
    let max = max_compressed_len(page_size, hdr.flags) + SEAL_OVERHEAD;
    if len > max || frame.len() != head + len {
        return Err(Error::index(format!(
            "frame of page {} says {len} sealed bytes in a {}-byte frame",
            hdr.pgno,
            frame.len()
        )));
    }
    let mut sealed = frame[head..].to_vec();
    let compressed = keys.open_page(&h, &mut sealed)?;
    dec.decompress_sized(hdr.pgno, hdr.flags, compressed, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_bytes(entries: &[(u64, u64, u64)]) -> Vec<u8> {
        let mut b = Vec::new();
        for &(p, o, s) in entries {
            varint::put(&mut b, p);
            varint::put(&mut b, o);
            varint::put(&mut b, s);
        }
        b.push(0);
        b
    }

    #[test]
    fn parse_valid_and_lookup() {
        let b = index_bytes(&[(1, 100, 36), (5, 136, 40)]);
        let idx = parse_index_bytes(&b, 100, 176).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get(5).unwrap().offset, 136);
        assert!(idx.get(2).is_none());
        let empty = parse_index_bytes(&[0], 100, 100).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn a_frame_larger_than_any_page_is_refused_before_it_is_fetched() {
        // A decompression bomb's index: one page whose frame claims 8 MiB of a 8 MiB file.
        let header = Header {
            flags: crate::ltx::FLAG_NO_CHECKSUM,
            page_size: 4096,
            commit: 1,
            min_txid: 2,
            max_txid: 2,
            ..Default::default()
        };
        let max = max_frame_len(4096) as u64;
        let bomb = parse_index_bytes(&index_bytes(&[(1, 100, 8 << 20)]), 100, 100 + (8 << 20)).unwrap();
        let err = bomb.check_header(&header).unwrap_err().to_string();
        assert!(err.contains("more than any 4096-byte page takes"), "{err}");
        let just_over = parse_index_bytes(&index_bytes(&[(1, 100, max + 1)]), 100, 100 + max + 1).unwrap();
        assert!(just_over.check_header(&header).is_err());
        let largest = parse_index_bytes(&index_bytes(&[(1, 100, max)]), 100, 100 + max).unwrap();
        largest.check_header(&header).unwrap();
        // The bound covers what the compressors really produce for incompressible pages.
        let noise: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for ps in [512u32, 4096, 65536] {
            let lz4 = lz4_flex::block::compress(&noise[..ps as usize]).len();
            assert!(FRAME_HEADER_SIZE + 4 + lz4 <= max_frame_len(ps), "page size {ps}");
        }
    }

    #[test]
    fn parse_rejects() {
        let cases: Vec<(Vec<u8>, u64)> = vec![
            (index_bytes(&[(1, 100, 36), (1, 136, 40)]), 176), // duplicate
            (index_bytes(&[(2, 100, 36), (1, 136, 40)]), 176), // descending
            (index_bytes(&[(1, 101, 36)]), 137),               // not at 100
            (index_bytes(&[(1, 100, 36), (2, 140, 36)]), 176), // gap
            (index_bytes(&[(1, 100, 36)]), 130),               // past frames end
            (index_bytes(&[(1, 100, 36)]), 200),               // frames not covered
            (index_bytes(&[(1, 100, 3)]), 103),                // frame too small
            (index_bytes(&[(1 << 33, 100, 36)]), 136),         // pgno > u32
            (index_bytes(&[(1, 100, 1 << 40)]), 1 << 41),      // size > u32
            (index_bytes(&[(1, 100, u64::MAX)]), 136),         // overflow
            (vec![0x80], 100),                                 // truncated varint
            (vec![1, 100], 100),                               // truncated entry
            (vec![0, 0], 100),                                 // extra after terminator
            (vec![0xff; 11], 100),                             // overflow varint
        ];
        for (i, (b, end)) in cases.iter().enumerate() {
            assert!(
                matches!(parse_index_bytes(b, 100, *end), Err(Error::BadIndex(_))),
                "case {i}"
            );
        }
    }

    #[test]
    fn tail_asks_for_more() {
        // A fake file: header region, one 36-byte frame, end marker, index, footer.
        let idx = index_bytes(&[(1, 100, 36)]);
        let mut file = vec![0u8; 136];
        file.extend_from_slice(&[0; 6]);
        file.extend_from_slice(&idx);
        file.extend_from_slice(&(idx.len() as u64).to_be_bytes());
        file.extend_from_slice(&0u64.to_be_bytes());
        file.extend_from_slice(&(1u64 << 63 | 9).to_be_bytes());
        let len = file.len() as u64;
        assert_eq!(
            parse_tail(len, &file[file.len() - 10..]).unwrap(),
            TailRead::NeedFrom(len - 24)
        );
        let need = match parse_tail(len, &file[file.len() - 24..]).unwrap() {
            TailRead::NeedFrom(o) => o,
            other => panic!("{other:?}"),
        };
        assert_eq!(need, 136);
        match parse_tail(len, &file[need as usize..]).unwrap() {
            TailRead::Complete(t) => {
                assert_eq!(t.index.entries()[0].size, 36);
                assert_eq!(t.index_offset, 142);
            }
            other => panic!("{other:?}"),
        }
        // Whole file works too; a broken end marker is caught.
        assert!(matches!(parse_tail(len, &file).unwrap(), TailRead::Complete(_)));
        let mut bad = file.clone();
        bad[137] = 1;
        assert!(parse_tail(len, &bad).is_err());
        // Absurd index length.
        let mut bad = file.clone();
        let at = bad.len() - 24;
        bad[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(parse_tail(len, &bad), Err(Error::BadIndex(_))));
        assert!(parse_tail(10, &[]).is_err());
        assert!(parse_tail(len, &vec![0; len as usize + 1]).is_err());
    }
}
