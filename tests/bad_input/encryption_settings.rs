//! Encryption settings given wrong, found by a tester: each refused at open, with a
//! message that says what to do and never holds a private key.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `an_empty_encryption_setting_is_refused_not_read_as_no_encryption` | `encryption_key=`, `encryption_key_file=`, `encrypt_to=`, `LITESTREAM_ENCRYPTION_KEY=""`, `LITESTREAM_ENCRYPTION_KEY_FILE=""`, an empty `encryption_key=` over a valid `LITESTREAM_ENCRYPTION_KEY` | open refused, names the setting and says it is empty; nothing stored in the replica (it was written in plaintext) |
//! | `a_key_given_as_a_key_file_is_refused_without_repeating_it` | the hex key as `encryption_key_file=`, `LITESTREAM_ENCRYPTION_KEY_FILE`, `restore -key-file`, `rekey -key-file` | refused (the command line: exit status 2), says it looks like a key and where a key goes; the key is in no message, log line or `failed_opens` |

use super::*;

const KEY: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
const PUB: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";

#[test]
fn an_empty_encryption_setting_is_refused_not_read_as_no_encryption() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let replica = dir.path().join("replica");
    let url = file_url(&replica);
    let key_file_empty = format!("replica={url}&encryption_key_file=");
    /// URI parameters, environment, what the refusal says.
    type Case<'a> = (String, Vec<(&'a str, &'a str)>, &'a str);
    let cases: [Case; 6] = [
        (
            format!("replica={url}&encryption_key="),
            vec![],
            "encryption_key is empty",
        ),
        (key_file_empty, vec![], "encryption_key_file is empty"),
        (
            format!("replica={url}&encryption_key={KEY}&encrypt_to="),
            vec![],
            "encrypt_to is empty",
        ),
        (
            format!("replica={url}"),
            vec![("LITESTREAM_ENCRYPTION_KEY", "")],
            "LITESTREAM_ENCRYPTION_KEY is empty",
        ),
        (
            format!("replica={url}"),
            vec![("LITESTREAM_ENCRYPTION_KEY_FILE", "")],
            "LITESTREAM_ENCRYPTION_KEY_FILE is empty",
        ),
        // The URI's empty value hid the environment's valid key: plaintext.
        (
            format!("replica={url}&encryption_key="),
            vec![("LITESTREAM_ENCRYPTION_KEY", KEY)],
            "encryption_key is empty",
        ),
    ];
    for (params, envs, says) in cases {
        assert_open_refused(&db, &params, &envs, &[says, "leave"]);
        assert!(!replica.exists(), "{params} {envs:?}: something was stored");
    }
    assert_rows(&db, ROWS);
}

#[test]
fn a_key_given_as_a_key_file_is_refused_without_repeating_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = file_url(&dir.path().join("replica"));
    let failed = "SELECT value ->> '$.error' FROM json_each(litestream_status(), '$.failed_opens');";

    let (stdout, stderr) = shell(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&encryption_key_file={KEY}\n.open :memory:\n{failed}",
            db.display()
        ),
        &[("LITESTREAM_LOG_LEVEL", "info")],
    );
    assert!(
        stdout.contains("encryption_key_file: ")
            && stdout.contains("looks like a key")
            && stdout.contains("encryption_key,"),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains(KEY), "the key in failed_opens: {stdout}");
    // SQLite's shell repeats the URI it could not open; nothing of ours holds the key.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Error: unable to open"))
        .collect();
    assert!(ours.iter().all(|l| !l.contains(KEY)), "the key in a log line: {stderr}");

    let stderr = assert_open_refused(
        &db,
        &format!("replica={url}"),
        &[
            ("LITESTREAM_ENCRYPTION_KEY_FILE", KEY),
            ("LITESTREAM_LOG_LEVEL", "info"),
        ],
        &["LITESTREAM_ENCRYPTION_KEY_FILE: ", "with LITESTREAM_ENCRYPTION_KEY,"],
    );
    assert!(!stderr.contains(KEY), "{stderr}");
    assert_rows(&db, ROWS);

    // The command line: restore and rekey.
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
            .args(args)
            .env_remove("LITESTREAM_ENCRYPTION_KEY")
            .env_remove("LITESTREAM_ENCRYPTION_KEY_FILE")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let restored = dir.path().join("restored.db");
    for args in [
        vec!["restore", "-key-file", KEY, "-o", restored.to_str().unwrap(), &url],
        vec!["rekey", "-key-file", KEY, "-encrypt-to", PUB, &url],
    ] {
        let (code, stderr) = cli(&args);
        // A wrong command line: exit status 2, as docs/cli.md says (it was 1, a tester).
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("-key-file takes the path of a file holding the key; to give the key itself use -key")
                && stderr.contains("looks like a key"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains(&KEY[..32]), "{args:?}: the key in {stderr}");
    }
}
