//! Opening encrypted pages on a pool of threads. One file's frames are read (and its
//! file checksum computed) in order by its decoding thread, but opening a sealed page
//! (ChaCha20-Poly1305) and decompressing it cost several times more than that, so they
//! run here, a batch of pages per job, on as many threads as there are cores: with one
//! thread per file, the snapshot that makes up nearly all of a restore decrypted on one
//! core, and an encrypted restore took 1.24-1.41× the plaintext time.
//!
//! Jobs come back through a channel of their own, which the file's reader queues in
//! file order for the merge: pages reach the merge in the order they were read, and
//! memory stays bounded by the batches each file queues ahead (see `decode`).

use crate::ltx::{DbChecksum, Error, PageDecompressor, PageOpener, Result, SealedFrame};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};

/// Pages a batch holds, decoded or sealed: about 1 MiB of pages. 64 pages of 4 KiB
/// (256 KiB, to stay in the CPU's caches) made a 1 GiB restore on 2 cores 13 % slower
/// plaintext and 9 % slower encrypted than 256 do (tmpfs, quiet machine): hand-offs
/// between the reader, the pool and the merge cost more than the cache misses. Bounded
/// in bytes, so 64 KiB pages do not make 16 MiB batches.
pub fn batch_pages(page_size: usize) -> usize {
    ((1 << 20) / page_size.max(1)).clamp(16, 256)
}

/// A batch of pages: sealed frames read by a file's reader, opened into `pages`.
#[derive(Default)]
pub struct Batch {
    pub pgnos: Vec<u32>,
    pub pages: Vec<u8>,
    /// Sealed payloads and where each frame's is.
    pub sealed: Vec<u8>,
    pub frames: Vec<SealedFrame>,
    /// Checksums of the opened pages, for a snapshot's post-apply checksum.
    pub checksum: DbChecksum,
}

impl Batch {
    pub fn clear(&mut self) {
        self.pgnos.clear();
        self.sealed.clear();
        self.frames.clear();
        self.checksum = DbChecksum::new();
    }
}

struct Job {
    opener: PageOpener,
    page_size: usize,
    /// Whether to checksum the opened pages.
    checksum: bool,
    batch: Batch,
    done: SyncSender<Result<Batch>>,
}

/// Threads that open batches of sealed pages, shared by every file of a restore. They
/// end once every handle is dropped.
#[derive(Clone)]
pub struct OpenPool {
    jobs: Sender<Job>,
}

impl OpenPool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> Result<OpenPool> {
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("restore-open-{i}"))
                .spawn(move || worker(&rx))
                .map_err(Error::Io)?;
        }
        Ok(OpenPool { jobs })
    }

    /// A pool with a thread per core.
    pub fn per_core() -> Result<OpenPool> {
        OpenPool::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    /// Opens `batch`'s frames with `opener` on the pool; the opened batch (or the
    /// first page's error) comes back on the receiver.
    pub fn submit(
        &self,
        opener: &PageOpener,
        page_size: usize,
        checksum: bool,
        batch: Batch,
    ) -> Result<Receiver<Result<Batch>>> {
        let (done, rx) = sync_channel(1);
        let job = Job {
            opener: opener.clone(),
            page_size,
            checksum,
            batch,
            done,
        };
        self.jobs
            .send(job)
            .map_err(|_| Error::Usage("the page opening threads stopped"))?;
        Ok(rx)
    }
}

fn worker(jobs: &Mutex<Receiver<Job>>) {
    let mut dec = PageDecompressor::new();
    loop {
        // The lock is held only while waiting for a job, not while opening it.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let result = open_batch(&mut dec, &mut job).map(|()| job.batch);
        // The file's reader or the merge has gone (an error elsewhere): nothing to do.
        let _ = job.done.send(result);
    }
}

fn open_batch(dec: &mut PageDecompressor, job: &mut Job) -> Result<()> {
    let ps = job.page_size;
    let b = &mut job.batch;
    b.pgnos.clear();
    b.pages.resize(b.frames.len() * ps, 0);
    for (i, frame) in b.frames.iter().enumerate() {
        let page = &mut b.pages[i * ps..(i + 1) * ps];
        let pgno = job.opener.open(dec, frame, &mut b.sealed, page)?;
        if job.checksum {
            b.checksum.toggle_page(pgno, page);
        }
        b.pgnos.push(pgno);
    }
    Ok(())
}
