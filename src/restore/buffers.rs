//! Page buffers that a batch and the writing thread share, so that a restore's pages are
//! written from the buffer they were decoded into: the merge no longer copies each page
//! into a buffer of the writer's (a gigabyte of copying in a 1 GiB restore, on the merge
//! thread, with the page long out of the CPU's cache by then).
//!
//! A buffer goes back to its pool when the last holder drops it (the merge moving on, or
//! the writer done writing), and the next batch takes it from there: a restore allocates
//! only as many buffers as are in flight at once.
//!
//! The buffer taken is the one returned longest ago, not the last one: the last one was
//! just read by the writer, on the other core, and writing pages into it again at once
//! costs the decoding thread more (LZ4 into the least recently returned buffer:
//! 0.18-0.37 CPU-s against 0.24-0.45 in a 1 GiB restore, wall 0.78 against 0.87 s
//! encrypted, 0.65 against 0.68 plaintext; 2 CPUs, load 6-9).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Buffers kept for reuse at most: more than are ever in flight (a few batches per file
/// queued ahead, the writer's queue), and few enough that an idle pool holds little.
const KEEP: usize = 64;

/// Where a restore's page buffers come from and go back to.
#[derive(Clone, Default)]
pub struct BufferPool {
    free: Free,
}

/// Buffers given back, oldest first.
type Free = Arc<Mutex<VecDeque<Vec<u8>>>>;

impl BufferPool {
    pub fn new() -> BufferPool {
        BufferPool::default()
    }

    /// A buffer of at least `len` bytes. Reused buffers are not zeroed again (whoever
    /// fills one overwrites what it reads back), a new one is.
    pub fn take(&self, len: usize) -> PooledBuf {
        let reused = self.free.lock().ok().and_then(|mut free| free.pop_front());
        let mut data = reused.unwrap_or_default();
        if data.len() < len {
            data.resize(len, 0);
        }
        PooledBuf {
            data,
            pool: Some(Arc::clone(&self.free)),
        }
    }
}

/// A buffer that returns to its pool when dropped.
#[derive(Default)]
pub struct PooledBuf {
    data: Vec<u8>,
    pool: Option<Free>,
}

impl std::ops::Deref for PooledBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl std::ops::DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            if let Ok(mut free) = pool.lock() {
                if free.len() < KEEP {
                    free.push_back(std::mem::take(&mut self.data));
                }
            }
        }
    }
}

/// A batch's pages, shared with the writing thread.
pub type SharedPages = Arc<PooledBuf>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_comes_back_when_its_last_holder_drops_it() {
        let pool = BufferPool::new();
        let mut a = pool.take(100);
        a[..3].copy_from_slice(b"abc");
        let shared: SharedPages = Arc::new(a);
        let writer = Arc::clone(&shared);
        drop(shared);
        assert_eq!(pool.free.lock().unwrap().len(), 0, "the writer still holds it");
        drop(writer);
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        let b = pool.take(50);
        assert_eq!(&b[..3], b"abc", "reused as it was, not zeroed");
        assert!(b.len() >= 100);
        let c = pool.take(200);
        assert!(c.len() == 200 && c.iter().all(|&x| x == 0), "a new one is zeroed");
    }

    #[test]
    fn the_buffer_returned_longest_ago_is_taken_first() {
        let pool = BufferPool::new();
        let (mut a, mut b) = (pool.take(10), pool.take(10));
        a[0] = 1;
        b[0] = 2;
        drop(a);
        drop(b);
        assert_eq!(pool.take(10)[0], 1);
    }
}
