//! Streaming LTX reader.
//!
//! Reads the header, then one page per [`Decoder::next_page`] call, then
//! [`Decoder::finish`] reads the index and trailer and checks everything that can only be
//! checked at the end: the index lists exactly the frames seen, the CRC-64 of the whole
//! file matches, a checksummed snapshot's pages add up to its post-apply checksum, and
//! nothing follows the trailer. Pages handed out before `finish` succeeds are
//! unverified; callers that apply them must be ready to throw the result away.
//!
//! Reads are small (6 + 4 + payload bytes per page): wrap files in a `BufReader`.
//!
//! An encrypted (v4) file needs the private key of one of its recipients
//! ([`Decoder::with_key`]). Without it the header can be read and [`Decoder::finish`]
//! still checks structure and file checksum (which covers the ciphertext), but pages are
//! refused with [`Error::KeyRequired`].

use std::io::{self, Read};
use std::sync::Arc;

use super::checksum::{page_checksum, Crc64, DbChecksum, CHECKSUM_FLAG};
use super::crypto::{unwrap_content_key, FileKeys, PrivateKey, SEAL_OVERHEAD, TAG_SIZE};
use super::error::{read_full, Error, Result};
use super::frame::{
    max_compressed_len, FrameHeader, PageDecompressor, FRAME_FLAG_SIZE, FRAME_HEADER_SIZE, FRAME_SIZE_FIELD,
};
use super::header::{Header, Trailer, HEADER_SIZE, TRAILER_SIZE};
use super::index::{parse_index_bytes, PageIndex, PageIndexEntry};
use super::sealed::{PageOpener, SealedFrame, SharedRead};
use super::varint::{self, MAX_LEN as VARINT_MAX};

/// What [`Decoder::finish`] learned from the end of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeSummary {
    /// The file's header.
    pub header: Header,
    /// The verified trailer.
    pub trailer: Trailer,
    /// The page index (agrees with the frames).
    pub index: PageIndex,
}

/// A whole file decoded in memory by [`decode_file`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedFile {
    /// The header.
    pub header: Header,
    /// The verified trailer.
    pub trailer: Trailer,
    /// The page index.
    pub index: PageIndex,
    /// `(pgno, page bytes)` in file order.
    pub pages: Vec<(u32, Vec<u8>)>,
}

/// What [`Decoder::finish_sealed`] verified, and the one check it leaves to the caller.
#[must_use = "a snapshot's pages are only verified by check()"]
#[derive(Clone, Debug)]
pub struct SealedSummary {
    summary: DecodeSummary,
    /// A checksummed snapshot's post-apply checksum, which its pages must add up to.
    post_apply: Option<u64>,
}

impl SealedSummary {
    /// Checks that the pages opened from the file (each toggled into `opened`) add up to
    /// the snapshot's post-apply checksum, if the file is a checksummed snapshot.
    pub fn check(self, opened: DbChecksum) -> Result<DecodeSummary> {
        match self.post_apply {
            Some(expected) if opened.value() != expected => Err(Error::PostApplyChecksumMismatch {
                expected,
                actual: opened.value(),
            }),
            _ => Ok(self.summary),
        }
    }
}

/// Reads one LTX file from `R`. See the module docs for what is verified when.
pub struct Decoder<R: Read> {
    r: R,
    header: Header,
    hasher: Crc64,
    /// Bytes consumed so far = offset of the next frame.
    offset: u64,
    prev_pgno: u32,
    lock_pgno: u32,
    /// Frames actually seen, to hold the index to.
    frames: Vec<PageIndexEntry>,
    db_checksum: Option<DbChecksum>,
    dec: PageDecompressor,
    /// Offset of the end marker once seen.
    end_offset: Option<u64>,
    /// Set after an error: the stream position is unknown, so refuse to go on.
    poisoned: bool,
    /// Encrypted file: its recipient block (as read after the header).
    recipient_block: Vec<u8>,
    /// Encrypted file opened with a key that is one of its recipients (shared, not
    /// copied: the expanded cipher keys are large, decoders are held in collections, and
    /// a [`PageOpener`] opens pages with them on other threads).
    keys: Option<Arc<FileKeys>>,
    /// Encrypted file read without a key, by `finish`: frames are hashed, not opened.
    skip_sealed: bool,
    /// Pages are read sealed ([`Decoder::next_sealed`]) and opened by the caller.
    deferred: bool,
    /// Reused buffer for one sealed payload.
    sealed: Vec<u8>,
    /// Page checksum of the page `next_page` returned last, when it computed one.
    last_checksum: Option<u64>,
}

impl<R: Read> std::fmt::Debug for Decoder<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("header", &self.header)
            .field("offset", &self.offset)
            .field("prev_pgno", &self.prev_pgno)
            .finish_non_exhaustive()
    }
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header. For an encrypted file see [`Decoder::with_key`].
    pub fn new(r: R) -> Result<Self> {
        Self::with_key(r, None)
    }

    /// Reads and validates the header and, for an encrypted file, its recipient block;
    /// `key` must then open one of its entries ([`Error::NotARecipient`] otherwise).
    /// `key` is ignored for a plaintext file.
    pub fn with_key(mut r: R, key: Option<&PrivateKey>) -> Result<Self> {
        let mut b = [0u8; HEADER_SIZE];
        read_full(&mut r, &mut b, "header")?;
        let header = Header::decode(&b)?;
        let mut hasher = Crc64::new();
        hasher.update(&b);
        let mut recipient_block = vec![0u8; header.recipient_block_size()];
        read_full(&mut r, &mut recipient_block, "recipient block")?;
        hasher.update(&recipient_block);
        let keys = match key {
            Some(key) if header.is_encrypted() => {
                let cek = unwrap_content_key(&recipient_block, key)?;
                Some(Arc::new(FileKeys::new(&cek, &b)))
            }
            _ => None,
        };
        Ok(Decoder {
            r,
            header,
            hasher,
            offset: header.frames_offset(),
            prev_pgno: 0,
            lock_pgno: header.lock_pgno(),
            frames: Vec::new(),
            db_checksum: (header.is_snapshot() && !header.no_checksum()).then(DbChecksum::new),
            dec: PageDecompressor::new(),
            end_offset: None,
            poisoned: false,
            recipient_block,
            keys,
            skip_sealed: false,
            deferred: false,
            sealed: Vec::new(),
            last_checksum: None,
        })
    }

    /// True if the file is encrypted and this decoder holds no key for it.
    pub fn is_locked(&self) -> bool {
        self.header.is_encrypted() && self.keys.is_none()
    }

    /// The file's header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decodes the next page into `out` (exactly `page_size` bytes) and returns its page
    /// number, or `None` after the last page.
    pub fn next_page(&mut self, out: &mut [u8]) -> Result<Option<u32>> {
        if self.poisoned {
            return Err(Error::Usage("decoder used after an error"));
        }
        let res = self.next_page_inner(out);
        if res.is_err() {
            self.poisoned = true;
        }
        res
    }

    fn next_snapshot_pgno(&self, pgno: u32) -> u32 {
        let next = pgno.saturating_add(1);
        if next == self.lock_pgno {
            next.saturating_add(1)
        } else {
            next
        }
    }

    fn next_page_inner(&mut self, out: &mut [u8]) -> Result<Option<u32>> {
        if self.deferred {
            return Err(Error::Usage("this file's pages are read sealed"));
        }
        let h = self.header;
        if out.len() != h.page_size as usize {
            return Err(Error::PageSizeMismatch {
                expected: h.page_size,
                actual: out.len(),
            });
        }
        let Some((hb, fh)) = self.next_frame_header()? else {
            return Ok(None);
        };
        let body = if h.is_encrypted() {
            let mut sealed = std::mem::take(&mut self.sealed);
            let res = self.read_sealed_into(fh, &mut sealed).and_then(|len| match &self.keys {
                Some(keys) => {
                    let compressed = keys.open_page(&hb, &mut sealed[..len])?;
                    self.dec.decompress_sized(fh.pgno, fh.flags, compressed, out)?;
                    Ok(len)
                }
                None => Ok(len),
            });
            self.sealed = sealed;
            (FRAME_SIZE_FIELD + res?) as u64
        } else {
            self.dec.read_payload(&mut self.r, fh, out, Some(&mut self.hasher))?
        };
        self.record_frame(fh.pgno, body)?;
        self.last_checksum = None;
        if let Some(c) = self.db_checksum.as_mut().filter(|_| !self.skip_sealed) {
            let sum = page_checksum(fh.pgno, out);
            c.toggle_checksum(sum);
            self.last_checksum = Some(sum);
        }
        Ok(Some(fh.pgno))
    }

    /// The page checksum ([`page_checksum`]) of the page [`Decoder::next_page`] returned
    /// last, if the decoder computed it: a checksummed snapshot's pages, which it adds up.
    /// A restore adds the same checksums up for the database it writes, and takes them
    /// from here rather than computing each twice.
    pub fn last_page_checksum(&self) -> Option<u64> {
        self.last_checksum
    }

    /// Reads, hashes and checks the next frame header: `None` (and the end recorded)
    /// at the end marker.
    fn next_frame_header(&mut self) -> Result<Option<([u8; FRAME_HEADER_SIZE], FrameHeader)>> {
        if self.end_offset.is_some() {
            return Ok(None);
        }
        let h = self.header;
        let mut hb = [0u8; FRAME_HEADER_SIZE];
        read_full(&mut self.r, &mut hb, "page frame header")?;
        self.hasher.update(&hb);
        let fh = FrameHeader::parse(&hb);
        if fh.is_end() {
            if h.is_snapshot() {
                let want = self.next_snapshot_pgno(self.prev_pgno);
                if want <= h.commit {
                    return Err(Error::SnapshotIncomplete { missing: want, next: 0 });
                }
            }
            self.end_offset = Some(self.offset);
            self.offset += FRAME_HEADER_SIZE as u64;
            return Ok(None);
        }
        fh.validate()?;
        if h.is_encrypted() && fh.flags & FRAME_FLAG_SIZE == 0 {
            return Err(Error::UnknownFrameFlags {
                pgno: fh.pgno,
                flags: fh.flags,
            });
        }
        let pgno = fh.pgno;
        if pgno <= self.prev_pgno {
            return Err(Error::PageOutOfOrder {
                prev: self.prev_pgno,
                pgno,
            });
        }
        if pgno > h.commit {
            return Err(Error::PageAboveCommit { pgno, commit: h.commit });
        }
        if pgno == self.lock_pgno {
            return Err(Error::LockPage { pgno });
        }
        if h.is_snapshot() {
            let want = self.next_snapshot_pgno(self.prev_pgno);
            if pgno != want {
                return Err(Error::SnapshotIncomplete {
                    missing: want,
                    next: pgno,
                });
            }
        }
        Ok(Some((hb, fh)))
    }

    /// Records a frame of `body` bytes after its header in the list the index must match.
    fn record_frame(&mut self, pgno: u32, body: u64) -> Result<()> {
        let size = u32::try_from(FRAME_HEADER_SIZE as u64 + body).map_err(|_| Error::Decompress {
            pgno,
            reason: "frame longer than 4 GiB".into(),
        })?;
        self.frames.push(PageIndexEntry {
            pgno,
            offset: self.offset,
            size,
        });
        self.offset += size as u64;
        self.prev_pgno = pgno;
        Ok(())
    }

    /// Reads and hashes the size field of an encrypted frame and checks it; returns the
    /// sealed payload's length. Refuses a keyed read without a key (unless skipping a
    /// locked file).
    fn read_sealed_len(&mut self, fh: FrameHeader) -> Result<usize> {
        if self.keys.is_none() && !self.skip_sealed {
            return Err(Error::KeyRequired {
                recipients: self.header.recipients,
            });
        }
        let mut size = [0u8; FRAME_SIZE_FIELD];
        read_full(&mut self.r, &mut size, "page frame size")?;
        self.hasher.update(&size);
        let len = u32::from_be_bytes(size) as usize;
        let max = max_compressed_len(self.header.page_size, fh.flags) + SEAL_OVERHEAD;
        if !(SEAL_OVERHEAD..=max).contains(&len) {
            return Err(Error::FrameTooLarge {
                pgno: fh.pgno,
                len: len as u64,
                max: max as u64,
            });
        }
        Ok(len)
    }

    /// Reads an encrypted frame's size field and sealed payload into the start of `buf`
    /// (grown if need be, never zeroed again: a page's worth of memset per frame showed in
    /// a restore's profile), hashing both; returns the payload's length.
    fn read_sealed_into(&mut self, fh: FrameHeader, buf: &mut Vec<u8>) -> Result<usize> {
        let len = self.read_sealed_len(fh)?;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        read_full(&mut self.r, &mut buf[..len], "page frame payload")?;
        self.hasher.update(&buf[..len]);
        Ok(len)
    }

    /// Skips (but still verifies) any pages not read yet, then reads and checks the page
    /// index and the trailer, and that the input ends there.
    pub fn finish(mut self) -> Result<DecodeSummary> {
        if self.poisoned {
            return Err(Error::Usage("decoder used after an error"));
        }
        if self.deferred {
            return Err(Error::Usage("a file read sealed is finished with finish_sealed"));
        }
        if self.end_offset.is_none() {
            self.skip_sealed = self.is_locked();
            let mut page = vec![0u8; self.header.page_size as usize];
            while self.next_page(&mut page)?.is_some() {}
        }
        let summary = self.read_tail()?;
        if let Some(c) = self.db_checksum.filter(|_| !self.skip_sealed) {
            if c.value() != summary.trailer.post_apply_checksum {
                return Err(Error::PostApplyChecksumMismatch {
                    expected: summary.trailer.post_apply_checksum,
                    actual: c.value(),
                });
            }
        }
        Ok(summary)
    }

    /// What opens this file's pages on any thread: `None` for a plaintext file, or an
    /// encrypted one read without its key.
    pub fn page_opener(&self) -> Option<PageOpener> {
        self.keys
            .as_ref()
            .map(|keys| PageOpener::new(Arc::clone(keys), self.header.page_size))
    }

    /// [`Decoder::finish`] for a file whose pages were read with [`Decoder::next_sealed`]
    /// (all of them): checks the index, its tag, the trailer and the file checksum. A
    /// checksummed snapshot's pages must still add up to its post-apply checksum, which
    /// only the caller that opened them can check: [`SealedSummary::check`].
    pub fn finish_sealed(mut self) -> Result<SealedSummary> {
        if self.poisoned {
            return Err(Error::Usage("decoder used after an error"));
        }
        if self.end_offset.is_none() {
            return Err(Error::Usage("finish_sealed before the last page was read"));
        }
        let summary = self.read_tail()?;
        let post_apply = self.db_checksum.map(|_| summary.trailer.post_apply_checksum);
        Ok(SealedSummary { summary, post_apply })
    }

    /// Reads and checks the page index and the trailer, and that the input ends there.
    fn read_tail(&mut self) -> Result<DecodeSummary> {
        let seal_tail = if self.header.is_encrypted() {
            TAG_SIZE + self.recipient_block.len()
        } else {
            0
        };
        let frames_end = self.end_offset.ok_or(Error::Usage("no end marker"))?;

        // The rest of a valid file is at most this long; reading one byte more tells
        // "trailing garbage" without ever buffering an unbounded stream.
        let max_entry = 5 + VARINT_MAX + 5;
        let bound = (self.frames.len() * max_entry + 1 + 8 + seal_tail + TRAILER_SIZE) as u64;
        let mut rest = Vec::new();
        self.r.by_ref().take(bound + 1).read_to_end(&mut rest)?;

        // Find the terminator by walking the entries; structure is checked afterwards.
        let mut pos = 0usize;
        'entries: loop {
            for field in 0..3 {
                let (v, n) = varint::get(&rest[pos..]).map_err(|e| match e {
                    varint::VarintError::Truncated => Error::Truncated("page index"),
                    varint::VarintError::Overflow => Error::index("varint overflows"),
                })?;
                pos += n;
                if field == 0 && v == 0 {
                    break 'entries;
                }
            }
        }
        let index_end = pos;
        if rest.len() < index_end + 8 + seal_tail + TRAILER_SIZE {
            return Err(Error::Truncated("page index size / trailer"));
        }
        if rest.len() > index_end + 8 + seal_tail + TRAILER_SIZE {
            return Err(Error::TrailingData);
        }
        let mut n = [0u8; 8];
        n.copy_from_slice(&rest[index_end..index_end + 8]);
        let index_len = u64::from_be_bytes(n);
        if index_len != index_end as u64 {
            return Err(Error::index(format!(
                "index size field says {index_len}, index is {index_end} bytes"
            )));
        }
        if self.header.is_encrypted() {
            let tag_at = index_end + 8;
            if let Some(keys) = &self.keys {
                keys.check_index_tag(&rest[..tag_at], &rest[tag_at..tag_at + TAG_SIZE])?;
            }
            if rest[tag_at + TAG_SIZE..tag_at + seal_tail] != self.recipient_block[..] {
                return Err(Error::RecipientBlocksDiffer);
            }
        }
        let trailer = Trailer::decode(&rest[index_end + 8 + seal_tail..])?;
        self.hasher.update(&rest[..rest.len() - 8]);
        let actual = CHECKSUM_FLAG | self.hasher.finish();
        if actual != trailer.file_checksum {
            return Err(Error::ChecksumMismatch {
                expected: trailer.file_checksum,
                actual,
            });
        }
        let index = parse_index_bytes(&rest[..index_end], self.header.frames_offset(), frames_end)?;
        if index.entries() != self.frames.as_slice() {
            return Err(Error::index("index disagrees with the page frames"));
        }
        trailer.validate(&self.header)?;
        Ok(DecodeSummary {
            header: self.header,
            trailer,
            index,
        })
    }
}

impl<R: SharedRead> Decoder<R> {
    /// Reads the next frame of an encrypted file without opening it, or `None` after the
    /// last page. Everything else [`Decoder::next_page`] checks is checked here (page
    /// order, size bounds, the file checksum, which covers the sealed bytes), so that
    /// opening and decompressing, most of the cost, can run on other threads with
    /// [`Decoder::page_opener`]. Such a file ends with [`Decoder::finish_sealed`], and
    /// its pages cannot also be read with `next_page`.
    pub fn next_sealed(&mut self) -> Result<Option<SealedFrame>> {
        if self.poisoned {
            return Err(Error::Usage("decoder used after an error"));
        }
        let res = self.next_sealed_inner();
        if res.is_err() {
            self.poisoned = true;
        }
        res
    }

    fn next_sealed_inner(&mut self) -> Result<Option<SealedFrame>> {
        if !self.header.is_encrypted() {
            return Err(Error::Usage("only an encrypted file's pages are read sealed"));
        }
        if !self.deferred && !self.frames.is_empty() {
            return Err(Error::Usage("pages already read opened"));
        }
        self.deferred = true;
        let Some((header, fh)) = self.next_frame_header()? else {
            return Ok(None);
        };
        let len = self.read_sealed_len(fh)?;
        let payload = self.r.read_shared(len).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Error::Truncated("page frame payload"),
            _ => Error::Io(e),
        })?;
        if payload.len() != len {
            return Err(Error::Truncated("page frame payload"));
        }
        self.hasher.update(&payload);
        self.record_frame(fh.pgno, (FRAME_SIZE_FIELD + len) as u64)?;
        Ok(Some(SealedFrame { header, payload }))
    }
}

/// Decodes and fully verifies a file held in memory (plaintext only; see
/// [`decode_file_with`]).
pub fn decode_file(bytes: &[u8]) -> Result<DecodedFile> {
    decode_file_with(bytes, None)
}

/// Decodes and fully verifies a file held in memory, opening it with `key` if encrypted.
pub fn decode_file_with(bytes: &[u8], key: Option<&PrivateKey>) -> Result<DecodedFile> {
    let mut dec = Decoder::with_key(bytes, key)?;
    let page_size = dec.header().page_size as usize;
    let mut pages = Vec::new();
    let mut buf = vec![0u8; page_size];
    while let Some(pgno) = dec.next_page(&mut buf)? {
        pages.push((pgno, buf.clone()));
    }
    let s = dec.finish()?;
    Ok(DecodedFile {
        header: s.header,
        trailer: s.trailer,
        index: s.index,
        pages,
    })
}

/// Decodes and verifies a file, discarding the pages. An encrypted file is checked
/// without opening it: structure and file checksum only (see [`verify_with`]).
pub fn verify<R: Read>(r: R) -> Result<DecodeSummary> {
    Decoder::new(r)?.finish()
}

/// [`verify`], opening an encrypted file with `key`: every page and the index are
/// authenticated too.
pub fn verify_with<R: Read>(r: R, key: Option<&PrivateKey>) -> Result<DecodeSummary> {
    Decoder::with_key(r, key)?.finish()
}
