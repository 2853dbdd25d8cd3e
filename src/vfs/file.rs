//! `sqlite3_file` wrapper: our file struct sits in front of the root VFS's file in one
//! allocation of `szOsFile` bytes, and every io method forwards to it.

use super::guard::{guard, sqlite_log};
use crate::primary::capture::WalSource;
use crate::primary::database::Database;
use crate::primary::registry;
use crate::primary::ShmWal;
use libsqlite3_sys as ffi;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::Arc;

/// What SQLite opened, from the `SQLITE_OPEN_*` type flags. Capture keys on this.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    MainDb,
    Wal,
    Other,
}

impl FileKind {
    pub(crate) fn from_open_flags(flags: c_int) -> Self {
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            FileKind::MainDb
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
            FileKind::Wal
        } else {
            FileKind::Other
        }
    }
}

/// What replication does with a file.
pub(crate) enum FileRole {
    /// Passed through untouched (temp files, journals of other databases, ...).
    Plain,
    /// Main database of a primary, whichever process replicates it.
    PrimaryDb(Arc<Database>),
    /// The `-wal` of a primary's database: writes are captured when this process
    /// replicates it, and every process guards the frames it is about to destroy.
    PrimaryWal(Arc<Database>),
}

/// Our file. `base` must be the first field: SQLite hands us `*mut sqlite3_file`
/// pointing at it and we cast back.
#[repr(C)]
pub(crate) struct WrappedFile {
    base: ffi::sqlite3_file,
    /// The root VFS's file, living in the same allocation right after this struct.
    inner: *mut ffi::sqlite3_file,
    pub(crate) kind: FileKind,
    pub(crate) role: FileRole,
    /// Region 0 of the wal-index (`-shm`) as the root VFS mapped it for this file: its
    /// header says where the WAL stands (`shm_wal`).
    shm: AtomicPtr<u8>,
    /// A write to the database file outside WAL mode since its last unlock (`x_unlock`
    /// makes such a commit wait for its snapshot with `sync=commit`).
    wrote_outside_wal: AtomicBool,
}

/// Bytes reserved in front of the inner file, rounded so the inner file is aligned.
pub(crate) const fn wrapper_size() -> usize {
    let size = std::mem::size_of::<WrappedFile>();
    (size + 15) & !15
}

impl WrappedFile {
    /// Prepares `file` (an uninitialised block of our `szOsFile`) and returns the
    /// pointer the root VFS must open into. `pMethods` stays null until
    /// [`WrappedFile::activate`], so SQLite never calls our `xClose` on a failed open.
    ///
    /// # Safety
    /// `file` must point to at least `wrapper_size() + root.szOsFile` writable bytes.
    pub(crate) unsafe fn prepare(file: *mut ffi::sqlite3_file, kind: FileKind) -> *mut ffi::sqlite3_file {
        let this = file as *mut WrappedFile;
        let inner = (file as *mut u8).add(wrapper_size()) as *mut ffi::sqlite3_file;
        ptr::write(
            this,
            WrappedFile {
                base: ffi::sqlite3_file { pMethods: ptr::null() },
                inner,
                kind,
                role: FileRole::Plain,
                shm: AtomicPtr::new(ptr::null_mut()),
                wrote_outside_wal: AtomicBool::new(false),
            },
        );
        (*inner).pMethods = ptr::null();
        inner
    }

    /// # Safety
    /// `file` must have been passed to [`WrappedFile::prepare`] and its inner file opened.
    pub(crate) unsafe fn activate(file: *mut ffi::sqlite3_file, role: FileRole) {
        let this = &mut *(file as *mut WrappedFile);
        this.role = role;
        // Claim only what the file below offers: SQLite falls back to a heap wal-index
        // (exclusive locking) when xShmMap is missing, and must see it missing.
        let version = (*(*this.inner).pMethods).iVersion;
        (*file).pMethods = match version {
            v if v >= 3 => &IO_METHODS,
            2 => &IO_METHODS_V2,
            _ => &IO_METHODS_V1,
        };
    }

    /// True when `file` is one of ours (any version of the methods).
    fn is_ours(file: *mut ffi::sqlite3_file) -> bool {
        // SAFETY: callers pass a valid sqlite3_file.
        let methods = unsafe { (*file).pMethods };
        [&IO_METHODS, &IO_METHODS_V2, &IO_METHODS_V1]
            .iter()
            .any(|m| ptr::eq(methods, *m))
    }

    /// The database behind a primary's main database file, whichever process
    /// replicates it.
    ///
    /// # Safety
    /// `file` must be a valid `sqlite3_file` (any VFS's).
    pub(crate) unsafe fn database_of(file: *mut ffi::sqlite3_file) -> Option<Arc<Database>> {
        if file.is_null() || (*file).pMethods.is_null() || !Self::is_ours(file) {
            return None;
        }
        match &(*(file as *mut WrappedFile)).role {
            FileRole::PrimaryDb(database) => Some(Arc::clone(database)),
            _ => None,
        }
    }

    /// # Safety
    /// `file` must be a file prepared by this module.
    /// Shared access is all the io methods need (the inner file is a raw pointer),
    /// so several calls may look at one wrapper without aliasing a `&mut`.
    unsafe fn from_raw<'a>(file: *mut ffi::sqlite3_file) -> &'a WrappedFile {
        &*(file as *const WrappedFile)
    }

    fn inner_methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: an active wrapper always has an opened inner file with methods.
        unsafe { &*(*self.inner).pMethods }
    }
}

/// Closes the inner file after a failed open if the root VFS left methods on it.
///
/// # Safety
/// `inner` must be the pointer returned by [`WrappedFile::prepare`].
pub(crate) unsafe fn close_failed_inner(inner: *mut ffi::sqlite3_file) {
    let methods = (*inner).pMethods;
    if !methods.is_null() {
        if let Some(close) = (*methods).xClose {
            close(inner);
        }
        (*inner).pMethods = ptr::null();
    }
}

/// Methods of a file whose root VFS file has version 1 (no shared memory) or 2 (no
/// memory mapping): the same trampolines, without the ones it lacks.
static IO_METHODS_V1: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
    ..IO_METHODS
};

static IO_METHODS_V2: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xFetch: None,
    xUnfetch: None,
    ..IO_METHODS
};

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_unlock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: Some(x_fetch),
    xUnfetch: Some(x_unfetch),
};

/// Forwards one call to the inner file's method of the same name; a missing method
/// (an older root VFS) yields `$missing`.
macro_rules! forward {
    ($file:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let this = WrappedFile::from_raw($file);
        match this.inner_methods().$method {
            Some(method) => method(this.inner $(, $arg)*),
            None => $missing,
        }
    }};
}

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard("xClose", ffi::SQLITE_IOERR_CLOSE, || {
        let rc = forward!(file, xClose, ffi::SQLITE_OK);
        // The last call on this file: exclusive access.
        let this = &mut *(file as *mut WrappedFile);
        (*this.inner).pMethods = ptr::null();
        if let FileRole::PrimaryDb(database) = std::mem::replace(&mut this.role, FileRole::Plain) {
            // SQLite unmaps before it closes; should it not, the view forgets us now.
            database.wal_index.unmap(file as usize);
            // A connection inherited through fork() holds the parent's database, not
            // one of this process's registry: nothing to detach here.
            if !database.inherited() {
                registry::detach(&database.path);
                super::claims::release(&database.path);
            }
        }
        rc
    })
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    guard("xRead", ffi::SQLITE_IOERR_READ, || {
        forward!(file, xRead, ffi::SQLITE_IOERR_READ, buf, amount, offset)
    })
}

unsafe extern "C" fn x_write(file: *mut ffi::sqlite3_file, buf: *const c_void, amount: c_int, offset: i64) -> c_int {
    guard("xWrite", ffi::SQLITE_IOERR_WRITE, || {
        let this = WrappedFile::from_raw(file);
        let database = match &this.role {
            FileRole::PrimaryWal(database) => database,
            FileRole::PrimaryDb(database) if amount > 0 => {
                // Checkpoints, or a database that left WAL mode (see `on_db_write`).
                if let Some(primary) = database.leader() {
                    let data = std::slice::from_raw_parts(buf as *const u8, amount as usize);
                    if primary.on_db_write(offset as u64, data) {
                        this.wrote_outside_wal.store(true, Ordering::Relaxed);
                    }
                }
                return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
            }
            _ => return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset),
        };
        if let Some(rc) = refuse_unlocked_wal_write(database) {
            return rc;
        }
        let data = std::slice::from_raw_parts(buf as *const u8, amount.max(0) as usize);
        if offset == 0 && data.len() >= crate::wal::HEADER_SIZE {
            // A new WAL header: the generation in the file (if any) goes away.
            database.before_wal_header(&mut InnerWal(this.inner), data);
        }
        let Some(primary) = database.leader() else {
            database.follower_wrote();
            return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
        };
        if let Err(reason) = primary.check_writable() {
            // SQLITE_READONLY ("attempt to write a readonly database"), as for the
            // exclusive-mode refusal below, not a bare "disk I/O error" (a settings
            // tester): the transaction rolls back as usual, and the log says why.
            let why = format!("litestream: write refused: {reason}");
            tracing::error!(db = %database.path.display(), "{why}");
            sqlite_log(ffi::SQLITE_READONLY, &why);
            return ffi::SQLITE_READONLY;
        }
        let rc = forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
        if rc == ffi::SQLITE_OK && amount > 0 {
            let mut source = InnerWal(this.inner);
            primary.on_wal_write(offset as u64, data, &mut source);
        }
        rc
    })
}

/// Reads of the `-wal` through the root VFS's file, for capture's read-backs.
struct InnerWal(*mut ffi::sqlite3_file);

impl WalSource for InnerWal {
    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<bool> {
        // SAFETY: the inner file is open for as long as the wrapper that owns it.
        let rc = unsafe {
            match (*(*self.0).pMethods).xRead {
                Some(read) => read(
                    self.0,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len() as c_int,
                    offset as i64,
                ),
                None => ffi::SQLITE_IOERR_READ,
            }
        };
        match rc {
            ffi::SQLITE_OK => Ok(true),
            ffi::SQLITE_IOERR_SHORT_READ => Ok(false),
            code => Err(std::io::Error::other(format!("reading the WAL: SQLite error {code}"))),
        }
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard("xTruncate", ffi::SQLITE_IOERR_TRUNCATE, || {
        let this = WrappedFile::from_raw(file);
        if let FileRole::PrimaryWal(database) = &this.role {
            // SQLite truncates the WAL below its header only after a checkpoint that
            // copied every frame (TRUNCATE, or a persistent WAL closing); other
            // truncations keep every frame of the current generation.
            if size < crate::wal::HEADER_SIZE as i64 {
                database.before_wal_truncate(&mut InnerWal(this.inner));
            }
        }
        forward!(file, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size)
    })
}

unsafe extern "C" fn x_sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    guard("xSync", ffi::SQLITE_IOERR_FSYNC, || {
        forward!(file, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
    })
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    guard("xFileSize", ffi::SQLITE_IOERR_FSTAT, || {
        forward!(file, xFileSize, ffi::SQLITE_IOERR_FSTAT, size)
    })
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard("xLock", ffi::SQLITE_IOERR_LOCK, || {
        forward!(file, xLock, ffi::SQLITE_IOERR_LOCK, level)
    })
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard("xUnlock", ffi::SQLITE_IOERR_UNLOCK, || {
        let rc = forward!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level);
        let this = WrappedFile::from_raw(file);
        // Outside WAL mode a write transaction ends by giving up its lock on the file;
        // in WAL mode `write_lock_released` serves `sync=commit`.
        if level <= ffi::SQLITE_LOCK_SHARED && this.wrote_outside_wal.swap(false, Ordering::Relaxed) {
            if let FileRole::PrimaryDb(database) = &this.role {
                if let Some(primary) = database.leader() {
                    primary.after_commit();
                }
            }
        }
        rc
    })
}

/// A frame written to a primary's WAL while no connection of this process holds the WAL
/// write lock through the VFS: SQLite in exclusive locking mode, which keeps the WAL's
/// locks (or its whole wal-index) to itself. A database where it is the main one
/// refuses the pragma (`refuse_pragma`); one attached to a connection gets the
/// connection's mode (an unqualified `PRAGMA locking_mode`, or the mode in force when it
/// was attached) without SQLite asking its file. Written, such commits bypassed
/// `sync=commit` (they returned before they were stored) and locked replication's own
/// connection out: refused instead, before any byte reaches the WAL, which leaves the
/// database as it was.
fn refuse_unlocked_wal_write(database: &crate::primary::database::Database) -> Option<c_int> {
    if database.wal_write_lock_held() {
        return None;
    }
    let why = format!(
        "litestream: write refused: {} is in exclusive locking mode, which replication cannot follow (an \
         unqualified PRAGMA locking_mode=EXCLUSIVE applies to every attached database, and a database attached \
         while the connection is in that mode keeps it); attach it while the connection's locking_mode is \
         NORMAL, and name the schema in PRAGMA <schema>.locking_mode=EXCLUSIVE for the databases it is meant for",
        database.path.display()
    );
    // The application sees only SQLite's message for the code: the reason goes to the
    // log and to stderr. SQLITE_READONLY, not an I/O error: after an I/O error the pager
    // keeps its error state for as long as it holds the exclusive lock, so even a
    // `PRAGMA <schema>.locking_mode=NORMAL` did not let the next write through; after
    // this one the transaction rolls back as usual and the mode can change.
    tracing::error!("{why}");
    sqlite_log(ffi::SQLITE_READONLY, &why);
    Some(ffi::SQLITE_READONLY)
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard("xCheckReservedLock", ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        forward!(file, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, out)
    })
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guard("xFileControl", ffi::SQLITE_IOERR, || {
        if op == ffi::SQLITE_FCNTL_PRAGMA {
            if let FileRole::PrimaryDb(database) = &WrappedFile::from_raw(file).role {
                if let Some(rc) = refuse_pragma(&database.path, arg as *mut *mut c_char) {
                    return rc;
                }
            }
        }
        let rc = forward!(file, xFileControl, ffi::SQLITE_NOTFOUND, op, arg);
        if op == ffi::SQLITE_FCNTL_VFSNAME && rc == ffi::SQLITE_OK {
            prefix_vfs_name(arg as *mut *mut c_char);
        }
        rc
    })
}

/// Pragmas that would take a primary's database out of replication fail, with a
/// message, before SQLite acts on them. `arg` is SQLite's `char*[3]`: error message out,
/// pragma name, value.
///
/// - `journal_mode=<anything but WAL>`: DELETE, TRUNCATE or PERSIST would fail later
///   anyway (the `-journal` open is refused), but MEMORY and OFF need no file: the
///   database would leave WAL mode and its commits would bypass capture, unreplicated,
///   while `litestream_sync()` kept succeeding (found by SQLite's wal6.test).
/// - `locking_mode=EXCLUSIVE`: SQLite then keeps the WAL's locks to itself, so the write
///   lock never reaches the VFS (`sync=commit` and the hand-over of each transaction
///   never happen) and our snapshot connection can never open the database: a database
///   in exclusive mode before its first snapshot would never be replicated.
///
/// # Safety
/// `arg` must be the argument of an `SQLITE_FCNTL_PRAGMA` call.
unsafe fn refuse_pragma(path: &std::path::Path, arg: *mut *mut c_char) -> Option<c_int> {
    let (name, value) = (*arg.add(1), *arg.add(2));
    if name.is_null() || value.is_null() {
        return None;
    }
    let name = CStr::from_ptr(name).to_bytes();
    let value = CStr::from_ptr(value).to_bytes();
    let why = if name.eq_ignore_ascii_case(b"journal_mode") && !value.eq_ignore_ascii_case(b"wal") {
        "must stay in WAL mode to be replicated"
    } else if name.eq_ignore_ascii_case(b"locking_mode") && value.eq_ignore_ascii_case(b"exclusive") {
        "is replicated with a connection of its own, which exclusive locking would lock out"
    } else {
        return None;
    };
    let message = format!(
        "litestream: {} {why}; refusing PRAGMA {}={}\0",
        path.display(),
        String::from_utf8_lossy(name),
        String::from_utf8_lossy(value)
    );
    tracing::error!("{}", message.trim_end_matches('\0'));
    let copy = ffi::sqlite3_malloc(message.len() as c_int) as *mut u8;
    if !copy.is_null() {
        ptr::copy_nonoverlapping(message.as_ptr(), copy, message.len());
        *arg = copy as *mut c_char;
    }
    Some(ffi::SQLITE_ERROR)
}

/// Reports the stack of shims as `litestream/<root>` (the convention of SQLite's own
/// shims such as vfsstat), so `.vfsname` shows which files go through us.
unsafe fn prefix_vfs_name(slot: *mut *mut c_char) {
    if slot.is_null() {
        return;
    }
    let below = *slot;
    let below_name = if below.is_null() {
        String::new()
    } else {
        format!("/{}", CStr::from_ptr(below).to_string_lossy())
    };
    let name = format!("{}{below_name}\0", super::VFS_NAME);
    let copy = ffi::sqlite3_malloc(name.len() as c_int) as *mut u8;
    if copy.is_null() {
        return;
    }
    ptr::copy_nonoverlapping(name.as_ptr(), copy, name.len());
    ffi::sqlite3_free(below as *mut c_void);
    *slot = copy as *mut c_char;
}

unsafe extern "C" fn x_sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    guard("xSectorSize", 4096, || forward!(file, xSectorSize, 4096))
}

unsafe extern "C" fn x_device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    guard("xDeviceCharacteristics", 0, || {
        forward!(file, xDeviceCharacteristics, 0)
    })
}

unsafe extern "C" fn x_fetch(file: *mut ffi::sqlite3_file, offset: i64, amount: c_int, out: *mut *mut c_void) -> c_int {
    guard("xFetch", ffi::SQLITE_IOERR_MMAP, || {
        *out = ptr::null_mut();
        forward!(file, xFetch, ffi::SQLITE_OK, offset, amount, out)
    })
}

unsafe extern "C" fn x_unfetch(file: *mut ffi::sqlite3_file, offset: i64, page: *mut c_void) -> c_int {
    guard("xUnfetch", ffi::SQLITE_IOERR_MMAP, || {
        forward!(file, xUnfetch, ffi::SQLITE_OK, offset, page)
    })
}

mod shm;
pub(super) use shm::shm_wal;
use shm::{x_shm_barrier, x_shm_lock, x_shm_map, x_shm_unmap};

#[cfg(test)]
mod tests;
