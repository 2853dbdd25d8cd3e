//! Opening the replica a command names.

use std::path::Path;
use std::sync::Arc;

use litestream_vfs::storage::{open_store, ReplicaStore};

use crate::Failure;

/// Opens a replica URL; an existing local directory stands for `file://` + its absolute
/// path, which is what people type when the replica is on this machine.
pub fn open(url_or_dir: &str) -> Result<Arc<dyn ReplicaStore>, Failure> {
    let url = as_url(url_or_dir);
    open_store(&url, &Default::default()).map_err(|e| {
        let e = e.to_string();
        // Only where the library found no scheme: `file:/abs/path` and the like parse.
        Failure::Failed(match e.contains("has no scheme") {
            true => not_a_replica(url_or_dir),
            false => e,
        })
    })
}

/// Why `arg`, neither a URL nor an existing directory, names no replica. The library's
/// "has no scheme" alone, for a directory path with a typo in it, sent people to the URL
/// syntax when the directory was what was missing (a documentation tester).
fn not_a_replica(arg: &str) -> String {
    const URLS: &str = "file:///path, s3://bucket/path, gs://bucket/path or abs://container/path";
    match std::fs::metadata(arg) {
        Ok(_) => format!(
            "{arg} is a file, not a replica directory, and {arg:?} has no scheme to read it as a replica URL \
             ({URLS})"
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
            "{arg} does not exist: no replica directory there, and {arg:?} has no scheme to read it as a \
             replica URL; give an existing directory or a URL ({URLS})"
        ),
        Err(e) => format!("{arg}: {e}; and {arg:?} has no scheme to read it as a replica URL ({URLS})"),
    }
}

/// `url_or_dir` itself, or `file://<absolute path>` for an existing directory.
pub fn as_url(url_or_dir: &str) -> String {
    let path = Path::new(url_or_dir);
    if !url_or_dir.contains("://") && path.is_dir() {
        if let Ok(abs) = path.canonicalize() {
            // '%', '?' and '#' would be read as URL syntax; everything else the URL
            // parser takes as it is.
            let path = abs.display().to_string();
            let path = path.replace('%', "%25").replace('?', "%3F").replace('#', "%23");
            return format!("file://{path}");
        }
    }
    url_or_dir.to_string()
}
