//! Opening the replica a command names.

use std::path::Path;
use std::sync::Arc;

use litestream_vfs::storage::{open_store, ReplicaStore};

use crate::Failure;

/// Opens a replica URL; an existing local directory stands for `file://` + its absolute
/// path, which is what people type when the replica is on this machine.
pub fn open(url_or_dir: &str) -> Result<Arc<dyn ReplicaStore>, Failure> {
    let url = as_url(url_or_dir);
    open_store(&url, &Default::default()).map_err(|e| Failure::Failed(e.to_string()))
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
