//! Ranged reads on an object store that has none: which chunk messages hold a byte range.
//!
//! An object is a run of chunk messages on its own subject. Chunk sizes are not fixed (the Go
//! client cuts wherever its reader returns short, Litestream's included), and other objects'
//! chunks interleave in the stream, so neither the sequence nor the offset of chunk `k` can be
//! computed. A [`ChunkMap`] learns both once per object version from a headers-only ordered
//! consumer (the server sends each chunk's sequence and `Nats-Msg-Size`, not its bytes); after
//! that, a range costs one direct get per chunk it touches. Sequences in a stream are never
//! reused, so a map can only go stale by its chunks disappearing (the object was deleted or
//! overwritten), which a read notices and answers by rebuilding the map.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use lru::LruCache;

/// Maps kept at once (one per object version read with ranges).
const CACHED_MAPS: usize = 1024;

/// Where the chunks of one object version are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChunkMap {
    /// The object version (chunks live on `$O.<bucket>.C.<nuid>`).
    pub nuid: String,
    /// Stream sequence of each chunk, in order.
    pub sequences: Vec<u64>,
    /// Byte offset of each chunk, then the object size: chunk `i` is `offsets[i]..offsets[i+1]`.
    pub offsets: Vec<u64>,
}

/// One chunk a read needs: where it is, and which of its bytes go to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub sequence: u64,
    /// The chunk's full length, to check what the server returns.
    pub chunk_len: u64,
    /// The part of the chunk that lies in the range, relative to the chunk.
    pub take: Range<usize>,
}

impl ChunkMap {
    /// A map from `(sequence, size)` of each chunk in order.
    pub fn new(nuid: String, chunks: &[(u64, u64)]) -> Self {
        let mut offsets = Vec::with_capacity(chunks.len() + 1);
        let mut at = 0u64;
        offsets.push(0);
        for &(_, size) in chunks {
            at += size;
            offsets.push(at);
        }
        ChunkMap {
            nuid,
            sequences: chunks.iter().map(|c| c.0).collect(),
            offsets,
        }
    }

    pub fn size(&self) -> u64 {
        *self.offsets.last().expect("offsets start with 0")
    }

    /// The chunks covering `range` (which must lie within the object and not be empty).
    pub fn pieces(&self, range: &Range<u64>) -> Vec<Piece> {
        // The first chunk that ends after range.start.
        let first = self.offsets[1..].partition_point(|&end| end <= range.start);
        let mut out = Vec::new();
        for i in first..self.sequences.len() {
            let (start, end) = (self.offsets[i], self.offsets[i + 1]);
            if start >= range.end {
                break;
            }
            let from = range.start.max(start) - start;
            let to = range.end.min(end) - start;
            out.push(Piece {
                sequence: self.sequences[i],
                chunk_len: end - start,
                take: from as usize..to as usize,
            });
        }
        out
    }
}

/// Recently used chunk maps, by object name.
pub(crate) struct MapCache(Mutex<LruCache<String, Arc<ChunkMap>>>);

impl MapCache {
    pub fn new() -> Self {
        MapCache(Mutex::new(LruCache::new(
            NonZeroUsize::new(CACHED_MAPS).expect("nonzero"),
        )))
    }

    pub fn get(&self, name: &str) -> Option<Arc<ChunkMap>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn put(&self, name: &str, map: Arc<ChunkMap>) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .put(name.to_string(), map);
    }

    pub fn forget(&self, name: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ChunkMap {
        // Uneven chunks, as the Go client may write them: 10, 4, 10 bytes at sequences 5, 9, 12.
        ChunkMap::new("N".into(), &[(5, 10), (9, 4), (12, 10)])
    }

    #[test]
    fn a_range_inside_one_chunk_is_one_piece() {
        assert_eq!(
            map().pieces(&(11..13)),
            [Piece {
                sequence: 9,
                chunk_len: 4,
                take: 1..3
            }]
        );
        assert_eq!(map().pieces(&(0..10)).len(), 1);
        assert_eq!(map().size(), 24);
    }

    #[test]
    fn a_range_across_chunks_takes_the_tail_middle_and_head() {
        let p = map().pieces(&(8..16));
        assert_eq!(
            p.iter().map(|p| (p.sequence, p.take.clone())).collect::<Vec<_>>(),
            [(5, 8..10), (9, 0..4), (12, 0..2)]
        );
        let all = map().pieces(&(0..24));
        assert_eq!(all.iter().map(|p| p.take.len()).sum::<usize>(), 24);
    }
}
