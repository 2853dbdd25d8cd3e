//! Streaming a replica file into a blocking reader: ranged GETs run ahead on the I/O
//! runtime while the merge consumes them, so a restore downloads the files of its plan
//! in parallel with bounded memory, whatever their number and sizes.
//!
//! Memory: every file holds at most one chunk until the merge actually reads it (past
//! the middle of its current chunk); only then does it fetch up to `ahead` chunks more,
//! each with a permit from the restore's shared prefetch budget. The merge reads the
//! files in page order, so a plan of files covering successive page ranges (large
//! transactions, one file each) no longer holds every file in memory at once. The one
//! chunk a file may always hold keeps the merge from waiting on a budget that files it
//! is not reading have taken.

use crate::ltx::SharedRead;
use crate::runtime::runtime;
use crate::storage::{LtxObject, ReplicaStore};
use bytes::{Buf, Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};

type Chunk = (Result<Bytes, String>, OwnedSemaphorePermit);

/// How far the reader has got: chunks it has read past the middle of.
#[derive(Default)]
struct Demand {
    chunks: AtomicUsize,
    changed: Notify,
}

/// A [`Read`] over one replica file, fed by ranged GETs running ahead of the reader.
/// Dropping it cancels the downloads still in flight.
pub struct RemoteReader {
    rx: mpsc::UnboundedReceiver<Chunk>,
    current: Bytes,
    /// Or, once the file is read sealed ([`SharedRead`]), the rest of the current chunk
    /// as owned bytes: each sealed page split off it is then the page's alone, and is
    /// opened in place.
    owned: BytesMut,
    sealed: bool,
    /// The current chunk's share of the prefetch budget, returned once it is read.
    permit: Option<OwnedSemaphorePermit>,
    chunk_len: usize,
    told_half: bool,
    demand: Arc<Demand>,
    task: tokio::task::JoinHandle<()>,
}

impl RemoteReader {
    /// Starts downloading `file` in chunks of `chunk` bytes, at most `ahead` chunks
    /// ahead of the reader, with a prefetch budget of its own (see
    /// [`spawn_with_budget`](Self::spawn_with_budget)).
    pub fn spawn(
        store: Arc<dyn ReplicaStore>,
        file: LtxObject,
        chunk: u64,
        ahead: usize,
        downloaded: Arc<AtomicU64>,
    ) -> RemoteReader {
        let budget = Arc::new(Semaphore::new(ahead.max(1)));
        RemoteReader::spawn_with_budget(store, file, chunk, ahead, budget, downloaded)
    }

    /// Starts downloading `file` in chunks of `chunk` bytes: the first at once, then, as
    /// the reader gets through them, at most `ahead` more in flight or waiting, each
    /// holding a permit of `budget` (shared by the files of one restore) or the one
    /// chunk this file may always hold. `downloaded` counts the bytes received.
    pub fn spawn_with_budget(
        store: Arc<dyn ReplicaStore>,
        file: LtxObject,
        chunk: u64,
        ahead: usize,
        budget: Arc<Semaphore>,
        downloaded: Arc<AtomicU64>,
    ) -> RemoteReader {
        let ahead = ahead.max(1);
        let chunk = chunk.max(64 * 1024);
        let (tx, rx) = mpsc::unbounded_channel();
        let demand = Arc::new(Demand::default());
        let ranges: Vec<std::ops::Range<u64>> = (0..file.size.div_ceil(chunk))
            .map(|i| i * chunk..((i + 1) * chunk).min(file.size))
            .collect();
        let task = runtime().spawn(fetch_all(
            store,
            file,
            ranges,
            ahead,
            budget,
            Arc::clone(&demand),
            tx,
            downloaded,
        ));
        RemoteReader {
            rx,
            current: Bytes::new(),
            owned: BytesMut::new(),
            sealed: false,
            permit: None,
            chunk_len: chunk as usize,
            told_half: true,
            demand,
            task,
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn fetch_all(
    store: Arc<dyn ReplicaStore>,
    file: LtxObject,
    ranges: Vec<std::ops::Range<u64>>,
    ahead: usize,
    budget: Arc<Semaphore>,
    demand: Arc<Demand>,
    tx: mpsc::UnboundedSender<Chunk>,
    downloaded: Arc<AtomicU64>,
) {
    let own = Arc::new(Semaphore::new(1));
    let mut in_flight = FuturesOrdered::new();
    let mut started = 0;
    loop {
        let read = demand.chunks.load(Ordering::Acquire);
        let allowed = if read == 0 { 1 } else { read + ahead };
        let can_start = started < ranges.len() && started < allowed && in_flight.len() < ahead;
        tokio::select! {
            biased;
            Some((result, permit)) = in_flight.next(), if !in_flight.is_empty() => {
                let result: Result<Bytes, crate::storage::Error> = result;
                let result = result.map_err(|e| {
                    format!(
                        "downloading level {} file {}: {e}",
                        file.level,
                        crate::ltx::format_name(file.min_txid, file.max_txid)
                    )
                });
                if let Ok(bytes) = &result {
                    downloaded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                }
                let failed = result.is_err();
                if tx.send((result, permit)).is_err() || failed {
                    return;
                }
            }
            permit = take_slot(&own, &budget), if can_start => {
                let Some(permit) = permit else { return };
                let range = ranges[started].clone();
                started += 1;
                let store = Arc::clone(&store);
                let fetch = async move { store.get_range(file.level, file.min_txid, file.max_txid, range).await };
                in_flight.push_back(fetch.map(move |r| (r, permit)));
            }
            _ = demand.changed.notified(), if !can_start && started < ranges.len() => {}
            else => return,
        }
    }
}

/// This file's own slot if it is free, else a permit of the shared budget.
async fn take_slot(own: &Arc<Semaphore>, budget: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        p = Arc::clone(own).acquire_owned() => p.ok(),
        p = Arc::clone(budget).acquire_owned() => p.ok(),
    }
}

impl RemoteReader {
    /// Makes sure the current chunk has bytes left, waiting for the next one if need
    /// be; false at the end of the file.
    fn fill(&mut self) -> io::Result<bool> {
        while self.remaining() == 0 {
            // The chunk is read: its slot may fetch the chunk this read waits for.
            self.permit = None;
            match self.rx.blocking_recv() {
                Some((Ok(bytes), permit)) => {
                    if self.sealed {
                        self.owned = owned(bytes);
                    } else {
                        self.current = bytes;
                    }
                    self.permit = Some(permit);
                    self.told_half = false;
                }
                Some((Err(e), _)) => return Err(io::Error::other(e)),
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Bytes left in the current chunk.
    fn remaining(&self) -> usize {
        self.current.len() + self.owned.len()
    }

    /// Tells the downloads once the reader is past the middle of the current chunk.
    fn consumed(&mut self) {
        if !self.told_half && self.remaining() <= self.chunk_len / 2 {
            self.told_half = true;
            self.demand.chunks.fetch_add(1, Ordering::Release);
            self.demand.changed.notify_one();
        }
    }
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.remaining());
        if self.current.is_empty() {
            self.owned.copy_to_slice(&mut buf[..n]);
        } else {
            self.current.copy_to_slice(&mut buf[..n]);
        }
        self.consumed();
        Ok(n)
    }
}

/// Bytes within one downloaded chunk are handed out as disjoint owned slices of it, not
/// copied: an encrypted file's sealed pages, opened in place. (The chunk's memory stays
/// until its last slice is dropped, the budget permit goes once it is read, as before:
/// the slices are bounded by the batches queued ahead.)
impl SharedRead for RemoteReader {
    fn read_shared(&mut self, n: usize) -> io::Result<BytesMut> {
        self.sealed = true;
        if !self.current.is_empty() {
            self.owned = owned(std::mem::take(&mut self.current));
        }
        if !self.fill()? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if self.owned.len() < n {
            // Across two chunks: copied.
            let mut buf = BytesMut::zeroed(n);
            self.read_exact(&mut buf)?;
            return Ok(buf);
        }
        let bytes = self.owned.split_to(n);
        self.consumed();
        Ok(bytes)
    }
}

/// A downloaded chunk as owned bytes: without a copy when nothing else holds it (a
/// `file://` store reads each range into a buffer of its own); else copied once, which
/// costs what copying each sealed page out of it before opening it did.
fn owned(bytes: Bytes) -> BytesMut {
    bytes.try_into_mut().unwrap_or_else(|b| BytesMut::from(&b[..]))
}

impl Drop for RemoteReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::open_store;

    #[test]
    fn a_file_streams_back_whole_in_small_chunks() {
        let store = open_store("memory://download-test", &Default::default()).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        crate::runtime::block_on(store.put(0, 1, 2, Bytes::from(data.clone()), 0)).unwrap();
        let file = crate::runtime::block_on(store.list(0)).unwrap().remove(0);
        let counter = Arc::new(AtomicU64::new(0));
        let budget = Arc::new(Semaphore::new(0));
        let mut reader = RemoteReader::spawn_with_budget(store, file, 64 * 1024, 2, budget, Arc::clone(&counter));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
    }

    #[test]
    fn a_file_not_being_read_holds_one_chunk_until_it_is() {
        let store = open_store("memory://download-idle", &Default::default()).unwrap();
        let data: Vec<u8> = (0..640 * 1024u32).map(|i| (i % 253) as u8).collect();
        crate::runtime::block_on(store.put(0, 1, 1, Bytes::from(data.clone()), 0)).unwrap();
        let file = crate::runtime::block_on(store.list(0)).unwrap().remove(0);
        let counter = Arc::new(AtomicU64::new(0));
        let budget = Arc::new(Semaphore::new(100));
        let mut reader =
            RemoteReader::spawn_with_budget(store, file, 64 * 1024, 4, Arc::clone(&budget), Arc::clone(&counter));
        std::thread::sleep(std::time::Duration::from_millis(300));
        assert_eq!(counter.load(Ordering::Relaxed), 64 * 1024, "one chunk before any read");
        assert_eq!(budget.available_permits(), 100, "and not from the shared budget");
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(budget.available_permits(), 100, "every permit returned");
    }

    /// Reads `data` as a file of `store` the way a restore reads an encrypted file: its
    /// header with `read`, then pieces of `piece` bytes with `read_shared`.
    fn read_sealed(store: Arc<dyn ReplicaStore>, data: &[u8], piece: usize) -> Vec<BytesMut> {
        crate::runtime::block_on(store.put(0, 1, 1, Bytes::from(data.to_vec()), 0)).unwrap();
        let file = crate::runtime::block_on(store.list(0)).unwrap().remove(0);
        let mut reader = RemoteReader::spawn(store, file, 64 * 1024, 2, Arc::default());
        let mut header = [0u8; 100];
        reader.read_exact(&mut header).unwrap();
        assert_eq!(header[..], data[..100]);
        let mut pieces = Vec::new();
        while pieces.len() * piece + 100 < data.len() {
            let n = piece.min(data.len() - 100 - pieces.len() * piece);
            pieces.push(reader.read_shared(n).unwrap());
        }
        assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "all read");
        pieces
    }

    #[test]
    fn sealed_pieces_come_back_whole_from_a_file_store_and_a_memory_store() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 249) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let file_store = open_store(&format!("file://{}", dir.path().display()), &Default::default()).unwrap();
        let memory = open_store("memory://download-sealed", &Default::default()).unwrap();
        for store in [file_store, memory] {
            let pieces = read_sealed(store, &data, 3000);
            let joined: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, data[100..], "every byte once, in order");
        }
    }

    #[test]
    fn a_chunk_nothing_else_holds_becomes_owned_without_a_copy_and_a_shared_one_is_copied() {
        let unique = Bytes::from(vec![7u8; 4096]);
        let at = unique.as_ptr();
        let owned_chunk = owned(unique);
        assert_eq!(owned_chunk.as_ptr(), at, "the same buffer");
        let shared = Bytes::from(vec![9u8; 4096]);
        let other = shared.clone();
        let copied = owned(shared);
        assert_ne!(
            copied.as_ptr(),
            other.as_ptr(),
            "a copy: the store still holds the chunk"
        );
        assert_eq!(copied[..], other[..]);
    }

    #[test]
    fn a_missing_file_is_a_read_error_naming_it() {
        let store = open_store("memory://download-missing", &Default::default()).unwrap();
        let file = LtxObject {
            level: 1,
            min_txid: 5,
            max_txid: 9,
            size: 100,
            last_modified: None,
        };
        let mut reader = RemoteReader::spawn(store, file, 64 * 1024, 2, Arc::default());
        let err = reader.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(
            err.contains("level 1 file 0000000000000005-0000000000000009.ltx"),
            "{err}"
        );
    }
}
