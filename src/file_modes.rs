//! Who may open the files we write beside a database: never more users than may open the
//! database itself.
//!
//! Staged LTX files (the first is a full copy of the database), the level cache, the
//! state files, snapshot copies, restore temp files and `file://` replica files all hold
//! the database's data or describe it. SQLite gives the `-wal` and `-shm` it creates the
//! database file's permission bits, whatever the umask, and when it runs as root their
//! owner too (`os_unix.c`: `findCreateFileMode`, `robust_open`, `robustFchown`); we do
//! the same for ours. Directories get the matching execute bits (`0600` -> `0700`).
//!
//! Except for the owner: our files are always readable and writable by the database's
//! owner (directories `rwx`), whatever the database's own bits say. A database that is
//! `0444` for a while (made read-only, or opened read-only in that moment) otherwise made
//! `lock` and `leader.json` `0444` and `ltx/` `0555`, and after a `chmod 644` every open
//! failed with "lock: Permission denied". Group and other bits still follow the database.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

mod links;
pub use links::{open_read, read, read_to_string};

/// The permissions of files and directories created for one database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FileModes {
    /// The database does not exist yet: what SQLite gives a new database (`0644`, less
    /// the process's umask), and the process's own user.
    #[default]
    NewDatabase,
    /// Exactly these permission bits for files (directories add the matching execute
    /// bits), and this owner where the process may set it.
    Exact { bits: u32, owner: Option<(u32, u32)> },
}

/// What SQLite creates a database with before the umask (`SQLITE_DEFAULT_FILE_PERMISSIONS`).
const SQLITE_NEW_FILE: u32 = 0o644;

/// The owner's read and write bits, which our files never lose.
const OWNER_RW: u32 = 0o600;

impl FileModes {
    /// The database's own: its permission bits (with owner read-write always, see the
    /// module's note) and owner, or [`FileModes::NewDatabase`] when it does not exist
    /// (yet). A database we cannot even look at gets owner-only.
    pub fn of_database(db: &Path) -> FileModes {
        match fs::metadata(db) {
            Ok(meta) => FileModes::Exact {
                bits: (meta.mode() & 0o666) | OWNER_RW,
                owner: Some((meta.uid(), meta.gid())),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileModes::NewDatabase,
            Err(_) => FileModes::owner_only(),
        }
    }

    /// Exactly `bits`, and the process's own user.
    pub fn bits(bits: u32) -> FileModes {
        FileModes::Exact { bits, owner: None }
    }

    /// Readable and writable by this process's user alone (files that belong to one
    /// process, such as a replica's hydration file).
    pub fn owner_only() -> FileModes {
        FileModes::bits(0o600)
    }

    /// Permission bits of a new file (for `NewDatabase`, before the umask).
    pub fn file_bits(&self) -> u32 {
        match self {
            FileModes::NewDatabase => SQLITE_NEW_FILE,
            FileModes::Exact { bits, .. } => *bits,
        }
    }

    /// Permission bits of a new directory: the file bits plus execute wherever read is.
    pub fn dir_bits(&self) -> u32 {
        let file = self.file_bits();
        file | ((file & 0o444) >> 2)
    }

    /// Creates a new file at `path` for writing, replacing whatever was there (our own
    /// temp files: a stale one could have been created with other permissions).
    pub fn create_file(&self, path: &Path) -> io::Result<File> {
        match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        self.create_new(path)
    }

    /// Creates an empty file at `path` for writing; fails with `AlreadyExists` when one
    /// is there (which is then left alone).
    pub fn create_new(&self, path: &Path) -> io::Result<File> {
        self.open_settled(OpenOptions::new().write(true).create_new(true), path)
    }

    /// Creates an empty file at `path` for reading and writing; fails with
    /// `AlreadyExists` when one is there (which is then left alone, its permissions too).
    pub fn create_new_read_write(&self, path: &Path) -> io::Result<File> {
        self.open_settled(OpenOptions::new().read(true).write(true).create_new(true), path)
    }

    /// Writes `bytes` to a new file at `path` (see [`FileModes::create_file`]).
    pub fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<File> {
        use std::io::Write;
        let mut file = self.create_file(path)?;
        file.write_all(bytes)?;
        Ok(file)
    }

    /// Opens `path` read-write, creating it if missing, without truncating it, and gives
    /// it our permissions either way (a lock file, a hydration file).
    pub fn open_or_create(&self, path: &Path) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        match self.open_settled(&mut options, path) {
            // Versions before this one gave the lock file a read-only database's bits
            // (0444), which locked every later open out: give the owner back read and
            // write (the chmod fails unless this process owns the file) and try again.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => match fs::symlink_metadata(path) {
                Ok(meta) if meta.is_file() && meta.mode() & OWNER_RW != OWNER_RW => {
                    let repaired = fs::Permissions::from_mode(meta.mode() & 0o777 | OWNER_RW);
                    if fs::set_permissions(path, repaired).is_err() {
                        return Err(e);
                    }
                    tracing::info!(path = %path.display(), "gave the owner back write access to our own file");
                    self.open_settled(&mut options, path)
                }
                _ => Err(e),
            },
            other => other,
        }
    }

    /// Opens with `options`, creating with our bits, and settles the file. A symbolic
    /// link at `path` is not followed (`links.rs`): the open fails, saying who made it.
    fn open_settled(&self, options: &mut OpenOptions, path: &Path) -> io::Result<File> {
        let opened = options.mode(self.file_bits()).custom_flags(libc::O_NOFOLLOW).open(path);
        let file = match opened {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => match fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => return Err(links::refused_link(path, meta.uid())),
                _ => return Err(e),
            },
            other => other?,
        };
        self.settle_file(&file)?;
        Ok(file)
    }

    /// Creates `dir` and any missing parent with our directory permissions. Directories
    /// that exist are left as they are: they may be shared (`/tmp`) or the user's choice.
    /// Errors are std's `create_dir_all`'s (a file where a parent should be says "Not a
    /// directory").
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.as_os_str().is_empty() {
            return Ok(());
        }
        match self.create_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => match dir.parent() {
                // Only a parent that is missing explains the error, and `dir` is tried
                // once more after making it. Under /proc, mkdir says ENOENT although the
                // parent exists: retrying `dir` itself there recursed until the stack
                // overflowed and the whole process died. Each call here is on a shorter
                // path, so the depth is bounded by the path's components.
                Some(parent) if !parent.as_os_str().is_empty() && !parent.exists() => {
                    self.create_dir_all(parent)?;
                    self.create_dir(dir)
                }
                _ => Err(e),
            },
            other => other,
        }
    }

    /// Creates the one directory `dir` with our permissions; one that is there already
    /// is fine and left as it is.
    fn create_dir(&self, dir: &Path) -> io::Result<()> {
        match fs::DirBuilder::new().mode(self.dir_bits()).create(dir) {
            Ok(()) => self.settle_path(dir, self.dir_bits()),
            Err(e) => match fs::symlink_metadata(dir) {
                // A link another user made is refused; one of ours is followed.
                Ok(meta) if links::check_dir(dir, &meta)? => match dir.is_dir() {
                    true => Ok(()),
                    false => Err(e),
                },
                Ok(meta) if meta.is_dir() => Ok(()),
                _ => Err(e),
            },
        }
    }

    /// Creates `dir` like [`FileModes::create_dir_all`], or, if it exists, gives it our
    /// permissions: for directories that are ours by name (`ltx/`, `levels/0`, ...), which
    /// an older version may have created more open.
    pub fn own_dir(&self, dir: &Path) -> io::Result<()> {
        // One stat serves both the check and the settling: every open owns the staging
        // directory's subdirectories (seven with the default ladder), and a connection per
        // request pays it each time.
        match fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_dir() => self.settle_with(dir, &meta, self.dir_bits()),
            // A link of this process's user is its choice, followed and left as it is.
            Ok(meta) if links::check_dir(dir, &meta)? && dir.is_dir() => Ok(()),
            _ => self.create_dir_all(dir),
        }
    }

    /// Gives an open file our permission bits and owner.
    pub fn settle_file(&self, file: &File) -> io::Result<()> {
        let FileModes::Exact { bits, owner } = *self else {
            return settle_for_a_new_database(file);
        };
        let meta = file.metadata()?;
        if let Some((uid, gid)) = owner.filter(|(uid, gid)| !links::may_hand_over(file, *uid, *gid)) {
            tracing::debug!(
                uid,
                gid,
                "a file outside the user's directories is not given to that user"
            );
            return Ok(());
        }
        if meta.mode() & 0o777 != bits {
            // Only the owner may: a lock file another user created is theirs to keep.
            tolerate_refusal(file.set_permissions(fs::Permissions::from_mode(bits)))?;
        }
        if let Some((uid, gid)) = owner {
            give_to(&meta, uid, gid, |u, g| std::os::unix::fs::fchown(file, u, g));
        }
        Ok(())
    }

    /// Gives the file or directory at `path` these permission bits and our owner.
    fn settle_path(&self, path: &Path, bits: u32) -> io::Result<()> {
        if *self == FileModes::NewDatabase {
            return Ok(()); // nothing to settle: no need to look at it
        }
        self.settle_with(path, &fs::symlink_metadata(path)?, bits)
    }

    /// [`FileModes::settle_path`] with the metadata of `path`, a directory, already read
    /// (not through a link). Changed through a descriptor opened without following a
    /// link, so a link swapped in since is not followed either (`links.rs`); opened only
    /// when something is to change (every open owns its directories again).
    fn settle_with(&self, path: &Path, meta: &fs::Metadata, bits: u32) -> io::Result<()> {
        let FileModes::Exact { owner, .. } = *self else {
            return Ok(());
        };
        let owner_differs = owner.is_some_and(|(uid, gid)| (meta.uid(), meta.gid()) != (uid, gid));
        if meta.mode() & 0o777 == bits && !owner_differs {
            return Ok(());
        }
        let dir = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_DIRECTORY)
            .open(path)
        {
            Ok(dir) => dir,
            // Another user's directory we may not read: not ours to change either.
            Err(e) => return tolerate_refusal(Err(e)),
        };
        if meta.mode() & 0o777 != bits {
            tolerate_refusal(dir.set_permissions(fs::Permissions::from_mode(bits)))?;
        }
        if let Some((uid, gid)) = owner {
            give_to(meta, uid, gid, |u, g| std::os::unix::fs::fchown(&dir, u, g));
        }
        Ok(())
    }
}

/// A file of a database SQLite has just created: the bits SQLite gave it, `0644` less the
/// umask. Ours are created with them already; a `file://` replica's files are created by
/// object_store with `0666` less the umask, which under umask `002` (or `000`) made the
/// first session's backups group- (or world-) writable beside a `0644` database (a
/// security tester). Later sessions take the database's own bits.
fn settle_for_a_new_database(file: &File) -> io::Result<()> {
    let Some(umask) = process_umask() else {
        return Ok(());
    };
    let bits = SQLITE_NEW_FILE & !umask;
    let mode = file.metadata()?.mode() & 0o777;
    if mode & !bits != 0 {
        tolerate_refusal(file.set_permissions(fs::Permissions::from_mode(mode & bits)))?;
    }
    Ok(())
}

/// The process's umask, as Linux reports it in `/proc/self/status` (setting it to read
/// it would race with every thread creating files). Read once: a process that changes
/// its umask later keeps the one it started with here.
fn process_umask() -> Option<u32> {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *UMASK.get_or_init(|| {
        let status = fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    })
}

/// The permission bits of the file or directory at `path` (for tests and diagnostics).
pub fn permission_bits(path: &Path) -> io::Result<u32> {
    Ok(fs::metadata(path)?.mode() & 0o777)
}

/// A chmod refused because another user owns the file (a follower opening the lock
/// file of a leader running as another member of the database's group) is not an error.
fn tolerate_refusal(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            tracing::debug!(error = %e, "cannot change the permissions of another user's file");
            Ok(())
        }
        other => other,
    }
}

/// Changes the owner to `uid:gid` where it differs and the process may: root may give a
/// file to anyone; another user only to one of its own groups (then the group alone
/// changes). Refusals are expected and not errors: the bits already keep others out.
fn give_to(meta: &fs::Metadata, uid: u32, gid: u32, chown: impl Fn(Option<u32>, Option<u32>) -> io::Result<()>) {
    if meta.uid() == uid && meta.gid() == gid {
        return;
    }
    if chown(Some(uid), Some(gid)).is_ok() || meta.gid() == gid {
        return;
    }
    if let Err(e) = chown(None, Some(gid)) {
        tracing::debug!(uid, gid, error = %e, "cannot give a file the database's owner");
    }
}

/// What to do when this process may not write beside the database: said with the
/// error, which alone named a path and "Permission denied" (a tester: a migration run as
/// root left `<db>-litestream/` root's, and the application's user could not open).
pub fn unwritable_hint(e: &io::Error, path: &Path) -> String {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            // The process's own directory is its effective user's (no `unsafe` outside vfs/).
            let uid = fs::metadata("/proc/self")
                .map(|m| format!(" (uid {})", m.uid()))
                .unwrap_or_default();
            // The file, or the directory that hides it.
            let owner = fs::metadata(path)
                .map(|m| format!(" (owned by uid {})", m.uid()))
                .or_else(|_| {
                    let dir = path.parent().unwrap_or(path);
                    fs::metadata(dir).map(|m| format!(" ({} is owned by uid {})", dir.display(), m.uid()))
                })
                .unwrap_or_default();
            format!(
                "{}: {e}; this process{uid} must be able to write it{owner}, as every process that opens \
                 the database through the VFS does: give it to the application's user (chown), or run the \
                 process as that user",
                path.display()
            )
        }
        io::ErrorKind::ReadOnlyFilesystem => format!(
            "{}: {e}; the database is on a read-only file system: open it without the litestream VFS to read \
             it, or open a read replica (role=replica)",
            path.display()
        ),
        _ => format!("{}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_where_our_file_goes_is_not_opened_through_and_the_target_keeps_its_owner_and_bits() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("shadow");
        fs::write(&target, b"root:$6$hash").unwrap();
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
        let lock = dir.path().join("lock");
        std::os::unix::fs::symlink(&target, &lock).unwrap();
        let modes = FileModes::Exact {
            bits: 0o666,
            owner: Some((65534, 65534)),
        };
        let e = modes.open_or_create(&lock).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let meta = fs::metadata(&target).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        assert_ne!(meta.uid(), 65534);
        assert_eq!(fs::read(&target).unwrap(), b"root:$6$hash");
    }

    #[test]
    fn a_new_databases_files_get_sqlites_bits_whoever_created_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0000000000000001-0000000000000001.ltx");
        let file = File::create(&path).unwrap();
        file.set_permissions(fs::Permissions::from_mode(0o666)).unwrap();
        FileModes::NewDatabase.settle_file(&file).unwrap();
        let umask = process_umask().expect("Linux reports the umask");
        assert_eq!(permission_bits(&path).unwrap(), 0o644 & !umask);
    }

    #[test]
    fn an_unwritable_path_says_who_must_be_able_to_write_it_and_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let hint = unwritable_hint(&denied, &dir.path().join("lock"));
        assert!(
            hint.contains("lock") && hint.contains("must be able to write it"),
            "{hint}"
        );
        assert!(hint.contains("is owned by uid") && hint.contains("chown"), "{hint}");
        let read_only = io::Error::from(io::ErrorKind::ReadOnlyFilesystem);
        assert!(unwritable_hint(&read_only, dir.path()).contains("role=replica"));
        let other = io::Error::from(io::ErrorKind::NotFound);
        assert!(!unwritable_hint(&other, dir.path()).contains("chown"));
    }

    fn mode(path: &Path) -> u32 {
        permission_bits(path).unwrap()
    }

    #[test]
    fn directories_get_execute_bits_where_files_get_read_bits() {
        assert_eq!(FileModes::bits(0o600).dir_bits(), 0o700);
        assert_eq!(FileModes::bits(0o640).dir_bits(), 0o750);
        assert_eq!(FileModes::bits(0o660).dir_bits(), 0o770);
        assert_eq!(FileModes::bits(0o644).dir_bits(), 0o755);
        assert_eq!(FileModes::NewDatabase.dir_bits(), 0o755);
    }

    #[test]
    fn files_and_directories_get_the_databases_bits_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        fs::write(&db, b"x").unwrap();
        // Group write: a umask of 022 (the usual one) would take it away.
        fs::set_permissions(&db, fs::Permissions::from_mode(0o660)).unwrap();
        let modes = FileModes::of_database(&db);
        let stale = dir.path().join("stale.tmp");
        fs::write(&stale, b"old").unwrap();
        fs::set_permissions(&stale, fs::Permissions::from_mode(0o666)).unwrap();
        modes.write_file(&stale, b"new").unwrap();
        assert_eq!(mode(&stale), 0o660);
        assert_eq!(fs::read(&stale).unwrap(), b"new");
        let nested = dir.path().join("a/b/c");
        modes.create_dir_all(&nested).unwrap();
        for d in ["a", "a/b", "a/b/c"] {
            assert_eq!(mode(&dir.path().join(d)), 0o770, "{d}");
        }
        modes.open_or_create(&dir.path().join("lock")).unwrap();
        assert_eq!(mode(&dir.path().join("lock")), 0o660);
    }

    #[test]
    fn as_root_files_and_directories_go_to_the_databases_owner() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        fs::write(&db, b"x").unwrap();
        if fs::metadata(&db).unwrap().uid() != 0 {
            eprintln!("not root: only root may give files away; skipped");
            return;
        }
        std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
        let modes = FileModes::of_database(&db);
        let file = dir.path().join("staging/ltx/1.ltx");
        modes.create_dir_all(file.parent().unwrap()).unwrap();
        modes.write_file(&file, b"page").unwrap();
        for path in [dir.path().join("staging"), dir.path().join("staging/ltx"), file] {
            let meta = fs::metadata(&path).unwrap();
            assert_eq!((meta.uid(), meta.gid()), (65534, 65534), "{}", path.display());
        }
    }

    #[test]
    fn existing_directories_are_left_alone_unless_they_are_ours_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
        let modes = FileModes::owner_only();
        modes.create_dir_all(&shared).unwrap();
        assert_eq!(
            mode(&shared),
            0o777,
            "a directory someone else made is not ours to change"
        );
        modes.own_dir(&shared.join("ltx")).unwrap();
        assert_eq!(mode(&shared.join("ltx")), 0o700);
        fs::set_permissions(shared.join("ltx"), fs::Permissions::from_mode(0o755)).unwrap();
        modes.own_dir(&shared.join("ltx")).unwrap();
        assert_eq!(mode(&shared.join("ltx")), 0o700, "our own directory is tightened");
    }

    #[test]
    fn a_file_in_the_way_of_a_directory_is_reported_as_std_reports_it() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("blocker"), b"").unwrap();
        let err = FileModes::owner_only()
            .create_dir_all(&dir.path().join("blocker/staging"))
            .unwrap_err();
        let std_err = fs::create_dir_all(dir.path().join("blocker/staging")).unwrap_err();
        assert_eq!(err.kind(), std_err.kind(), "{err} / {std_err}");
    }

    #[test]
    fn a_directory_the_kernel_refuses_with_enoent_under_an_existing_parent_is_an_error_not_a_stack_overflow() {
        // procfs answers mkdir with ENOENT whether or not the parent exists: `/proc`
        // exists, `/proc/nope` cannot be made, `/proc/self` exists and refuses too.
        // Before, each of these recursed forever (SIGSEGV of the test binary).
        for path in ["/proc/nope/replica", "/proc/self/staging/ltx", "/proc/self/staging"] {
            let err = FileModes::owner_only().create_dir_all(Path::new(path)).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{path}: {err}");
        }
    }

    #[test]
    fn our_files_keep_owner_write_and_directories_owner_rwx_when_the_database_is_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        fs::write(&db, b"x").unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o444)).unwrap();
        let modes = FileModes::of_database(&db);
        let staging = dir.path().join("app.db-litestream/ltx");
        modes.create_dir_all(&staging).unwrap();
        let lock = dir.path().join("app.db-litestream/lock");
        modes.open_or_create(&lock).unwrap();
        assert_eq!(
            mode(&lock),
            0o644,
            "group and other read as the database, owner read-write"
        );
        assert_eq!(mode(&staging), 0o755);
        assert_eq!(mode(staging.parent().unwrap()), 0o755);
        // A lock file that is ours already keeps owner read-write at an open of the
        // read-only database (a read-only look from another process).
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o640)).unwrap();
        modes.open_or_create(&lock).unwrap();
        assert_eq!(mode(&lock), 0o644);
        assert_eq!(FileModes::bits(0o640).dir_bits(), 0o750);
    }

    #[test]
    fn a_missing_database_is_created_as_sqlite_would() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            FileModes::of_database(&dir.path().join("missing.db")),
            FileModes::NewDatabase
        );
    }
}
