//! Writing the restored pages: runs of consecutive pages written by a thread of their
//! own. One `pwrite` per 4 KiB page cost the merge thread more than decoding did; with
//! this, the kernel's copy into the page cache overlaps with the merge.
//!
//! A run of pages that lie one after another in a decoded batch's buffer is written
//! straight from it ([`PageWriter::write_shared`]): in a restore that is nearly every page
//! (a snapshot's batches), and the merge copies nothing. Other pages are copied into a
//! buffer of the writer's ([`PageWriter::write_page`]).

use super::buffers::SharedPages;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes gathered before a write. Measured on the restore benchmark: 32 to 256 KiB cost
/// the same, 1 MiB buffers made the kernel's copy twice as slow (they no longer stay in
/// the CPU cache between the merge filling them and the write reading them).
const BUFFER_BYTES: usize = 256 << 10;
/// Writes queued between the merge and the writing thread.
const BUFFERS_AHEAD: usize = 3;

enum Write {
    /// Pages copied into a buffer of the writer's, which goes back to the merge after.
    Copied(u64, Vec<u8>),
    /// Pages in a batch's buffer, which goes back to its pool once written.
    Shared(u64, SharedPages, Range<usize>),
}

/// Writes pages (ascending page numbers, gaps allowed) to a database file.
pub struct PageWriter {
    page_size: usize,
    /// Copied pages not yet sent.
    buf: Vec<u8>,
    /// Or a run of pages in a shared buffer not yet sent.
    run: Option<(SharedPages, Range<usize>)>,
    /// Page number of the first page in `buf` or `run`.
    first: u32,
    tx: Option<SyncSender<Write>>,
    free: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl PageWriter {
    pub fn new(file: Arc<File>, page_size: u32) -> io::Result<PageWriter> {
        let (tx, rx) = sync_channel::<Write>(BUFFERS_AHEAD);
        let (free_tx, free) = channel();
        let thread = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn(move || {
                // Returning drops `rx`: the merge's next send fails and it asks why.
                for write in rx {
                    match write {
                        Write::Copied(offset, buf) => {
                            file.write_all_at(&buf, offset)?;
                            let _ = free_tx.send(buf);
                        }
                        Write::Shared(offset, pages, range) => file.write_all_at(&pages[range], offset)?,
                    }
                }
                Ok(())
            })?;
        Ok(PageWriter {
            page_size: page_size as usize,
            buf: Vec::with_capacity(BUFFER_BYTES),
            run: None,
            first: 0,
            tx: Some(tx),
            free,
            thread: Some(thread),
        })
    }

    /// Pages waiting to be sent.
    fn pending(&self) -> usize {
        let bytes = match &self.run {
            Some((_, range)) => range.len(),
            None => self.buf.len(),
        };
        bytes / self.page_size
    }

    /// Queues page `pgno` (`data` is one page), copying it.
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()> {
        if pgno == 0 || data.len() != self.page_size {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a page"));
        }
        let next = self.first + self.pending() as u32;
        if self.run.is_some() || (!self.buf.is_empty() && (pgno != next || self.buf.len() + data.len() > BUFFER_BYTES))
        {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.first = pgno;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// Queues page `pgno`, the page at offset `at` of `pages`, without copying it: the
    /// writing thread holds on to `pages` until it is written.
    pub fn write_shared(&mut self, pgno: u32, pages: &SharedPages, at: usize) -> io::Result<()> {
        let end = at + self.page_size;
        if pgno == 0 || end > pages.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a page"));
        }
        let next = self.first + self.pending() as u32;
        if let Some((held, range)) = &mut self.run {
            if Arc::ptr_eq(held, pages) && range.end == at && pgno == next {
                range.end = end;
                return Ok(());
            }
        }
        self.flush()?;
        self.first = pgno;
        self.run = Some((Arc::clone(pages), at..end));
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        let offset = (self.first as u64).saturating_sub(1) * self.page_size as u64;
        let write = if let Some((pages, range)) = self.run.take() {
            Write::Shared(offset, pages, range)
        } else if !self.buf.is_empty() {
            let next = self
                .free
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BUFFER_BYTES));
            let full = std::mem::replace(&mut self.buf, next);
            self.buf.clear();
            Write::Copied(offset, full)
        } else {
            return Ok(());
        };
        let sent = self.tx.as_ref().map(|tx| tx.send(write));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped on an error: finish() reports it.
            _ => self
                .finish_thread()
                .and(Err(io::Error::other("the writing thread stopped"))),
        }
    }

    fn finish_thread(&mut self) -> io::Result<()> {
        drop(self.tx.take());
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the writing thread panicked")),
            None => Ok(()),
        }
    }

    /// Writes what is left and waits until every write is done.
    pub fn finish(mut self) -> io::Result<()> {
        self.flush()?;
        self.finish_thread()
    }
}

impl Drop for PageWriter {
    fn drop(&mut self) {
        // On an error path: stop the thread without waiting for queued writes to matter.
        drop(self.tx.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_land_at_their_offsets_with_gaps_left_as_holes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let file = Arc::new(File::create(&path).unwrap());
        let mut w = PageWriter::new(Arc::clone(&file), 512).unwrap();
        // More than one buffer of consecutive pages, then a gap.
        let run = BUFFER_BYTES / 512 + 10;
        for pgno in 1..=run as u32 {
            w.write_page(pgno, &[pgno as u8; 512]).unwrap();
        }
        w.write_page(run as u32 + 5, &[0xee; 512]).unwrap();
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), (run + 5) * 512);
        for pgno in 1..=run {
            assert!(
                bytes[(pgno - 1) * 512..pgno * 512].iter().all(|&b| b == pgno as u8),
                "page {pgno}"
            );
        }
        assert!(
            bytes[run * 512..(run + 4) * 512].iter().all(|&b| b == 0),
            "the gap is zeros"
        );
        assert!(bytes[(run + 4) * 512..].iter().all(|&b| b == 0xee));
    }

    #[test]
    fn pages_written_from_shared_buffers_and_copied_land_in_place() {
        use super::super::buffers::BufferPool;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let file = Arc::new(File::create(&path).unwrap());
        let pool = BufferPool::new();
        let batch = |fill: u8| -> SharedPages {
            let mut b = pool.take(8 * 512);
            for (i, page) in b.chunks_mut(512).enumerate() {
                page.fill(fill + i as u8);
            }
            Arc::new(b)
        };
        let (a, b) = (batch(10), batch(50));
        let mut w = PageWriter::new(Arc::clone(&file), 512).unwrap();
        // Pages 1-3 from a's first three slots; page 4 copied; 5-6 from a's slots 4-5;
        // 7-8 from b's slots 0-1, which follow a's in page order but not in memory;
        // page 9 is a's slot 7, skipping slot 6: not adjacent in memory either.
        for (pgno, slot) in [(1, 0), (2, 1), (3, 2)] {
            w.write_shared(pgno, &a, slot * 512).unwrap();
        }
        w.write_page(4, &[0xcc; 512]).unwrap();
        w.write_shared(5, &a, 4 * 512).unwrap();
        w.write_shared(6, &a, 5 * 512).unwrap();
        w.write_shared(7, &b, 0).unwrap();
        w.write_shared(8, &b, 512).unwrap();
        w.write_shared(9, &a, 7 * 512).unwrap();
        // A slot past the buffer is refused.
        assert!(w.write_shared(10, &a, 8 * 512).is_err());
        w.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let want: Vec<u8> = [10, 11, 12, 0xcc, 14, 15, 50, 51, 17]
            .iter()
            .flat_map(|&f| [f; 512])
            .collect();
        assert!(bytes == want);
        drop((a, b));
        let back = [pool.take(8 * 512)[0], pool.take(8 * 512)[0]];
        assert_eq!(back, [10, 50], "buffers go back to their pool once written");
    }

    #[test]
    fn a_write_error_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"").unwrap();
        // Opened read-only: every write fails.
        let file = Arc::new(File::open(&path).unwrap());
        let mut w = PageWriter::new(file, 512).unwrap();
        let mut result = Ok(());
        for pgno in 1..=(4 * BUFFER_BYTES / 512) as u32 {
            result = w.write_page(pgno, &[1; 512]);
            if result.is_err() {
                break;
            }
        }
        let err = result.and_then(|()| w.finish()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF), "{err}");
    }
}
