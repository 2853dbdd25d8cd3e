//! Applying LTX files to a database image (restore, hydration).
//!
//! A snapshot writes every page (the lock page as zeros when the database reaches it);
//! a later file overwrites the pages it carries; both then set the database length to
//! `commit` pages. Files must follow each other (see [`is_contiguous`]) and share the page
//! size.
//!
//! Pages are written while the file is decoded, before its checksum is verified at the
//! end: on any error the sink holds a partial state and the [`Applier`] refuses further
//! files. Restore into a temporary file and rename it on success.

use std::io::{self, Read};

use super::compact::is_contiguous;
use super::decoder::{DecodeSummary, Decoder};
use super::error::{Error, Result};

/// Where applied pages go. Page `pgno` occupies bytes `[(pgno-1)*len, pgno*len)`.
pub trait PageSink {
    /// Writes one page (`data.len()` is the page size).
    fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()>;
    /// Sets the database length to `page_count` pages of `page_size` bytes (truncating or
    /// zero-extending).
    fn set_page_count(&mut self, page_size: u32, page_count: u32) -> io::Result<()>;
}

fn page_offset(pgno: u32, len: usize) -> u64 {
    (pgno as u64 - 1) * len as u64
}

/// In-memory database image, mostly for tests.
impl PageSink for Vec<u8> {
    fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()> {
        if pgno == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "page 0"));
        }
        let start = usize::try_from(page_offset(pgno, data.len()))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "page beyond memory"))?;
        let end = start + data.len();
        if self.len() < end {
            self.resize(end, 0);
        }
        self[start..end].copy_from_slice(data);
        Ok(())
    }

    fn set_page_count(&mut self, page_size: u32, page_count: u32) -> io::Result<()> {
        let len = usize::try_from(page_size as u64 * page_count as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "database beyond memory"))?;
        self.resize(len, 0);
        Ok(())
    }
}

/// A database file, written with positional writes (no shared cursor).
impl PageSink for std::fs::File {
    fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()> {
        if pgno == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "page 0"));
        }
        let off = page_offset(pgno, data.len());
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(self, data, off)
        }
        #[cfg(not(unix))]
        {
            use std::io::{Seek, SeekFrom, Write};
            self.seek(SeekFrom::Start(off))?;
            self.write_all(data)
        }
    }

    fn set_page_count(&mut self, page_size: u32, page_count: u32) -> io::Result<()> {
        self.set_len(page_size as u64 * page_count as u64)
    }
}

/// Where a database stands after the files applied so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Last TXID applied.
    pub txid: u64,
    /// Page size of the database.
    pub page_size: u32,
    /// Database size in pages.
    pub commit: u32,
}

/// Applies a snapshot and the files after it, in TXID order, to a [`PageSink`].
#[derive(Debug)]
pub struct Applier<S: PageSink> {
    sink: S,
    pos: Option<Position>,
    poisoned: bool,
}

impl<S: PageSink> Applier<S> {
    /// An applier for an empty database: the first file must be a snapshot.
    pub fn new(sink: S) -> Self {
        Applier {
            sink,
            pos: None,
            poisoned: false,
        }
    }

    /// An applier continuing from a database already at `pos`.
    pub fn resume(sink: S, pos: Position) -> Self {
        Applier {
            sink,
            pos: Some(pos),
            poisoned: false,
        }
    }

    /// Position after the files applied so far (`None` before the first snapshot).
    pub fn position(&self) -> Option<Position> {
        self.pos
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Returns the sink.
    pub fn into_sink(self) -> S {
        self.sink
    }

    /// Decodes one file from `r`, checks it follows the current position, and applies it.
    pub fn apply<R: Read>(&mut self, r: R) -> Result<DecodeSummary> {
        if self.poisoned {
            return Err(Error::Usage("applier used after a failed apply"));
        }
        let res = self.apply_inner(r);
        if res.is_err() {
            self.poisoned = true;
        }
        res
    }

    fn apply_inner<R: Read>(&mut self, r: R) -> Result<DecodeSummary> {
        let mut dec = Decoder::new(r)?;
        let h = *dec.header();
        match self.pos {
            None if !h.is_snapshot() => {
                return Err(Error::NotContiguous {
                    prev_max: 0,
                    min: h.min_txid,
                    max: h.max_txid,
                })
            }
            None => {}
            Some(p) => {
                if p.page_size != h.page_size {
                    return Err(Error::PageSizeChanged {
                        expected: p.page_size,
                        actual: h.page_size,
                    });
                }
                if !is_contiguous(p.txid, h.min_txid, h.max_txid) {
                    return Err(Error::NotContiguous {
                        prev_max: p.txid,
                        min: h.min_txid,
                        max: h.max_txid,
                    });
                }
            }
        }
        let mut page = vec![0u8; h.page_size as usize];
        while let Some(pgno) = dec.next_page(&mut page)? {
            self.sink.write_page(pgno, &page)?;
        }
        let summary = dec.finish()?;
        let lock = h.lock_pgno();
        if h.is_snapshot() && h.commit >= lock {
            page.fill(0);
            self.sink.write_page(lock, &page)?;
        }
        self.sink.set_page_count(h.page_size, h.commit)?;
        self.pos = Some(Position {
            txid: h.max_txid,
            page_size: h.page_size,
            commit: h.commit,
        });
        Ok(summary)
    }
}
