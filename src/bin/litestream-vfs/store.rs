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

/// A line to add to a failure `message` a store's refusal of the credentials caused: S3
/// answers InvalidAccessKeyId or SignatureDoesNotMatch with 403, which came through as a
/// raw "403 Forbidden" with nothing saying where the credentials come from (an
/// operations tester, t14). `None` for other failures. It named "the URL's access-key-id= /
/// secret-access-key= parameters" too, which every command refuses as unknown: they are a
/// database's URI parameters, which no command takes.
pub fn credentials_hint(message: &str) -> Option<&'static str> {
    let refused = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "403 Forbidden",
        "AccessDenied",
        "access denied",
    ]
    .iter()
    .any(|s| message.contains(s));
    let s3 = message.contains("s3://") || message.contains("S3");
    (refused && s3).then_some(
        "hint: the S3 store refused the request (403): check the access key and secret: \
         LITESTREAM_ACCESS_KEY_ID / LITESTREAM_SECRET_ACCESS_KEY, else AWS_ACCESS_KEY_ID / \
         AWS_SECRET_ACCESS_KEY (a replica URL takes no credentials: access-key-id and \
         secret-access-key parameters in it are refused), and that they may read this bucket (and the \
         region); see README.md, \"Replica types and credentials\"",
    )
}

/// `message`, with [`credentials_hint`]'s line after it when there is one.
pub fn with_hint(message: String) -> String {
    match credentials_hint(&message) {
        Some(hint) => format!("{message}\n{hint}"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_s3_credential_gets_a_hint_and_other_failures_do_not() {
        for refused in [
            "listing s3://abk/app: s3://abk/app: LIST app/0000/: access denied: Generic S3 error: \
             Error performing list request: Received redirect without LOCATION, this normally \
             indicates an incorrectly configured region: 403 Forbidden: InvalidAccessKeyId: The AWS \
             Access Key Id you provided does not exist in our records.",
            "s3://b/p: GET app/ltx/0/x.ltx: Generic S3 error: 403 Forbidden: SignatureDoesNotMatch: …",
        ] {
            let hinted = with_hint(refused.to_string());
            assert!(
                hinted.starts_with(refused)
                    && hinted.contains("AWS_ACCESS_KEY_ID")
                    && hinted.contains("LITESTREAM_ACCESS_KEY_ID")
                    && hinted.contains("a replica URL takes no credentials")
                    && !hinted.contains("the URL's access-key-id")
                    && hinted.contains("README"),
                "{hinted}"
            );
        }
        for other in [
            "replica s3://b/p has no LTX files",
            "file:///x: GET y: access denied: Permission denied (os error 13)",
            "s3://b/p: LIST a/: failed (transient): 503 Service Unavailable",
        ] {
            assert_eq!(with_hint(other.to_string()), other);
        }
    }
}
