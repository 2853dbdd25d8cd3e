//! The wrapped file's methods against a file below that only records what it is asked.

use super::*;
use crate::config::Config;
use crate::primary::database::Tools;
use crate::primary::Snapshotter;
use std::path::Path;
use std::sync::Mutex;

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

fn no_snapshots() -> Box<dyn Snapshotter> {
    unreachable!("this test never replicates")
}

fn prepared(_: &Path) -> Result<(), String> {
    Ok(())
}

/// The database the file below asks about, and what the view said when the write lock
/// was released below.
static RELEASING: Mutex<Option<Arc<Database>>> = Mutex::new(None);
static AT_RELEASE: Mutex<Vec<Option<ShmWal>>> = Mutex::new(Vec::new());

unsafe extern "C" fn lock_below(_: *mut ffi::sqlite3_file, offset: c_int, _: c_int, flags: c_int) -> c_int {
    if offset == 0 && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE {
        let database = RELEASING.lock().unwrap().clone().expect("set by the test");
        AT_RELEASE
            .lock()
            .unwrap()
            .push(database.wal_index.before_generation_ends());
    }
    ffi::SQLITE_OK
}

/// Region 0 of a wal-index whose header says `at` (both copies, initialised).
fn region0(at: ShmWal) -> Vec<u8> {
    let mut header = [0u8; 48];
    header[8..12].copy_from_slice(&at.commits.to_ne_bytes());
    header[12] = 1;
    header[16..20].copy_from_slice(&at.max_frame.to_ne_bytes());
    header[32..36].copy_from_slice(&at.salt1.to_be_bytes());
    header[36..40].copy_from_slice(&at.salt2.to_be_bytes());
    [header, header].concat()
}

#[test]
fn a_write_transaction_is_settled_before_its_lock_is_released() {
    // Once the lock is released below, another connection of this process may take it
    // and write: whatever the releasing connection settles after that is the next
    // writer's (four threads on one database: its frames dropped mid-commit, a needless
    // snapshot). The count taken at the lock is the part a test can see without a leader.
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("app.db");
    let params = [("replica".to_string(), "memory://settled".to_string())];
    let config = Config::from_params(&db_path, &params, &|_| None).unwrap();
    let tools = Tools {
        snapshotter: no_snapshots,
        prepare_db: prepared,
    };
    let database = Arc::new(Database::new(&db_path, config, tools).unwrap());
    *RELEASING.lock().unwrap() = Some(Arc::clone(&database));
    let at_lock = ShmWal {
        salt1: 7,
        salt2: 99,
        max_frame: 5,
        commits: 3,
    };
    // What the wal-index says now: a restart has put the next salts in it.
    let now = ShmWal {
        salt1: 8,
        salt2: 99,
        max_frame: 0,
        commits: 3,
    };
    database.wal_index.map(1, Box::new(move || Some(now)));
    let mut shm = region0(at_lock);
    let mut below = methods(2);
    below.xShmLock = Some(lock_below);
    let below = Box::leak(Box::new(below));
    let mut block = vec![0u64; (wrapper_size() + 256) / 8];
    let file = block.as_mut_ptr() as *mut ffi::sqlite3_file;
    // SAFETY: `block` holds the wrapper and room for the inner file; `shm` outlives it.
    unsafe {
        let inner = WrappedFile::prepare(file, FileKind::MainDb);
        (*inner).pMethods = below;
        WrappedFile::activate(file, FileRole::PrimaryDb(Arc::clone(&database)));
        WrappedFile::from_raw(file)
            .shm
            .store(shm.as_mut_ptr(), Ordering::Relaxed);
        let lock = (*(*file).pMethods).xShmLock.expect("claimed");
        assert_eq!(
            lock(file, 0, 1, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE),
            ffi::SQLITE_OK
        );
        assert_eq!(
            database.wal_index.before_generation_ends(),
            Some(at_lock),
            "held: the count at the lock"
        );
        assert_eq!(
            lock(file, 0, 1, ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE),
            ffi::SQLITE_OK
        );
        std::ptr::drop_in_place(file as *mut WrappedFile);
    }
    assert_eq!(
        *AT_RELEASE.lock().unwrap(),
        vec![Some(now)],
        "the count at the lock was forgotten before the lock was released below"
    );
    *RELEASING.lock().unwrap() = None;
}

#[test]
fn the_wal_index_header_gives_the_commit_count_the_frames_and_the_salts() {
    let at = ShmWal {
        salt1: 7,
        salt2: 99,
        max_frame: 5,
        commits: 41,
    };
    // The mapping is page-aligned: the header is read as aligned words.
    let words: Vec<u64> = region0(at)
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect();
    let mut words = words;
    // SAFETY: 96 bytes, aligned, alive for the call.
    assert_eq!(unsafe { shm_wal(words.as_mut_ptr() as *mut u8) }, Some(at));
}
