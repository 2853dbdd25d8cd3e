//! Symbolic links a user plants beside their database are not followed by a process of
//! another user (root, a worker of a shared group) that opens it through the VFS.
//!
//! A security tester: root opening a database whose owner had made `<db>-litestream/lock`
//! a link to a root-owned `0600` file gave that file to the user (`chown`, `chmod 644`);
//! a link at `handoff/seq` also had its target overwritten; a link standing for
//! `<db>-litestream` itself had root create the user's files in root's directory.
//! Plain SQLite opens its own files with `O_NOFOLLOW` and refuses. These tests run as
//! root (only root can give files away); as another user they say so and pass.

mod harness;

use harness::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

const NOBODY: u32 = 65534;

/// Runs `sql` in a `sqlite3` shell with the extension loaded, as this process's user:
/// (succeeded, stdout and stderr).
fn sqlite(sql: &str) -> (bool, String) {
    let (ok, out, err) = sqlite_output(sql);
    let text = format!("{out}{err}");
    (ok && !text.contains("Error"), text)
}

fn running_as_root() -> bool {
    fs::metadata("/proc/self").unwrap().uid() == 0
}

/// A database of user `nobody` in `dir/app` (a directory of theirs), with a table, and
/// a root-owned `0600` file in `dir/rootonly` standing for `/etc/shadow`.
struct Planted {
    db: std::path::PathBuf,
    staging: std::path::PathBuf,
    secret: std::path::PathBuf,
    open: String,
}

fn nobodys_database(dir: &Path) -> Planted {
    let app = dir.join("app");
    let rootonly = dir.join("rootonly");
    fs::create_dir(&app).unwrap();
    fs::create_dir(&rootonly).unwrap();
    let db = app.join("app.db");
    let (ok, out) = sqlite(&format!(".open {}\nCREATE TABLE t(x);", db.display()));
    assert!(ok, "{out}");
    for path in [&app, &db] {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let secret = rootonly.join("shadow");
    fs::write(&secret, b"root:$6$hash\n").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    Planted {
        staging: app.join("app.db-litestream"),
        open: format!(
            ".open file:{}?vfs=litestream&replica=file://{}&sync_interval=100ms",
            db.display(),
            dir.join("replica").display()
        ),
        db,
        secret,
    }
}

/// `link` -> `target`, made by `nobody` (as if they had planted it).
fn plant(link: &Path, target: &Path) {
    let _ = fs::remove_file(link);
    let _ = fs::remove_dir_all(link);
    std::os::unix::fs::symlink(target, link).unwrap();
    std::os::unix::fs::lchown(link, Some(NOBODY), Some(NOBODY)).unwrap();
}

fn assert_untouched(secret: &Path) {
    let meta = fs::metadata(secret).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, 0, 0o600),
        "owner and bits of the target"
    );
    assert_eq!(fs::read(secret).unwrap(), b"root:$6$hash\n", "content of the target");
}

#[test]
fn a_link_planted_at_the_lock_file_is_refused_and_its_target_keeps_its_owner() {
    if !running_as_root() {
        eprintln!("not running as root: only root may give files to another user; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = nobodys_database(dir.path());
    fs::create_dir(&p.staging).unwrap();
    std::os::unix::fs::chown(&p.staging, Some(NOBODY), Some(NOBODY)).unwrap();
    plant(&p.staging.join("lock"), &p.secret);
    let (ok, out) = sqlite(&format!("{}\nSELECT count(*) FROM t;", p.open));
    assert!(
        !ok && out.contains("lock is a symbolic link"),
        "the open must be refused: {out}"
    );
    assert_untouched(&p.secret);
    assert!(fs::symlink_metadata(p.staging.join("lock"))
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn links_planted_at_our_files_after_a_session_are_not_written_through() {
    if !running_as_root() {
        eprintln!("not running as root; skipped");
        return;
    }
    for name in ["handoff/seq", "handoff/spare", "state.json", "lock"] {
        let dir = tempfile::tempdir().unwrap();
        let p = nobodys_database(dir.path());
        let session = format!(
            "{}\nINSERT INTO t VALUES (1); SELECT litestream_sync() > 0; PRAGMA wal_checkpoint(TRUNCATE); \
             INSERT INTO t VALUES (2); SELECT litestream_sync() > 0;",
            p.open
        );
        let (ok, out) = sqlite(&session);
        assert!(ok, "{out}");
        plant(&p.staging.join(name), &p.secret);
        let _ = sqlite(&session);
        assert_untouched(&p.secret);
        let _ = p.db;
    }
}

#[test]
fn a_staging_directory_link_of_another_user_is_refused_and_ones_own_is_followed() {
    if !running_as_root() {
        eprintln!("not running as root; skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = nobodys_database(dir.path());
    let rootdir = p.secret.parent().unwrap().to_path_buf();
    plant(&p.staging, &rootdir);
    let (ok, out) = sqlite(&format!("{}\nINSERT INTO t VALUES (1);", p.open));
    assert!(!ok, "{out}");
    assert!(out.contains("is a symbolic link made by uid 65534"), "{out}");
    assert!(!out.contains("chown"), "the link is the problem, not the owner: {out}");
    let created: Vec<_> = fs::read_dir(&rootdir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        created,
        vec![std::ffi::OsString::from("shadow")],
        "nothing created in root's directory"
    );
    assert_untouched(&p.secret);

    // The same link made by root (this process's user): its choice, followed.
    std::os::unix::fs::lchown(&p.staging, Some(0), Some(0)).unwrap();
    let (ok, out) = sqlite(&format!(
        "{}\nINSERT INTO t VALUES (1); SELECT litestream_sync() > 0;",
        p.open
    ));
    assert!(ok, "{out}");
    assert!(rootdir.join("lock").exists(), "staging went through root's own link");
}
