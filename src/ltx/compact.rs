//! Merging contiguous LTX files into one (what the compaction levels and snapshots hold).
//!
//! A streaming k-way merge: every input is decoded in parallel, one page buffered per
//! input, and the smallest page number is written from the newest input that has it.
//! Memory is one page per input plus the output index, whatever the file sizes.

use std::io::{Read, Write};

use super::crypto::PrivateKey;
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::encoding::Encoding;
use super::error::{Error, Result};
use super::frame::Compression;
use super::header::{Header, Trailer, FLAG_NO_CHECKSUM};

/// True if a file covering `min..=max` may follow one ending at `prev_max`: it starts at
/// most one past it (overlap is fine, its pages are newer) and ends strictly after it.
pub fn is_contiguous(prev_max: u64, min: u64, max: u64) -> bool {
    min <= prev_max.saturating_add(1) && max > prev_max
}

/// Pages in ascending page order, verified when finished: what [`Merge`] merges. One
/// file read in line is [`DecodedPages`]; a restore also decodes files on threads of
/// their own (`restore::decode`) and merges those.
pub trait PageSource {
    /// The file's header.
    fn header(&self) -> &Header;
    /// Moves to the next page and returns its number, or `None` after the last.
    fn advance(&mut self) -> Result<Option<u32>>;
    /// The page [`advance`](PageSource::advance) last moved to.
    fn page(&self) -> &[u8];
    /// Verifies everything after the pages (index, trailer, checksums); returns the trailer.
    fn finish(self) -> Result<Trailer>;
}

/// A [`Decoder`] and the page it decoded last: one file as a [`PageSource`].
pub struct DecodedPages<R: Read> {
    dec: Decoder<R>,
    page: Vec<u8>,
}

impl<R: Read> DecodedPages<R> {
    /// Reads the header of the file `r` holds.
    pub fn new(r: R) -> Result<Self> {
        Self::with_key(r, None)
    }

    /// Reads the header of the file `r` holds, opening it with `key` if it is encrypted.
    pub fn with_key(r: R, key: Option<&PrivateKey>) -> Result<Self> {
        let dec = Decoder::with_key(r, key)?;
        let page = vec![0u8; dec.header().page_size as usize];
        Ok(DecodedPages { dec, page })
    }
}

impl<R: Read> PageSource for DecodedPages<R> {
    fn header(&self) -> &Header {
        self.dec.header()
    }

    fn advance(&mut self) -> Result<Option<u32>> {
        self.dec.next_page(&mut self.page)
    }

    fn page(&self) -> &[u8] {
        &self.page
    }

    fn finish(self) -> Result<Trailer> {
        Ok(self.dec.finish()?.trailer)
    }
}

impl<R: Read> DecodedPages<R> {
    /// The current page's checksum, if the decoder computed it (a checksummed snapshot).
    pub fn page_checksum(&self) -> Option<u64> {
        self.dec.last_page_checksum()
    }
}

struct Input<S> {
    source: S,
    /// Page number of the source's current page, `None` once it is exhausted.
    pgno: Option<u32>,
}

/// Output of [`compact`].
#[derive(Debug)]
pub struct Compacted<W> {
    /// The writer, flushed.
    pub writer: W,
    /// Header of the compacted file.
    pub header: Header,
    /// Its trailer.
    pub trailer: Trailer,
}

/// The header a compaction of files with these headers (oldest first) produces: min
/// TXID and pre-apply checksum from the first; max TXID, commit and timestamp from the
/// last; WAL fields and node id zero; NoChecksum if any input has it (and then no
/// database checksums at all).
pub fn compacted_header(headers: &[Header]) -> Result<Header> {
    let (first, last) = match (headers.first(), headers.last()) {
        (Some(f), Some(l)) => (f, l),
        _ => return Err(Error::Usage("compaction needs at least one input")),
    };
    for w in headers.windows(2) {
        if w[1].page_size != w[0].page_size {
            return Err(Error::PageSizeChanged {
                expected: w[0].page_size,
                actual: w[1].page_size,
            });
        }
        if !is_contiguous(w[0].max_txid, w[1].min_txid, w[1].max_txid) {
            return Err(Error::NotContiguous {
                prev_max: w[0].max_txid,
                min: w[1].min_txid,
                max: w[1].max_txid,
            });
        }
    }
    let no_checksum = headers.iter().any(|h| h.no_checksum());
    Ok(Header {
        flags: if no_checksum { FLAG_NO_CHECKSUM } else { 0 },
        page_size: first.page_size,
        commit: last.commit,
        min_txid: first.min_txid,
        max_txid: last.max_txid,
        timestamp_ms: last.timestamp_ms,
        pre_apply_checksum: if no_checksum { 0 } else { first.pre_apply_checksum },
        wal_offset: 0,
        wal_size: 0,
        wal_salt1: 0,
        wal_salt2: 0,
        node_id: 0,
        recipients: 0,
    })
}

/// Merges `inputs` (oldest first, contiguous TXIDs, same page size) into one file written
/// to `w`. On equal page numbers the newest input wins; pages above the final commit are
/// dropped. Every input is fully verified (checksums included) before the output is
/// finished. Compacting a snapshot with later files yields a snapshot.
pub fn compact<R: Read, W: Write>(inputs: Vec<R>, w: W, compression: Compression) -> Result<Compacted<W>> {
    compact_with(inputs, w, &Encoding::plain(compression), None)
}

/// [`compact`] with encryption: encrypted inputs are opened with `key`, and the output is
/// written with `encoding` (when sealed: under a content key of its own, never an input's).
pub fn compact_with<R: Read, W: Write>(
    inputs: Vec<R>,
    w: W,
    encoding: &Encoding,
    key: Option<&PrivateKey>,
) -> Result<Compacted<W>> {
    let merge = Merge::with_key(inputs, key)?;
    let mut enc = Encoder::with_encoding(w, merge.header, encoding)?;
    let header = *enc.header();
    let post_apply = merge.run(|pgno, page| enc.write_page(pgno, page))?;
    let (writer, trailer) = enc.finish(post_apply)?;
    Ok(Compacted {
        writer,
        header,
        trailer,
    })
}

/// A k-way merge of contiguous LTX files, page by page: what compaction encodes and
/// what a restore writes straight into the database file.
pub struct Merge<S> {
    inputs: Vec<Input<S>>,
    /// The header the merged result has (see [`compacted_header`]).
    pub header: Header,
}

impl<R: Read> Merge<DecodedPages<R>> {
    /// Reads every input's header and checks they can be merged.
    pub fn new(inputs: Vec<R>) -> Result<Self> {
        Self::with_key(inputs, None)
    }

    /// [`Merge::new`], opening encrypted inputs with `key`.
    pub fn with_key(inputs: Vec<R>, key: Option<&PrivateKey>) -> Result<Self> {
        let sources = inputs
            .into_iter()
            .map(|r| DecodedPages::with_key(r, key))
            .collect::<Result<Vec<_>>>()?;
        Merge::from_sources(sources)
    }
}

impl<S: PageSource> Merge<S> {
    /// Merges already opened sources (oldest first), after checking they can be merged.
    pub fn from_sources(sources: Vec<S>) -> Result<Self> {
        let headers: Vec<Header> = sources.iter().map(|s| *s.header()).collect();
        let header = compacted_header(&headers)?;
        let inputs = sources.into_iter().map(|source| Input { source, pgno: None }).collect();
        Ok(Merge { inputs, header })
    }

    /// Calls `page` once per page of the merged result, in ascending page order, then
    /// verifies every input to its end. Returns the post-apply checksum of the result
    /// (0 when any input has none). Pages are handed out before the inputs' trailers are
    /// checked: write them somewhere that is discarded on error.
    pub fn run(self, mut page: impl FnMut(u32, &[u8]) -> Result<()>) -> Result<u64> {
        self.run_sources(|pgno, source| page(pgno, source.page()))
    }

    /// [`Merge::run`], handing out the source that holds each page rather than its bytes:
    /// a restore writes pages from the buffers its sources decoded them into, and takes
    /// their checksums from there.
    pub fn run_sources(self, page: impl FnMut(u32, &S) -> Result<()>) -> Result<u64> {
        self.run_sources_blaming(page).map_err(|e| e.error)
    }

    /// [`Merge::run_sources`], saying which input an error came from: a restore names the
    /// damaged file of its plan rather than every file it was merging.
    pub fn run_sources_blaming(mut self, mut page: impl FnMut(u32, &S) -> Result<()>) -> Result<u64, MergeError> {
        let blame = |input: usize| {
            move |error| MergeError {
                input: Some(input),
                error,
            }
        };
        let commit = self.header.commit;
        for (n, i) in self.inputs.iter_mut().enumerate() {
            i.pgno = i.source.advance().map_err(blame(n))?;
        }
        while let Some(pgno) = self.inputs.iter().filter_map(|i| i.pgno).min() {
            // Newest input holding this page wins.
            if pgno <= commit {
                if let Some(win) = self.inputs.iter().rev().find(|i| i.pgno == Some(pgno)) {
                    page(pgno, &win.source).map_err(|error| MergeError { input: None, error })?;
                }
            }
            for (n, i) in self.inputs.iter_mut().enumerate() {
                if i.pgno == Some(pgno) {
                    i.pgno = i.source.advance().map_err(blame(n))?;
                }
            }
        }
        let mut post_apply = 0;
        for (n, i) in self.inputs.into_iter().enumerate() {
            post_apply = i.source.finish().map_err(blame(n))?.post_apply_checksum;
        }
        Ok(if self.header.no_checksum() { 0 } else { post_apply })
    }
}

/// An error of [`Merge::run_sources_blaming`] and where it came from.
#[derive(Debug)]
pub struct MergeError {
    /// The input (by position, oldest first) whose bytes failed; `None` when the caller's
    /// `page` callback failed (writing the result, not reading an input).
    pub input: Option<usize>,
    pub error: Error,
}
