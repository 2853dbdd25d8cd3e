//! The `sqlite3_vfs` object: opens go through [`WrappedFile`]; everything that is not
//! about files (paths, randomness, time, dlopen) is the root VFS's business.

use super::claims::{self, Claim};
use super::file::{close_failed_inner, wrapper_size, FileKind, FileRole, WrappedFile};
use super::guard::{guard, sqlite_log};
use super::private::{ensure_wal_mode, BackupSnapshotter};
use super::replica_file;
use super::VFS_NAME;
use crate::config::{Config, Role};
use crate::file_modes::FileModes;
use crate::primary::database::Tools;
use crate::primary::registry;
use crate::replica::registry as replica_registry;
use crate::replica::{Replica, ReplicaConfig};
use libsqlite3_sys as ffi;
use std::ffi::OsStr;
use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_double, c_int, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::{Arc, OnceLock};

/// Address of our registered VFS; SQLite keeps the pointer forever, so it is leaked.
struct Registered(*mut ffi::sqlite3_vfs);
// SAFETY: the struct is immutable after registration; SQLite serialises access itself.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Registered> = OnceLock::new();
static ROOT_NAME: OnceLock<CString> = OnceLock::new();

/// Name of the VFS we wrap, for the extension's private connections.
pub(crate) fn root_vfs_name() -> &'static CString {
    ROOT_NAME.get().expect("VFS registered before use")
}

/// Registers the `litestream` VFS on top of the current default VFS, once per process.
pub(crate) fn register_vfs() -> Result<(), String> {
    super::sys::fork::watch();
    let name = CString::new(VFS_NAME).expect("VFS name has no NUL");
    // SAFETY: plain lookups and a registration of a leaked, fully initialised struct.
    unsafe {
        if !ffi::sqlite3_vfs_find(name.as_ptr()).is_null() {
            return Ok(());
        }
        let root = ffi::sqlite3_vfs_find(ptr::null());
        if root.is_null() {
            return Err("no default VFS to build on".into());
        }
        let _ = ROOT_NAME.set(CStr::from_ptr((*root).zName).to_owned());
        let registered = REGISTERED.get_or_init(|| Registered(Box::into_raw(Box::new(build_vfs(root, name)))));
        let rc = ffi::sqlite3_vfs_register(registered.0, 0);
        if rc != ffi::SQLITE_OK {
            return Err(format!("sqlite3_vfs_register failed with code {rc}"));
        }
    }
    Ok(())
}

unsafe fn build_vfs(root: *mut ffi::sqlite3_vfs, name: CString) -> ffi::sqlite3_vfs {
    let r = &*root;
    ffi::sqlite3_vfs {
        iVersion: r.iVersion.min(3),
        szOsFile: (wrapper_size() as c_int) + r.szOsFile,
        mxPathname: r.mxPathname,
        pNext: ptr::null_mut(),
        zName: name.into_raw(),
        pAppData: root as *mut c_void,
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: r.xDlOpen.map(|_| x_dl_open as _),
        xDlError: r.xDlError.map(|_| x_dl_error as _),
        xDlSym: r.xDlSym.map(|_| x_dl_sym as _),
        xDlClose: r.xDlClose.map(|_| x_dl_close as _),
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: if r.iVersion >= 2 {
            Some(x_current_time_int64)
        } else {
            None
        },
        xSetSystemCall: if r.iVersion >= 3 { Some(x_set_system_call) } else { None },
        xGetSystemCall: if r.iVersion >= 3 { Some(x_get_system_call) } else { None },
        xNextSystemCall: if r.iVersion >= 3 {
            Some(x_next_system_call)
        } else {
            None
        },
    }
}

/// # Safety
/// `vfs` must be our registered VFS.
unsafe fn root<'a>(vfs: *mut ffi::sqlite3_vfs) -> (&'a ffi::sqlite3_vfs, *mut ffi::sqlite3_vfs) {
    let root = (*vfs).pAppData as *mut ffi::sqlite3_vfs;
    (&*root, root)
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard("xOpen", ffi::SQLITE_CANTOPEN, || {
        let (r, root_ptr) = root(vfs);
        let kind = FileKind::from_open_flags(flags);
        let inner = WrappedFile::prepare(file, kind);
        let Some(open) = r.xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let path = (!name.is_null()).then(|| PathBuf::from(OsStr::from_bytes(CStr::from_ptr(name).to_bytes())));
        let role = match (&path, kind) {
            (Some(path), FileKind::MainDb) => match main_db_role(path, name, flags) {
                Ok(MainDb::Replica(replica)) => {
                    crate::failed_opens::opened(path);
                    return replica_file::open(file, path, replica, flags, out_flags);
                }
                Ok(MainDb::Primary(role)) => {
                    crate::failed_opens::opened(path);
                    role
                }
                Ok(MainDb::PassThrough) => FileRole::Plain,
                Err(message) => {
                    crate::failed_opens::failed(path, &message);
                    let message = format!("litestream: cannot open {}: {message}", path.display());
                    tracing::error!("{message}");
                    sqlite_log(ffi::SQLITE_CANTOPEN, &message);
                    return ffi::SQLITE_CANTOPEN;
                }
            },
            (Some(path), FileKind::Wal | FileKind::Other) if replica_companion(path) => {
                let message = format!(
                    "litestream: {} belongs to a read replica, which has no journal or WAL",
                    path.display()
                );
                sqlite_log(ffi::SQLITE_READONLY, &message);
                return ffi::SQLITE_READONLY;
            }
            (Some(path), FileKind::Wal) => match registry::lookup(&strip_suffix(path, "-wal")) {
                Some(primary) => FileRole::PrimaryWal(primary),
                None => FileRole::Plain,
            },
            (Some(path), FileKind::Other) if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 => {
                let db = strip_suffix(path, "-journal");
                if registry::lookup(&db).is_some() {
                    // Only an attached primary gets here (a main one refuses the pragma):
                    // an unqualified PRAGMA journal_mode reaches it without SQLite asking.
                    let message = format!(
                        "{} must stay in WAL mode to be replicated; refusing a rollback-journal write \
                         (a PRAGMA journal_mode without a schema name applies to every attached database: \
                         name the schema, e.g. PRAGMA main.journal_mode=DELETE)",
                        db.display()
                    );
                    crate::failed_opens::failed(&db, &message);
                    let message = format!("litestream: {message}");
                    tracing::error!("{message}");
                    // SQLITE_READONLY, whose message ("attempt to write a readonly
                    // database") is about the write refused; SQLITE_CANTOPEN's ("unable to
                    // open database file") sent users looking for a missing file.
                    sqlite_log(ffi::SQLITE_READONLY, &message);
                    return ffi::SQLITE_READONLY;
                }
                FileRole::Plain
            }
            _ => FileRole::Plain,
        };
        let rc = open(root_ptr, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            close_failed_inner(inner);
            if let FileRole::PrimaryDb(database) = role {
                registry::detach(&database.path);
                claims::release(&database.path);
            }
            return rc;
        }
        WrappedFile::activate(file, role);
        ffi::SQLITE_OK
    })
}

/// A main database opened through us: a primary's file, a read replica, or a database
/// we leave alone.
enum MainDb {
    Primary(FileRole),
    Replica(Arc<Replica>),
    /// Plain SQLite: opened without its own `replica=` while another database is open
    /// through the VFS (an `ATTACH`ed scratch database, a `VACUUM INTO` target).
    PassThrough,
}

/// Decides what a main database opened through us is: reads its URI parameters, then
/// either leaves it alone (see [`claims`]), attaches it to the process's replica for its
/// URL (`role=replica`), or puts it in WAL mode and attaches it to the process's primary
/// for that path.
unsafe fn main_db_role(path: &Path, name: *const c_char, flags: c_int) -> Result<MainDb, String> {
    let params = uri_params(name);
    // An empty `replica=` (a template that rendered nothing) is a mistake, whatever else
    // is open: it used to make the database plain SQLite when another was open.
    if params
        .iter()
        .any(|(key, value)| key == "replica" && value.trim().is_empty())
    {
        return Err("replica= is empty: give the replica URL (file:///path, s3://bucket/path, ...)".into());
    }
    let own_replica = params.iter().any(|(key, _)| key == "replica");
    if let Some(other) = claims::pass_through(path, own_replica, replica_registry::other_path(path)) {
        return Ok(pass_through(path, &other));
    }
    // Another connection to a database this process already replicates, naming no
    // replica of its own, gets what that database has (README, "Which opens the
    // environment applies to"); it was refused when the environment named none.
    let already = registry::lookup(path).filter(|_| !own_replica && !params.iter().any(|(key, _)| key == "role"));
    let mut config = match already {
        Some(open) => open.config.clone(),
        None => Config::from_params(path, &params, &|key| std::env::var(key).ok())?,
    };
    if let Some(addr) = &config.metrics_addr {
        crate::metrics::serve(addr)?;
    }
    if config.role == Role::Replica {
        let replica_config = ReplicaConfig {
            url: config.replica_url.clone(),
            store_options: config.store_options.clone(),
            poll_interval: config.poll_interval,
            cache_bytes: config.cache_size,
            hydrate: config.hydrate.clone(),
            key: config.encryption.as_ref().map(|e| Arc::new(e.key().clone())),
        };
        return replica_registry::attach(path, &replica_config).map(MainDb::Replica);
    }
    match claims::claim(path, &config.replica_url, own_replica)? {
        Claim::Granted => {}
        Claim::PassThrough { other } => return Ok(pass_through(path, &other)),
    }
    let writable = flags & ffi::SQLITE_OPEN_READWRITE != 0;
    let create = flags & ffi::SQLITE_OPEN_CREATE != 0;
    let prepare = |db: &Path| if writable { ensure_wal_mode(db, create) } else { Ok(()) };
    config.set_file_modes(FileModes::of_database(path));
    let tools = Tools {
        snapshotter: || Box::new(BackupSnapshotter),
        prepare_db: |db| ensure_wal_mode(db, false),
    };
    let database = match registry::attach(path, config, tools, &prepare) {
        Ok(database) => database,
        Err(e) => {
            claims::release(path);
            return Err(e);
        }
    };
    Ok(MainDb::Primary(FileRole::PrimaryDb(database)))
}

/// Leaves `path` alone, and says so: a warning when it holds data (a database the user
/// may have expected replicated by the environment), a note for a new or empty file
/// (what `ATTACH` of a scratch database and `VACUUM INTO` open).
fn pass_through(path: &Path, other: &Path) -> MainDb {
    let has_data = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    if has_data {
        tracing::warn!(
            db = %path.display(),
            open = %other.display(),
            "not replicated: opened without replica= while another database is open through the VFS \
             (the environment's replica location belongs to that one); give it its own replica= to replicate it"
        );
    } else {
        tracing::info!(db = %path.display(), open = %other.display(), "a new database opened without replica= while another is open: left alone (ATTACH, VACUUM INTO)");
    }
    MainDb::PassThrough
}

/// True for the `-journal` or `-wal` name of a database open as a read replica here
/// (and not also as a primary): they must never be found or created.
fn replica_companion(path: &Path) -> bool {
    ["-journal", "-wal"].iter().any(|suffix| {
        let bytes = path.as_os_str().as_bytes();
        bytes.ends_with(suffix.as_bytes()) && {
            let db = strip_suffix(path, suffix);
            replica_registry::is_replica_path(&db) && registry::lookup(&db).is_none()
        }
    })
}

/// The key/value pairs SQLite stores after a main database's filename (the layout
/// `sqlite3_uri_parameter` reads): `name\0key\0value\0...key\0value\0\0`.
unsafe fn uri_params(name: *const c_char) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut p = name.add(CStr::from_ptr(name).to_bytes().len() + 1);
    while *p != 0 {
        let key = CStr::from_ptr(p);
        p = p.add(key.to_bytes().len() + 1);
        let value = CStr::from_ptr(p);
        p = p.add(value.to_bytes().len() + 1);
        out.push((key.to_string_lossy().into_owned(), value.to_string_lossy().into_owned()));
    }
    out
}

fn strip_suffix(path: &Path, suffix: &str) -> PathBuf {
    let bytes = path.as_os_str().as_bytes();
    PathBuf::from(OsStr::from_bytes(
        bytes.strip_suffix(suffix.as_bytes()).unwrap_or(bytes),
    ))
}

/// Forwards a VFS call to the root VFS's method of the same name.
macro_rules! forward_vfs {
    ($vfs:expr, $method:ident, $missing:expr $(, $arg:expr)*) => {{
        let (r, root_ptr) = root($vfs);
        match r.$method {
            Some(method) => method(root_ptr $(, $arg)*),
            None => $missing,
        }
    }};
}

unsafe extern "C" fn x_delete(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, sync_dir: c_int) -> c_int {
    guard("xDelete", ffi::SQLITE_IOERR_DELETE, || {
        if !name.is_null() {
            let path = Path::new(OsStr::from_bytes(CStr::from_ptr(name).to_bytes()));
            if path.as_os_str().as_bytes().ends_with(b"-wal") {
                if let Some(database) = registry::lookup(&strip_suffix(path, "-wal")) {
                    // The last connection checkpointed the WAL and deletes it.
                    database.before_wal_delete();
                }
            }
        }
        forward_vfs!(vfs, xDelete, ffi::SQLITE_IOERR_DELETE, name, sync_dir)
    })
}

unsafe extern "C" fn x_access(vfs: *mut ffi::sqlite3_vfs, name: *const c_char, flags: c_int, out: *mut c_int) -> c_int {
    guard("xAccess", ffi::SQLITE_IOERR_ACCESS, || {
        if !name.is_null() && !out.is_null() {
            let path = Path::new(OsStr::from_bytes(CStr::from_ptr(name).to_bytes()));
            if replica_companion(path) {
                *out = 0;
                return ffi::SQLITE_OK;
            }
        }
        forward_vfs!(vfs, xAccess, ffi::SQLITE_IOERR_ACCESS, name, flags, out)
    })
}

unsafe extern "C" fn x_full_pathname(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    guard("xFullPathname", ffi::SQLITE_CANTOPEN, || {
        forward_vfs!(vfs, xFullPathname, ffi::SQLITE_CANTOPEN, name, n, out)
    })
}

unsafe extern "C" fn x_dl_open(vfs: *mut ffi::sqlite3_vfs, path: *const c_char) -> *mut c_void {
    forward_vfs!(vfs, xDlOpen, ptr::null_mut(), path)
}

unsafe extern "C" fn x_dl_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    forward_vfs!(vfs, xDlError, (), n, out)
}

unsafe extern "C" fn x_dl_sym(
    vfs: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char)> {
    forward_vfs!(vfs, xDlSym, None, handle, symbol)
}

unsafe extern "C" fn x_dl_close(vfs: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    forward_vfs!(vfs, xDlClose, (), handle)
}

unsafe extern "C" fn x_randomness(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    forward_vfs!(vfs, xRandomness, 0, n, out)
}

unsafe extern "C" fn x_sleep(vfs: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    forward_vfs!(vfs, xSleep, 0, micros)
}

unsafe extern "C" fn x_current_time(vfs: *mut ffi::sqlite3_vfs, out: *mut c_double) -> c_int {
    forward_vfs!(vfs, xCurrentTime, ffi::SQLITE_ERROR, out)
}

unsafe extern "C" fn x_get_last_error(vfs: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    forward_vfs!(vfs, xGetLastError, 0, n, out)
}

unsafe extern "C" fn x_current_time_int64(vfs: *mut ffi::sqlite3_vfs, out: *mut i64) -> c_int {
    forward_vfs!(vfs, xCurrentTimeInt64, ffi::SQLITE_ERROR, out)
}

unsafe extern "C" fn x_set_system_call(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    call: ffi::sqlite3_syscall_ptr,
) -> c_int {
    forward_vfs!(vfs, xSetSystemCall, ffi::SQLITE_NOTFOUND, name, call)
}

unsafe extern "C" fn x_get_system_call(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> ffi::sqlite3_syscall_ptr {
    forward_vfs!(vfs, xGetSystemCall, None, name)
}

unsafe extern "C" fn x_next_system_call(vfs: *mut ffi::sqlite3_vfs, name: *const c_char) -> *const c_char {
    forward_vfs!(vfs, xNextSystemCall, ptr::null(), name)
}
