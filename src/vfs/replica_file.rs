//! The main database file of a read replica: a `sqlite3_file` with no file behind it.
//! Reads come from [`Replica`]; writes are refused; locks are tracked in memory and the
//! start of each read transaction (`xLock(SHARED)`) pins the newest prepared state, which
//! the handle keeps until `xUnlock(NONE)`.

use super::file::wrapper_size;
use super::guard::{guard, sqlite_log};
use crate::replica::pragma;
use crate::replica::registry;
use crate::replica::schema_cookie::{SchemaCookies, COOKIE_OFFSET};
use crate::replica::state::State;
use crate::replica::time::ConnView;
use crate::replica::{ReadError, Replica, ReplicaConn};
use libsqlite3_sys as ffi;
use std::ffi::CStr;
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, Weak};

/// Our `sqlite3_file`: SQLite allocates `szOsFile` bytes for it, which is at least
/// [`wrapper_size`]; everything else lives in the box.
#[repr(C)]
pub(crate) struct ReplicaDbFile {
    base: ffi::sqlite3_file,
    handle: *mut Handle,
}

const _: () = assert!(std::mem::size_of::<ReplicaDbFile>() <= wrapper_size());

struct Handle {
    replica: Arc<Replica>,
    path: PathBuf,
    /// The state pinned by the current read transaction, if one is open.
    state: Option<Arc<State>>,
    lock: c_int,
    /// Point-in-time setting (`litestream_set_time`), shared with SQL functions.
    view: Arc<ConnView>,
    /// The schema cookies this connection is served (see `schema_cookie`).
    cookies: SchemaCookies,
    /// The cookie served for the last state whose page 1 was read.
    cookie_of: Option<(Weak<State>, u32)>,
}

impl Handle {
    /// The state a read transaction starting now sees: the pinned historic one, or the
    /// newest prepared one.
    fn next_state(&self) -> Arc<State> {
        self.view.pinned().unwrap_or_else(|| self.replica.current())
    }

    /// The state this handle reads: its transaction's, or the next one between transactions.
    fn state(&self) -> Arc<State> {
        match &self.state {
            Some(s) => Arc::clone(s),
            None => self.next_state(),
        }
    }

    /// Puts this connection's cookie for `state`'s schema over the stored one in `out`,
    /// the bytes at `offset`: SQLite reloads its schema only when the cookie changes,
    /// and the stored one does not always change with the schema (see `schema_cookie`).
    fn serve_cookie(&mut self, state: &Arc<State>, offset: u64, out: &mut [u8]) -> Result<(), ReadError> {
        let start = COOKIE_OFFSET as u64;
        let end = offset + out.len() as u64;
        if offset >= start + 4 || end <= start || state.commit == 0 {
            return Ok(());
        }
        let cookie = match &self.cookie_of {
            Some((of, cookie)) if ptr::eq(of.as_ptr(), Arc::as_ptr(state)) => *cookie,
            _ => {
                let size = state.page_size as usize;
                let cookie = if offset == 0 && out.len() >= size {
                    self.cookies.serve(&out[..size])
                } else {
                    let mut page = vec![0u8; size];
                    self.replica.read(state, 0, &mut page)?;
                    self.cookies.serve(&page)
                };
                self.cookie_of = Some((Arc::downgrade(state), cookie));
                cookie
            }
        };
        for (i, byte) in cookie.to_be_bytes().into_iter().enumerate() {
            let pos = start + i as u64;
            if (offset..end).contains(&pos) {
                out[(pos - offset) as usize] = byte;
            }
        }
        Ok(())
    }

    fn conn(&self) -> ReplicaConn {
        ReplicaConn {
            replica: Arc::clone(&self.replica),
            txid: self.state().txid,
            view: Arc::clone(&self.view),
        }
    }
}

/// Opens `file` (a block of `szOsFile` bytes) as a replica database file.
///
/// # Safety
/// `file` must point to at least [`wrapper_size`] writable bytes; `out_flags` may be null.
pub(crate) unsafe fn open(
    file: *mut ffi::sqlite3_file,
    path: &Path,
    replica: Arc<Replica>,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let handle = Box::new(Handle {
        replica,
        path: path.to_path_buf(),
        state: None,
        lock: ffi::SQLITE_LOCK_NONE,
        view: Arc::default(),
        cookies: SchemaCookies::default(),
        cookie_of: None,
    });
    ptr::write(
        file as *mut ReplicaDbFile,
        ReplicaDbFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            handle: Box::into_raw(handle),
        },
    );
    if !out_flags.is_null() {
        *out_flags = (flags & !(ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE)) | ffi::SQLITE_OPEN_READONLY;
    }
    ffi::SQLITE_OK
}

/// The replica behind a connection's main database file, if it is one of ours.
///
/// # Safety
/// `file` must be null or a valid `sqlite3_file` (any VFS's).
pub(crate) unsafe fn replica_of(file: *mut ffi::sqlite3_file) -> Option<ReplicaConn> {
    if file.is_null() || !ptr::eq((*file).pMethods, &METHODS) {
        return None;
    }
    Some(handle(file).conn())
}

/// # Safety
/// `file` must have been opened by [`open`] and not closed.
unsafe fn handle<'a>(file: *mut ffi::sqlite3_file) -> &'a mut Handle {
    &mut *(*(file as *mut ReplicaDbFile)).handle
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    // Version 1: no shared memory (rollback-journal mode) and no mmap.
    iVersion: 1,
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
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

unsafe extern "C" fn x_close(file: *mut ffi::sqlite3_file) -> c_int {
    guard("xClose", ffi::SQLITE_IOERR_CLOSE, || {
        let this = &mut *(file as *mut ReplicaDbFile);
        if !this.handle.is_null() {
            let h = Box::from_raw(this.handle);
            this.handle = ptr::null_mut();
            registry::detach(&h.path, &h.replica);
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_read(file: *mut ffi::sqlite3_file, buf: *mut c_void, amount: c_int, offset: i64) -> c_int {
    guard("xRead", ffi::SQLITE_IOERR_READ, || {
        if amount < 0 || offset < 0 {
            return ffi::SQLITE_IOERR_READ;
        }
        let h = handle(file);
        let out = std::slice::from_raw_parts_mut(buf as *mut u8, amount as usize);
        let state = h.state();
        let read = h
            .replica
            .read(&state, offset as u64, out)
            .and_then(|full| h.serve_cookie(&state, offset as u64, out).map(|()| full));
        match read {
            Ok(true) => ffi::SQLITE_OK,
            Ok(false) => ffi::SQLITE_IOERR_SHORT_READ,
            Err(e) => {
                let code = match e {
                    ReadError::Io(_) => ffi::SQLITE_IOERR_READ,
                    ReadError::Corrupt(_) => ffi::SQLITE_CORRUPT,
                };
                h.view.read_failed(&e.to_string());
                let message = format!("litestream: {e}");
                tracing::error!("{message}");
                sqlite_log(code, &message);
                code
            }
        }
    })
}

unsafe extern "C" fn x_write(_file: *mut ffi::sqlite3_file, _buf: *const c_void, _n: c_int, _off: i64) -> c_int {
    guard("xWrite", ffi::SQLITE_READONLY, || ffi::SQLITE_READONLY)
}

unsafe extern "C" fn x_truncate(_file: *mut ffi::sqlite3_file, _size: i64) -> c_int {
    guard("xTruncate", ffi::SQLITE_READONLY, || ffi::SQLITE_READONLY)
}

unsafe extern "C" fn x_sync(_file: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    guard("xSync", ffi::SQLITE_IOERR_FSYNC, || ffi::SQLITE_OK)
}

unsafe extern "C" fn x_file_size(file: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    guard("xFileSize", ffi::SQLITE_IOERR_FSTAT, || {
        *size = handle(file).state().db_size() as i64;
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard("xLock", ffi::SQLITE_IOERR_LOCK, || {
        let h = handle(file);
        if h.lock == ffi::SQLITE_LOCK_NONE && level >= ffi::SQLITE_LOCK_SHARED {
            // A read transaction starts: it sees the newest state, and only that one.
            h.state = Some(h.next_state());
        }
        h.lock = h.lock.max(level);
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard("xUnlock", ffi::SQLITE_IOERR_UNLOCK, || {
        let h = handle(file);
        h.lock = h.lock.min(level);
        if h.lock == ffi::SQLITE_LOCK_NONE {
            h.state = None;
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn x_check_reserved_lock(_file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    guard("xCheckReservedLock", ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, || {
        *out = 0;
        ffi::SQLITE_OK
    })
}

/// A copy of `text` in SQLite's allocator, as file controls must return strings.
unsafe fn sqlite_string(text: &str) -> *mut c_char {
    let text = text.replace('\0', " ");
    let copy = ffi::sqlite3_malloc(text.len() as c_int + 1) as *mut u8;
    if !copy.is_null() {
        ptr::copy_nonoverlapping(text.as_ptr(), copy, text.len());
        *copy.add(text.len()) = 0;
    }
    copy as *mut c_char
}

unsafe extern "C" fn x_file_control(file: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    guard("xFileControl", ffi::SQLITE_IOERR, || {
        if arg.is_null() {
            return ffi::SQLITE_NOTFOUND;
        }
        if op == ffi::SQLITE_FCNTL_VFSNAME {
            let copy = sqlite_string(&format!("{}(replica)", super::VFS_NAME));
            if copy.is_null() {
                return ffi::SQLITE_NOMEM;
            }
            *(arg as *mut *mut c_char) = copy;
            return ffi::SQLITE_OK;
        }
        if op == ffi::SQLITE_FCNTL_PRAGMA {
            // arg: [0] result or error (ours to set), [1] pragma name, [2] value or NULL.
            let args = arg as *mut *mut c_char;
            let name = *args.add(1);
            if name.is_null() {
                return ffi::SQLITE_NOTFOUND;
            }
            let name = CStr::from_ptr(name).to_string_lossy();
            let value = *args.add(2);
            let value = (!value.is_null()).then(|| CStr::from_ptr(value).to_string_lossy().into_owned());
            let (rc, text) = match pragma::answer(&handle(file).conn(), &name, value.as_deref()) {
                None => return ffi::SQLITE_NOTFOUND,
                Some(Ok(text)) => (ffi::SQLITE_OK, text),
                Some(Err(e)) => (ffi::SQLITE_ERROR, e),
            };
            *args = sqlite_string(&text);
            return rc;
        }
        ffi::SQLITE_NOTFOUND
    })
}

unsafe extern "C" fn x_sector_size(_file: *mut ffi::sqlite3_file) -> c_int {
    guard("xSectorSize", 4096, || 4096)
}

unsafe extern "C" fn x_device_characteristics(_file: *mut ffi::sqlite3_file) -> c_int {
    // Not IMMUTABLE: the content changes between read transactions.
    guard("xDeviceCharacteristics", 0, || 0)
}
