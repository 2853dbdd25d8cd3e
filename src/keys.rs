//! Where a database's encryption key comes from: `encryption_key=` (hex),
//! `LITESTREAM_ENCRYPTION_KEY`, or `encryption_key_file=` / `LITESTREAM_ENCRYPTION_KEY_FILE`
//! (a file holding the hex key, refused when other users may read it), plus extra
//! recipients from `encrypt_to=` / `LITESTREAM_ENCRYPT_TO`. Messages name the source,
//! never the key.

use crate::config::Setting;
use crate::ltx::crypto::{Encryption, PrivateKey, PublicKey};
use std::path::Path;
use std::sync::Arc;

/// Reads the key file at `path`: refused if it is readable by users other than its owner
/// and group (world-readable), or does not hold exactly one hex key. The message names
/// the file; callers put the name of the setting that gave it in front.
pub fn read_key_file(path: &Path) -> Result<PrivateKey, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            return Err(format!(
                "{shown} is readable by every user (mode {:o}): \
                 make it private first, e.g. chmod 600 {shown}",
                mode & 0o777
            ));
        }
    }
    if !meta.is_file() {
        return Err(format!("{shown} is not a regular file"));
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?);
    PrivateKey::from_hex(&text).map_err(|e| format!("{shown}: {e}"))
}

/// The encryption a database uses, from its settings: `key` (hex), `key_file`, and
/// `encrypt_to` (comma-separated hex public keys). `None` when no key is given. Each
/// error names the setting as it was given (URI parameter or environment variable).
pub fn encryption_from(
    key: Option<&Setting>,
    key_file: Option<&Setting>,
    encrypt_to: Option<&Setting>,
) -> Result<Option<Arc<Encryption>>, String> {
    let key = match (key, key_file) {
        (Some(key), Some(file)) => {
            return Err(format!(
                "give the encryption key once: {} or {}, not both",
                key.name, file.name
            ))
        }
        (Some(hex), None) => PrivateKey::from_hex(&hex.value).map_err(|e| format!("{}: {e}", hex.name))?,
        (None, Some(path)) => read_key_file(Path::new(&path.value)).map_err(|e| format!("{}: {e}", path.name))?,
        (None, None) => {
            if let Some(to) = encrypt_to {
                return Err(format!(
                    "{} needs an encryption key of the database's own \
                     (encryption_key or encryption_key_file)",
                    to.name
                ));
            }
            return Ok(None);
        }
    };
    let extra = match encrypt_to {
        Some(list) => PublicKey::parse_list(&list.value).map_err(|e| format!("{}: {e}", list.name))?,
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
        (None, Some(path)) => read_key_file(Path::new(&path))
            .map(Some)
            .map_err(|e| format!("LITESTREAM_ENCRYPTION_KEY_FILE: {e}")),
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

    /// A setting as the URI gives it.
    fn uri(name: &str, value: &str) -> Option<Setting> {
        Some(Setting {
            value: value.into(),
            name: name.into(),
        })
    }

    fn from(key: Option<&str>, file: Option<&str>, to: Option<&str>) -> Result<Option<Arc<Encryption>>, String> {
        let (key, file) = (
            key.and_then(|k| uri("encryption_key", k)),
            file.and_then(|f| uri("encryption_key_file", f)),
        );
        let to = to.and_then(|t| uri("encrypt_to", t));
        encryption_from(key.as_ref(), file.as_ref(), to.as_ref())
    }

    #[test]
    fn key_sources_and_recipients() {
        assert!(from(None, None, None).unwrap().is_none());
        let e = from(Some(KEY), None, Some(OTHER)).unwrap().unwrap();
        assert_eq!(e.recipients()[0].to_hex(), PUB);
        assert_eq!(e.recipients()[1].to_hex(), OTHER);
        let err = from(Some("xyz"), None, None).unwrap_err();
        assert!(err.contains("not hexadecimal"), "{err}");
        let err = from(Some(&KEY[2..]), None, None).unwrap_err();
        assert!(err.contains("62 hex digits"), "{err}");
        assert!(from(None, None, Some(OTHER))
            .unwrap_err()
            .contains("needs an encryption key"));
        assert!(from(Some(KEY), Some("/x"), None).unwrap_err().contains("not both"));
        let err = from(Some(KEY), None, Some("abc")).unwrap_err();
        assert!(err.starts_with("encrypt_to:") && !err.contains(KEY), "{err}");
    }

    #[test]
    fn an_error_names_the_environment_variable_a_key_came_from() {
        let env_key = uri("LITESTREAM_ENCRYPTION_KEY", "xyz");
        let err = encryption_from(env_key.as_ref(), None, None).unwrap_err();
        assert!(err.starts_with("LITESTREAM_ENCRYPTION_KEY: "), "{err}");
        let file = uri("LITESTREAM_ENCRYPTION_KEY_FILE", "/nonexistent/key");
        let err = encryption_from(None, file.as_ref(), None).unwrap_err();
        assert!(
            err.starts_with("LITESTREAM_ENCRYPTION_KEY_FILE: /nonexistent/key: "),
            "{err}"
        );
        let both = encryption_from(uri("encryption_key", KEY).as_ref(), file.as_ref(), None).unwrap_err();
        assert!(
            both.contains("encryption_key or LITESTREAM_ENCRYPTION_KEY_FILE, not both"),
            "{both}"
        );
    }

    #[test]
    fn key_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = from(None, path.to_str(), None).unwrap_err();
        assert!(
            err.starts_with("encryption_key_file: ")
                && err.contains("readable by every user")
                && err.contains("chmod 600"),
            "{err}"
        );
        assert!(!err.contains(KEY));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = from(None, path.to_str(), None).unwrap().unwrap();
        assert_eq!(e.key().public_key().to_hex(), PUB);
        std::fs::write(&path, "not a key").unwrap();
        let err = from(None, path.to_str(), None).unwrap_err();
        assert!(err.contains("not hexadecimal"), "{err}");
        assert!(from(None, Some("/nonexistent/key"), None).is_err());
    }
}
