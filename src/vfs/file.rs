//! `sqlite3_file` wrapper: our file struct sits in front of the root VFS's file in one
//! allocation of `szOsFile` bytes, and every io method forwards to it.

use super::guard::{guard, sqlite_log};
use crate::primary::capture::WalSource;
use crate::primary::follower::Follower;
use crate::primary::registry;
use crate::primary::Primary;
use libsqlite3_sys as ffi;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::path::PathBuf;
use std::ptr;
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
    /// Main database of a primary; `leader` is None when another process replicates.
    PrimaryDb {
        path: PathBuf,
        /// Staging directory, where a follower reads the leader's upload progress.
        staging: PathBuf,
        leader: Option<Arc<Primary>>,
    },
    /// The `-wal` of a database this process replicates: writes are captured.
    PrimaryWal(Arc<Primary>),
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
            },
        );
        (*inner).pMethods = ptr::null();
        inner
    }

    /// # Safety
    /// `file` must have been passed to [`WrappedFile::prepare`] and its inner file opened.
    pub(crate) unsafe fn activate(file: *mut ffi::sqlite3_file, role: FileRole) {
        (*(file as *mut WrappedFile)).role = role;
        (*file).pMethods = &IO_METHODS;
    }

    /// The primary behind the main database file of a connection, if `file` is ours.
    ///
    /// # Safety
    /// `file` must be a valid `sqlite3_file` (any VFS's).
    pub(crate) unsafe fn primary_of(file: *mut ffi::sqlite3_file) -> Option<Arc<Primary>> {
        if file.is_null() || !std::ptr::eq((*file).pMethods, &IO_METHODS) {
            return None;
        }
        match &(*(file as *mut WrappedFile)).role {
            FileRole::PrimaryDb { leader, .. } => leader.clone(),
            _ => None,
        }
    }

    /// The database behind a connection whose writes another process replicates.
    ///
    /// # Safety
    /// `file` must be a valid `sqlite3_file` (any VFS's).
    pub(crate) unsafe fn follower_of(file: *mut ffi::sqlite3_file) -> Option<Follower> {
        if file.is_null() || !std::ptr::eq((*file).pMethods, &IO_METHODS) {
            return None;
        }
        match &(*(file as *mut WrappedFile)).role {
            FileRole::PrimaryDb {
                path,
                staging,
                leader: None,
            } => Some(Follower {
                db_path: path.clone(),
                staging_dir: staging.clone(),
            }),
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
        if let FileRole::PrimaryDb {
            path, leader: Some(_), ..
        } = std::mem::replace(&mut this.role, FileRole::Plain)
        {
            registry::detach(&path);
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
        let primary = match &this.role {
            FileRole::PrimaryWal(primary) => primary,
            FileRole::PrimaryDb {
                leader: Some(primary), ..
            } if amount > 0 => {
                // Checkpoints, or a database that left WAL mode (see `on_db_write`).
                let data = std::slice::from_raw_parts(buf as *const u8, amount as usize);
                primary.on_db_write(offset as u64, data);
                return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
            }
            _ => return forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset),
        };
        if let Err(reason) = primary.check_writable() {
            sqlite_log(ffi::SQLITE_IOERR_WRITE, &format!("litestream: write refused: {reason}"));
            return ffi::SQLITE_IOERR_WRITE;
        }
        let rc = forward!(file, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amount, offset);
        if rc == ffi::SQLITE_OK && amount > 0 {
            let data = std::slice::from_raw_parts(buf as *const u8, amount as usize);
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

fn role_primary(role: &FileRole) -> Option<&Arc<Primary>> {
    match role {
        FileRole::PrimaryDb { leader, .. } => leader.as_ref(),
        FileRole::PrimaryWal(p) => Some(p),
        FileRole::Plain => None,
    }
}

unsafe extern "C" fn x_truncate(file: *mut ffi::sqlite3_file, size: i64) -> c_int {
    guard("xTruncate", ffi::SQLITE_IOERR_TRUNCATE, || {
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
        forward!(file, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level)
    })
}

unsafe extern "C" fn x_check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard("xCheckReservedLock", ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        forward!(file, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, out)
    })
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guard("xFileControl", ffi::SQLITE_IOERR, || {
        if op == ffi::SQLITE_FCNTL_PRAGMA {
            if let FileRole::PrimaryDb { path, .. } = &WrappedFile::from_raw(file).role {
                if let Some(rc) = refuse_leaving_wal(path, arg as *mut *mut c_char) {
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

/// `PRAGMA journal_mode=<anything but WAL>` on a primary's database. A change to
/// DELETE, TRUNCATE or PERSIST would fail later anyway (the `-journal` open is refused),
/// but MEMORY and OFF need no file: the database would leave WAL mode and its commits
/// would bypass capture, unreplicated, while `litestream_sync()` kept succeeding (found
/// by SQLite's wal6.test). So the pragma itself fails, with a message, before SQLite acts
/// on it. `arg` is SQLite's `char*[3]`: error message out, pragma name, value.
///
/// # Safety
/// `arg` must be the argument of an `SQLITE_FCNTL_PRAGMA` call.
unsafe fn refuse_leaving_wal(path: &std::path::Path, arg: *mut *mut c_char) -> Option<c_int> {
    let (name, value) = (*arg.add(1), *arg.add(2));
    if name.is_null() || value.is_null() {
        return None;
    }
    let name = CStr::from_ptr(name).to_bytes();
    let value = CStr::from_ptr(value).to_bytes();
    if !name.eq_ignore_ascii_case(b"journal_mode") || value.eq_ignore_ascii_case(b"wal") {
        return None;
    }
    let message = format!(
        "litestream: {} must stay in WAL mode to be replicated; refusing PRAGMA journal_mode={}\0",
        path.display(),
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

unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    guard("xShmMap", ffi::SQLITE_IOERR_SHMMAP, || {
        forward!(file, xShmMap, ffi::SQLITE_IOERR_SHMMAP, region, size, extend, out)
    })
}

unsafe extern "C" fn x_shm_lock(file: *mut ffi::sqlite3_file, offset: c_int, n: c_int, flags: c_int) -> c_int {
    // SQLite takes and drops several shm locks per transaction; only slot 0
    // (WAL_WRITE_LOCK) concerns replication. The others are a plain forward, which
    // compiles to a tail call: nothing in it can panic.
    if offset != 0 {
        return guard("xShmLock", ffi::SQLITE_IOERR_SHMLOCK, || {
            forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags)
        });
    }
    x_shm_write_lock(file, n, flags)
}

/// `xShmLock` of slot 0, the WAL write lock.
#[inline(never)]
unsafe fn x_shm_write_lock(file: *mut ffi::sqlite3_file, n: c_int, flags: c_int) -> c_int {
    guard("xShmLock", ffi::SQLITE_IOERR_SHMLOCK, || {
        let mut rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, 0, n, flags);
        let primary = role_primary(&WrappedFile::from_raw(file).role);
        if let Some(primary) = primary {
            if flags == (ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE) {
                // Our snapshot connection holds the lock for a moment: wait for it
                // rather than hand the application a BUSY it did not cause.
                while rc == ffi::SQLITE_BUSY && primary.wait_for_snapshot_lock() {
                    rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, 0, n, flags);
                }
            } else if flags == (ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE) {
                // Its release ends a write transaction.
                primary.write_lock_released();
            }
        }
        rc
    })
}

unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    guard("xShmBarrier", 0, || {
        forward!(file, xShmBarrier, ());
        0
    });
}

unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    guard("xShmUnmap", ffi::SQLITE_IOERR_SHMMAP, || {
        forward!(file, xShmUnmap, ffi::SQLITE_OK, delete)
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
