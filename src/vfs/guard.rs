//! Panic and error containment for trampolines.

use libsqlite3_sys as ffi;
use std::any::Any;
use std::ffi::CString;
use std::os::raw::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`; a panic is logged through `sqlite3_log` and `tracing` and turned into
/// `on_panic` (an SQLite result code suited to the caller, usually an IOERR variant).
///
/// Inlined into every trampoline, with the panic report out of line: SQLite calls
/// some methods (`xShmLock`, `xWrite`) several times per commit, so the normal path
/// should cost no more than the call it wraps.
#[inline(always)]
pub(crate) fn guard(what: &'static str, on_panic: c_int, body: impl FnOnce() -> c_int) -> c_int {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(rc) => rc,
        Err(payload) => report_panic(what, on_panic, payload),
    }
}

#[cold]
#[inline(never)]
fn report_panic(what: &'static str, on_panic: c_int, payload: Box<dyn Any + Send>) -> c_int {
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    let message = format!("litestream: internal error in {what}: {detail}");
    tracing::error!("{message}");
    sqlite_log(on_panic, &message);
    on_panic
}

/// Writes one message to SQLite's error log (`SQLITE_CONFIG_LOG`), which is where
/// SQLite applications already look for VFS trouble.
pub(crate) fn sqlite_log(code: c_int, message: &str) {
    let Ok(text) = CString::new(message.replace('\0', " ")) else {
        return;
    };
    // SAFETY: "%s" with one NUL-terminated argument; sqlite3_log copies what it needs.
    unsafe { ffi::sqlite3_log(code, c"%s".as_ptr(), text.as_ptr()) };
}
