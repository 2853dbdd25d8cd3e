//! Decoding a file on a thread of its own: the restore's merge thread then only picks
//! the newest version of each page and copies it out, while decompression and the CRC
//! of every file run in parallel (they were most of the merge thread's time).
//!
//! The thread sends pages in batches over a bounded channel (a few batches per file)
//! and gets the batches back to refill, so memory stays small whatever the file size.

use crate::ltx::crypto::PrivateKey;
use crate::ltx::{DecodedPages, Decoder, Error, Header, PageSource, Result, Trailer};
use std::io::Read;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender};

/// Pages a batch holds: big enough that the channel costs nothing per page.
const BATCH_PAGES: usize = 64;
/// Batches decoded ahead of the merge, per file.
const BATCHES_AHEAD: usize = 2;

#[derive(Default)]
struct Batch {
    pgnos: Vec<u32>,
    pages: Vec<u8>,
}

enum Msg {
    Pages(Batch),
    /// The file ended and verified: its trailer.
    Done(Trailer),
}

/// A [`PageSource`] whose decoding runs on another thread.
pub struct ThreadedPages {
    header: Header,
    page_size: usize,
    rx: Receiver<Result<Msg>>,
    recycle: Sender<Batch>,
    batch: Batch,
    /// Index in `batch` of the current page, and of the next one.
    current: usize,
    next: usize,
    trailer: Option<Trailer>,
}

impl ThreadedPages {
    /// Reads the header of `r` here, then decodes the rest on a new thread named `name`.
    /// `key` opens an encrypted file.
    pub fn spawn<R: Read + Send + 'static>(r: R, name: String, key: Option<&PrivateKey>) -> Result<ThreadedPages> {
        let mut dec = Decoder::with_key(r, key)?;
        let header = *dec.header();
        let page_size = header.page_size as usize;
        let (tx, rx) = sync_channel::<Result<Msg>>(BATCHES_AHEAD);
        let (recycle, recycled) = channel::<Batch>();
        std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // A send fails only when the merge has gone (an error elsewhere): stop.
                loop {
                    let mut batch = recycled.try_recv().unwrap_or_default();
                    batch.pgnos.clear();
                    match fill(&mut dec, &mut batch, page_size) {
                        Ok(more) => {
                            if !batch.pgnos.is_empty() && tx.send(Ok(Msg::Pages(batch))).is_err() {
                                return;
                            }
                            if !more {
                                let _ = tx.send(dec.finish().map(|s| Msg::Done(s.trailer)));
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                }
            })
            .map_err(Error::Io)?;
        Ok(ThreadedPages {
            header,
            page_size,
            rx,
            recycle,
            batch: Batch::default(),
            current: 0,
            next: 0,
            trailer: None,
        })
    }
}

/// Decodes up to [`BATCH_PAGES`] pages into `batch`; false once the file has no more.
fn fill<R: Read>(dec: &mut Decoder<R>, batch: &mut Batch, page_size: usize) -> Result<bool> {
    batch.pages.resize(BATCH_PAGES * page_size, 0);
    while batch.pgnos.len() < BATCH_PAGES {
        let at = batch.pgnos.len() * page_size;
        match dec.next_page(&mut batch.pages[at..at + page_size])? {
            Some(pgno) => batch.pgnos.push(pgno),
            None => return Ok(false),
        }
    }
    Ok(true)
}

impl PageSource for ThreadedPages {
    fn header(&self) -> &Header {
        &self.header
    }

    fn advance(&mut self) -> Result<Option<u32>> {
        if self.next >= self.batch.pgnos.len() {
            if self.trailer.is_some() {
                return Ok(None);
            }
            let used = std::mem::take(&mut self.batch);
            let _ = self.recycle.send(used);
            match self.rx.recv() {
                Ok(Ok(Msg::Pages(batch))) => {
                    self.batch = batch;
                    self.next = 0;
                }
                Ok(Ok(Msg::Done(trailer))) => {
                    self.trailer = Some(trailer);
                    return Ok(None);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Usage("the decoding thread stopped")),
            }
        }
        self.current = self.next;
        self.next += 1;
        Ok(Some(self.batch.pgnos[self.current]))
    }

    fn page(&self) -> &[u8] {
        let at = self.current * self.page_size;
        &self.batch.pages[at..at + self.page_size]
    }

    fn finish(mut self) -> Result<Trailer> {
        // Pages not merged (none in a restore) are still decoded and verified.
        while self.advance()?.is_some() {}
        self.trailer.ok_or(Error::Usage("no trailer"))
    }
}

/// Files of one restore decoded on threads of their own, at most: the largest files.
/// The others (a long chain of small files) decode in line on the merge thread.
pub const MAX_THREADS: usize = 16;

/// One file of a restore, decoded on its own thread or in line.
pub enum FilePages<R: Read> {
    Threaded(ThreadedPages),
    InLine(DecodedPages<R>),
}

impl<R: Read> PageSource for FilePages<R> {
    fn header(&self) -> &Header {
        match self {
            FilePages::Threaded(p) => p.header(),
            FilePages::InLine(p) => p.header(),
        }
    }

    fn advance(&mut self) -> Result<Option<u32>> {
        match self {
            FilePages::Threaded(p) => p.advance(),
            FilePages::InLine(p) => p.advance(),
        }
    }

    fn page(&self) -> &[u8] {
        match self {
            FilePages::Threaded(p) => p.page(),
            FilePages::InLine(p) => p.page(),
        }
    }

    fn finish(self) -> Result<Trailer> {
        match self {
            FilePages::Threaded(p) => p.finish(),
            FilePages::InLine(p) => p.finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ltx::{Compression, DecodedPages, Encoder, Merge};

    fn file(min: u64, max: u64, commit: u32, pages: &[u32], fill: u8) -> Vec<u8> {
        let header = Header {
            flags: crate::ltx::FLAG_NO_CHECKSUM,
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1,
            ..Default::default()
        };
        let mut enc = Encoder::new(Vec::new(), header, Compression::Lz4).unwrap();
        for &p in pages {
            enc.write_page(p, &[fill.wrapping_add(p as u8); 512]).unwrap();
        }
        enc.finish(0).unwrap().0
    }

    fn merged<S: PageSource>(sources: Vec<S>) -> Result<Vec<(u32, Vec<u8>)>> {
        let mut out = Vec::new();
        Merge::from_sources(sources)?.run(|pgno, page| {
            out.push((pgno, page.to_vec()));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn threads_merge_the_same_pages_as_decoding_in_line() {
        // More pages than one batch, so batches are sent and recycled.
        let snap: Vec<u32> = (1..=300).collect();
        let later: Vec<u32> = (1..=300).filter(|p| p % 7 == 0).collect();
        let files = [file(1, 1, 300, &snap, 1), file(2, 2, 300, &later, 9)];
        let inline = merged(files.iter().map(|f| DecodedPages::new(&f[..]).unwrap()).collect()).unwrap();
        let threaded = merged(
            files
                .iter()
                .map(|f| ThreadedPages::spawn(std::io::Cursor::new(f.clone()), "test".into(), None).unwrap())
                .collect(),
        )
        .unwrap();
        assert_eq!(inline.len(), 300);
        assert_eq!(threaded, inline);
        assert_eq!(
            threaded[6].1[0],
            9u8.wrapping_add(7),
            "page 7 comes from the newer file"
        );
    }

    #[test]
    fn a_corrupt_file_fails_the_merge() {
        let mut bad = file(1, 1, 200, &(1..=200).collect::<Vec<_>>(), 3);
        let n = bad.len();
        bad[n - 1] ^= 1; // the file checksum
        let src = ThreadedPages::spawn(std::io::Cursor::new(bad), "test".into(), None).unwrap();
        let err = merged(vec![src]).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    }
}
