//! Where a database's encryption key comes from: `encryption_key=` (hex),
//! `LITESTREAM_ENCRYPTION_KEY`, or `encryption_key_file=` / `LITESTREAM_ENCRYPTION_KEY_FILE`
//! (a file holding the hex key, refused when other users may read it), plus extra
//! recipients from `encrypt_to=` / `LITESTREAM_ENCRYPT_TO`. Messages name the source,
//! never the key.

use crate::config::Setting;
use crate::ltx::crypto::{Encryption, PrivateKey, PublicKey, MAX_RECIPIENTS};
use std::path::Path;
use std::sync::Arc;

/// Reads the key file at `path`: refused if it is readable by users other than its owner
/// and group (world-readable), or does not hold exactly one hex key. The message names
/// the file (unless its name looks like a key, see [`looks_like_a_key`]); callers put the
/// name of the setting that gave it in front. `key_instead` names where a key itself goes
/// (`encryption_key`, `-key`, …), for the message when a key was given as the path.
pub fn read_key_file(path: &Path, key_instead: &str) -> Result<PrivateKey, String> {
    // A key pasted where the path of a file holding one belongs: the usual error
    // ("<path>: No such file or directory") would put the private key itself in the
    // message, and from there in logs and `litestream_status()` (found by a tester).
    let key_like = path.to_str().is_some_and(looks_like_a_key);
    if key_like && !path.exists() {
        return Err(format!(
            "the value given is not a file but looks like a key itself (hex digits; not shown here): \
             give the private key with {key_instead}, or here the path of a file that holds it"
        ));
    }
    let shown = if key_like {
        "the key file (its name looks like a key and is not shown)".to_string()
    } else {
        path.display().to_string()
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
    // Before the mode: a directory (mode 755) was reported as a key file readable by
    // every user, to chmod 600 (an operations tester, t22).
    if !meta.is_file() {
        let what = if meta.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(format!(
            "{shown} is {what}: give the path of the file that holds the private key"
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o004 != 0 {
            let fix = if key_like {
                "chmod 600 it".to_string()
            } else {
                format!("chmod 600 {shown}")
            };
            return Err(format!(
                "{shown} is readable by every user (mode {:o}): make it private first, e.g. {fix}",
                mode & 0o777
            ));
        }
    }
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?);
    key_from_file_text(&text).map_err(|e| format!("{shown}: {e}"))
}

/// The private key a key file holds: its hex alone, or what `litestream-vfs keygen`
/// prints saved as it is (`public:  <hex>` and `private: <hex>` lines), of which the
/// `private:` line is taken. That file was refused as "not hexadecimal" though what it
/// meant was plain (an operations tester, t12). A file with a `public:` line and no
/// `private:` one is refused saying it holds a public key. Messages never show the file.
fn key_from_file_text(text: &str) -> Result<PrivateKey, String> {
    let mut private = Vec::new();
    let mut public = false;
    for line in text.lines() {
        let Some((label, value)) = line.split_once(':') else {
            continue;
        };
        match label.trim().to_ascii_lowercase().as_str() {
            "private" | "private key" => private.push(value),
            "public" | "public key" => public = true,
            _ => {}
        }
    }
    match private.as_slice() {
        [value] => PrivateKey::from_hex(value).map_err(|e| format!("its `private:` line: {e}")),
        [] if public => Err(
            "holds a public key (a `public:` line) and no private key: a key file holds \
                             the private key, the `private:` line `litestream-vfs keygen` prints \
                             (the hex alone, or that line)"
                .into(),
        ),
        [] => PrivateKey::from_hex(text).map_err(|e| e.to_string()),
        more => Err(format!(
            "holds {} `private:` lines: keep the one private key the replica is encrypted to",
            more.len()
        )),
    }
}

/// Whether a value given as a key file's path could be a key (or most of one): 32 or more
/// hex digits, with or without `0x`, nothing else. Such a value is never repeated in a
/// message. Real paths hold a `/` or a `.` or letters past `f` almost always; a file in
/// the working directory named by a hex string is still read, only not named.
pub fn looks_like_a_key(value: &str) -> bool {
    let v = value.trim();
    let v = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")).unwrap_or(v);
    v.len() >= 32 && v.chars().all(|c| c.is_ascii_hexdigit())
}

/// Refuses an encryption setting given with an empty value (or only spaces): an empty
/// `encryption_key=` or `LITESTREAM_ENCRYPTION_KEY=` is nearly always a shell variable or
/// a secret that did not load, and read as "no key" it replicated the database in
/// plaintext without a word (found by a tester). Leaving the setting out means no key.
fn refuse_empty(setting: Option<&Setting>) -> Result<(), String> {
    match setting {
        Some(s) if s.value.trim().is_empty() => Err(format!(
            "{} is empty: give a value, or leave {} out for no encryption (an empty value is \
             usually a variable or secret that was not set; it is refused rather than read as \
             \"unencrypted\")",
            s.name, s.name
        )),
        _ => Ok(()),
    }
}

/// Where the key itself goes, for the setting `file` that named a key file.
fn key_setting_for(file: &Setting) -> &'static str {
    if file.name.starts_with("LITESTREAM_") {
        "LITESTREAM_ENCRYPTION_KEY"
    } else {
        "encryption_key"
    }
}

/// The encryption a database uses, from its settings: `key` (hex), `key_file`, and
/// `encrypt_to` (comma-separated hex public keys). `None` when no key is given. Each
/// error names the setting as it was given (URI parameter or environment variable). A
/// setting given empty is an error, not "no key" ([`refuse_empty`]): the caller passes
/// settings as given, empty ones included.
pub fn encryption_from(
    key: Option<&Setting>,
    key_file: Option<&Setting>,
    encrypt_to: Option<&Setting>,
) -> Result<Option<Arc<Encryption>>, String> {
    for setting in [key, key_file, encrypt_to] {
        refuse_empty(setting)?;
    }
    let key = match (key, key_file) {
        (Some(key), Some(file)) => {
            return Err(format!(
                "give the encryption key once: {} or {}, not both",
                key.name, file.name
            ))
        }
        (Some(hex), None) => PrivateKey::from_hex(&hex.value).map_err(|e| format!("{}: {e}", hex.name))?,
        (None, Some(path)) => {
            read_key_file(Path::new(&path.value), key_setting_for(path)).map_err(|e| format!("{}: {e}", path.name))?
        }
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
    let encryption = Encryption::new(key, &extra);
    // The header counts recipients in 16 bits: past that every file's encoding fails,
    // and the primary only found out at its first sync, which then timed out.
    let count = encryption.recipients().len();
    if count > MAX_RECIPIENTS {
        let name = encrypt_to.map_or("encrypt_to", |s| s.name.as_str());
        return Err(format!(
            "{name}: {count} recipients with the database's own key, at most {MAX_RECIPIENTS} \
             (an LTX file counts them in 16 bits)"
        ));
    }
    Ok(Some(Arc::new(encryption)))
}

/// The private key from `LITESTREAM_ENCRYPTION_KEY` or `LITESTREAM_ENCRYPTION_KEY_FILE`,
/// if either is set (for `litestream_restore()` and the command-line tool). Set but empty
/// is an error, as at an open ([`refuse_empty`]).
pub fn key_from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<PrivateKey>, String> {
    let from_env = |name: &str| {
        env(name).map(|value| Setting {
            value,
            name: name.to_string(),
        })
    };
    let (key, file) = (
        from_env("LITESTREAM_ENCRYPTION_KEY"),
        from_env("LITESTREAM_ENCRYPTION_KEY_FILE"),
    );
    refuse_empty(key.as_ref())?;
    refuse_empty(file.as_ref())?;
    match (key.map(|s| s.value), file.map(|s| s.value)) {
        (Some(_), Some(_)) => Err("set LITESTREAM_ENCRYPTION_KEY or LITESTREAM_ENCRYPTION_KEY_FILE, not both".into()),
        (Some(hex), None) => PrivateKey::from_hex(&hex)
            .map(Some)
            .map_err(|e| format!("LITESTREAM_ENCRYPTION_KEY: {e}")),
        (None, Some(path)) => read_key_file(Path::new(&path), "LITESTREAM_ENCRYPTION_KEY")
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

    fn private_file(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    /// `litestream-vfs keygen > key` was refused as "not hexadecimal" (an operations
    /// tester, t12): its `private:` line is taken now, at an open and on the command line
    /// (both read key files here). Its `public:` line alone is refused as a public key.
    #[test]
    fn a_key_file_saved_from_keygen_is_read_by_its_private_line() {
        let dir = tempfile::tempdir().unwrap();
        let keygen = private_file(dir.path(), "keygen", &format!("public:  {PUB}\nprivate: {KEY}\n"));
        let e = from(None, keygen.to_str(), None).unwrap().unwrap();
        assert_eq!(e.key().public_key().to_hex(), PUB);
        let env = key_from_env(&|k| (k == "LITESTREAM_ENCRYPTION_KEY_FILE").then(|| keygen.display().to_string()));
        assert_eq!(env.unwrap().unwrap().public_key().to_hex(), PUB);
        let swapped = private_file(dir.path(), "swapped", &format!("private: {KEY}\r\npublic: {PUB}\r\n"));
        assert_eq!(read_key_file(&swapped, "-key").unwrap().public_key().to_hex(), PUB);

        let public = private_file(dir.path(), "public", &format!("public:  {PUB}\n"));
        let err = from(None, public.to_str(), None).unwrap_err();
        assert!(
            err.starts_with("encryption_key_file: ") && err.contains("holds a public key") && !err.contains(PUB),
            "{err}"
        );
        let short = private_file(
            dir.path(),
            "short",
            &format!("public:  {PUB}\nprivate: {}\n", &KEY[..60]),
        );
        let err = from(None, short.to_str(), None).unwrap_err();
        assert!(
            err.contains("`private:` line") && err.contains("60 hex digits"),
            "{err}"
        );
        assert!(!err.contains(&KEY[..32]), "{err}");
        let two = private_file(dir.path(), "two", &format!("private: {KEY}\nprivate: {OTHER}\n"));
        let err = from(None, two.to_str(), None).unwrap_err();
        assert!(err.contains("2 `private:` lines") && !err.contains(&KEY[..32]), "{err}");
    }

    /// A directory given as the key file was reported as readable by every user (mode
    /// 755) to chmod 600 (an operations tester, t22): it is named a directory first.
    #[test]
    fn a_key_file_that_is_a_directory_is_named_a_directory_not_a_mode() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("secrets");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = from(None, sub.to_str(), None).unwrap_err();
        assert!(
            err.contains("is a directory") && !err.contains("readable by every user") && !err.contains("chmod"),
            "{err}"
        );
        let err =
            key_from_env(&|k| (k == "LITESTREAM_ENCRYPTION_KEY_FILE").then(|| sub.display().to_string())).unwrap_err();
        assert!(
            err.starts_with("LITESTREAM_ENCRYPTION_KEY_FILE: ") && err.contains("is a directory"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_key_setting_is_refused_not_read_as_no_encryption() {
        for (key, file, to) in [
            (Some(""), None, None),
            (Some("  "), None, None),
            (None, Some(""), None),
            (Some(KEY), None, Some("")),
        ] {
            let err = from(key, file, to).unwrap_err();
            assert!(err.contains(" is empty") && err.contains("leave"), "{err}");
        }
        let env_empty = uri("LITESTREAM_ENCRYPTION_KEY", "");
        let err = encryption_from(env_empty.as_ref(), None, None).unwrap_err();
        assert!(err.starts_with("LITESTREAM_ENCRYPTION_KEY is empty"), "{err}");
        for name in ["LITESTREAM_ENCRYPTION_KEY", "LITESTREAM_ENCRYPTION_KEY_FILE"] {
            let err = key_from_env(&|k| (k == name).then(String::new)).unwrap_err();
            assert!(err.starts_with(&format!("{name} is empty")), "{err}");
        }
    }

    #[test]
    fn a_key_given_where_a_key_file_belongs_is_never_repeated() {
        for value in [
            KEY.to_string(),
            format!("0x{KEY}"),
            KEY[..40].to_string(),
            format!("{KEY}\n"),
        ] {
            let err = from(None, Some(&value), None).unwrap_err();
            assert!(
                err.starts_with("encryption_key_file: ")
                    && err.contains("looks like a key")
                    && err.contains("encryption_key,"),
                "{err}"
            );
            assert!(!err.contains(&KEY[..32]), "the key was repeated: {err}");
            let env_file = uri("LITESTREAM_ENCRYPTION_KEY_FILE", &value);
            let err = encryption_from(None, env_file.as_ref(), None).unwrap_err();
            assert!(
                err.contains("with LITESTREAM_ENCRYPTION_KEY,") && !err.contains(&KEY[..32]),
                "{err}"
            );
            let err = key_from_env(&|k| (k == "LITESTREAM_ENCRYPTION_KEY_FILE").then(|| value.clone())).unwrap_err();
            assert!(err.contains("looks like a key") && !err.contains(&KEY[..32]), "{err}");
        }
        // A file that does exist under a hex name is read, and not named in errors.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OTHER);
        std::fs::write(&path, "not a key").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_key_file(Path::new(path.to_str().unwrap()), "-key").unwrap_err();
        assert!(err.contains("not hexadecimal"), "{err}");
        // An ordinary missing path is still named: that is what helps.
        let err = from(None, Some("/etc/app/missing.key"), None).unwrap_err();
        assert!(err.contains("/etc/app/missing.key"), "{err}");
    }

    #[test]
    fn more_recipients_than_a_file_can_count_are_refused_at_open() {
        let many: Vec<String> = (0..MAX_RECIPIENTS as u32)
            .map(|i| {
                let mut b = [7u8; 32];
                b[..4].copy_from_slice(&i.to_be_bytes());
                hex::encode(b)
            })
            .collect();
        let err = from(Some(KEY), None, Some(&many.join(","))).unwrap_err();
        assert!(
            err.starts_with("encrypt_to: 65536 recipients") && err.contains("at most 65535"),
            "{err}"
        );
        let fits = many[1..].join(",");
        assert_eq!(
            from(Some(KEY), None, Some(&fits)).unwrap().unwrap().recipients().len(),
            MAX_RECIPIENTS
        );
    }
}
