//! Hydration (`hydrate=path`): a background thread downloads every page of the current
//! state into a local file, one ranged GET per span of frames (whole files, in practice),
//! and keeps it up to date as new TXIDs arrive; reads then come from that file.
//!
//! The file is a page store, not a database: slot `pgno` holds the version of page `pgno`
//! from one particular stored file, and a table records which. A read is served locally
//! only when the slot holds exactly the version its state wants, so a transaction pinned
//! to an older TXID never sees a newer page. Slot writes and the check-then-read of a
//! reader are serialised by a read-write lock. When hydration is complete and no new TXID
//! is pending, the file is an image of the database at `txid`.

use super::cache::PageKey;
use super::carry::Carry;
use super::fetch::{FetchError, Fetcher};
use super::state::{FileKey, PlanFile, State};
use crate::ltx::read_page_frame;
use serde_json::json;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

/// Frames of one file still to fetch: (pgno, offset, size).
type Frames = Vec<(u32, u64, u32)>;

/// Largest span of frames fetched with one GET.
const MAX_SPAN: u64 = 8 << 20;

#[derive(Default)]
struct Table {
    ids: HashMap<FileKey, u32>,
    /// Slot of page `pgno` at index `pgno - 1`: id of the file whose version it holds, 0 = none.
    slots: Vec<u32>,
}

#[derive(Default, Debug)]
struct Progress {
    /// TXID of the last state fully hydrated (0 = none yet).
    txid: u64,
    pages_written: u64,
    /// Slots relabelled to a new plan's file without fetching (see [`Hydration::carry`]).
    pages_carried: u64,
    bytes_fetched: u64,
    local_reads: u64,
    last_error: Option<String>,
}

pub struct Hydration {
    path: PathBuf,
    file: File,
    table: RwLock<Table>,
    progress: Mutex<Progress>,
}

impl std::fmt::Debug for Hydration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hydration").field("path", &self.path).finish()
    }
}

impl Hydration {
    /// Creates (or empties) the local file.
    pub fn create(path: &Path) -> Result<Hydration, String> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| format!("hydration file {}: {e}", path.display()))?;
        Ok(Hydration {
            path: path.to_path_buf(),
            file,
            table: RwLock::new(Table::default()),
            progress: Mutex::new(Progress::default()),
        })
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn holds(table: &Table, key: &PageKey) -> bool {
        match table.ids.get(&key.file) {
            Some(&id) => table.slots.get(key.pgno as usize - 1) == Some(&id),
            None => false,
        }
    }

    /// Reads the page `key` names from the local file if its slot holds that version.
    pub fn read(&self, key: &PageKey, out: &mut [u8]) -> std::io::Result<bool> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        if !Self::holds(&table, key) {
            return Ok(false);
        }
        self.file.read_exact_at(out, (key.pgno as u64 - 1) * out.len() as u64)?;
        drop(table);
        self.progress().local_reads += 1;
        Ok(true)
    }

    /// Stores one page version in its slot.
    pub fn write(&self, key: &PageKey, page: &[u8]) -> std::io::Result<()> {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let next = table.ids.len() as u32 + 1;
        let id = *table.ids.entry(key.file).or_insert(next);
        self.file
            .write_all_at(page, (key.pgno as u64 - 1) * page.len() as u64)?;
        let i = key.pgno as usize - 1;
        if table.slots.len() <= i {
            table.slots.resize(i + 1, 0);
        }
        table.slots[i] = id;
        drop(table);
        self.progress().pages_written += 1;
        Ok(())
    }

    /// Relabels every slot holding the version `carry` proves the new state serves too
    /// with the new state's file, so hydrating the new state fetches only pages that
    /// changed. A relabelled slot holds the same bytes as before; a reader of the old
    /// plan asking for the old label misses and fetches instead (slower, never wrong).
    /// Returns how many slots were relabelled.
    pub fn carry(&self, carry: &Carry<'_>) -> usize {
        // Decide under the read lock; relabel under the write lock only slots that still
        // hold the version decided on.
        let moves: Vec<(usize, u32, FileKey)> = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            let last = (carry.max_pgno() as usize).min(table.slots.len());
            (1..=last as u32)
                .filter_map(|pgno| {
                    let (from, to) = carry.page(pgno)?;
                    let held = *table.ids.get(&from)?;
                    (from != to && table.slots[pgno as usize - 1] == held).then_some((pgno as usize - 1, held, to))
                })
                .collect()
        };
        if moves.is_empty() {
            return 0;
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (i, held, to) in moves {
            if table.slots[i] != held {
                continue;
            }
            let next = table.ids.len() as u32 + 1;
            table.slots[i] = *table.ids.entry(to).or_insert(next);
            n += 1;
        }
        drop(table);
        self.progress().pages_carried += n as u64;
        n
    }

    /// TXID of the last state fully hydrated.
    pub fn txid(&self) -> u64 {
        self.progress().txid
    }

    /// Downloads every page of `state` not yet local. `stop` is checked between spans.
    pub fn hydrate(&self, state: &State, fetcher: &Fetcher, stop: &dyn Fn() -> bool) -> Result<bool, FetchError> {
        // Needed frames, grouped by file.
        let mut need: HashMap<FileKey, (&PlanFile, Frames)> = HashMap::new();
        {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            for pgno in 1..=state.commit {
                if let Some(loc) = state.locate(pgno) {
                    let key = PageKey {
                        file: loc.file.key(),
                        pgno,
                    };
                    if !Self::holds(&table, &key) {
                        need.entry(key.file)
                            .or_insert_with(|| (loc.file, Vec::new()))
                            .1
                            .push((pgno, loc.offset, loc.size));
                    }
                }
            }
        }
        let mut page = vec![0u8; state.page_size as usize];
        for (file_key, (file, mut frames)) in need {
            frames.sort_by_key(|f| f.1);
            let mut i = 0;
            while i < frames.len() {
                if stop() {
                    return Ok(false);
                }
                let start = frames[i].1;
                let mut j = i;
                while j < frames.len() && frames[j].1 + frames[j].2 as u64 - start <= MAX_SPAN.max(frames[i].2 as u64) {
                    j += 1;
                }
                let end = frames[j - 1].1 + frames[j - 1].2 as u64;
                let bytes = crate::runtime::block_on(fetcher.get_range(&file.object, start..end))?;
                self.progress().bytes_fetched += bytes.len() as u64;
                for &(pgno, offset, size) in &frames[i..j] {
                    let at = (offset - start) as usize;
                    read_page_frame(&bytes[at..at + size as usize], pgno, state.page_size, &mut page)
                        .map_err(|e| FetchError::Corrupt(format!("{file_key}: page {pgno}: {e}")))?;
                    self.write(&PageKey { file: file_key, pgno }, &page)
                        .map_err(|e| FetchError::Corrupt(format!("writing {}: {e}", self.path.display())))?;
                }
                i = j;
            }
        }
        // Zero-filled pages (lock page, pages grown over) need no slot: they read as zeros.
        let _ = self.file.set_len(state.db_size());
        let _ = self.file.sync_data();
        let mut p = self.progress();
        p.txid = state.txid;
        p.last_error = None;
        Ok(true)
    }

    pub fn record_error(&self, e: &str) {
        self.progress().last_error = Some(e.to_string());
    }

    /// The `hydration` object of `litestream_status()`, against the newest state.
    pub fn status(&self, current: &State) -> serde_json::Value {
        let local = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            (1..=current.commit)
                .filter(|&pgno| match current.locate(pgno) {
                    Some(loc) => Self::holds(
                        &table,
                        &PageKey {
                            file: loc.file.key(),
                            pgno,
                        },
                    ),
                    None => true,
                })
                .count()
        };
        let p = self.progress();
        json!({
            "path": self.path.display().to_string(),
            "txid": p.txid,
            "complete": p.txid == current.txid,
            "pages_local": local,
            "pages": current.commit,
            "pages_written": p.pages_written,
            "pages_carried": p.pages_carried,
            "bytes_fetched": p.bytes_fetched,
            "local_reads": p.local_reads,
            "last_error": p.last_error,
        })
    }
}
