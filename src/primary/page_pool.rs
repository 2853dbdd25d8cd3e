//! Page buffers for captured frames, in memory mapped for them alone.
//!
//! Capture copies each frame SQLite writes to the WAL into a page buffer on the
//! application's thread; the buffers travel through the queue and come back, or are
//! freed, on the engine's. From malloc they lay in the application's heap between
//! SQLite's own page-cache allocations, and once freed glibc could give little of them
//! back: after a 1 MiB burst an idle primary kept hundreds of KiB of RSS above plain
//! SQLite (issue 15). Here they are slots in chunks mapped with `mmap`, and a chunk
//! is unmapped as soon as none of its slots is in use: when a database goes idle
//! (capture frees its spare buffers after a turn with nothing to stage), its page
//! memory goes back to the operating system.
//!
//! Allocating and freeing take one process-wide lock: capture keeps freed buffers for
//! reuse, so a steady stream of commits does neither. A child of `fork()` has a pool
//! (and a lock) of its own: the parent's engine thread freeing buffers at the fork would
//! have left the lock held forever in the child, and the child's first commit waiting
//! on it. A buffer of the parent's pool freed in the child is merely forgotten (its
//! memory is the parent's copy; nothing in the child hands it out again).
//!
//! Why not an allocator crate: those are global allocators (mimalloc's heaps are per
//! thread and give memory back when their own thread next allocates, but our buffers
//! are freed on another thread than the one that allocated them), and a map per buffer
//! would cost a system call per page and a kernel mapping per buffer in flight. The
//! mappings and their slots are `crate::vfs::sys::pages` (which holds the `unsafe`:
//! each slot handed to one buffer at a time); this module decides which chunk a buffer
//! comes from and when a chunk goes.

use crate::vfs::sys::fork::ProcessMutex;
use crate::vfs::sys::pages::{Chunk, Slot};
use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

/// Bytes mapped at once: 64 slots of 4 KiB pages, 4 of 64 KiB. Big enough that a burst
/// maps rarely, small enough that a few buffers kept alive pin little.
const CHUNK_BYTES: usize = 256 * 1024;

/// One page of a captured frame: `len` bytes, contents unspecified when new.
pub struct PageBuf(Storage);

enum Storage {
    /// A slot of a mapped chunk, owned by this buffer alone.
    Slot(Slot),
    /// From the heap, when mapping failed (or a size no chunk holds).
    Heap(Box<[u8]>),
}

impl PageBuf {
    /// A buffer of `len` bytes.
    pub fn new(len: usize) -> Self {
        match POOL.lock().take(len) {
            Some(slot) => PageBuf(Storage::Slot(slot)),
            None => PageBuf(Storage::Heap(vec![0u8; len].into_boxed_slice())),
        }
    }

    /// A buffer holding a copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> Self {
        let mut page = Self::new(bytes.len());
        page.copy_from_slice(bytes);
        page
    }
}

impl Deref for PageBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Storage::Slot(s) => s,
            Storage::Heap(b) => b,
        }
    }
}

impl DerefMut for PageBuf {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        match &mut self.0 {
            Storage::Slot(s) => s,
            Storage::Heap(b) => b,
        }
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        // An empty boxed slice in its place allocates nothing.
        if let Storage::Slot(slot) = std::mem::replace(&mut self.0, Storage::Heap(Box::default())) {
            let unmap = POOL.lock().give_back(slot);
            // Unmapped here, outside the lock.
            drop(unmap);
        }
    }
}

impl std::fmt::Debug for PageBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageBuf({} bytes)", self.len())
    }
}

/// Bytes of chunks mapped now for pages of `len` bytes (for tests and figures).
pub fn mapped_bytes(len: usize) -> usize {
    let pool = POOL.lock();
    pool.chunks
        .values()
        .filter(|c| c.slot_len() == len)
        .map(Chunk::mapped)
        .sum()
}

static POOL: ProcessMutex<Pool> = ProcessMutex::new();

#[derive(Default)]
struct Pool {
    /// Every mapped chunk by its address.
    chunks: BTreeMap<usize, Chunk>,
    /// Addresses of the chunks with a free slot.
    with_room: Vec<usize>,
}

impl Pool {
    /// A free slot of `len` bytes, mapping a chunk when none has room; `None` when the
    /// size is not a page size or mapping failed.
    fn take(&mut self, len: usize) -> Option<Slot> {
        if !(512..=65536).contains(&len) {
            return None;
        }
        let base = match self.with_room.iter().rposition(|b| self.chunks[b].slot_len() == len) {
            Some(i) => self.with_room[i],
            None => {
                let slots = (CHUNK_BYTES / len).max(1);
                let chunk = match Chunk::map(len, slots) {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        tracing::debug!("mapping {} bytes for page buffers failed: {e}", slots * len);
                        return None;
                    }
                };
                let base = chunk.addr();
                self.chunks.insert(base, chunk);
                self.with_room.push(base);
                base
            }
        };
        let chunk = self.chunks.get_mut(&base).expect("listed with room");
        let slot = chunk.take().expect("a chunk with room has a free slot");
        if !chunk.has_room() {
            self.with_room.retain(|b| *b != base);
        }
        Some(slot)
    }

    /// Takes back `slot`; returns its chunk, out of the pool, when no slot of it is in
    /// use any more (to be unmapped, by dropping it, outside the lock). A slot of no
    /// chunk here (the parent's pool, freed in a child of `fork()`) is dropped unlisted.
    fn give_back(&mut self, slot: Slot) -> Option<Chunk> {
        let (&base, chunk) = self
            .chunks
            .range_mut(..=slot.addr())
            .next_back()
            .filter(|(_, chunk)| chunk.handed_out(&slot))?;
        let was_full = !chunk.has_room();
        chunk.give_back(slot);
        if chunk.all_free() {
            if !was_full {
                self.with_room.retain(|b| *b != base);
            }
            return self.chunks.remove(&base);
        }
        if was_full {
            self.with_room.push(base);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test uses a page size no other test does: the pool is process-wide and tests
    // run in parallel.

    #[test]
    fn buffers_do_not_overlap_and_their_chunks_are_unmapped_when_all_are_freed() {
        let len = 1536;
        let mut pages: Vec<PageBuf> = (0..400).map(|_| PageBuf::new(len)).collect();
        for (i, page) in pages.iter_mut().enumerate() {
            page.fill(i as u8);
        }
        for (i, page) in pages.iter().enumerate() {
            assert!(page.iter().all(|&b| b == i as u8), "buffer {i} was written by another");
        }
        let chunks = 400usize.div_ceil(CHUNK_BYTES / len);
        assert_eq!(mapped_bytes(len), chunks * (CHUNK_BYTES / len) * len);
        // Free all but one: only that one's chunk stays mapped.
        let kept = pages.pop().expect("400");
        drop(pages);
        assert_eq!(mapped_bytes(len), (CHUNK_BYTES / len) * len);
        drop(kept);
        assert_eq!(mapped_bytes(len), 0, "no buffer in use, nothing mapped");
    }

    #[test]
    fn a_freed_slot_is_reused_before_a_new_chunk_is_mapped() {
        let len = 2560;
        let per_chunk = CHUNK_BYTES / len;
        let mut pages: Vec<PageBuf> = (0..per_chunk).map(|_| PageBuf::new(len)).collect();
        assert_eq!(mapped_bytes(len), per_chunk * len);
        pages.swap_remove(3);
        pages.push(PageBuf::new(len));
        assert_eq!(mapped_bytes(len), per_chunk * len, "the chunk had room again");
        let copy = PageBuf::copy_of(&[7u8; 2560]);
        assert_eq!(mapped_bytes(len), 2 * per_chunk * len);
        assert!(copy.iter().all(|&b| b == 7));
    }

    #[test]
    fn a_child_of_fork_allocates_and_frees_while_a_parent_thread_held_the_pool() {
        // A buffer of the parent's pool, freed in the child.
        static PARENTS: std::sync::Mutex<Option<PageBuf>> = std::sync::Mutex::new(None);
        *PARENTS.lock().unwrap() = Some(PageBuf::new(7168));
        let finished = crate::vfs::sys::fork::tests::finishes_in_a_child(
            || Box::new(POOL.lock()),
            || {
                let page = PageBuf::copy_of(&[9u8; 3584]);
                assert!(page.iter().all(|&b| b == 9));
                drop(page);
                drop(PARENTS.lock().unwrap().take());
            },
        );
        assert!(finished, "the child waited on the parent's pool lock, or panicked");
        assert_eq!(mapped_bytes(7168), (CHUNK_BYTES / 7168) * 7168);
        drop(PARENTS.lock().unwrap().take());
        assert_eq!(mapped_bytes(7168), 0, "the parent's pool is the parent's");
    }

    #[test]
    fn sizes_that_are_not_page_sizes_come_from_the_heap() {
        let page = PageBuf::copy_of(&[1, 2, 3]);
        assert_eq!(&page[..], &[1, 2, 3]);
        assert_eq!(mapped_bytes(3), 0);
    }
}
