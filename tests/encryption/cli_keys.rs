//! Keys on the command line as an operations tester gave them: `ltx -key` on a replica
//! (ignored, exit 0, even a wrong key: refused now as `info` refuses it), and key files
//! saved from `keygen` as it prints (refused as "not hexadecimal": read now by their
//! `private:` line) or that are a directory (reported as a world-readable file).

use super::*;

/// The tool's exit code, stdout and stderr.
fn cli_code(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LITESTREAM_")) {
        cmd.env_remove(k);
    }
    let out = cmd.args(args).envs(envs.iter().copied()).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A replica of one commit encrypted to `KEY`; returns (replica dir, URL).
fn encrypted_replica(dir: &Path) -> (PathBuf, String) {
    let replica = dir.join("replica");
    let url = format!("file://{}", replica.display());
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&encryption_key={KEY}\n\
             CREATE TABLE t(v TEXT);\nINSERT INTO t VALUES ('one');\n\
             SELECT litestream_sync(10000) > 0;",
            dir.join("app.db").display()
        ),
        &[],
    );
    assert_eq!(out.trim(), "1", "{stderr}");
    (replica, url)
}

#[test]
fn ltx_of_a_replica_refuses_a_key_as_info_does() {
    let dir = tempfile::tempdir().unwrap();
    let (replica, url) = encrypted_replica(dir.path());
    let wrong = key_file(dir.path(), OTHER_KEY, 0o600);
    for args in [
        vec!["ltx", "-key", OTHER_KEY, &url],
        vec!["ltx", "-key", KEY, &url],
        vec!["ltx", "-key-file", wrong.to_str().unwrap(), &url],
        vec!["ltx", "-key", OTHER_KEY, replica.to_str().unwrap()],
    ] {
        let (code, out, stderr) = cli_code(&args, &[]);
        assert_eq!(code, Some(2), "{args:?}: {out}{stderr}");
        assert!(
            stderr.contains("ltx takes no key for a replica URL") && stderr.contains("verify"),
            "{stderr}"
        );
        assert!(!stderr.contains(OTHER_KEY) && !stderr.contains(KEY), "{stderr}");
    }
    // The listing itself, and a key in the environment (as info takes it), still work.
    let (code, out, stderr) = cli_code(&["ltx", &url], &[("LITESTREAM_ENCRYPTION_KEY", OTHER_KEY)]);
    assert_eq!(code, Some(0), "{out}{stderr}");
    assert!(out.contains("yes (1 recipient)"), "{out}");
    // A key with a local file among the arguments is for that file.
    let file = level0(&replica).remove(0);
    let (code, out, stderr) = cli_code(&["ltx", "-key", KEY, &url, file.to_str().unwrap()], &[]);
    assert_eq!(code, Some(0), "{out}{stderr}");
    assert!(out.contains("every page and the index authenticated"), "{out}");
}

#[test]
fn a_key_file_saved_from_keygen_restores_and_a_directory_is_named_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (_, url) = encrypted_replica(dir.path());
    let public = PrivateKey::from_hex(KEY).unwrap().public_key().to_hex();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    };
    // As `litestream-vfs keygen > key` saves it.
    let saved = write("keygen.key", &format!("public:  {public}\nprivate: {KEY}\n"));
    let out_db = dir.path().join("restored.db");
    let (code, out, stderr) = cli_code(
        &[
            "restore",
            "-key-file",
            saved.to_str().unwrap(),
            "-o",
            out_db.to_str().unwrap(),
            &url,
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{out}{stderr}");
    assert_eq!(plain_sqlite(&out_db, "SELECT v FROM t;").trim(), "one");
    let (code, _, stderr) = cli_code(
        &["verify", &url],
        &[("LITESTREAM_ENCRYPTION_KEY_FILE", saved.to_str().unwrap())],
    );
    assert_eq!(code, Some(0), "{stderr}");

    // Its public line alone: refused as a public key, not as "not hexadecimal".
    let public_only = write("public.key", &format!("public:  {public}\n"));
    let (code, _, stderr) = cli_code(&["verify", "-key-file", public_only.to_str().unwrap(), &url], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("holds a public key") && !stderr.contains("not hexadecimal"),
        "{stderr}"
    );

    // A directory: named a directory, not a file readable by every user to chmod 600.
    let sub = dir.path().join("secrets");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, stderr) = cli_code(&["verify", "-key-file", sub.to_str().unwrap(), &url], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("is a directory") && !stderr.contains("chmod"),
        "{stderr}"
    );
}

/// `rekey` of a location with no files (a mistyped prefix) fails as `info` does, instead
/// of "0 files rewrapped" and exit 0; a key listed twice in `-encrypt-to` is one
/// recipient, as `encrypt_to=` takes it (a keys tester).
#[test]
fn rekey_refuses_an_empty_location_and_counts_a_repeated_recipient_once() {
    let dir = tempfile::tempdir().unwrap();
    let public = |k: &str| PrivateKey::from_hex(k).unwrap().public_key().to_hex();
    let to = format!("{},{},{}", public(KEY), public(OTHER_KEY), public(KEY));
    let empty = format!("file://{}", dir.path().join("mistyped").display());
    let (code, _, stderr) = cli_code(&["rekey", "-key", KEY, "-encrypt-to", &to, &empty], &[]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("holds no LTX files"), "{stderr}");

    let (replica, url) = encrypted_replica(dir.path());
    let (code, _, stderr) = cli_code(&["rekey", "-key", KEY, "-encrypt-to", &to, &url], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    let files: Vec<PathBuf> = files_under(&replica)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "ltx"))
        .collect();
    assert!(!files.is_empty());
    for file in files {
        let header = Header::decode(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(header.recipients, 2, "{}", file.display());
    }
}
