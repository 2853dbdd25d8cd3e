//! What a replica serves at one TXID: the files of its restore plan and the page map
//! built from their page indexes. Immutable once built; the next TXID is a new
//! [`State`] that shares the unchanged parts of the map with this one.

use crate::ltx::{is_contiguous, lock_pgno, Header, PageIndexEntry};
use crate::storage::LtxObject;
use std::fmt;
use std::sync::Arc;

/// Identifies one stored file's bytes: the cache key of its pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub level: u8,
    pub min_txid: u64,
    pub max_txid: u64,
    pub size: u64,
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "level {} file {}",
            self.level,
            crate::ltx::format_name(self.min_txid, self.max_txid)
        )
    }
}

/// One file of a restore plan, with its header and page index (read from its tail).
#[derive(Debug)]
pub struct PlanFile {
    pub object: LtxObject,
    pub header: Header,
    pub entries: Vec<PageIndexEntry>,
    /// An encrypted file's keys (see `sealed`); `None` for plaintext.
    pub keys: Option<Arc<crate::ltx::crypto::FileKeys>>,
}

impl PlanFile {
    pub fn key(&self) -> FileKey {
        FileKey {
            level: self.object.level,
            min_txid: self.object.min_txid,
            max_txid: self.object.max_txid,
            size: self.object.size,
        }
    }
}

/// Where one page's frame is: file number in the plan, offset and size of the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Loc {
    file: u32,
    size: u32,
    offset: u64,
}

const NO_FILE: u32 = u32::MAX;
const EMPTY: Loc = Loc {
    file: NO_FILE,
    size: 0,
    offset: 0,
};

/// Pages per chunk of the map. A new TXID copies only the chunks its files touch.
const CHUNK: usize = 4096;

/// pgno → frame location, as copy-on-write chunks of a dense array.
#[derive(Clone, Debug, Default)]
struct PageMap {
    chunks: Vec<Arc<Vec<Loc>>>,
    len: u32,
}

impl PageMap {
    fn get(&self, pgno: u32) -> Option<Loc> {
        if pgno == 0 || pgno > self.len {
            return None;
        }
        let i = (pgno - 1) as usize;
        let loc = self.chunks.get(i / CHUNK)?[i % CHUNK];
        (loc.file != NO_FILE).then_some(loc)
    }

    fn set(&mut self, pgno: u32, loc: Loc) {
        let i = (pgno - 1) as usize;
        while self.chunks.len() <= i / CHUNK {
            self.chunks.push(Arc::new(vec![EMPTY; CHUNK]));
        }
        Arc::make_mut(&mut self.chunks[i / CHUNK])[i % CHUNK] = loc;
        self.len = self.len.max(pgno);
    }

    /// Forgets every page above `len`, as a database shrinking to `len` pages does.
    fn truncate(&mut self, len: u32) {
        if len >= self.len {
            self.len = len;
            return;
        }
        let keep = (len as usize).div_ceil(CHUNK);
        self.chunks.truncate(keep);
        let rest = len as usize % CHUNK;
        if rest != 0 {
            if let Some(last) = self.chunks.last_mut() {
                Arc::make_mut(last)[rest..].fill(EMPTY);
            }
        }
        self.len = len;
    }
}

/// A page's frame as the state knows it.
#[derive(Clone, Copy, Debug)]
pub struct PageLocation<'a> {
    pub file: &'a PlanFile,
    pub offset: u64,
    pub size: u32,
}

/// The database at one TXID.
#[derive(Debug)]
pub struct State {
    pub txid: u64,
    pub page_size: u32,
    /// Database size in pages.
    pub commit: u32,
    /// Header timestamp of the newest file (ms since the epoch).
    pub timestamp_ms: i64,
    /// How many times the replica's history was replaced before this state (the database
    /// at its URL deleted and another started there, `poll.rs`): part of the change
    /// counter, so that a connection never takes the new history's page 1 at a TXID it
    /// served from the old one for the same database.
    pub history: u32,
    files: Vec<Arc<PlanFile>>,
    map: PageMap,
}

impl State {
    /// The state a plan reaches: the first file must be a snapshot, each next file must
    /// continue the previous one.
    pub fn build(files: Vec<Arc<PlanFile>>) -> Result<State, String> {
        let first = files.first().ok_or("empty restore plan")?;
        if !first.header.is_snapshot() {
            return Err(format!("{} is not a snapshot", first.key()));
        }
        let empty = State {
            txid: 0,
            page_size: first.header.page_size,
            commit: 0,
            timestamp_ms: 0,
            history: 0,
            files: Vec::new(),
            map: PageMap::default(),
        };
        empty.extend(files)
    }

    /// This state with `more` files applied after it.
    pub fn extend(&self, more: Vec<Arc<PlanFile>>) -> Result<State, String> {
        let mut next = State {
            txid: self.txid,
            page_size: self.page_size,
            commit: self.commit,
            timestamp_ms: self.timestamp_ms,
            history: self.history,
            files: self.files.clone(),
            map: self.map.clone(),
        };
        for file in more {
            let h = &file.header;
            if (h.min_txid, h.max_txid) != (file.object.min_txid, file.object.max_txid) {
                return Err(format!(
                    "{}: header says TXIDs {}..={}",
                    file.key(),
                    h.min_txid,
                    h.max_txid
                ));
            }
            if h.page_size != next.page_size {
                return Err(format!(
                    "{}: page size {} differs from {} in the files before it",
                    file.key(),
                    h.page_size,
                    next.page_size
                ));
            }
            if next.txid != 0 && !is_contiguous(next.txid, h.min_txid, h.max_txid) {
                return Err(format!("{} does not follow TXID {}", file.key(), next.txid));
            }
            let n = u32::try_from(next.files.len()).map_err(|_| "too many files in the plan")?;
            next.map.truncate(h.commit);
            for e in &file.entries {
                if e.pgno > h.commit {
                    return Err(format!("{}: page {} above commit {}", file.key(), e.pgno, h.commit));
                }
                next.map.set(
                    e.pgno,
                    Loc {
                        file: n,
                        size: e.size,
                        offset: e.offset,
                    },
                );
            }
            next.map.truncate(h.commit);
            next.txid = h.max_txid;
            next.commit = h.commit;
            next.timestamp_ms = h.timestamp_ms;
            next.files.push(file);
        }
        Ok(next)
    }

    /// The files of the plan, oldest first.
    pub fn files(&self) -> &[Arc<PlanFile>] {
        &self.files
    }

    /// Where page `pgno` is stored; `None` for a page no file holds (the lock page, or a
    /// page the database grew over without writing), which reads as zeros.
    pub fn locate(&self, pgno: u32) -> Option<PageLocation<'_>> {
        if pgno == lock_pgno(self.page_size) {
            return None;
        }
        let loc = self.map.get(pgno)?;
        Some(PageLocation {
            file: &self.files[loc.file as usize],
            offset: loc.offset,
            size: loc.size,
        })
    }

    /// Size of the database file SQLite sees.
    pub fn db_size(&self) -> u64 {
        self.commit as u64 * self.page_size as u64
    }

    /// The file change counter page 1 carries: moves whenever the TXID does, so SQLite
    /// drops its page cache at the start of the next read transaction.
    pub fn change_counter(&self) -> u32 {
        (self.txid as u32)
            .wrapping_add(self.history.wrapping_mul(0x9e37_79b9))
            .max(1)
    }

    /// Rewrites page 1 as served: rollback-journal mode (bytes 18-19 = 1), change counter
    /// and version-valid-for from the TXID, in-header size = commit.
    pub fn patch_page1(&self, page: &mut [u8]) {
        if page.len() < 100 {
            return;
        }
        page[18] = 1;
        page[19] = 1;
        let counter = self.change_counter().to_be_bytes();
        page[24..28].copy_from_slice(&counter);
        page[28..32].copy_from_slice(&self.commit.to_be_bytes());
        page[92..96].copy_from_slice(&counter);
    }
}

/// A plan file for tests: its pages in consecutive 20-byte frames, and a database
/// checksum before it derived from its first TXID (files of one history agree).
#[cfg(test)]
pub(crate) fn test_file(level: u8, min: u64, max: u64, commit: u32, pages: &[u32]) -> Arc<PlanFile> {
    let entries = pages
        .iter()
        .enumerate()
        .map(|(i, &pgno)| PageIndexEntry {
            pgno,
            offset: 100 + 20 * i as u64,
            size: 20,
        })
        .collect();
    Arc::new(PlanFile {
        object: LtxObject {
            level,
            min_txid: min,
            max_txid: max,
            size: 1000 + max,
            last_modified: None,
        },
        header: Header {
            page_size: 4096,
            commit,
            min_txid: min,
            max_txid: max,
            timestamp_ms: max as i64,
            pre_apply_checksum: if min > 1 { 0x1000 + min } else { 0 },
            ..Default::default()
        },
        entries,
        keys: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(min: u64, max: u64, commit: u32, pages: &[u32]) -> Arc<PlanFile> {
        test_file(0, min, max, commit, pages)
    }

    fn owner(s: &State, pgno: u32) -> Option<u64> {
        s.locate(pgno).map(|l| l.file.object.min_txid)
    }

    #[test]
    fn newest_wins_and_pages_above_commit_are_dropped() {
        let all: Vec<u32> = (1..=5).collect();
        let s = State::build(vec![file(1, 1, 5, &all), file(2, 3, 5, &[2, 4])]).unwrap();
        assert_eq!((s.txid, s.commit, s.db_size()), (3, 5, 5 * 4096));
        assert_eq!(owner(&s, 1), Some(1));
        assert_eq!(owner(&s, 2), Some(2));
        assert_eq!(owner(&s, 4), Some(2));
        assert_eq!(s.locate(2).unwrap().offset, 100);
        // Shrink to 3 pages, then grow to 6 writing only page 6: pages 4-5 read as zeros.
        let t = s.extend(vec![file(4, 4, 3, &[1]), file(5, 5, 6, &[6])]).unwrap();
        assert_eq!((t.txid, t.commit), (5, 6));
        assert_eq!(owner(&t, 1), Some(4));
        assert_eq!(owner(&t, 3), Some(1));
        assert_eq!(owner(&t, 4), None);
        assert_eq!(owner(&t, 5), None);
        assert_eq!(owner(&t, 6), Some(5));
        assert_eq!(owner(&t, 7), None);
        // The old state is untouched.
        assert_eq!(owner(&s, 4), Some(2));
        assert_eq!(s.files().len(), 2);
    }

    #[test]
    fn map_crosses_chunks() {
        let n = (CHUNK * 2 + 10) as u32;
        let all: Vec<u32> = (1..=n).filter(|&p| p != lock_pgno(4096)).collect();
        let s = State::build(vec![file(1, 1, n, &all)]).unwrap();
        let t = s
            .extend(vec![file(2, 2, CHUNK as u32 + 1, &[CHUNK as u32 + 1])])
            .unwrap();
        assert_eq!(owner(&t, CHUNK as u32), Some(1));
        assert_eq!(owner(&t, CHUNK as u32 + 1), Some(2));
        assert_eq!(owner(&t, CHUNK as u32 + 2), None);
        let u = t.extend(vec![file(3, 3, n, &[n])]).unwrap();
        assert_eq!(owner(&u, CHUNK as u32 + 2), None);
        assert_eq!(owner(&u, n), Some(3));
        assert_eq!(owner(&s, n), Some(1));
    }

    #[test]
    fn bad_plans_are_refused() {
        assert!(State::build(vec![file(2, 2, 1, &[1])])
            .unwrap_err()
            .contains("not a snapshot"));
        let s = State::build(vec![file(1, 1, 1, &[1])]).unwrap();
        assert!(s
            .extend(vec![file(3, 3, 1, &[1])])
            .unwrap_err()
            .contains("does not follow"));
        assert!(s
            .extend(vec![file(2, 2, 1, &[2])])
            .unwrap_err()
            .contains("above commit"));
        let mut other = file(2, 2, 1, &[1]);
        Arc::get_mut(&mut other).unwrap().header.page_size = 1024;
        assert!(s.extend(vec![other]).unwrap_err().contains("page size"));
    }

    #[test]
    fn page_one_is_served_in_rollback_mode_with_the_txid_as_change_counter() {
        let s = State::build(vec![file(1, 0x1_0000_0007, 3, &[1, 2, 3])]).unwrap();
        let mut page = vec![0u8; 4096];
        page[18] = 2;
        page[19] = 2;
        s.patch_page1(&mut page);
        assert_eq!(&page[18..20], &[1, 1]);
        assert_eq!(&page[24..28], &7u32.to_be_bytes());
        assert_eq!(&page[28..32], &3u32.to_be_bytes());
        assert_eq!(&page[92..96], &7u32.to_be_bytes());
    }
}
