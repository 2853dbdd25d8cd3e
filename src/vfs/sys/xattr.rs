//! Extended attributes of a file, by path: a note that travels with the file's inode
//! (through a rename, `mv` across file systems, `cp -a`) without a file of its own beside
//! it and without a descriptor of ours on the file (closing one would drop SQLite's POSIX
//! locks). File systems without user attributes answer "not supported": callers treat
//! that as "no note".

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The largest value [`get`] reads; a longer one is not ours.
const MAX_VALUE: usize = 1024;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn c_name(name: &str) -> io::Result<CString> {
    CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Sets attribute `name` (e.g. `user.x`) of the file at `path` to `value`, following
/// symbolic links as SQLite's open does.
pub fn set(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let (path, name) = (c_path(path)?, c_name(name)?);
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is valid
    // for `value.len()` bytes and only read.
    let rc = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Attribute `name` of the file at `path`: `None` when the file has none of that name,
/// its file system keeps no user attributes, or the value is longer than [`MAX_VALUE`].
pub fn get(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let (path, name) = (c_path(path)?, c_name(name)?);
    let mut buf = vec![0u8; MAX_VALUE];
    // SAFETY: both strings are NUL-terminated and live across the call; `buf` is valid
    // for writes of `buf.len()` bytes, and the kernel writes at most that many.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) | Some(libc::ERANGE) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attribute_set_is_read_back_and_a_missing_one_is_none() {
        let dir = std::env::temp_dir().join(format!("xattr-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(get(&file, "user.litestream.test").unwrap(), None);
        match set(&file, "user.litestream.test", b"{\"a\":1}") {
            Ok(()) => assert_eq!(
                get(&file, "user.litestream.test").unwrap().as_deref(),
                Some(&b"{\"a\":1}"[..])
            ),
            // A file system without user attributes: nothing to read back either.
            Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(get(&dir.join("missing"), "user.litestream.test").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
