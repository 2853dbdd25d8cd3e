//! Where a database's encryption key comes from: `encryption_key=` (hex),
//! `LITESTREAM_ENCRYPTION_KEY`, or `encryption_key_file=` / `LITESTREAM_ENCRYPTION_KEY_FILE`
//! (a file holding the hex key, refused when other users may read it), plus extra
//! recipients from `encrypt_to=` / `LITESTREAM_ENCRYPT_TO`. Messages name the source,
//! never the key.

use crate::ltx::crypto::{Encryption, PrivateKey, PublicKey};
use std::path::Path;
use std::sync::Arc;

/// Reads the key file at `path`: refused if it is readable by users other than its owner
/// and group (world-readable), or does not hold exactly one hex key.
pub fn read_key_file(path: &Path) -> Result<PrivateKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("encryption_key_file {shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            return Err(format!(
                "encryption_key_file {shown} is readable by every user (mode {:o}): \
                 make it private first, e.g. chmod 600 {shown}",
                mode & 0o777
            ));
        }
    }
    if !meta.is_file() {
        return Err(format!("encryption_key_file {shown} is not a regular file"));
    }
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| format!("encryption_key_file {shown}: {e}"))?,
    );
    PrivateKey::from_hex(&text).map_err(|e| format!("encryption_key_file {shown}: {e}"))
}

/// The encryption a database uses, from its settings: `key` (hex), `key_file`, and
/// `encrypt_to` (comma-separated hex public keys). `None` when no key is given.
pub fn encryption_from(
    key: Option<&str>,
    key_file: Option<&str>,
    encrypt_to: Option<&str>,
) -> Result<Option<Arc<Encryption>>, String> {
    let key = match (key, key_file) {
        (Some(_), Some(_)) => {
            return Err("give the encryption key once: encryption_key or encryption_key_file, not both".into())
        }
        (Some(hex), None) => PrivateKey::from_hex(hex).map_err(|e| format!("encryption_key: {e}"))?,
        (None, Some(path)) => read_key_file(Path::new(path))?,
        (None, None) => {
            if encrypt_to.is_some() {
                return Err("encrypt_to needs an encryption key of the database's own \
                            (encryption_key or encryption_key_file)"
                    .into());
            }
            return Ok(None);
        }
    };
    let extra = match encrypt_to {
        Some(list) => PublicKey::parse_list(list).map_err(|e| format!("encrypt_to: {e}"))?,
        None => Vec::new(),
    };
    Ok(Some(Arc::new(Encryption::new(key, &extra))))
}

/// The private key from `LITESTREAM_ENCRYPTION_KEY` or `LITESTREAM_ENCRYPTION_KEY_FILE`,
/// if either is set (for `litestream_restore()` and the command-line tool).
pub fn key_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<PrivateKey>, String> {
    let key = env("LITESTREAM_ENCRYPTION_KEY").filter(|v| !v.is_empty());
    let file = env("LITESTREAM_ENCRYPTION_KEY_FILE").filter(|v| !v.is_empty());
    match (key, file) {
        (Some(_), Some(_)) => Err("set LITESTREAM_ENCRYPTION_KEY or LITESTREAM_ENCRYPTION_KEY_FILE, not both".into()),
        (Some(hex), None) => PrivateKey::from_hex(&hex)
            .map(Some)
            .map_err(|e| format!("LITESTREAM_ENCRYPTION_KEY: {e}")),
        (None, Some(path)) => read_key_file(Path::new(&path)).map(Some),
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const KEY: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
    const PUB: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
    const OTHER: &str = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a";

    #[test]
    fn key_sources_and_recipients() {
        assert!(encryption_from(None, None, None).unwrap().is_none());
        let e = encryption_from(Some(KEY), None, Some(OTHER)).unwrap().unwrap();
        assert_eq!(e.recipients()[0].to_hex(), PUB);
        assert_eq!(e.recipients()[1].to_hex(), OTHER);
        let err = encryption_from(Some("xyz"), None, None).unwrap_err();
        assert!(err.contains("not hexadecimal"), "{err}");
        let err = encryption_from(Some(&KEY[2..]), None, None).unwrap_err();
        assert!(err.contains("62 hex digits"), "{err}");
        assert!(encryption_from(None, None, Some(OTHER))
            .unwrap_err()
            .contains("needs an encryption key"));
        assert!(encryption_from(Some(KEY), Some("/x"), None)
            .unwrap_err()
            .contains("not both"));
        let err = encryption_from(Some(KEY), None, Some("abc")).unwrap_err();
        assert!(err.starts_with("encrypt_to:") && !err.contains(KEY), "{err}");
    }

    #[test]
    fn key_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = encryption_from(None, path.to_str(), None).unwrap_err();
        assert!(
            err.contains("readable by every user") && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains(KEY));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = encryption_from(None, path.to_str(), None).unwrap().unwrap();
        assert_eq!(e.key().public_key().to_hex(), PUB);
        std::fs::write(&path, "not a key").unwrap();
        let err = encryption_from(None, path.to_str(), None).unwrap_err();
        assert!(err.contains("not hexadecimal"), "{err}");
        assert!(encryption_from(None, Some("/nonexistent/key"), None).is_err());
    }
}
