//! Streaming LTX writer.
//!
//! Pages go out as they are given (one `write_all` per frame, so an unbuffered `File`
//! costs one syscall per page), while the page index is accumulated in its encoded form
//! (a few bytes per page) and written by [`Encoder::finish`].
//!
//! With recipients ([`Encoding::sealed`]) the file is LTX v4: a recipient block after the
//! header, every compressed page sealed, a tag and a second recipient block after the
//! index, and the file checksum over the bytes as written (ciphertext, not pages).

use std::io::Write;

use super::checksum::{Crc64, DbChecksum, CHECKSUM_FLAG};
use super::crypto::{wrap_content_key, ContentKey, Entropy, FileKeys, OsEntropy, MAX_RECIPIENTS};
use super::encoding::Encoding;
use super::error::{Error, Result};
use super::frame::{Compression, FrameHeader, PageCompressor, END_MARKER, FRAME_HEADER_SIZE, FRAME_SIZE_FIELD};
use super::header::{Header, Trailer, FLAG_ENCRYPTED};
use super::index::{put_entry, PageIndexEntry};

/// What sealing one file takes: its keys, its recipient block and a randomness source.
struct Sealer {
    keys: FileKeys,
    block: Vec<u8>,
    entropy: Box<dyn Entropy>,
}

/// Writes one LTX file to `W`.
///
/// Rules enforced as pages arrive: page numbers strictly ascending, never 0, never above
/// `commit`, never the lock page, each page exactly `page_size` bytes; a snapshot
/// (`min_txid == 1`) must contain every page `1..=commit` except the lock page. After any
/// error the encoder must be dropped: the output is not a valid file.
pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    hasher: Crc64,
    /// Bytes written so far = offset of the next frame.
    offset: u64,
    prev_pgno: u32,
    lock_pgno: u32,
    compressor: PageCompressor,
    /// Encoded index entries (without terminator).
    index: Vec<u8>,
    /// Reused buffer holding one whole frame.
    frame: Vec<u8>,
    /// Database checksum of a checksummed snapshot, to check the caller's post-apply value.
    db_checksum: Option<DbChecksum>,
    pages: u64,
    seal: Option<Sealer>,
}

impl<W: Write> std::fmt::Debug for Encoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("header", &self.header)
            .field("offset", &self.offset)
            .field("prev_pgno", &self.prev_pgno)
            .field("pages", &self.pages)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Encoder<W> {
    /// Validates `header` and writes it. Pages will be compressed with `compression`
    /// (use [`Compression::Lz4`] for anything Litestream must read).
    pub fn new(w: W, header: Header, compression: Compression) -> Result<Self> {
        Self::with_encoding(w, header, &Encoding::plain(compression))
    }

    /// Like [`Encoder::new`], encrypting when `encoding` has recipients (the header's own
    /// encryption fields are ignored: `encoding` decides). Randomness from the OS.
    pub fn with_encoding(w: W, header: Header, encoding: &Encoding) -> Result<Self> {
        Self::with_entropy(w, header, encoding, Box::new(OsEntropy::default()))
    }

    /// Like [`Encoder::with_encoding`], drawing content keys, HPKE ephemeral keys and page
    /// nonces from `entropy` (a [`FixedEntropy`](super::crypto::FixedEntropy) makes
    /// encrypted files reproducible, for known-answer tests).
    pub fn with_entropy(mut w: W, header: Header, encoding: &Encoding, mut entropy: Box<dyn Entropy>) -> Result<Self> {
        let mut header = header.plaintext();
        if encoding.is_encrypted() {
            let n = encoding.recipients().len();
            if n > MAX_RECIPIENTS {
                return Err(Error::Crypto(format!("{n} recipients, at most {MAX_RECIPIENTS}")));
            }
            header.flags |= FLAG_ENCRYPTED;
            header.recipients = n as u16;
        }
        header.validate()?;
        let compressor = PageCompressor::new(encoding.compression, header.page_size)?;
        let bytes = header.encode();
        let seal = if encoding.is_encrypted() {
            let cek = ContentKey::generate(entropy.as_mut())?;
            let block = wrap_content_key(&cek, encoding.recipients(), entropy.as_mut())?;
            let keys = FileKeys::new(&cek, &bytes);
            Some(Sealer { keys, block, entropy })
        } else {
            None
        };
        let mut hasher = Crc64::new();
        w.write_all(&bytes)?;
        hasher.update(&bytes);
        if let Some(s) = &seal {
            w.write_all(&s.block)?;
            hasher.update(&s.block);
        }
        Ok(Encoder {
            w,
            header,
            hasher,
            offset: header.frames_offset(),
            prev_pgno: 0,
            lock_pgno: header.lock_pgno(),
            compressor,
            index: Vec::new(),
            frame: Vec::new(),
            db_checksum: (header.is_snapshot() && !header.no_checksum()).then(DbChecksum::new),
            pages: 0,
            seal,
        })
    }

    /// The header being written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Number of pages written so far.
    pub fn page_count(&self) -> u64 {
        self.pages
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.offset
    }

    /// The page a snapshot must contain after `pgno` (skipping the lock page).
    fn next_snapshot_pgno(&self, pgno: u32) -> u32 {
        let next = pgno.saturating_add(1);
        if next == self.lock_pgno {
            next.saturating_add(1)
        } else {
            next
        }
    }

    /// Compresses and writes page `pgno`.
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        let h = &self.header;
        if data.len() != h.page_size as usize {
            return Err(Error::PageSizeMismatch {
                expected: h.page_size,
                actual: data.len(),
            });
        }
        if pgno == 0 {
            return Err(Error::ZeroPgno { flags: 0 });
        }
        if pgno > h.commit {
            return Err(Error::PageAboveCommit { pgno, commit: h.commit });
        }
        if pgno == self.lock_pgno {
            return Err(Error::LockPage { pgno });
        }
        if pgno <= self.prev_pgno {
            return Err(Error::PageOutOfOrder {
                prev: self.prev_pgno,
                pgno,
            });
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

        let (flags, payload) = self.compressor.compress(data)?;
        let fh = FrameHeader { pgno, flags }.encode();
        self.frame.clear();
        self.frame.extend_from_slice(&fh);
        match &mut self.seal {
            None => {
                self.frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                self.frame.extend_from_slice(payload);
                // The file checksum sees frame header, size field and the *uncompressed* page.
                self.hasher.update(&self.frame[..FRAME_HEADER_SIZE + FRAME_SIZE_FIELD]);
                self.hasher.update(data);
            }
            Some(s) => {
                self.frame.extend_from_slice(&[0; FRAME_SIZE_FIELD]);
                s.keys.seal_page(&fh, payload, s.entropy.as_mut(), &mut self.frame)?;
                let sealed_len = (self.frame.len() - FRAME_HEADER_SIZE - FRAME_SIZE_FIELD) as u32;
                self.frame[FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + FRAME_SIZE_FIELD]
                    .copy_from_slice(&sealed_len.to_be_bytes());
                // Encrypted: the checksum sees the frame exactly as written.
                self.hasher.update(&self.frame);
            }
        }
        self.w.write_all(&self.frame)?;
        if let Some(c) = &mut self.db_checksum {
            c.toggle_page(pgno, data);
        }
        put_entry(
            &mut self.index,
            &PageIndexEntry {
                pgno,
                offset: self.offset,
                size: self.frame.len() as u32,
            },
        );
        self.offset += self.frame.len() as u64;
        self.prev_pgno = pgno;
        self.pages += 1;
        Ok(())
    }

    /// Writes the end marker, page index and trailer, flushes, and returns the writer and
    /// the trailer.
    ///
    /// `post_apply_checksum` is the database checksum after this file is applied: 0 when
    /// the header has the NoChecksum flag (as Litestream writes), otherwise a value with
    /// bit 63 set; for a checksummed snapshot it must equal the checksum of its pages.
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<(W, Trailer)> {
        if self.header.is_snapshot() {
            let want = self.next_snapshot_pgno(self.prev_pgno);
            if want <= self.header.commit {
                return Err(Error::SnapshotIncomplete { missing: want, next: 0 });
            }
        }
        // Validate the post-apply checksum with a provisional (well-formed) file checksum.
        Trailer {
            post_apply_checksum,
            file_checksum: CHECKSUM_FLAG,
        }
        .validate(&self.header)?;
        if let Some(c) = self.db_checksum {
            if c.value() != post_apply_checksum {
                return Err(Error::PostApplyChecksumMismatch {
                    expected: post_apply_checksum,
                    actual: c.value(),
                });
            }
        }

        let mut tail = Vec::with_capacity(FRAME_HEADER_SIZE + self.index.len() + 1 + 8 + 16);
        tail.extend_from_slice(&END_MARKER);
        tail.extend_from_slice(&self.index);
        tail.push(0); // index terminator
        let index_len = (self.index.len() + 1) as u64;
        tail.extend_from_slice(&index_len.to_be_bytes());
        if let Some(s) = &self.seal {
            // Tag over the index bytes (entries, terminator, size), then the second copy
            // of the recipient block, which lets a reader of the tail alone find the key.
            let tag = s.keys.index_tag(&tail[FRAME_HEADER_SIZE..])?;
            tail.extend_from_slice(&tag);
            tail.extend_from_slice(&s.block);
        }
        tail.extend_from_slice(&post_apply_checksum.to_be_bytes());
        self.hasher.update(&tail);
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: CHECKSUM_FLAG | self.hasher.finish(),
        };
        tail.extend_from_slice(&trailer.file_checksum.to_be_bytes());
        self.w.write_all(&tail)?;
        self.w.flush()?;
        Ok((self.w, trailer))
    }
}
