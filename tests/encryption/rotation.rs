//! A key rotation that skipped `rekey`: open with key A, then with A and `encrypt_to=B`,
//! then with B alone. The third open was accepted (its check read only the newest file,
//! which B opened), after which neither key restored the replica and compaction failed
//! at every pass (found by a tester). Now the open refuses, naming the files and the
//! remedy, and after the `rekey` it names, the rotation completes and B restores all.

use super::*;

/// Opens `db` as a primary of `url` with `params`, commits `row`, waits for the upload.
/// Compaction off: a level-1 window boundary passing between the opens would merge the
/// files to A alone with the next ones into a level-1 file to A and B, and the open with
/// B alone would then find a plan B opens.
fn commit(db: &Path, url: &str, params: &str, row: &str) -> (String, String) {
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&compaction=off{params}\n\
             CREATE TABLE IF NOT EXISTS t(v TEXT);\nINSERT INTO t VALUES ('{row}');\n\
             SELECT litestream_sync(10000) > 0;",
            db.display()
        ),
        &[],
    );
    (out, stderr)
}

#[test]
fn a_rotation_that_skipped_rekey_is_refused_at_open_until_the_files_are_rekeyed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let public = |k: &str| PrivateKey::from_hex(k).unwrap().public_key().to_hex();
    let (a, b) = (KEY, OTHER_KEY);
    let (a_pub, b_pub) = (public(a), public(b));

    assert_eq!(commit(&db, &url, &format!("&encryption_key={a}"), "one").0.trim(), "1");
    let both = format!("&encryption_key={a}&encrypt_to={b_pub}");
    assert_eq!(commit(&db, &url, &both, "two").0.trim(), "1");

    // B alone: the files before the second open are to A only.
    let (out, stderr) = commit(&db, &url, &format!("&encryption_key={b}"), "three");
    assert!(
        out.trim().is_empty(),
        "the open with B alone was accepted: {out}{stderr}"
    );
    assert!(
        stderr.contains("cannot open")
            && stderr.contains(&b_pub)
            && stderr.contains("encrypted to 1 other key")
            && stderr.contains("litestream-vfs rekey")
            && stderr.contains("Rotating keys"),
        "{stderr}"
    );
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.starts_with("Error: unable to open"))
        .collect();
    assert!(
        ours.iter().all(|l| !l.contains(a) && !l.contains(b)),
        "a private key in a message: {stderr}"
    );

    // The remedy the message names, then the rotation goes on and B restores everything.
    let (ok, _, stderr) = cli(
        &["rekey", "-key", a, "-encrypt-to", &format!("{a_pub},{b_pub}"), &url],
        &[],
    );
    assert!(ok, "{stderr}");
    let (out, stderr) = commit(&db, &url, &format!("&encryption_key={b}"), "three");
    assert_eq!(out.trim(), "1", "{stderr}");
    assert_key_restores(dir.path(), &url, b, "one,two,three");
}

/// The CLI restores `url` with `key` into `dir`, and the rows of `t` are `rows`.
fn assert_key_restores(dir: &std::path::Path, url: &str, key: &str, rows: &str) {
    let restored = dir.join(format!("restored-{}.db", &key[..4]));
    let (ok, _, stderr) = cli(&["restore", "-key", key, "-o", restored.to_str().unwrap(), url], &[]);
    assert!(ok, "{stderr}");
    assert_eq!(plain_sqlite(&restored, "SELECT group_concat(v) FROM t;").trim(), rows);
}

/// The repair of a replica an earlier build left (files to A alone and to B alone):
/// `rekey` with A rekeys what A opens and names the rest instead of stopping at the
/// first, then `rekey` with B finishes; both keys restore.
#[test]
fn rekey_skips_and_names_the_files_its_key_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let public = |k: &str| PrivateKey::from_hex(k).unwrap().public_key().to_hex();
    let (a, b) = (KEY, OTHER_KEY);
    let (a_pub, b_pub) = (public(a), public(b));
    for row in ["one", "two", "three"] {
        assert_eq!(commit(&db, &url, &format!("&encryption_key={a}"), row).0.trim(), "1");
    }
    // The newest level-0 file to B alone, as a primary switched to B wrote them.
    let newest = level0(&replica).pop().unwrap();
    let moved = dir.path().join("to-b.ltx");
    let (ok, _, stderr) = cli(
        &[
            "rekey",
            "-key",
            a,
            "-encrypt-to",
            &b_pub,
            "-o",
            moved.to_str().unwrap(),
            newest.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    std::fs::rename(&moved, &newest).unwrap();

    let both = format!("{a_pub},{b_pub}");
    let (ok, _, stderr) = cli(&["rekey", "-key", a, "-encrypt-to", &both, &url], &[]);
    let name = newest.file_stem().unwrap().to_str().unwrap().to_string();
    assert!(
        !ok && stderr.contains("1 file(s) are not encrypted to the key given") && stderr.contains(&name),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&["rekey", "-key", b, "-encrypt-to", &both, &url], &[]);
    assert!(ok, "{stderr}");
    for key in [a, b] {
        assert_key_restores(dir.path(), &url, key, "one,two,three");
    }
}

/// A file the primary's key does not open that the open did not see (here: swapped in
/// between two opens of one process, whose second open relies on the first one's check):
/// compaction fails on it at every pass, and that is the primary's status `error`, not
/// only a count in `compaction.errors`.
#[test]
fn compaction_that_cannot_open_a_file_is_the_primarys_status_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let b_pub = PrivateKey::from_hex(OTHER_KEY).unwrap().public_key().to_hex();
    let open = |extra: &str| {
        format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&encryption_key={KEY}{extra}",
            db.display()
        )
    };
    let mut shell = harness::shell::LiveShell::start(dir.path(), "primary", &open("&compaction=off"));
    shell.run("CREATE TABLE t(v TEXT);");
    for row in ["one", "two", "three"] {
        shell.run(&format!("INSERT INTO t VALUES ('{row}');"));
    }
    assert_eq!(shell.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    shell.run(".open :memory:");
    let newest = level0(&replica).pop().unwrap();
    let moved = dir.path().join("to-b.ltx");
    let (ok, _, stderr) = cli(
        &[
            "rekey",
            "-key",
            KEY,
            "-encrypt-to",
            &b_pub,
            "-o",
            moved.to_str().unwrap(),
            newest.to_str().unwrap(),
        ],
        &[],
    );
    assert!(ok, "{stderr}");
    std::fs::rename(&moved, &newest).unwrap();

    shell.run(&open("&levels=1s"));
    let mut waited = 0;
    let error = loop {
        let error = shell.run("SELECT litestream_status() ->> '$.error';");
        if !error.trim().is_empty() {
            break error;
        }
        waited += 1;
        assert!(waited < 100, "no status error:\n{}", shell.stderr());
        sleep(Duration::from_millis(100));
    };
    assert!(
        error.contains("compaction cannot open the replica's files with this database's key")
            && error.contains("rekey"),
        "{error}"
    );
    assert!(!error.contains(KEY) && !error.contains(OTHER_KEY), "{error}");
}

/// `rekey` to other recipients run while the primary writes (against the documented
/// order): every stored file went to B, and the primary went on writing files to A
/// alone, so no one key restored the replica while the status stayed clean (compaction
/// merges its local copies and never opened the rewritten files; an operations tester,
/// 2 of 2). Now the census after compaction finds that A does not open the file the
/// newest state's restore starts from: that is the status `error` and the log's, and a
/// snapshot to A follows, from which A restores the newest state.
#[test]
fn a_rekey_while_the_primary_writes_is_its_status_error_and_its_key_still_restores_the_newest_state() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let b_pub = PrivateKey::from_hex(OTHER_KEY).unwrap().public_key().to_hex();
    let mut shell = harness::shell::LiveShell::start(
        dir.path(),
        "primary",
        &format!(
            ".open file:{}?vfs=litestream&replica={url}&sync_interval=50ms&encryption_key={KEY}&levels=1s",
            db.display()
        ),
    );
    shell.run("CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('one');");
    assert_eq!(shell.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    // A level-1 file from TXID 1 on, where a restore starts, exists before the rekey.
    for _ in 0..100 {
        if shell
            .run("SELECT litestream_status() ->> '$.compaction.level1.min_txid';")
            .trim()
            == "1"
        {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    let (ok, _, stderr) = cli(&["rekey", "-key", KEY, "-encrypt-to", &b_pub, &url], &[]);
    assert!(ok, "{stderr}");
    // The census rechecks the base every 30 s (`primary/encryption.rs`).
    let mut seen_error = None;
    for n in 0..450 {
        shell.run(&format!("INSERT INTO t VALUES ('row{n}');"));
        let error = shell.run("SELECT litestream_status() ->> '$.error';");
        if error.contains("not to this database's key") {
            seen_error = Some(error);
            break;
        }
        sleep(Duration::from_millis(100));
    }
    let error = seen_error.unwrap_or_else(|| panic!("no status error:\n{}", shell.stderr()));
    assert!(error.contains("Rotating keys") && !error.contains(KEY), "{error}");
    // The snapshot to A lands; A restores the newest state.
    shell.run("INSERT INTO t VALUES ('last');");
    for _ in 0..100 {
        if shell.run("SELECT litestream_status() ->> '$.error';").trim().is_empty() {
            break;
        }
        sleep(Duration::from_millis(100));
    }
    assert_eq!(shell.run("SELECT litestream_sync(10000) > 0;").trim(), "1");
    let expected = shell.run("SELECT group_concat(v) FROM t;");
    assert_key_restores(dir.path(), &url, KEY, expected.trim());
}

/// `rekey -encrypt-to` given the private key itself (the same as `-key`): any 32 bytes are
/// an X25519 public key, so it was accepted, exit 0, and afterwards no key opened the
/// replica (an operations tester, t5). Refused now as a wrong command line, from every
/// source of the key, without showing it; an `-encrypt-to` that leaves out the key given
/// is a warning (a rotation's last step), not a refusal.
#[test]
fn rekey_refuses_the_private_key_as_a_recipient_and_warns_when_the_key_given_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    let public = |k: &str| PrivateKey::from_hex(k).unwrap().public_key().to_hex();
    let (a, b) = (KEY, OTHER_KEY);
    let (a_pub, b_pub) = (public(a), public(b));
    assert_eq!(commit(&db, &url, &format!("&encryption_key={a}"), "one").0.trim(), "1");
    let status = |args: &[&str], envs: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_litestream-vfs"));
        for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("LITESTREAM_")) {
            cmd.env_remove(k);
        }
        let out = cmd.args(args).envs(envs.iter().copied()).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let a_file = key_file(dir.path(), a, 0o600);
    let a_file = a_file.to_str().unwrap();
    let a_upper = a.to_uppercase();
    for (args, envs, source) in [
        (vec!["-key", a, "-encrypt-to", a], vec![], "-key"),
        (vec!["-key-file", a_file, "-encrypt-to", a], vec![], "-key-file"),
        (
            vec!["-encrypt-to", &a_upper],
            vec![("LITESTREAM_ENCRYPTION_KEY", a)],
            "LITESTREAM_ENCRYPTION_KEY",
        ),
    ] {
        let list = format!("{b_pub},{a}");
        for to in [None, Some(list.as_str())] {
            let mut args = args.clone();
            if let Some(to) = to {
                *args.last_mut().unwrap() = to;
            }
            let (code, stderr) = status(&[&["rekey"][..], &args, &[&url]].concat(), &envs);
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains("is the private key given with")
                    && stderr.contains(source)
                    && stderr.contains("keygen")
                    && stderr.contains(&a_pub),
                "{args:?}: {stderr}"
            );
            assert!(to.is_none() || stderr.contains("public key 2 of the list"), "{stderr}");
            assert!(
                !stderr.to_lowercase().contains(&a[..32]),
                "the private key was shown: {stderr}"
            );
        }
    }
    // Nothing was rewritten: A still restores.
    assert_key_restores(dir.path(), &url, a, "one");

    // Keeping the key given: no warning. Dropping it: a warning, and the rekey goes on.
    let (code, stderr) = status(
        &["rekey", "-key", a, "-encrypt-to", &format!("{a_pub},{b_pub}"), &url],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let (code, stderr) = status(&["rekey", "-key", a, "-encrypt-to", &b_pub, &url], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning: -encrypt-to does not include the public key of the key given with -key")
            && stderr.contains(&a_pub)
            && stderr.contains("no longer opens"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(a) && !stderr.contains(b),
        "a private key was shown: {stderr}"
    );
    assert_key_restores(dir.path(), &url, b, "one");
}
