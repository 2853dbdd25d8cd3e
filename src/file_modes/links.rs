//! Symbolic links beside a database are not followed where following one lets the user
//! who planted it act through this process.
//!
//! Whoever may write the database's directory may put a link where one of our files or
//! directories goes (`<db>-litestream/lock` -> `/etc/shadow`). A process of another user
//! (root running a migration, another worker of a shared group) then opened it through
//! the link and gave the target the database's owner and permission bits, or wrote its
//! own bytes into it: a security tester took root-owned files over that way, and a
//! group member another member's private files. SQLite opens its own files with
//! `O_NOFOLLOW` for the same reason (`os_unix.c`).
//!
//! So: our files are opened with `O_NOFOLLOW` (a link there fails to open, `ELOOP`);
//! a link standing for one of our directories is followed only when the process's own
//! user (or root) made it, as the kernel's `protected_symlinks` judges links in shared
//! directories; and a file is given to another user (`chown`, `chmod`) only where it
//! really lies in a directory of that user, which a directory swapped for a link between
//! our check and our open does not pass.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::OnceLock;

/// Opens `path` for reading; a symbolic link there is refused, not followed.
pub fn open_read(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// The whole of the file at `path`; a symbolic link there is refused, not followed.
pub fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io::Read::read_to_end(&mut open_read(path)?, &mut bytes)?;
    Ok(bytes)
}

/// The file at `path` as text; a symbolic link there is refused, not followed.
pub fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// This process's effective user (the owner of `/proc/self`; no `unsafe` outside vfs/).
pub(super) fn effective_uid() -> Option<u32> {
    static UID: OnceLock<Option<u32>> = OnceLock::new();
    *UID.get_or_init(|| fs::metadata("/proc/self").ok().map(|m| m.uid()))
}

/// Whether a link owned by `owner` may be followed: made by this process's user, or by
/// root. Another user's link is what the attack plants.
fn trusted_link_owner(owner: u32) -> bool {
    owner == 0 || Some(owner) == effective_uid()
}

/// `dir`, which exists, where one of our directories goes: fine when it is a directory,
/// or a link to one that this process's user (or root) made. Returns whether it is a
/// link (then it is the user's choice, and left as it is).
pub(super) fn check_dir(dir: &Path, meta: &fs::Metadata) -> io::Result<bool> {
    if !meta.file_type().is_symlink() {
        return Ok(false);
    }
    if !trusted_link_owner(meta.uid()) {
        return Err(refused_link(dir, meta.uid()));
    }
    Ok(true)
}

/// The error for a link another user made where our file or directory goes.
pub fn refused_link(path: &Path, owner: u32) -> io::Error {
    let me = effective_uid()
        .map(|u| format!("uid {u}"))
        .unwrap_or_else(|| "this process".into());
    // Not PermissionDenied: the hint for that (`unwritable_hint`) says to chown.
    io::Error::other(format!(
        "{} is a symbolic link made by uid {owner}, not by {me}: not followed (a link there would let \
             that user have this process write or hand over the file it names); remove it, or give the \
             real directory's path",
        path.display()
    ))
}

/// Whether `file` may be given `owner`'s uid and the database's permission bits: only
/// root can give a file to another user, and it does so only where the file really lies
/// in a directory of that user or its group (as `<db>-litestream/` and its subdirectories
/// are). The
/// directory is the one the descriptor was opened in (`/proc/self/fd`), so a directory
/// swapped for a link after our checks (`/etc/sudoers.d`, root's) shows as the link's
/// target, and the file stays root's with the umask's bits.
pub(super) fn may_hand_over(file: &File, owner: u32, group: u32) -> bool {
    use std::os::fd::AsRawFd;
    if owner == 0 || effective_uid() != Some(0) {
        return true;
    }
    let Ok(real) = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) else {
        return true; // no /proc: nothing to compare with, as before
    };
    // Or of the user's group (not root's): a group-shared directory (setgid, `2770`)
    // whose owner is another member or root.
    real.parent().is_some_and(|dir| {
        fs::symlink_metadata(dir).is_ok_and(|m| m.uid() == owner || (group != 0 && m.gid() == group))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_not_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"root:$6$hash").unwrap();
        let link = dir.path().join("database");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        let e = read(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert_eq!(read(&secret).unwrap(), b"root:$6$hash");
    }

    #[test]
    fn a_directory_link_of_another_user_is_refused_and_ones_own_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::create_dir(&target).unwrap();
        let link = dir.path().join("app.db-litestream");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let meta = fs::symlink_metadata(&link).unwrap();
        assert!(check_dir(&link, &meta).unwrap(), "our own link is followed");
        assert!(!check_dir(&target, &fs::symlink_metadata(&target).unwrap()).unwrap());
        if effective_uid() == Some(0) {
            std::os::unix::fs::lchown(&link, Some(65534), Some(65534)).unwrap();
            let e = check_dir(&link, &fs::symlink_metadata(&link).unwrap()).unwrap_err();
            assert!(e.to_string().contains("made by uid 65534"), "{e}");
        }
    }

    #[test]
    fn root_hands_a_file_over_only_in_a_directory_of_its_new_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("lock")).unwrap();
        let mine = fs::metadata(dir.path()).unwrap().uid();
        assert!(may_hand_over(&file, mine, mine));
        if effective_uid() == Some(0) {
            // A directory of root's (a link swapped in for `<db>-litestream`).
            assert!(!may_hand_over(&file, 65534, 65534));
            let theirs = dir.path().join("theirs");
            fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let in_theirs = File::create(theirs.join("lock")).unwrap();
            assert!(may_hand_over(&in_theirs, 65534, 65534));
            assert!(!may_hand_over(&in_theirs, 65533, 65533), "a third user's directory");
            assert!(
                may_hand_over(&in_theirs, 65533, 65534),
                "a directory of the user's group"
            );
        }
    }
}
