//! Writing the restored pages: runs of consecutive pages gathered into buffers and
//! written by a thread of their own. One `pwrite` per 4 KiB page cost the merge thread
//! more than decoding did; with this, the kernel's copy into the page cache overlaps
//! with the merge.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes gathered before a write. Measured on the restore benchmark: 32 to 256 KiB cost
/// the same, 1 MiB buffers made the kernel's copy twice as slow (they no longer stay in
/// the CPU cache between the merge filling them and the write reading them).
const BUFFER_BYTES: usize = 256 << 10;
/// Buffers in flight between the merge and the writing thread.
const BUFFERS_AHEAD: usize = 3;

/// Writes pages (ascending page numbers, gaps allowed) to a database file.
pub struct PageWriter {
    page_size: usize,
    buf: Vec<u8>,
    /// Page number of the first page in `buf`.
    first: u32,
    tx: Option<SyncSender<(u64, Vec<u8>)>>,
    free: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl PageWriter {
    pub fn new(file: Arc<File>, page_size: u32) -> io::Result<PageWriter> {
        let (tx, rx) = sync_channel::<(u64, Vec<u8>)>(BUFFERS_AHEAD);
        let (free_tx, free) = channel();
        let thread = std::thread::Builder::new()
            .name("restore-write".into())
            .spawn(move || {
                // Returning drops `rx`: the merge's next send fails and it asks why.
                for (offset, buf) in rx {
                    file.write_all_at(&buf, offset)?;
                    let _ = free_tx.send(buf);
                }
                Ok(())
            })?;
        Ok(PageWriter {
            page_size: page_size as usize,
            buf: Vec::with_capacity(BUFFER_BYTES),
            first: 0,
            tx: Some(tx),
            free,
            thread: Some(thread),
        })
    }

    /// Queues page `pgno` (`data` is one page).
    pub fn write_page(&mut self, pgno: u32, data: &[u8]) -> io::Result<()> {
        if pgno == 0 || data.len() != self.page_size {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a page"));
        }
        let in_buf = (self.buf.len() / self.page_size) as u32;
        if !self.buf.is_empty() && (pgno != self.first + in_buf || self.buf.len() + data.len() > BUFFER_BYTES) {
            self.flush()?;
        }
        if self.buf.is_empty() {
            self.first = pgno;
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BUFFER_BYTES));
        let full = std::mem::replace(&mut self.buf, next);
        self.buf.clear();
        let offset = (self.first as u64 - 1) * self.page_size as u64;
        let sent = self.tx.as_ref().map(|tx| tx.send((offset, full)));
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
