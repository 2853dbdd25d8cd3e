//! The page cache shared by every connection of one replica: decompressed pages by
//! (file, page number). A stored file never changes, so entries never go stale; pages of
//! files that left the plan simply age out.

use super::state::FileKey;
use lru::LruCache;
use std::sync::{Arc, Mutex};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PageKey {
    pub file: FileKey,
    pub pgno: u32,
}

pub struct PageCache {
    inner: Mutex<Inner>,
    max_bytes: u64,
}

struct Inner {
    lru: LruCache<PageKey, Arc<[u8]>>,
    bytes: u64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").field("max_bytes", &self.max_bytes).finish()
    }
}

impl PageCache {
    /// A cache holding up to `max_bytes` of pages (at least a handful of pages).
    pub fn new(max_bytes: u64) -> Self {
        PageCache {
            inner: Mutex::new(Inner {
                lru: LruCache::unbounded(),
                bytes: 0,
            }),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get(&self, key: &PageKey) -> Option<Arc<[u8]>> {
        self.lock().lru.get(key).cloned()
    }

    pub fn insert(&self, key: PageKey, page: Arc<[u8]>) {
        let mut inner = self.lock();
        let len = page.len() as u64;
        if let Some(old) = inner.lru.put(key, page) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        // Keep at least 8 pages whatever the budget: a B-tree descent needs a few.
        while inner.bytes > self.max_bytes && inner.lru.len() > 8 {
            match inner.lru.pop_lru() {
                Some((_, old)) => inner.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Files every cached page `to` names under a second key as well: the same bytes,
    /// not a copy, inserted as the most recent pages in their present order. The old keys
    /// stay for readers still on the old plan; the LRU ages them out (both keys count
    /// against the budget, so memory stays under it). Returns how many were added.
    pub fn carry(&self, to: impl Fn(&PageKey) -> Option<PageKey>) -> usize {
        let inner = self.lock();
        // Least recent first, so the carried pages keep their relative recency.
        let carried: Vec<(PageKey, Arc<[u8]>)> = inner
            .lru
            .iter()
            .rev()
            .filter_map(|(key, page)| Some((to(key)?, Arc::clone(page))))
            .collect();
        drop(inner);
        let n = carried.len();
        for (key, page) in carried {
            self.insert(key, page);
        }
        n
    }

    /// Drops every page: the files they came from are no longer the store's (the
    /// replica's history was replaced, `poll.rs`).
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.bytes = 0;
    }

    /// Bytes and pages held now.
    pub fn usage(&self) -> (u64, usize) {
        let inner = self.lock();
        (inner.bytes, inner.lru.len())
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pgno: u32) -> PageKey {
        PageKey {
            file: FileKey {
                level: 0,
                min_txid: 1,
                max_txid: 1,
                size: 10,
            },
            pgno,
        }
    }

    #[test]
    fn evicts_least_recently_used_beyond_the_budget() {
        let c = PageCache::new(10 * 512);
        for p in 1..=10 {
            c.insert(key(p), Arc::from(vec![p as u8; 512]));
        }
        assert!(c.get(&key(1)).is_some()); // now most recent
        c.insert(key(11), Arc::from(vec![0u8; 512]));
        assert!(c.get(&key(2)).is_none(), "oldest evicted");
        assert!(c.get(&key(1)).is_some());
        assert_eq!(c.usage(), (10 * 512, 10));
    }

    #[test]
    fn carried_pages_share_their_bytes_under_the_new_key() {
        let c = PageCache::new(1 << 20);
        for p in 1..=4 {
            c.insert(key(p), Arc::from(vec![p as u8; 512]));
        }
        let moved = |k: &PageKey| {
            k.pgno.is_multiple_of(2).then_some(PageKey {
                file: FileKey { max_txid: 2, ..k.file },
                pgno: k.pgno,
            })
        };
        assert_eq!(c.carry(moved), 2);
        let new = moved(&key(2)).unwrap();
        assert!(Arc::ptr_eq(&c.get(&new).unwrap(), &c.get(&key(2)).unwrap()));
        assert!(c.get(&moved(&key(4)).unwrap()).is_some());
        assert_eq!(c.usage().1, 6, "old keys stay for readers of the old plan");
    }
}
