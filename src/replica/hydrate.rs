//! Hydration (`hydrate=path`): a job of the process's engine (`jobs.rs`) downloads every
//! page of the current state into a local file, one ranged GET per span of frames (whole
//! files, in practice), and keeps it up to date as new TXIDs arrive; reads then come from
//! that file.
//!
//! The file is a page store, not a database: slot `pgno` holds the version of page `pgno`
//! from one particular stored file, and a table records which. A read is served locally
//! only when the slot holds exactly the version its state wants, so a transaction pinned
//! to an older TXID never sees a newer page. Slot writes and the check-then-read of a
//! reader are serialised by a read-write lock. When hydration is complete and no new TXID
//! is pending, the file is an image of the database at `txid`.
//!
//! The slot table lives in this process's memory, so a file can serve one replica only:
//! another process hydrating into it would overwrite pages this one's table vouches for,
//! and a read pinned to one TXID would get another TXID's page. The replica holds a lock
//! on the file (`flock`, released by the kernel if the process dies) for as long as it
//! uses it. A second user keeps working without the file, reading from the store and
//! its cache, with a warning, and takes the file over once the first lets go: a new
//! process started before the old one exits (a rolling restart) must not fail to open.
//! The file is readable by its owner only: it holds the whole database.
//!
//! One page size at a time. Slot `pgno` sits at `(pgno - 1) * page_size`, so pages of
//! two page sizes cannot share the file: a primary rebuilt with another page size
//! (`PRAGMA page_size` + `VACUUM`) wrote 64 KiB pages over the bytes of 4 KiB slots
//! still labelled as their old versions, and a reader pinned before the change read them
//! (wrong rows, then "malformed", or a slice panic). The file's layout is the page size of
//! the newest state hydration followed ([`Hydration::relayout`]): when that changes, every
//! label goes and the file starts again empty. Reads and writes of pages of any other
//! size pass the file by: a transaction pinned before the change, or a point-in-time view
//! before it, reads from the store and the cache, slower but right.

use super::cache::PageKey;
use super::carry::Carry;
use super::fetch::{decode_frame, FetchError, Fetcher, Frame};
use super::state::{FileKey, PlanFile, State};
use crate::file_modes::FileModes;
use serde_json::json;
use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

/// Frames of one file still to fetch.
type Frames = Vec<Frame>;

/// Largest span of frames fetched with one GET.
const MAX_SPAN: u64 = 8 << 20;

#[derive(Default)]
struct Table {
    ids: HashMap<FileKey, u32>,
    /// The file of each id (id `n` at index `n - 1`).
    keys: Vec<FileKey>,
    /// Slot of page `pgno` at index `pgno - 1`: id of the file whose version it holds, 0 = none.
    slots: Vec<u32>,
    /// Page size of every slot (0 = nothing written yet): the file's layout.
    page_size: u32,
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
    /// Times the file started again empty for a new page size (see [`Hydration::relayout`]).
    page_size_changes: u64,
    last_error: Option<String>,
}

pub struct Hydration {
    path: PathBuf,
    file: File,
    /// True once this replica holds the file's lock: until then nothing is written to
    /// the file or read from it.
    held: AtomicBool,
    table: RwLock<Table>,
    progress: Mutex<Progress>,
}

impl std::fmt::Debug for Hydration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hydration").field("path", &self.path).finish()
    }
}

impl Hydration {
    /// Opens (creating) the local file and takes it if no other replica holds it (see
    /// [`Hydration::take`]); otherwise warns and waits for it.
    pub fn create(path: &Path) -> Result<Hydration, String> {
        let file = FileModes::owner_only()
            .open_or_create(path)
            .map_err(|e| format!("hydration file {}: {e}", path.display()))?;
        let hydration = Hydration {
            path: path.to_path_buf(),
            file,
            held: AtomicBool::new(false),
            table: RwLock::new(Table::default()),
            progress: Mutex::new(Progress::default()),
        };
        if !hydration.take() {
            tracing::warn!(
                path = %path.display(),
                "the hydration file is in use by another process (or another replica of this one); \
                 reading from the store until it is free (give each process its own hydrate= path)"
            );
        }
        Ok(hydration)
    }

    /// Takes the file for this replica if it does not hold it yet: locks it, then empties
    /// it (whatever a previous user left is unlabelled here). False while another process
    /// or replica holds it. Called by the hydrator before each round.
    pub fn take(&self) -> bool {
        if self.held.load(Ordering::Acquire) {
            return true;
        }
        match self.file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return false,
            Err(TryLockError::Error(e)) => {
                self.record_error(&format!("locking the hydration file: {e}"));
                return false;
            }
        }
        if let Err(e) = self.file.set_len(0) {
            self.record_error(&format!("emptying the hydration file: {e}"));
            let _ = self.file.unlock();
            return false;
        }
        self.held.store(true, Ordering::Release);
        true
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
    /// `out` is a page of the reader's page size: of any other than the file's, nothing
    /// here is for it (the labels name files of the file's page size only).
    pub fn read(&self, key: &PageKey, out: &mut [u8]) -> std::io::Result<bool> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        if table.page_size != out.len() as u32 || !Self::holds(&table, key) {
            return Ok(false);
        }
        self.file.read_exact_at(out, (key.pgno as u64 - 1) * out.len() as u64)?;
        drop(table);
        self.progress().local_reads += 1;
        Ok(true)
    }

    /// The id of `file` in the slot table, registering it if new.
    fn id_of(table: &mut Table, file: FileKey) -> u32 {
        if let Some(&id) = table.ids.get(&file) {
            return id;
        }
        table.keys.push(file);
        let id = table.keys.len() as u32;
        table.ids.insert(file, id);
        id
    }

    /// Stores one page version in its slot, unless the slot holds a newer one (from a
    /// file ending at a later TXID): a reader pinned to an old TXID fetches old versions,
    /// and writing them back would undo what hydration brought forward. The version a
    /// write replaces is handed to `displaced` (the page cache): a transaction still
    /// pinned to it would otherwise fetch it again, one GET per page — the soak's slow
    /// queries, when long reads fell behind a busy writer.
    ///
    /// A page of another size than the file's layout is not stored: its slot would
    /// overlap others (see the module's notes); the caller keeps it in the cache.
    pub fn write(
        &self,
        key: &PageKey,
        page: &[u8],
        displaced: &mut dyn FnMut(PageKey, Vec<u8>),
    ) -> std::io::Result<()> {
        if !self.held.load(Ordering::Acquire) {
            return Ok(()); // another process's file
        }
        let offset = (key.pgno as u64 - 1) * page.len() as u64;
        let i = key.pgno as usize - 1;
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if table.page_size == 0 {
            table.page_size = page.len() as u32;
        }
        if table.page_size != page.len() as u32 {
            return Ok(());
        }
        let held = table.slots.get(i).copied().unwrap_or(0);
        let mut old = None;
        if held != 0 {
            let held_file = table.keys[held as usize - 1];
            if held_file == key.file || held_file.max_txid > key.file.max_txid {
                return Ok(());
            }
            let mut bytes = vec![0u8; page.len()];
            self.file.read_exact_at(&mut bytes, offset)?;
            old = Some((
                PageKey {
                    file: held_file,
                    pgno: key.pgno,
                },
                bytes,
            ));
        }
        let id = Self::id_of(&mut table, key.file);
        if table.slots.len() <= i {
            table.slots.resize(i + 1, 0);
        }
        // Unlabelled while being written: a write that fails half-way leaves no label
        // promising bytes the slot no longer holds.
        table.slots[i] = 0;
        self.file.write_all_at(page, offset)?;
        table.slots[i] = id;
        drop(table);
        self.progress().pages_written += 1;
        if let Some((old_key, bytes)) = old {
            displaced(old_key, bytes);
        }
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
        // Slots of another page size hold nothing of either state.
        let moves: Vec<(usize, u32, FileKey, FileKey)> = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            if table.page_size != carry.page_size() {
                return 0;
            }
            let last = (carry.max_pgno() as usize).min(table.slots.len());
            (1..=last as u32)
                .filter_map(|pgno| {
                    let (from, to) = carry.page(pgno)?;
                    let held = *table.ids.get(&from)?;
                    (from != to && table.slots[pgno as usize - 1] == held).then_some((
                        pgno as usize - 1,
                        held,
                        from,
                        to,
                    ))
                })
                .collect()
        };
        if moves.is_empty() {
            return 0;
        }
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        for (i, held, from, to) in moves {
            // Still the same version: a relayout in between emptied the table, and its
            // ids may since name other files.
            if table.slots.get(i) != Some(&held) || table.keys.get(held as usize - 1) != Some(&from) {
                continue;
            }
            table.slots[i] = Self::id_of(&mut table, to);
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

    /// Makes `page_size` the file's layout. When the file held pages of another size,
    /// every label goes and the file is emptied: hydration starts again for the new
    /// page size. Readers of the old page size miss from then on (see [`Hydration::read`])
    /// and read from the store and the cache; the write lock waits for any read in
    /// progress. Returns whether the layout changed.
    fn relayout(&self, page_size: u32) -> std::io::Result<bool> {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        if table.page_size == page_size {
            return Ok(false);
        }
        let old = table.page_size;
        *table = Table {
            page_size,
            ..Table::default()
        };
        let mut p = self.progress();
        p.txid = 0;
        if old != 0 {
            p.page_size_changes += 1;
            tracing::info!(
                path = %self.path.display(),
                from = old,
                to = page_size,
                "the database's page size changed: hydrating again from an empty file"
            );
        }
        drop(p);
        self.file.set_len(0)?;
        Ok(true)
    }

    /// Downloads every page of `state` not yet local. `stop` is checked between spans.
    pub fn hydrate(
        &self,
        state: &State,
        fetcher: &Fetcher,
        stop: &dyn Fn() -> bool,
        displaced: &mut dyn FnMut(PageKey, Vec<u8>),
    ) -> Result<bool, FetchError> {
        self.relayout(state.page_size)
            .map_err(|e| FetchError::Corrupt(format!("emptying {}: {e}", self.path.display())))?;
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
                for &frame in &frames[i..j] {
                    let pgno = frame.0;
                    decode_frame(file, state.page_size, &bytes, start, frame, &mut page)?;
                    self.write(&PageKey { file: file_key, pgno }, &page, displaced)
                        .map_err(|e| FetchError::Corrupt(format!("writing {}: {e}", self.path.display())))?;
                }
                i = j;
            }
        }
        // Zero-filled pages (lock page, pages grown over) need no slot: they read as zeros.
        self.fit(state.commit, state.db_size());
        let _ = self.file.sync_data();
        let mut p = self.progress();
        p.txid = state.txid;
        p.last_error = None;
        Ok(true)
    }

    /// Sizes the file to a database of `pages` pages. Slots past the end lose their
    /// labels before the file is cut: a reader on a newer, larger state may have stored
    /// pages there, and once the file grew again they would read as zeros under a label
    /// that promises a page.
    fn fit(&self, pages: u32, db_size: u64) {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        for slot in table.slots.iter_mut().skip(pages as usize) {
            *slot = 0;
        }
        let _ = self.file.set_len(db_size);
    }

    pub fn record_error(&self, e: &str) {
        self.progress().last_error = Some(e.to_string());
    }

    /// The last failure, until hydration next completes.
    pub fn last_error(&self) -> Option<String> {
        self.progress().last_error.clone()
    }

    /// The `hydration` object of `litestream_status()`, against the newest state.
    pub fn status(&self, current: &State) -> serde_json::Value {
        let (local, page_size) = {
            let table = self.table.read().unwrap_or_else(|p| p.into_inner());
            let local = (1..=current.commit)
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
                .count();
            (local, table.page_size)
        };
        let p = self.progress();
        json!({
            "path": self.path.display().to_string(),
            // True while another process (or replica) holds the file: nothing is local.
            "waiting_for_file": !self.held.load(Ordering::Acquire),
            "txid": p.txid,
            "complete": p.txid == current.txid,
            "pages_local": local,
            "pages": current.commit,
            "pages_written": p.pages_written,
            "pages_carried": p.pages_carried,
            "bytes_fetched": p.bytes_fetched,
            "local_reads": p.local_reads,
            // The file's layout (0 = nothing yet), and how often it started again empty
            // because the database's page size changed.
            "page_size": page_size,
            "page_size_changes": p.page_size_changes,
            "last_error": p.last_error,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(max_txid: u64, pgno: u32) -> PageKey {
        PageKey {
            file: FileKey {
                level: 0,
                min_txid: max_txid,
                max_txid,
                size: 100,
            },
            pgno,
        }
    }

    fn read(h: &Hydration, k: &PageKey) -> Option<Vec<u8>> {
        let mut out = vec![0u8; 16];
        h.read(k, &mut out).unwrap().then_some(out)
    }

    #[test]
    fn an_older_version_never_replaces_a_newer_one_and_a_replaced_one_is_handed_on() {
        let dir = tempfile::tempdir().unwrap();
        let h = Hydration::create(&dir.path().join("h")).unwrap();
        let mut displaced = Vec::new();
        h.write(&key(5, 2), &[5; 16], &mut |k, b| displaced.push((k, b)))
            .unwrap();
        assert!(displaced.is_empty(), "an empty slot displaces nothing");
        // A reader pinned at TXID 3 fetched page 2 from an older file: the slot keeps 5.
        h.write(&key(3, 2), &[3; 16], &mut |k, b| displaced.push((k, b)))
            .unwrap();
        assert_eq!(read(&h, &key(5, 2)), Some(vec![5; 16]));
        assert_eq!(read(&h, &key(3, 2)), None);
        // Hydration moves on to TXID 9: version 5 goes to whoever still wants it.
        h.write(&key(9, 2), &[9; 16], &mut |k, b| displaced.push((k, b)))
            .unwrap();
        assert_eq!(read(&h, &key(9, 2)), Some(vec![9; 16]));
        assert_eq!(displaced, vec![(key(5, 2), vec![5; 16])]);
    }

    #[test]
    fn a_second_user_of_one_file_waits_for_it_and_never_writes_into_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        let first = Hydration::create(&path).unwrap();
        first.write(&key(5, 1), &[5; 16], &mut |_, _| {}).unwrap();
        // A second replica (here in-process: flock locks are per open file, so another
        // process is refused the same way).
        let second = Hydration::create(&path).unwrap();
        assert!(!second.take(), "the file is held");
        second.write(&key(9, 1), &[9; 16], &mut |_, _| {}).unwrap();
        assert_eq!(read(&second, &key(9, 1)), None, "the second user keeps no slots");
        assert_eq!(
            read(&first, &key(5, 1)),
            Some(vec![5; 16]),
            "nor overwrites the first's"
        );
        drop(first);
        assert!(second.take(), "free once the first lets go");
        second.write(&key(9, 1), &[9; 16], &mut |_, _| {}).unwrap();
        assert_eq!(read(&second, &key(9, 1)), Some(vec![9; 16]));
    }

    #[test]
    fn the_hydration_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h");
        std::fs::write(&path, b"left by an older version").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let h = Hydration::create(&path).unwrap();
        assert_eq!(crate::file_modes::permission_bits(&path).unwrap(), 0o600);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "emptied once taken");
        drop(h);
    }

    #[test]
    fn pages_of_another_page_size_never_share_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let h = Hydration::create(&dir.path().join("h")).unwrap();
        let mut displaced = Vec::new();
        for pgno in 1..=4 {
            h.write(&key(5, pgno), &[pgno as u8; 16], &mut |k, b| displaced.push((k, b)))
                .unwrap();
        }
        // A page of the next page size, fetched by a reader of the new state before
        // hydration moved to it: written at 32-byte slots it would land on pages 3 and 4.
        h.write(&key(9, 2), &[9; 32], &mut |k, b| displaced.push((k, b)))
            .unwrap();
        assert_eq!(read(&h, &key(5, 3)), Some(vec![3; 16]), "not overwritten");
        assert_eq!(read(&h, &key(5, 4)), Some(vec![4; 16]), "not overwritten");
        let mut big = vec![0u8; 32];
        assert!(!h.read(&key(9, 2), &mut big).unwrap());
        assert!(
            !h.read(&key(5, 1), &mut big).unwrap(),
            "a 16-byte slot is no 32-byte page"
        );
        // Hydration follows the new page size: the file starts again empty, and the old
        // layout serves no one, its readers going to the store.
        assert!(h.relayout(32).unwrap());
        assert_eq!(read(&h, &key(5, 3)), None);
        h.write(&key(9, 2), &[9; 32], &mut |k, b| displaced.push((k, b)))
            .unwrap();
        h.write(&key(5, 1), &[1; 16], &mut |k, b| displaced.push((k, b)))
            .unwrap();
        assert!(h.read(&key(9, 2), &mut big).unwrap());
        assert_eq!(big, vec![9; 32]);
        assert_eq!(read(&h, &key(5, 1)), None, "an old-size page is not stored");
        assert!(
            displaced.is_empty(),
            "nothing was read back at the wrong size: {displaced:?}"
        );
        assert_eq!(h.progress().page_size_changes, 1);
    }

    #[test]
    fn slots_past_a_shrunk_file_lose_their_labels() {
        let dir = tempfile::tempdir().unwrap();
        let h = Hydration::create(&dir.path().join("h")).unwrap();
        for pgno in 1..=4 {
            h.write(&key(7, pgno), &[pgno as u8; 16], &mut |_, _| {}).unwrap();
        }
        h.fit(2, 32);
        // The file grows again (a page further out); pages 3 and 4 now read as zeros on
        // disk and must not be served as version 7.
        h.write(&key(8, 6), &[6; 16], &mut |_, _| {}).unwrap();
        assert_eq!(read(&h, &key(7, 2)), Some(vec![2; 16]));
        assert_eq!(read(&h, &key(7, 3)), None);
        assert_eq!(read(&h, &key(7, 4)), None);
    }
}
