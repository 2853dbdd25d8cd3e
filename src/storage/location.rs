//! One replica location, however its URL is spelled.

use std::path::{Path, PathBuf};

/// What names one replica location however the URL spells it, so that a second
/// database given another spelling of a taken location is refused as the same spelling
/// is: had it been let in, it would have been restored from the other database's replica
/// and written its own files there (tests/databases_and_users.rs; `vfs/claims.rs`). Two
/// processes on one database compare their locations by it too (`primary/follower.rs`). A `file://` path is
/// resolved as the store resolves it (the URL parser drops `.` and `..` segments
/// lexically; the kernel then follows symlinks): empty segments dropped, then the
/// longest prefix that exists canonicalized, so that `R//a`, `R/./a`, `R/x/../a` and a
/// symlink to `R/a` all key as `R/a`. Other schemes: the path's `.`, `..` and empty
/// segments resolved, the query (endpoint, region) kept. A URL that does not parse keys
/// as written (its open fails later, saying why).
pub fn location_key(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url) else {
        return url.trim_end_matches('/').to_string();
    };
    if parsed.scheme() == "file" {
        if let Ok(path) = parsed.to_file_path() {
            return format!("file://{}", resolve_existing(&path).display());
        }
    }
    let before = &parsed[..url::Position::BeforePath];
    let after = &parsed[url::Position::AfterPath..];
    format!("{before}{}{after}", lexical_path(parsed.path()))
}

/// `path` with `.`, `..` and empty segments resolved as text, rooted, no trailing `/`.
fn lexical_path(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// `path` resolved lexically (`Path::components` drops empty and `.` segments; `..`
/// takes the previous one off), then its longest existing prefix canonicalized (symlinks
/// followed) and the rest, not made yet, appended.
fn resolve_existing(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut lexical = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            c => lexical.push(c),
        }
    }
    let mut missing = Vec::new();
    let mut prefix = lexical.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(prefix) {
            return missing.iter().rev().fold(real, |p, name| p.join(name));
        }
        match (prefix.parent(), prefix.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                prefix = parent;
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_location_keys_the_same_through_dot_segments_double_slashes_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("R/a")).unwrap();
        std::fs::create_dir_all(root.join("R/other")).unwrap();
        std::os::unix::fs::symlink(root.join("R/a"), root.join("R/alias")).unwrap();
        std::os::unix::fs::symlink(root.join("R"), root.join("linked-root")).unwrap();
        let r = root.display();
        let key = format!("file://{r}/R/a");
        for spelling in [
            format!("file://{r}/R/a"),
            format!("file://{r}/R/a/"),
            format!("file://{r}/R//a"),
            format!("file://{r}/R/./a"),
            format!("file://{r}/R/other/../a"),
            format!("file://{r}/R/alias"),
            format!("file://{r}/linked-root/a"),
            format!("file://{r}/linked-root/other/../alias/"),
        ] {
            assert_eq!(location_key(&spelling), key, "{spelling}");
        }
        // A location not made yet keys by its existing prefix, resolved.
        assert_eq!(
            location_key(&format!("file://{r}/linked-root//new/./db")),
            format!("file://{r}/R/new/db")
        );
        assert_ne!(location_key(&format!("file://{r}/R/other")), key);
    }

    #[test]
    fn an_object_store_location_keys_the_same_through_dot_segments_and_slashes() {
        let key = location_key("s3://bucket/tenants/a?endpoint=http://minio:9000");
        for spelling in [
            "s3://bucket/tenants/a/?endpoint=http://minio:9000",
            "s3://bucket//tenants/./a?endpoint=http://minio:9000",
            "s3://bucket/tenants/b/../a?endpoint=http://minio:9000",
        ] {
            assert_eq!(location_key(spelling), key, "{spelling}");
        }
        assert_eq!(location_key("gs://bucket/x//y/"), "gs://bucket/x/y");
        // Another endpoint or bucket is another location.
        assert_ne!(location_key("s3://bucket/tenants/a?endpoint=http://other:9000"), key);
        assert_ne!(location_key("s3://other/tenants/a?endpoint=http://minio:9000"), key);
    }
}
