//! Decoding a file on a thread of its own: the restore's merge thread then only picks
//! the newest version of each page and copies it out, while decompression and the CRC
//! of every file run in parallel (they were most of the merge thread's time).
//!
//! The thread sends pages in batches over a bounded channel (a few batches per file)
//! and gets the batches back to refill, so memory stays small whatever the file size.
//! An encrypted file's thread only reads its sealed frames and checks its file checksum;
//! the frames are opened and decompressed on a pool of threads ([`super::open`]), and
//! the channel carries each batch's place in the file while it is opened.

use super::buffers::{BufferPool, SharedPages};
use super::open::{batch_pages, Batch, OpenPool};
use crate::ltx::crypto::PrivateKey;
use crate::ltx::{
    page_checksum, DbChecksum, DecodedPages, Decoder, Error, Header, PageOpener, PageSource, Result, SealedSummary,
    SharedRead, Trailer,
};
use std::io::Read;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

/// Batches decoded ahead of the merge, per file.
const BATCHES_AHEAD: usize = 2;

enum Msg {
    Pages(Batch),
    /// A batch of sealed pages being opened on the pool: the merge waits for it here,
    /// so batches reach it in file order.
    Opening(Receiver<Result<Batch>>),
    /// The file ended and verified: its trailer.
    Done(Trailer),
    /// A file read sealed ended: verified once its opened pages' checksum is checked.
    SealedDone(SealedSummary),
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
    /// Checksum of the pages opened on the pool, for a snapshot's post-apply checksum.
    opened: DbChecksum,
    trailer: Option<Trailer>,
}

impl ThreadedPages {
    /// Reads the header of `r` here, then decodes the rest on a new thread named `name`,
    /// into buffers of `buffers`. `key` opens an encrypted file; with a `pool`, its pages
    /// are opened there, the thread only reading them in order.
    pub fn spawn<R: SharedRead + Send + 'static>(
        r: R,
        name: String,
        key: Option<&PrivateKey>,
        pool: Option<&OpenPool>,
        buffers: &BufferPool,
    ) -> Result<ThreadedPages> {
        let dec = Decoder::with_key(r, key)?;
        let header = *dec.header();
        let page_size = header.page_size as usize;
        let sealed = pool.zip(dec.page_opener());
        // Sealed batches in the channel wait for the pool, which has a thread per core:
        // queue enough to keep them all busy on one file (a snapshot is most of a
        // restore), within a bound (a batch holds about 1 MiB of pages, and as much sealed).
        let ahead = sealed
            .as_ref()
            .map_or(BATCHES_AHEAD, |_| (2 * cores()).clamp(BATCHES_AHEAD, 16));
        let (tx, rx) = sync_channel::<Result<Msg>>(ahead);
        let (recycle, recycled) = channel::<Batch>();
        let buffers = buffers.clone();
        let spawned = match sealed {
            Some((pool, opener)) => {
                let pool = pool.clone();
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || read_sealed(dec, &pool, &opener, &tx, &recycled))
            }
            None => std::thread::Builder::new()
                .name(name)
                .spawn(move || decode(dec, &buffers, &tx, &recycled)),
        };
        spawned.map_err(Error::Io)?;
        Ok(ThreadedPages {
            header,
            page_size,
            rx,
            recycle,
            batch: Batch::default(),
            current: 0,
            next: 0,
            opened: DbChecksum::new(),
            trailer: None,
        })
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Decodes the whole file here, batch by batch. A send fails only when the merge has
/// gone (an error elsewhere): stop then.
fn decode<R: Read>(
    mut dec: Decoder<R>,
    buffers: &BufferPool,
    tx: &SyncSender<Result<Msg>>,
    recycled: &Receiver<Batch>,
) {
    loop {
        let mut batch = recycled.try_recv().unwrap_or_default();
        batch.clear();
        match fill(&mut dec, &mut batch, buffers) {
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
}

/// Reads the file's sealed pages here, in order, and hands each batch to the pool.
fn read_sealed<R: SharedRead>(
    mut dec: Decoder<R>,
    pool: &OpenPool,
    opener: &PageOpener,
    tx: &SyncSender<Result<Msg>>,
    recycled: &Receiver<Batch>,
) {
    let page_size = dec.header().page_size as usize;
    let checksum = !dec.header().no_checksum();
    loop {
        let mut batch = recycled.try_recv().unwrap_or_default();
        batch.clear();
        let more = match fill_sealed(&mut dec, &mut batch, page_size) {
            Ok(more) => more,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        if !batch.frames.is_empty() {
            let opening = match pool.submit(opener, page_size, checksum, batch) {
                Ok(opening) => opening,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            if tx.send(Ok(Msg::Opening(opening))).is_err() {
                return;
            }
        }
        if !more {
            let _ = tx.send(dec.finish_sealed().map(Msg::SealedDone));
            return;
        }
    }
}

/// Decodes up to [`batch_pages`] pages into `batch`, and their checksums if the file
/// carries them; false once the file has no more.
fn fill<R: Read>(dec: &mut Decoder<R>, batch: &mut Batch, buffers: &BufferPool) -> Result<bool> {
    let page_size = dec.header().page_size as usize;
    let sums = !dec.header().no_checksum();
    let n = batch_pages(page_size);
    let mut pages = buffers.take(n * page_size);
    let mut more = true;
    while batch.pgnos.len() < n {
        let at = batch.pgnos.len() * page_size;
        let page = &mut pages[at..at + page_size];
        let Some(pgno) = dec.next_page(page)? else {
            more = false;
            break;
        };
        batch.pgnos.push(pgno);
        if sums {
            // A snapshot's decoder computed it already, to check the snapshot.
            let sum = dec.last_page_checksum().unwrap_or_else(|| page_checksum(pgno, page));
            batch.sums.push(sum);
        }
    }
    batch.pages = Arc::new(pages);
    Ok(more)
}

/// Reads up to [`batch_pages`] sealed frames into `batch`; false once the file has no more.
fn fill_sealed<R: SharedRead>(dec: &mut Decoder<R>, batch: &mut Batch, page_size: usize) -> Result<bool> {
    while batch.frames.len() < batch_pages(page_size) {
        match dec.next_sealed()? {
            Some(frame) => batch.frames.push(frame),
            None => return Ok(false),
        }
    }
    Ok(true)
}

impl ThreadedPages {
    /// The current page's checksum, if its file carries checksums.
    pub fn page_checksum(&self) -> Option<u64> {
        self.batch.sums.get(self.current).copied()
    }

    /// The buffer holding the current page, and the page's offset in it.
    pub fn shared_page(&self) -> (&SharedPages, usize) {
        (&self.batch.pages, self.current * self.page_size)
    }
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
                Ok(Ok(Msg::Opening(opening))) => {
                    let batch = opening
                        .recv()
                        .map_err(|_| Error::Usage("a page opening thread stopped"))??;
                    self.opened.combine(batch.checksum);
                    self.batch = batch;
                    self.next = 0;
                }
                Ok(Ok(Msg::Done(trailer))) => {
                    self.trailer = Some(trailer);
                    return Ok(None);
                }
                Ok(Ok(Msg::SealedDone(summary))) => {
                    self.trailer = Some(summary.check(self.opened)?.trailer);
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
        self.batch.page(self.current, self.page_size)
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

impl<R: Read> FilePages<R> {
    /// The current page's checksum, when it was computed already (while decoding).
    pub fn page_checksum(&self) -> Option<u64> {
        match self {
            FilePages::Threaded(p) => p.page_checksum(),
            FilePages::InLine(p) => p.page_checksum(),
        }
    }

    /// The buffer holding the current page and its offset there, for a file decoded on
    /// its own thread (which the writer may then hold on to).
    pub fn shared_page(&self) -> Option<(&SharedPages, usize)> {
        match self {
            FilePages::Threaded(p) => Some(p.shared_page()),
            FilePages::InLine(_) => None,
        }
    }
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
    use crate::ltx::crypto::{OsEntropy, PublicKey};
    use crate::ltx::{Compression, DecodedPages, Encoder, Encoding, Merge};

    /// A 512-byte-page LTX file with `pages`, each filled with `fill + pgno`, in `encoding`.
    fn encoded(min: u64, max: u64, commit: u32, pages: &[u32], fill: u8, encoding: &Encoding) -> Vec<u8> {
        let header = Header {
            flags: crate::ltx::FLAG_NO_CHECKSUM,
            page_size: 512,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: 1,
            ..Default::default()
        };
        let mut enc = Encoder::with_encoding(Vec::new(), header, encoding).unwrap();
        for &p in pages {
            enc.write_page(p, &[fill.wrapping_add(p as u8); 512]).unwrap();
        }
        enc.finish(0).unwrap().0
    }

    fn file(min: u64, max: u64, commit: u32, pages: &[u32], fill: u8) -> Vec<u8> {
        encoded(min, max, commit, pages, fill, &Encoding::plain(Compression::Lz4))
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
                .map(|f| {
                    ThreadedPages::spawn(
                        std::io::Cursor::new(f.clone()),
                        "test".into(),
                        None,
                        None,
                        &BufferPool::new(),
                    )
                    .unwrap()
                })
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

    fn sealed_file(min: u64, max: u64, commit: u32, pages: &[u32], fill: u8, to: &PublicKey) -> Vec<u8> {
        let encoding = Encoding::sealed(Compression::Lz4, std::slice::from_ref(to));
        encoded(min, max, commit, pages, fill, &encoding)
    }

    fn threaded(files: &[Vec<u8>], key: &PrivateKey, pool: &OpenPool) -> Result<Vec<(u32, Vec<u8>)>> {
        let sources = files
            .iter()
            .map(|f| {
                let r = std::io::Cursor::new(f.clone());
                ThreadedPages::spawn(r, "test".into(), Some(key), Some(pool), &BufferPool::new())
            })
            .collect::<Result<Vec<_>>>()?;
        merged(sources)
    }

    #[test]
    fn encrypted_pages_opened_on_the_pool_merge_as_decoded_in_line() {
        let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        // Many batches, so that several are opened at once and must come back in order.
        let snap: Vec<u32> = (1..=2000).collect();
        let later: Vec<u32> = (1..=2000).filter(|p| p % 7 == 0).collect();
        let files = [
            sealed_file(1, 1, 2000, &snap, 1, &key.public_key()),
            sealed_file(2, 2, 2000, &later, 9, &key.public_key()),
            // A plaintext file in an encrypted restore (history from before the key):
            // decoded on its own thread as before.
            file(3, 3, 2000, &[5, 1999], 4),
        ];
        let inline = merged(
            files
                .iter()
                .map(|f| DecodedPages::with_key(&f[..], Some(&key)).unwrap())
                .collect(),
        )
        .unwrap();
        for threads in [1, 3] {
            let pool = OpenPool::new(threads, &BufferPool::new()).unwrap();
            let got = threaded(&files, &key, &pool).unwrap();
            assert_eq!(got.len(), 2000);
            assert!(got == inline, "{threads} threads");
        }
        assert_eq!(
            inline[13].1[0],
            9u8.wrapping_add(14),
            "page 14 comes from the second file"
        );
        assert_eq!(inline[4].1[0], 4u8.wrapping_add(5), "page 5 from the third");
    }

    #[test]
    fn a_tampered_page_opened_on_the_pool_fails_the_merge() {
        let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        let f = sealed_file(1, 1, 1000, &(1..=1000).collect::<Vec<_>>(), 3, &key.public_key());
        let e = *crate::ltx::verify(&f[..]).unwrap().index.get(700).unwrap();
        let mut bad = f.clone();
        bad[e.offset as usize + 30] ^= 1;
        let pool = OpenPool::new(2, &BufferPool::new()).unwrap();
        let err = threaded(&[bad], &key, &pool).unwrap_err();
        assert!(matches!(err, Error::PageAuth { pgno: 700 }), "{err}");
        // The same with a wrong key: refused at the header, before any page.
        let other = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        assert!(threaded(&[f], &other, &pool).is_err());
    }

    #[test]
    fn a_snapshot_whose_pages_opened_on_the_pool_miss_its_checksum_fails_the_merge() {
        let key = PrivateKey::generate(&mut OsEntropy::default()).unwrap();
        let header = Header {
            page_size: 512,
            commit: 500,
            min_txid: 1,
            max_txid: 1,
            timestamp_ms: 1,
            ..Default::default()
        };
        let encoding = Encoding::sealed(Compression::Lz4, &[key.public_key()]);
        let mut enc = Encoder::with_encoding(Vec::new(), header, &encoding).unwrap();
        let mut sum = crate::ltx::DbChecksum::new();
        for p in 1..=500u32 {
            let page = [p as u8; 512];
            enc.write_page(p, &page).unwrap();
            sum.toggle_page(p, &page);
        }
        let good = enc.finish(sum.value()).unwrap().0;
        let pool = OpenPool::new(2, &BufferPool::new()).unwrap();
        assert_eq!(threaded(std::slice::from_ref(&good), &key, &pool).unwrap().len(), 500);
        // Another post-apply checksum, with the file checksum made to match it: only
        // the pages' checksum, summed over the pool's batches, can tell.
        let mut bad = good;
        let n = bad.len();
        bad[n - 9] ^= 1;
        let crc = crate::ltx::CHECKSUM_FLAG | crate::ltx::crc64(&bad[..n - 8]);
        bad[n - 8..].copy_from_slice(&crc.to_be_bytes());
        let err = threaded(&[bad], &key, &pool).unwrap_err();
        assert!(matches!(err, Error::PostApplyChecksumMismatch { .. }), "{err}");
    }

    #[test]
    fn a_corrupt_file_fails_the_merge() {
        let mut bad = file(1, 1, 200, &(1..=200).collect::<Vec<_>>(), 3);
        let n = bad.len();
        bad[n - 1] ^= 1; // the file checksum
        let src =
            ThreadedPages::spawn(std::io::Cursor::new(bad), "test".into(), None, None, &BufferPool::new()).unwrap();
        let err = merged(vec![src]).unwrap_err();
        assert!(matches!(err, Error::ChecksumMismatch { .. }), "{err}");
    }
}
