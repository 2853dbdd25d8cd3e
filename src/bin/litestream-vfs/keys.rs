//! Encryption keys on the command line: `-key HEX`, `-key-file PATH`, else
//! `LITESTREAM_ENCRYPTION_KEY` / `LITESTREAM_ENCRYPTION_KEY_FILE`.

use litestream_vfs::ltx::crypto::PrivateKey;

use crate::args::{Flag, Parsed};
use crate::Failure;

/// The flags every command that reads encrypted files takes.
pub const KEY_FLAGS: [Flag; 2] = [
    Flag {
        names: &["key"],
        value: true,
    },
    Flag {
        names: &["key-file"],
        value: true,
    },
];

/// The private key given on the command line or in the environment, if any.
pub fn key(p: &Parsed) -> Result<Option<PrivateKey>, Failure> {
    match (p.value("key"), p.value("key-file")) {
        (Some(_), Some(_)) => Err(Failure::Usage("give -key or -key-file, not both".into())),
        // An empty value (`-key "$UNSET"`) is refused below as 0 hex digits long.
        (Some(hex), None) => PrivateKey::from_hex(hex)
            .map(Some)
            .map_err(|e| Failure::Usage(format!("-key: {e}"))),
        (None, Some("")) => Err(Failure::Usage(
            "-key-file is empty: give the path of a file holding the key (an empty value is usually \
             a variable that was not set)"
                .into(),
        )),
        // The key itself where its file's path belongs is a wrong command line (exit 2,
        // as docs/cli.md says), not a file that failed to read; the value is not shown.
        (None, Some(path)) if litestream_vfs::keys::looks_like_a_key(path) && !std::path::Path::new(path).exists() => {
            Err(Failure::Usage(
                "-key-file takes the path of a file holding the key; to give the key itself use -key \
                 (the value given is no file and looks like a key: it is not shown here)"
                    .into(),
            ))
        }
        (None, Some(path)) => litestream_vfs::keys::read_key_file(std::path::Path::new(path), "-key")
            .map(Some)
            .map_err(|e| Failure::Failed(format!("-key-file: {e}"))),
        (None, None) => litestream_vfs::keys::key_from_env(&|k| std::env::var(k).ok()).map_err(Failure::Usage),
    }
}
