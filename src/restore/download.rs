//! Streaming a replica file into a blocking reader: ranged GETs run ahead on the I/O
//! runtime while the merge consumes them, so a restore downloads every file of its plan
//! in parallel with bounded memory (`chunks_ahead` chunks per file), whatever the sizes.

use crate::runtime::runtime;
use crate::storage::{LtxObject, ReplicaStore};
use bytes::{Buf, Bytes};
use futures::StreamExt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// A [`Read`] over one replica file, fed by ranged GETs running ahead of the reader.
/// Dropping it cancels the downloads still in flight.
pub struct RemoteReader {
    rx: mpsc::Receiver<Result<Bytes, String>>,
    current: Bytes,
    task: tokio::task::JoinHandle<()>,
}

impl RemoteReader {
    /// Starts downloading `file` in chunks of `chunk` bytes, at most `ahead` requests
    /// in flight; `downloaded` counts the bytes received (for progress).
    pub fn spawn(
        store: Arc<dyn ReplicaStore>,
        file: LtxObject,
        chunk: u64,
        ahead: usize,
        downloaded: Arc<AtomicU64>,
    ) -> RemoteReader {
        let ahead = ahead.max(1);
        let (tx, rx) = mpsc::channel(ahead);
        let chunk = chunk.max(64 * 1024);
        let ranges: Vec<std::ops::Range<u64>> = (0..file.size.div_ceil(chunk))
            .map(|i| i * chunk..((i + 1) * chunk).min(file.size))
            .collect();
        let task = runtime().spawn(async move {
            let fetch = |range: std::ops::Range<u64>| {
                let store = Arc::clone(&store);
                async move { store.get_range(file.level, file.min_txid, file.max_txid, range).await }
            };
            let mut chunks = futures::stream::iter(ranges).map(fetch).buffered(ahead);
            while let Some(result) = chunks.next().await {
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
                if tx.send(result).await.is_err() || failed {
                    return;
                }
            }
        });
        RemoteReader {
            rx,
            current: Bytes::new(),
            task,
        }
    }
}

impl Read for RemoteReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while !self.current.has_remaining() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
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
        let mut reader = RemoteReader::spawn(store, file, 64 * 1024, 2, Arc::clone(&counter));
        let mut got = Vec::new();
        reader.read_to_end(&mut got).unwrap();
        assert_eq!(got, data);
        assert_eq!(counter.load(Ordering::Relaxed), data.len() as u64);
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
