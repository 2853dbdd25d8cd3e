//! The loadable-extension entry point.

use super::functions::register_functions;
use super::guard::guard;
use super::pin::{pin_this_library, Residence};
use super::register::register_vfs;
use libsqlite3_sys as ffi;
use std::os::raw::{c_char, c_int};

/// Entry point SQLite derives from the file name `liblitestream_vfs.so`.
///
/// Registers the `litestream` VFS (once per process) and the SQL functions on `db`, and
/// asks SQLite to add the functions to every later connection. A registered VFS must
/// outlive the connection that loaded it, so the library pins itself in memory
/// ([`pin_this_library`]) and returns `SQLITE_OK`; only if that fails does it return
/// `SQLITE_OK_LOAD_PERMANENTLY`, which `sqlite3_load_extension` understands but an
/// auto-extension must not return. So the same function serves `.load` and a C program
/// that links the static library and passes it to `sqlite3_auto_extension`
/// (`include/litestream_vfs.h`).
///
/// # Safety
/// Called by SQLite with a valid connection (or null from auto-extension contexts
/// that have none) and the API routine table (null is refused with an error).
#[no_mangle]
pub unsafe extern "C" fn sqlite3_litestreamvfs_init(
    db: *mut ffi::sqlite3,
    err: *mut *mut c_char,
    api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    guard("sqlite3_litestreamvfs_init", ffi::SQLITE_ERROR, || {
        if api.is_null() {
            // SQLite built with SQLITE_OMIT_LOAD_EXTENSION passes no routine table, and
            // every sqlite3_* call of this crate goes through it.
            eprintln!("litestream: cannot initialise the extension: SQLite passed no API routine table");
            return ffi::SQLITE_ERROR;
        }
        if let Err(e) = ffi::rusqlite_extension_init2(api) {
            // Without the API table we cannot even allocate an error message.
            eprintln!("litestream: cannot initialise the extension: {e:?}");
            return ffi::SQLITE_ERROR;
        }
        crate::logging::init();
        let result = register_vfs().and_then(|()| {
            if !db.is_null() {
                register_functions(db)?;
            }
            let rc = ffi::sqlite3_auto_extension(Some(std::mem::transmute::<
                unsafe extern "C" fn(*mut ffi::sqlite3, *mut *mut c_char, *const ffi::sqlite3_api_routines) -> c_int,
                unsafe extern "C" fn(),
            >(register_on_connection)));
            if rc != ffi::SQLITE_OK {
                return Err(format!("sqlite3_auto_extension failed with code {rc}"));
            }
            Ok(())
        });
        match result {
            Ok(()) => match pin_this_library() {
                Residence::MainProgram | Residence::Pinned => ffi::SQLITE_OK,
                Residence::Unknown => ffi::SQLITE_OK_LOAD_PERMANENTLY,
            },
            Err(message) => {
                set_error_message(err, &format!("litestream: {message}"));
                ffi::SQLITE_ERROR
            }
        }
    })
}

/// Auto-extension hook: runs for every connection opened after the extension loaded.
unsafe extern "C" fn register_on_connection(
    db: *mut ffi::sqlite3,
    err: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    guard(
        "register_on_connection",
        ffi::SQLITE_ERROR,
        || match register_functions(db) {
            Ok(()) => ffi::SQLITE_OK,
            Err(message) => {
                set_error_message(err, &format!("litestream: {message}"));
                ffi::SQLITE_ERROR
            }
        },
    )
}

/// Stores `message` in SQLite-owned memory, as `*pzErrMsg` must be.
unsafe fn set_error_message(err: *mut *mut c_char, message: &str) {
    if err.is_null() {
        return;
    }
    let bytes = message.as_bytes();
    let buf = ffi::sqlite3_malloc(bytes.len() as c_int + 1) as *mut u8;
    if buf.is_null() {
        return;
    }
    std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf, bytes.len());
    *buf.add(bytes.len()) = 0;
    *err = buf as *mut c_char;
}
