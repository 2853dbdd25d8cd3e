//! Private connections the extension opens itself, on the root VFS so our own hooks
//! never see them: converting a database to WAL mode, and taking consistent
//! snapshots of a live database with SQLite's backup API.

use super::register::root_vfs_name;
use crate::file_modes::FileModes;
use crate::primary::staging::remove_with_companions;
use crate::primary::{ShmWal, SnapshotError, Snapshotter};
use libsqlite3_sys as ffi;
use std::ffi::{CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::ptr;
use std::time::{Duration, Instant};

/// How long our private connections wait for another connection's lock.
const BUSY_TIMEOUT_MS: i32 = 60_000;

/// How long opening waits for other connections' write transactions before switching a
/// database to WAL mode: as long as any other wait of our private connections.
const WAL_SWITCH_WAIT: Duration = Duration::from_millis(BUSY_TIMEOUT_MS as u64);

struct Conn(*mut ffi::sqlite3);

// SAFETY: connections are opened in SQLite's default serialized threading mode and
// used by one thread at a time.
unsafe impl Send for Conn {}

impl Conn {
    fn open(path: &Path, flags: i32) -> Result<Conn, String> {
        let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|_| "path contains NUL".to_string())?;
        let vfs = root_vfs_name();
        let mut db = ptr::null_mut();
        // SAFETY: valid C strings; `db` receives a handle we own (closed in Drop,
        // including on failure as SQLite requires).
        let rc = unsafe { ffi::sqlite3_open_v2(c_path.as_ptr(), &mut db, flags, vfs.as_ptr()) };
        let conn = Conn(db);
        if rc != ffi::SQLITE_OK {
            return Err(format!("opening {}: {}", path.display(), conn.errmsg()));
        }
        // SAFETY: valid handle.
        unsafe { ffi::sqlite3_busy_timeout(conn.0, BUSY_TIMEOUT_MS) };
        Ok(conn)
    }

    /// Opens a private connection to a live database (see [`PRIVATE_OPEN`]) that leaves
    /// the WAL in place when it closes last. SQLite's last connection checkpoints and
    /// deletes the WAL; capture has read its generation, and a WAL gone without the
    /// hand-off our VFS writes when an application connection deletes it is a
    /// discontinuity (a needless second snapshot). A private connection is the last one
    /// whenever it works before the application's connection opens the file (the first
    /// snapshot of a small database, `replicator/open.rs`).
    fn open_live(path: &Path, flags: i32) -> Result<Conn, String> {
        let conn = Conn::open(path, flags)?;
        let mut persist: std::ffi::c_int = 1;
        // SAFETY: valid handle; PERSIST_WAL reads and writes one int.
        unsafe {
            ffi::sqlite3_file_control(
                conn.0,
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_PERSIST_WAL,
                &mut persist as *mut _ as *mut std::ffi::c_void,
            )
        };
        Ok(conn)
    }

    /// The main database's file object of the root VFS, owned by this connection.
    fn main_file(&self) -> Result<*mut ffi::sqlite3_file, String> {
        let mut file: *mut ffi::sqlite3_file = ptr::null_mut();
        // SAFETY: valid handle; FILE_POINTER writes the main database's file object.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                self.0,
                c"main".as_ptr(),
                ffi::SQLITE_FCNTL_FILE_POINTER,
                &mut file as *mut _ as *mut std::ffi::c_void,
            )
        };
        if rc != ffi::SQLITE_OK || file.is_null() {
            return Err(format!("no file object for a private connection (SQLite error {rc})"));
        }
        Ok(file)
    }

    /// Whether the last call failed because another connection holds a lock.
    fn busy(&self) -> bool {
        // SAFETY: valid handle (a failed open never reaches here).
        !self.0.is_null() && unsafe { ffi::sqlite3_errcode(self.0) } & 0xff == ffi::SQLITE_BUSY
    }

    fn errmsg(&self) -> String {
        if self.0.is_null() {
            return "out of memory".into();
        }
        // SAFETY: valid handle; SQLite owns the message.
        unsafe {
            CStr::from_ptr(ffi::sqlite3_errmsg(self.0))
                .to_string_lossy()
                .into_owned()
        }
    }

    /// Runs SQL, returning the first column of the last row (if any) as text.
    fn query(&self, sql: &str) -> Result<Option<String>, String> {
        let c_sql = CString::new(sql).expect("SQL has no NUL");
        let mut stmt = ptr::null_mut();
        // SAFETY: valid handle and statement; the statement is finalized below.
        unsafe {
            let rc = ffi::sqlite3_prepare_v2(self.0, c_sql.as_ptr(), -1, &mut stmt, ptr::null_mut());
            if rc != ffi::SQLITE_OK {
                return Err(format!("{sql}: {}", self.errmsg()));
            }
            let mut last = None;
            let result = loop {
                match ffi::sqlite3_step(stmt) {
                    ffi::SQLITE_ROW => {
                        let text = ffi::sqlite3_column_text(stmt, 0);
                        last =
                            (!text.is_null()).then(|| CStr::from_ptr(text as *const _).to_string_lossy().into_owned());
                    }
                    ffi::SQLITE_DONE => break Ok(last),
                    _ => break Err(format!("{sql}: {}", self.errmsg())),
                }
            };
            ffi::sqlite3_finalize(stmt);
            result
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: we own the handle and finalize every statement and backup first.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

/// Puts the database at `path` in WAL mode (creating it if `create`), which
/// replication needs. A database already in WAL mode is left alone.
///
/// The header is read through the root VFS's own file object, never a descriptor of
/// our own: closing any descriptor of a file drops every POSIX lock the process holds
/// on it, so another connection of this process would silently lose its shared lock,
/// and the last process to close would checkpoint and delete `-wal`/`-shm` under it.
/// SQLite's unix VFS knows this and keeps the descriptor open until the process's
/// locks on the file are gone (`os_unix.c`, `setPendingFd`).
pub(crate) fn ensure_wal_mode(path: &Path, create: bool) -> Result<(), String> {
    let deadline = Instant::now() + WAL_SWITCH_WAIT;
    let mut pause = Duration::from_millis(1);
    loop {
        let exists = std::fs::metadata(path).map(|m| m.len() > 0).unwrap_or(false);
        if exists {
            let mut header = [0u8; 20];
            let read = read_through_root_vfs(path, &mut header).map_err(|e| format!("{}: {e}", path.display()))?;
            if read && header[18] == 2 && header[19] == 2 {
                return Ok(());
            }
        } else if !create {
            return Ok(()); // SQLite itself will report the missing file
        }
        let mut flags = PRIVATE_OPEN;
        if create {
            flags |= ffi::SQLITE_OPEN_CREATE;
        }
        let conn = Conn::open_live(path, flags)?;
        match conn.query("PRAGMA journal_mode=WAL") {
            Ok(Some(mode)) if mode == "wal" => {
                tracing::info!(db = %path.display(), "switched the database to WAL mode for replication");
                return Ok(());
            }
            Ok(other) => {
                return Err(format!(
                    "cannot switch {} to WAL mode (journal_mode is {other:?})",
                    path.display()
                ))
            }
            // The switch reads the header under a shared lock, then upgrades to write it;
            // SQLite does not call the busy handler for that upgrade (two readers upgrading
            // would deadlock), so another connection's write transaction fails it at once
            // instead of making it wait: "database is locked" at open (multi_process's
            // churn saw it; likely worker processes starting together on a new database, one
            // writing it in rollback mode before any had switched it). The shared lock is
            // gone once the statement ended: wait, look at the header again (the writer
            // may have switched it), and retry.
            Err(e) if conn.busy() && Instant::now() < deadline => {
                tracing::debug!(db = %path.display(), "switching to WAL mode waits for another connection's write: {e}");
                drop(conn);
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Reads `buf.len()` bytes from the start of the database at `path` through the root
/// VFS; false when the file is shorter.
fn read_through_root_vfs(path: &Path, buf: &mut [u8]) -> Result<bool, String> {
    // A main database's name is followed by its URI parameters, ended by an empty key:
    // the root VFS may look for them, so the name ends with two NULs more than usual.
    let mut name = path.as_os_str().as_bytes().to_vec();
    if name.contains(&0) {
        return Err("path contains NUL".into());
    }
    name.extend_from_slice(&[0, 0, 0]);
    // SAFETY: the root VFS outlives the process (SQLite never unregisters it); `file`
    // is a zeroed block of its szOsFile bytes, aligned for any of its fields, and
    // outlives the open file, which is closed before it is freed; `name` stays alive
    // and NUL-terminated for as long as the file is open.
    unsafe {
        let vfs = ffi::sqlite3_vfs_find(root_vfs_name().as_ptr());
        if vfs.is_null() {
            return Err("the root VFS is gone".into());
        }
        let Some(open) = (*vfs).xOpen else {
            return Err("the root VFS cannot open files".into());
        };
        let words = ((*vfs).szOsFile as usize).div_ceil(8);
        let mut block = vec![0u64; words.max(1)];
        let file = block.as_mut_ptr() as *mut ffi::sqlite3_file;
        // Read-write, as every private open (SQLite falls back to read-only for a file
        // it may not write): a parked descriptor of ours is then reused, never added.
        let flags = PRIVATE_OPEN | ffi::SQLITE_OPEN_MAIN_DB;
        let mut out_flags = 0;
        let rc = open(vfs, name.as_ptr() as *const _, file, flags, &mut out_flags);
        let methods = (*file).pMethods;
        let result = if rc != ffi::SQLITE_OK {
            Err(format!("cannot open it to read its header (SQLite error {rc})"))
        } else {
            match (*methods).xRead {
                Some(read) => match read(file, buf.as_mut_ptr() as *mut _, buf.len() as i32, 0) {
                    ffi::SQLITE_OK => Ok(true),
                    ffi::SQLITE_IOERR_SHORT_READ => Ok(false),
                    rc => Err(format!("cannot read its header (SQLite error {rc})")),
                },
                None => Err("the root VFS cannot read files".into()),
            }
        };
        // Even a failed open may leave methods that must be closed (sqlite3OsOpen's rule).
        if !methods.is_null() {
            if let Some(close) = (*methods).xClose {
                close(file);
            }
        }
        result
    }
}

/// How long a snapshot waits for the WAL write lock before giving up for this round.
const SNAPSHOT_LOCK_WAIT: Duration = Duration::from_millis(100);

/// The open flags of every private connection to a live database. SQLite's unix VFS
/// cannot close a database descriptor while the process holds locks on the file (that
/// would drop them): it parks the descriptor and reuses it only for an open with the
/// same read/write flags (`os_unix.c`, `setPendingFd`, `findReusableFd`). One kind of
/// open, one private connection at a time: at most one parked descriptor per database.
const PRIVATE_OPEN: i32 = ffi::SQLITE_OPEN_READWRITE;

/// The WAL write lock (wal-index lock slot 0) taken through a private connection's own
/// wal-index, as SQLite's writers take it: no commit of any connection of any process
/// lands while it is held. Released on drop.
struct WriteLock(*mut ffi::sqlite3_file);

impl WriteLock {
    /// Takes the lock through `conn`'s main database file, waiting at most `wait` for a
    /// writer that holds it. `conn` has read the database in WAL mode (its wal-index is
    /// mapped) and has no transaction open.
    fn take(conn: &Conn, wait: Duration) -> Result<WriteLock, SnapshotError> {
        // The file object lives as long as the connection (longer than this lock, see
        // `snapshot`).
        let file = conn.main_file()?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: a live file object of the root VFS; xShmLock returns an error, not
            // UB, when the wal-index is not mapped.
            let rc = unsafe { shm_lock(file, ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE) };
            match rc {
                ffi::SQLITE_OK => return Ok(WriteLock(file)),
                ffi::SQLITE_BUSY if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(1)),
                ffi::SQLITE_BUSY => return Err(SnapshotError::WriterBusy),
                rc => return Err(format!("taking the WAL write lock: SQLite error {rc}").into()),
            }
        }
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        // SAFETY: the connection that owns the file object outlives this lock.
        unsafe { shm_lock(self.0, ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE) };
    }
}

/// What keeps writers out while a snapshot pins its read: the WAL write lock through the
/// reader's own wal-index, or, for a database that left WAL mode (an attached primary
/// after an unqualified `PRAGMA journal_mode=MEMORY`, replicated by a snapshot per
/// commit), a second connection in `BEGIN IMMEDIATE` as SQLite's rollback-mode writers
/// take it. That second connection costs a parked descriptor, only in that mode.
enum WritersKept {
    Wal(WriteLock),
    Rollback(Conn),
}

impl WritersKept {
    fn out(db: &Path, reader: &Conn) -> Result<WritersKept, SnapshotError> {
        if reader.query("PRAGMA journal_mode")?.as_deref() == Some("wal") {
            return Ok(WritersKept::Wal(WriteLock::take(reader, SNAPSHOT_LOCK_WAIT)?));
        }
        let writer = Conn::open(db, PRIVATE_OPEN)?;
        // SAFETY: valid handle.
        unsafe { ffi::sqlite3_busy_timeout(writer.0, SNAPSHOT_LOCK_WAIT.as_millis() as i32) };
        match writer.query("BEGIN IMMEDIATE") {
            Ok(_) => Ok(WritersKept::Rollback(writer)),
            Err(_) if writer.busy() => Err(SnapshotError::WriterBusy),
            Err(e) => Err(SnapshotError::Failed(e)),
        }
    }

    /// The file object the WAL write lock is held through.
    fn file(&self) -> Option<*mut ffi::sqlite3_file> {
        match self {
            WritersKept::Wal(lock) => Some(lock.0),
            WritersKept::Rollback(_) => None,
        }
    }

    /// Lets writers go again.
    fn let_go(self) -> Result<(), String> {
        match self {
            WritersKept::Wal(lock) => {
                drop(lock);
                Ok(())
            }
            WritersKept::Rollback(writer) => writer.query("ROLLBACK").map(|_| ()),
        }
    }
}

/// The wal-index header through `file`'s own mapping of region 0 (mapped by a read in
/// WAL mode; never extended or created here).
///
/// # Safety
/// `file` is a live, open file object of the root VFS.
unsafe fn wal_index_of(file: *mut ffi::sqlite3_file) -> Option<ShmWal> {
    let methods = (*file).pMethods;
    if methods.is_null() || (*methods).iVersion < 2 {
        return None;
    }
    let map = (*methods).xShmMap?;
    let mut region: *mut std::ffi::c_void = ptr::null_mut();
    if map(file, 0, WAL_INDEX_REGION, 0, &mut region) != ffi::SQLITE_OK {
        return None;
    }
    super::file::shm_wal(region as *mut u8)
}

/// `SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE` (SQLite 3.16; not in the bindings we build with).
const SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE: std::ffi::c_int = 1006;

/// SQLite maps the wal-index in regions of 32 KiB (`WALINDEX_PGSZ`).
const WAL_INDEX_REGION: i32 = 32 * 1024;

/// `xShmLock` of slot 0 on `file`.
///
/// # Safety
/// `file` is a live, open file object.
unsafe fn shm_lock(file: *mut ffi::sqlite3_file, flags: i32) -> i32 {
    let methods = (*file).pMethods;
    if methods.is_null() || (*methods).iVersion < 2 {
        return ffi::SQLITE_IOERR_SHMLOCK;
    }
    match (*methods).xShmLock {
        Some(lock) => lock(file, 0, 1, flags),
        None => ffi::SQLITE_IOERR_SHMLOCK,
    }
}

/// The schema cookie (header offset 40) `conn` reads.
fn schema_cookie(conn: &Conn) -> Result<u32, String> {
    let text = conn.query("PRAGMA schema_version")?.unwrap_or_default();
    // SQLite reports the 4 header bytes as a signed 32-bit integer.
    text.parse::<i32>()
        .map(|v| v as u32)
        .map_err(|_| format!("PRAGMA schema_version answered {text:?}"))
}

/// Writes `cookie` as the schema cookie of the closed database file `path` (a copy of
/// ours that no connection has open).
fn restore_schema_cookie(path: &Path, cookie: u32) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if file.metadata()?.len() < 100 {
        return Ok(()); // no header to stamp (the backup writes page 1 even for an empty database)
    }
    file.seek(SeekFrom::Start(40))?;
    file.write_all(&cookie.to_be_bytes())?;
    file.sync_all()
}

/// Snapshots through SQLite with one private connection: it takes the WAL write lock
/// through its own wal-index so no commit can land, `at_lock` assigns the snapshot its
/// TXID, the connection starts a read transaction (pinned at exactly that state: every
/// commit so far is in the wal-index header, and none can follow), lets writers go,
/// and the backup API copies its view while commits continue. One connection, not a
/// writer beside a reader: each private connection leaves SQLite a parked descriptor
/// for as long as the application has the database open (see [`PRIVATE_OPEN`]).
pub(crate) struct BackupSnapshotter;

impl Snapshotter for BackupSnapshotter {
    fn snapshot(
        &self,
        db: &Path,
        dest: &Path,
        at_lock: &mut dyn FnMut(Option<ShmWal>),
        released: &dyn Fn(),
    ) -> Result<(), SnapshotError> {
        let reader = Conn::open_live(db, PRIVATE_OPEN)?;
        // A first read opens the WAL and maps the wal-index the lock is taken through.
        reader.query("SELECT count(*) FROM sqlite_master")?;
        // From here until `released`, an application writer that gets BUSY waits for us
        // (that is what keeps our lock from surfacing as BUSY): so do not sit in a long
        // wait for a lock someone else holds. A failed attempt is retried by the worker
        // later; a writer waited at most this long beyond its own busy timeout (found by
        // SQLite's walsetlk.test: writers blocked until the other process committed,
        // whatever their timeout).
        let lock = WritersKept::out(db, &reader)?;
        // SAFETY: the lock's file object belongs to `reader`, open until the end.
        at_lock(lock.file().and_then(|file| unsafe { wal_index_of(file) }));
        let pinned = reader
            .query("BEGIN")
            .and_then(|_| reader.query("SELECT count(*) FROM sqlite_master"));
        let let_go = lock.let_go();
        released();
        pinned?;
        let_go?;
        // The backup API stamps the copy with the copy's own schema cookie plus one (so
        // that connections of the destination reload), not the database's: every
        // snapshot stored cookie 1. A read replica compares cookies to know when to
        // reload its schema, and one that read the empty database at its first snapshot
        // (stored 1) never saw the first CREATE TABLE (real cookie 0 -> 1). The copy gets
        // the database's cookie back once the backup is done.
        let cookie = schema_cookie(&reader)?;
        remove_with_companions(dest);
        // The copy is the whole database: created here with the database's permissions
        // (SQLite would give a new file 0644 less the umask), and SQLite gives its journal
        // the same.
        FileModes::of_database(db)
            .create_file(dest)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        let target = Conn::open(dest, ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE)?;
        // SAFETY: valid handles; the backup object is finished before either closes.
        let rc = unsafe {
            let backup = ffi::sqlite3_backup_init(target.0, c"main".as_ptr(), reader.0, c"main".as_ptr());
            if backup.is_null() {
                return Err(format!("backup: {}", target.errmsg()).into());
            }
            let step = ffi::sqlite3_backup_step(backup, -1);
            ffi::sqlite3_backup_finish(backup);
            step
        };
        let _ = reader.query("COMMIT");
        if rc != ffi::SQLITE_DONE {
            // SQLite says "database or disk is full" and keeps no errno for it (its unix
            // VFS returns SQLITE_FULL for ENOSPC and short writes): name the full disk as
            // a failed stage does, so the status and a waiting sync say the same thing
            // before and after the backlog gives way to a snapshot.
            // SAFETY: valid handle.
            let errno = unsafe { ffi::sqlite3_system_errno(target.0) };
            let os = match rc & 0xff {
                ffi::SQLITE_FULL => format!(" ({})", std::io::Error::from_raw_os_error(libc::ENOSPC)),
                _ if errno > 0 => format!(" ({})", std::io::Error::from_raw_os_error(errno)),
                _ => String::new(),
            };
            return Err(format!(
                "backup of {} into {} failed: code {rc}: {}{os}",
                db.display(),
                dest.display(),
                target.errmsg()
            )
            .into());
        }
        drop(target);
        restore_schema_cookie(dest, cookie).map_err(|e| format!("{}: {e}", dest.display()))?;
        Ok(())
    }

    fn wal_index(&self, db: &Path) -> Option<ShmWal> {
        let reader = Conn::open_live(db, PRIVATE_OPEN).ok()?;
        // Closing last must not checkpoint (that takes the database's exclusive lock, and
        // the application's connections would see SQLITE_BUSY): it only looked.
        // SAFETY: valid handle; the option takes an int and a nullable out pointer.
        unsafe {
            ffi::sqlite3_db_config(
                reader.0,
                SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
                1 as std::ffi::c_int,
                ptr::null_mut::<std::ffi::c_int>(),
            )
        };
        // Only a database in WAL mode has a wal-index; a read maps it.
        if reader.query("PRAGMA journal_mode").ok()?.as_deref() != Some("wal") {
            return None;
        }
        reader.query("SELECT count(*) FROM sqlite_master").ok()?;
        // Lives as long as `reader` (to the end of this function).
        let file = reader.main_file().ok()?;
        // SAFETY: a live file object of `reader`, which has read the database in WAL mode.
        unsafe { wal_index_of(file) }
    }
}
