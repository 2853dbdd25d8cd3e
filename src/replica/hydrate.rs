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
//! Only a file this replica made is ever emptied or written ([`Hydration::take`]): a
//! `hydrate=` path naming anything else (an unrelated database, a live primary's own
//! file) once destroyed it, and the primary then snapshotted the wreck into its backup.
//! Taking needs the file to be absent (made here, owner-only), empty (nothing to lose;
//! its permissions are left as they are), or named by the marker beside it, written when
//! this replica (or an earlier run) took it. Anything else is refused and stays as it
//! is; the replica reads from the store, and `litestream_status()` says why.
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
use super::hydrate_claim::{marker_path, read_marker, sqlite_in_use, write_marker, Identity, Marker, NotTaken};
use super::state::{FileKey, PlanFile, State};
use crate::file_modes::FileModes;
use serde_json::json;
use std::collections::HashMap;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

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
    /// The replica's name, written into the marker for whoever finds it.
    replica: String,
    /// The file, once taken ([`Hydration::take`]).
    file: OnceLock<File>,
    /// True once this replica holds the file's lock: until then nothing is written to
    /// the file or read from it.
    held: AtomicBool,
    /// Why the file at `path` was last refused, so the warning is logged once per reason
    /// rather than at every retry.
    refused: Mutex<Option<String>>,
    table: RwLock<Table>,
    progress: Mutex<Progress>,
}

impl std::fmt::Debug for Hydration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hydration").field("path", &self.path).finish()
    }
}

impl Hydration {
    /// A hydration into `path` for the replica `replica`, which takes the file at once if
    /// it can (see [`Hydration::take`]); otherwise warns, and the hydrator tries again
    /// each round. A path that cannot be opened at all (a missing directory) fails the
    /// open, as a bad parameter does; a file there that is not ours to take leaves the
    /// replica reading from the store, with the reason in its status.
    pub fn create(path: &Path, replica: &str) -> Result<Hydration, String> {
        let hydration = Hydration {
            path: path.to_path_buf(),
            replica: replica.to_string(),
            file: OnceLock::new(),
            held: AtomicBool::new(false),
            refused: Mutex::new(None),
            table: RwLock::new(Table::default()),
            progress: Mutex::new(Progress::default()),
        };
        match hydration.claim() {
            Ok(file) => hydration.hold(file),
            Err(NotTaken::Busy) => tracing::warn!(
                path = %path.display(),
                "the hydration file is in use by another process (or another replica of this one); \
                 reading from the store until it is free (give each process its own hydrate= path)"
            ),
            Err(NotTaken::Unopenable(e)) => return Err(e),
            Err(NotTaken::Refused(e) | NotTaken::Failed(e)) => hydration.refuse(e),
        }
        Ok(hydration)
    }

    /// Takes the file for this replica if it does not hold it yet (see
    /// [`Hydration::claim`]), then empties it: whatever a previous user left is
    /// unlabelled here. False while another process or replica holds it, or while the
    /// path names a file that is not ours (the reason is the hydration's error). Called
    /// by the hydrator before each round: a refused file the user removed is made afresh
    /// at the next.
    pub fn take(&self) -> bool {
        if self.held.load(Ordering::Acquire) {
            return true;
        }
        match self.claim() {
            Ok(file) => {
                self.hold(file);
                true
            }
            Err(NotTaken::Busy) => {
                // Waiting for another user now, whatever was refused before.
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
                false
            }
            Err(NotTaken::Refused(e) | NotTaken::Failed(e) | NotTaken::Unopenable(e)) => {
                self.refuse(e);
                false
            }
        }
    }

    fn hold(&self, file: File) {
        let _ = self.file.set(file);
        *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.held.store(true, Ordering::Release);
    }

    /// Records why the file was not taken; warns once per reason, not at every retry.
    fn refuse(&self, e: String) {
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        if refused.as_deref() != Some(e.as_str()) {
            tracing::warn!(path = %self.path.display(), error = %e, "not hydrating: reading from the store");
            *refused = Some(e.clone());
        }
        drop(refused);
        self.record_error(&e);
    }

    /// Opens the file at `path` (making it if absent) and locks it; then, for a file
    /// that was there already, refuses it unless it is ours to empty. The file returned
    /// is marked ours and empty.
    ///
    /// Why a marker: the flock this replica takes is not what SQLite locks (SQLite
    /// uses fcntl locks, which flock does not see), and content cannot tell: a complete
    /// hydration file is an image of the database, its page 1 like any SQLite
    /// database's. So the marker beside the file names it by inode and birth time
    /// ([`Identity`]): a file put in its place later (a database moved or made there,
    /// even one that reuses the inode number) is another file.
    ///
    /// Why also look for SQLite's files beside it, marker or not: the file is ours only
    /// until someone else uses it, and the hydrated image is the whole database, which
    /// an operator may promote (open it as the new primary) or inspect with `sqlite3`.
    /// A database in use has `-wal` and `-shm` beside it (WAL), or a `-journal`
    /// mid-transaction, and one opened through this VFS as a primary has its staging
    /// directory `-litestream` even once closed. A hydration file has none of these, so
    /// refusing on them costs nothing and keeps a promoted copy safe. What they cannot
    /// see, a closed and checkpointed plain database left at the path with the marker
    /// still naming it, is documented in the README.
    fn claim(&self) -> Result<File, NotTaken> {
        let path = &self.path;
        let shown = path.display();
        let refused = |e: String| NotTaken::Refused(e);
        let not_regular = || {
            refused(format!(
                "hydrate={shown} is not a regular file; refusing to use it: choose another path"
            ))
        };
        // Devices, FIFOs, directories: not even opened (opening some has effects, and a
        // block device reports a size of 0, which would pass for empty). Nor a symbolic
        // link: whoever may write its directory could point it at any file of ours (a
        // security tester: root wrote the replica's pages into a root-owned file).
        if std::fs::symlink_metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(not_regular());
        }
        let (file, made) = match FileModes::owner_only().create_new_read_write(path) {
            Ok(file) => (file, true),
            // Opened as it is: no create, no truncate, no chmod (it may be someone's).
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let opened = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path);
                match opened {
                    Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_regular()),
                    Ok(file) => (file, false),
                    Err(e) => return Err(NotTaken::Unopenable(format!("hydration file {shown}: {e}"))),
                }
            }
            Err(e) => return Err(NotTaken::Unopenable(format!("hydration file {shown}: {e}"))),
        };
        let meta = file
            .metadata()
            .map_err(|e| NotTaken::Failed(format!("hydration file {shown}: {e}")))?;
        if !meta.is_file() {
            return Err(not_regular());
        }
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(NotTaken::Busy),
            Err(TryLockError::Error(e)) => {
                return Err(NotTaken::Failed(format!("locking the hydration file {shown}: {e}")))
            }
        }
        let marker = marker_path(path);
        let found = read_marker(&marker).map_err(|e| NotTaken::Failed(format!("reading {}: {e}", marker.display())))?;
        if let Some(beside) = sqlite_in_use(path) {
            return Err(refused(format!(
                "hydrate={shown} has {beside} beside it: it is a database, not a hydration file; \
                 refusing to overwrite it: choose another path"
            )));
        }
        let identity = Identity::of(&meta);
        let ours = matches!(found, Marker::Ours(id) if id.is(&identity));
        if !made && !ours && meta.len() > 0 {
            return Err(refused(format!(
                "hydrate={shown} is an existing file that is not a hydration file; refusing to overwrite it: \
                 remove it or choose another path"
            )));
        }
        if found == Marker::Foreign {
            return Err(refused(format!(
                "{} exists and is not a hydration marker; refusing to overwrite it: remove it or choose another \
                 hydrate= path",
                marker.display()
            )));
        }
        if !made && !ours && meta.mode() & 0o077 != 0 {
            // An empty file someone made: used, but its permissions are theirs to set.
            tracing::warn!(
                path = %shown,
                mode = format!("{:o}", meta.mode() & 0o777),
                "the hydration file is readable by others, and it will hold the whole database (chmod 600 it)"
            );
        }
        if !ours {
            write_marker(&marker, path, &self.replica, &identity)
                .map_err(|e| NotTaken::Failed(format!("writing the hydration marker {}: {e}", marker.display())))?;
        }
        file.set_len(0)
            .map_err(|e| NotTaken::Failed(format!("emptying the hydration file {shown}: {e}")))?;
        Ok(file)
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
        // No file taken: no slot was ever written either.
        let Some(file) = self.file.get() else {
            return Ok(false);
        };
        if table.page_size != out.len() as u32 || !Self::holds(&table, key) {
            return Ok(false);
        }
        file.read_exact_at(out, (key.pgno as u64 - 1) * out.len() as u64)?;
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
        let (true, Some(file)) = (self.held.load(Ordering::Acquire), self.file.get()) else {
            return Ok(()); // another process's file, or one refused
        };
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
            file.read_exact_at(&mut bytes, offset)?;
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
        file.write_all_at(page, offset)?;
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
        if let Some(file) = self.file.get() {
            file.set_len(0)?;
        }
        Ok(true)
    }

    /// The replica's history was replaced (`poll.rs`): no local page belongs to the
    /// store's database any more. Every label goes and the file is emptied; hydration
    /// starts again, as after a page size change.
    pub fn forget(&self) -> std::io::Result<()> {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        *table = Table {
            page_size: table.page_size,
            ..Table::default()
        };
        self.progress().txid = 0;
        match self.file.get() {
            Some(file) => file.set_len(0),
            None => Ok(()),
        }
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
            .map_err(|e| FetchError::Local(format!("emptying the hydration file {}: {e}", self.path.display())))?;
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
                        .map_err(|e| {
                            FetchError::Local(format!("writing the hydration file {}: {e}", self.path.display()))
                        })?;
                }
                i = j;
            }
        }
        // Zero-filled pages (lock page, pages grown over) need no slot: they read as zeros.
        self.fit(state.commit, state.db_size());
        if let Some(file) = self.file.get() {
            let _ = file.sync_data();
        }
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
        if let Some(file) = self.file.get() {
            let _ = file.set_len(db_size);
        }
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
        let refused = self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let p = self.progress();
        json!({
            "path": self.path.display().to_string(),
            // True while another process (or replica) holds the file: nothing is local.
            // Not for a file refused as not ours: nothing will free it (`last_error` says why).
            "waiting_for_file": !self.held.load(Ordering::Acquire) && refused.is_none(),
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
#[path = "hydrate_tests.rs"]
mod tests;
