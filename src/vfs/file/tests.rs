//! The wrapped file's methods against a file below that only records what it is asked.

use super::*;

unsafe extern "C" fn close_nothing(_: *mut ffi::sqlite3_file) -> c_int {
    ffi::SQLITE_OK
}

/// A root VFS file of `version` with no methods but xClose.
fn methods(version: c_int) -> ffi::sqlite3_io_methods {
    // SAFETY: the struct is plain data: integers and nullable function pointers.
    let mut m: ffi::sqlite3_io_methods = unsafe { std::mem::zeroed() };
    m.iVersion = version;
    m.xClose = Some(close_nothing);
    m
}

#[test]
fn a_wrapped_file_claims_only_the_methods_the_file_below_has() {
    for (version, shm, fetch) in [(1, false, false), (2, true, false), (3, true, true)] {
        let below = Box::leak(Box::new(methods(version)));
        let mut block = vec![0u64; (wrapper_size() + 256) / 8];
        let file = block.as_mut_ptr() as *mut ffi::sqlite3_file;
        // SAFETY: `block` holds the wrapper and room for the inner file.
        unsafe {
            let inner = WrappedFile::prepare(file, FileKind::Other);
            (*inner).pMethods = below;
            WrappedFile::activate(file, FileRole::Plain);
            let ours = &*(*file).pMethods;
            assert_eq!(ours.iVersion, version);
            assert_eq!(ours.xShmMap.is_some(), shm, "version {version}");
            assert_eq!(ours.xShmLock.is_some(), shm, "version {version}");
            assert_eq!(ours.xFetch.is_some(), fetch, "version {version}");
            assert!(WrappedFile::is_ours(file));
            std::ptr::drop_in_place(file as *mut WrappedFile);
        }
    }
}
