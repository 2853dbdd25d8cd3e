//! Memory for page buffers (`primary::page_pool`): private anonymous mappings cut into
//! equal slots, each slot owned by one [`Slot`] at a time.
//!
//! The `unsafe` is handing out parts of one mapping as separate `&mut [u8]`s. It holds
//! because a [`Chunk`] keeps the free list itself: a slot index leaves the list when a
//! [`Slot`] is made for it and comes back only when that `Slot` is given back (by value),
//! and a chunk unmaps only when every slot is back. The pool around it (which chunk has
//! room, when a chunk goes) is page_pool's business and cannot break either.
//!
//! The mapping itself is memmap2's (`MmapMut::map_anon`, safe; `MmapRaw` hands out its
//! address without making a reference to the whole mapping, which would alias the slots).

use memmap2::{MmapMut, MmapRaw};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// One anonymous mapping of `slots` slots of `slot_len` bytes and which of them are free.
pub struct Chunk {
    /// `None` only once dropped with slots still out (then leaked, see `Drop`).
    map: Option<MmapRaw>,
    slot_len: usize,
    slots: usize,
    /// Free slot indexes; handed out from the end.
    free: Vec<u32>,
}

/// `len` bytes of a [`Chunk`] that only this value refers to. Give it back with
/// [`Chunk::give_back`]; one merely dropped is never handed out again and keeps its
/// chunk mapped.
pub struct Slot {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a slot is memory no other value refers to (its chunk hands each index to one
// `Slot` at a time and unmaps only when all are back), like a `Box<[u8]>`.
unsafe impl Send for Slot {}
// SAFETY: `&Slot` gives only `&[u8]` of that memory.
unsafe impl Sync for Slot {}

impl Chunk {
    /// Maps `slots` slots of `slot_len` bytes, all free; their bytes read as zeros until
    /// written.
    pub fn map(slot_len: usize, slots: usize) -> std::io::Result<Chunk> {
        assert!(slot_len > 0 && slots > 0 && slots <= u32::MAX as usize);
        let len = slot_len.checked_mul(slots).expect("chunk size fits in usize");
        let map = MmapRaw::from(MmapMut::map_anon(len)?);
        Ok(Chunk {
            map: Some(map),
            slot_len,
            slots,
            // Slot 0 first.
            free: (0..slots as u32).rev().collect(),
        })
    }

    fn mapping(&self) -> &MmapRaw {
        self.map.as_ref().expect("a chunk is mapped until dropped")
    }

    /// Address of the first byte: tells chunks apart, and finds the chunk of a slot
    /// (the greatest address not above [`Slot::addr`]).
    pub fn addr(&self) -> usize {
        self.mapping().as_ptr() as usize
    }

    /// Bytes mapped.
    pub fn mapped(&self) -> usize {
        self.slot_len * self.slots
    }

    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    pub fn has_room(&self) -> bool {
        !self.free.is_empty()
    }

    /// True when no slot is out.
    pub fn all_free(&self) -> bool {
        self.free.len() == self.slots
    }

    /// A free slot, or `None` when all are out.
    pub fn take(&mut self) -> Option<Slot> {
        let index = self.free.pop()? as usize;
        // SAFETY: `index < slots`, so the slot lies inside the mapping (`slots * slot_len`
        // bytes), whose address is not null.
        let ptr = unsafe { NonNull::new_unchecked(self.mapping().as_mut_ptr().add(index * self.slot_len)) };
        Some(Slot {
            ptr,
            len: self.slot_len,
        })
    }

    /// True when `slot` is one of this chunk's.
    pub fn handed_out(&self, slot: &Slot) -> bool {
        let offset = slot.addr().wrapping_sub(self.addr());
        offset < self.mapped() && slot.len == self.slot_len
    }

    /// Takes back a slot it handed out. Panics if `slot` is another chunk's: the caller
    /// looked up the wrong chunk, and listing the index here would hand out another
    /// chunk's memory twice. (The check is two comparisons on a free, never on an access.)
    pub fn give_back(&mut self, slot: Slot) {
        assert!(
            self.handed_out(&slot),
            "a slot given back to a chunk that did not hand it out"
        );
        let offset = slot.addr() - self.addr();
        self.free.push((offset / self.slot_len) as u32);
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if !self.all_free() {
            // A `Slot` still points into it: leak the mapping rather than leave the slot
            // dangling. page_pool drops a chunk only once all its slots are back.
            std::mem::forget(self.map.take());
        }
    }
}

impl Slot {
    /// Address of the first byte.
    pub fn addr(&self) -> usize {
        self.ptr.as_ptr() as usize
    }
}

impl Deref for Slot {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `len` bytes at `ptr` are a slot of a live mapping that only this value
        // refers to (module comment); the mapping outlives it (a chunk with slots out is
        // never unmapped).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for Slot {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_of_a_chunk_are_disjoint_and_come_back_to_be_reused() {
        let mut chunk = Chunk::map(512, 4).unwrap();
        let mut slots: Vec<Slot> = std::iter::from_fn(|| chunk.take()).collect();
        assert_eq!(slots.len(), 4);
        assert!(!chunk.has_room());
        for (i, s) in slots.iter_mut().enumerate() {
            assert!(s.iter().all(|&b| b == 0), "new mappings read as zeros");
            s.fill(i as u8 + 1);
        }
        for (i, s) in slots.iter().enumerate() {
            assert!(s.iter().all(|&b| b == i as u8 + 1), "slot {i} was written by another");
        }
        let second = slots.remove(1);
        let at = second.addr();
        chunk.give_back(second);
        let again = chunk.take().expect("one slot back");
        assert_eq!(again.addr(), at);
        chunk.give_back(again);
        for s in slots {
            chunk.give_back(s);
        }
        assert!(chunk.all_free());
    }

    #[test]
    #[should_panic(expected = "did not hand it out")]
    fn a_slot_of_another_chunk_is_refused() {
        let mut a = Chunk::map(1024, 2).unwrap();
        let mut b = Chunk::map(1024, 2).unwrap();
        let from_b = b.take().unwrap();
        a.give_back(from_b);
    }
}
