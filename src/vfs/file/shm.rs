//! The wal-index (`-shm`) methods: SQLite's mapping and locks, forwarded, with what the
//! replication needs seen on the way (the mapping's header, the WAL write lock).

use super::*;

pub(super) unsafe extern "C" fn x_shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    guard("xShmMap", ffi::SQLITE_IOERR_SHMMAP, || {
        let rc = forward!(file, xShmMap, ffi::SQLITE_IOERR_SHMMAP, region, size, extend, out);
        if region == 0 && (rc == ffi::SQLITE_OK || rc == ffi::SQLITE_READONLY) && !out.is_null() && !(*out).is_null() {
            let this = WrappedFile::from_raw(file);
            let region0 = *out as *mut u8;
            this.shm.store(region0, Ordering::Relaxed);
            if let FileRole::PrimaryDb(database) = &this.role {
                // Engine turns read SQLite's count of committed frames through this
                // mapping (`primary/wal_index.rs`) until `x_shm_unmap` or `x_close`
                // takes it back, under the view's mutex, before the memory goes.
                let region0 = Region0(region0);
                database
                    .wal_index
                    .map(file as usize, Box::new(move || region0.header()));
            }
        }
        rc
    })
}

pub(super) unsafe extern "C" fn x_shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
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
        let this = WrappedFile::from_raw(file);
        let FileRole::PrimaryDb(database) = &this.role else {
            return forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, 0, n, flags);
        };
        if flags == (ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE) {
            // Its release ends a write transaction; what was its own is settled while the
            // lock is still held (`Database::release_write_lock`).
            return database.release_write_lock(|| forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, 0, n, flags));
        }
        let mut rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, 0, n, flags);
        if flags == (ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE) {
            // Our snapshot connection holds the lock for a moment: wait for it
            // rather than hand the application a BUSY it did not cause.
            while rc == ffi::SQLITE_BUSY && database.leader().is_some_and(|p| p.wait_for_snapshot_lock()) {
                rc = forward!(file, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, 0, n, flags);
            }
            if rc == ffi::SQLITE_OK {
                // Before this transaction writes: capture what others committed, and
                // remember where the wal-index counted the generation's end.
                database.after_write_lock(shm_wal(this.shm.load(Ordering::Relaxed)));
            }
        }
        rc
    })
}

/// Where the WAL stands according to the wal-index header at the start of `region0`
/// (SQLite's `WalIndexHdr`, documented in its file format: two copies of 48 bytes;
/// `iChange` a native u32 at 8, `mxFrame` at 16, the salts at 32 as the WAL header
/// stores them).
/// None when unmapped or the copies differ (a writer is mid-update: not while we hold
/// the write lock, but the caller then just reads the WAL itself).
///
/// # Safety
/// `region0` is null or region 0 of a live wal-index mapping of at least 96 bytes.
pub(crate) unsafe fn shm_wal(region0: *mut u8) -> Option<ShmWal> {
    if region0.is_null() {
        return None;
    }
    // SQLite writes the second copy first and the first last; reading them in the
    // other order (with a fence between, as `walIndexTryHdr` does) sees a header being
    // written as two copies that differ.
    // Each copy as six volatile 8-byte reads (byte by byte it was ~200 instructions of
    // every write transaction's lock, bench/callgrind_primary.sh); the mapping is
    // page-aligned, so the reads are aligned.
    let words = region0 as *const u64;
    if !words.is_aligned() {
        return None; // never from xShmMap (page-aligned); the caller reads the WAL instead
    }
    let read = |from: usize| -> [u64; 6] { std::array::from_fn(|i| ptr::read_volatile(words.add(from + i))) };
    let first = read(0);
    std::sync::atomic::fence(Ordering::SeqCst);
    let second = read(6);
    let mut copy = [0u8; 48];
    for (chunk, word) in copy.chunks_exact_mut(8).zip(first) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    if first != second || copy[12] == 0 {
        return None; // isInit is 0 until the header was written once
    }
    let u32_at = |at: usize| u32::from_ne_bytes(copy[at..at + 4].try_into().expect("4 bytes"));
    let be32_at = |at: usize| u32::from_be_bytes(copy[at..at + 4].try_into().expect("4 bytes"));
    Some(ShmWal {
        commits: u32_at(8),
        max_frame: u32_at(16),
        salt1: be32_at(32),
        salt2: be32_at(36),
    })
}

pub(super) unsafe extern "C" fn x_shm_barrier(file: *mut ffi::sqlite3_file) {
    guard("xShmBarrier", 0, || {
        forward!(file, xShmBarrier, ());
        0
    });
}

pub(super) unsafe extern "C" fn x_shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    guard("xShmUnmap", ffi::SQLITE_IOERR_SHMMAP, || {
        let this = WrappedFile::from_raw(file);
        this.shm.store(ptr::null_mut(), Ordering::Relaxed);
        if let FileRole::PrimaryDb(database) = &this.role {
            database.wal_index.unmap(file as usize);
        }
        forward!(file, xShmUnmap, ffi::SQLITE_OK, delete)
    })
}

/// Region 0 of a wal-index mapping, read by engine threads. The view that holds it
/// drops it before the mapping goes (`x_shm_unmap`, `x_close`), and reads it under the
/// same mutex.
struct Region0(*mut u8);

// SAFETY: the pointer is only dereferenced by `header`, while the mapping is live (see
// above); the memory is shared with other processes anyway, and read with volatile loads.
unsafe impl Send for Region0 {}

impl Region0 {
    fn header(&self) -> Option<ShmWal> {
        // SAFETY: live for as long as this value is registered (see the type).
        unsafe { shm_wal(self.0) }
    }
}
