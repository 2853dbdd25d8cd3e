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

use super::buffers::{BufferPool, SharedPages};
use crate::ltx::{page_checksum, DbChecksum, Error, PageDecompressor, PageOpener, Result, SealedFrame};
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
    /// The pages in order, `pgnos.len()` of them (the buffer may be longer), shared
    /// with the writing thread once merged.
    pub pages: SharedPages,
    /// Each page's checksum, when its file carries checksums: computed once, here,
    /// while the page is in the CPU's cache, for both the file's own snapshot checksum
    /// and the checksum of the database the restore writes.
    pub sums: Vec<u64>,
    /// Sealed frames, their payloads slices of the downloaded chunks.
    pub frames: Vec<SealedFrame>,
    /// The checksums of the batch's pages added up, for a snapshot's post-apply checksum.
    pub checksum: DbChecksum,
}

impl Batch {
    /// Empties the batch for reuse; its page buffer goes back to the pool (once the
    /// writer, too, is done with it).
    pub fn clear(&mut self) {
        self.pages = SharedPages::default();
        self.pgnos.clear();
        self.sums.clear();
        self.frames.clear();
        self.checksum = DbChecksum::new();
    }

    /// Page `i` of the batch.
    pub fn page(&self, i: usize, page_size: usize) -> &[u8] {
        &self.pages[i * page_size..(i + 1) * page_size]
    }
}

struct Job {
    opener: PageOpener,
    page_size: usize,
    /// Whether to checksum the opened pages (the file carries checksums).
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

/// What each thread of the pool keeps from one batch to the next.
struct Worker {
    dec: PageDecompressor,
    buffers: BufferPool,
}

impl OpenPool {
    /// A pool of `threads` threads (at least one), opening pages into `buffers`.
    pub fn new(threads: usize, buffers: &BufferPool) -> Result<OpenPool> {
        let (jobs, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let worker = Worker {
                dec: PageDecompressor::new(),
                buffers: buffers.clone(),
            };
            std::thread::Builder::new()
                .name(format!("restore-open-{i}"))
                .spawn(move || worker.run(&rx))
                .map_err(Error::Io)?;
        }
        Ok(OpenPool { jobs })
    }

    /// A pool with a thread per core.
    pub fn per_core(buffers: &BufferPool) -> Result<OpenPool> {
        OpenPool::new(std::thread::available_parallelism().map_or(2, |n| n.get()), buffers)
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

impl Worker {
    fn run(mut self, jobs: &Mutex<Receiver<Job>>) {
        loop {
            // The lock is held only while waiting for a job, not while opening it.
            let job = match jobs.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(mut job) = job else { return };
            let result = self.open_batch(&mut job).map(|()| job.batch);
            // The file's reader or the merge has gone (an error elsewhere): nothing to do.
            let _ = job.done.send(result);
        }
    }

    fn open_batch(&mut self, job: &mut Job) -> Result<()> {
        let ps = job.page_size;
        let b = &mut job.batch;
        b.pgnos.clear();
        b.sums.clear();
        let mut pages = self.buffers.take(b.frames.len() * ps);
        for (i, frame) in b.frames.iter_mut().enumerate() {
            let page = &mut pages[i * ps..(i + 1) * ps];
            let pgno = job.opener.open(&mut self.dec, frame, page)?;
            if job.checksum {
                let sum = page_checksum(pgno, page);
                b.sums.push(sum);
                b.checksum.toggle_checksum(sum);
            }
            b.pgnos.push(pgno);
        }
        // The sealed payloads are done with: let their downloaded chunks go.
        b.frames.clear();
        b.pages = Arc::new(pages);
        Ok(())
    }
}
