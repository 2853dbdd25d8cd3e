//! A second recipient (`encrypt_to=`), on NATS: the store the S3 and `file://` tests of
//! `main.rs` do not cover, scanned both as objects and as the server's own files.

use super::common::nats::Nats;
use super::*;
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{open_store_with_env, StoreOptions};

#[test]
fn nats_with_a_second_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, stderr) = cli(&["keygen"], &[]);
    assert!(ok, "{stderr}");
    let mut lines = out.lines();
    let public = lines.next().unwrap().strip_prefix("public:  ").unwrap().to_string();
    let private = lines.next().unwrap().strip_prefix("private: ").unwrap().to_string();

    let mut nats = Nats::start();
    let url = nats.url("enc/app");
    let db = dir.path().join("app.db");
    python_workload(
        &db,
        &url,
        51,
        120,
        &[
            "sync_interval=100ms",
            &format!("encryption_key={KEY}"),
            &format!("encrypt_to={public}"),
        ],
    );
    let want = settled_dump(&db);
    let needles = secrets(&db);

    // Every object, read back through our store.
    let store = open_store_with_env(&url, &StoreOptions::default(), &|_| None).unwrap();
    let mut objects = Vec::new();
    for level in [9, 3, 2, 1, 0] {
        for f in block_on(store.list(level)).unwrap() {
            let bytes = block_on(store.get(f.level, f.min_txid, f.max_txid)).unwrap();
            objects.push((format!("level {level} {}-{}", f.min_txid, f.max_txid), bytes.to_vec()));
        }
    }
    assert_no_plaintext(&objects, &needles);

    // Both command-line views count two recipients.
    let (ok, out, stderr) = cli(&["ltx", &url], &[]);
    assert!(
        ok && out.contains("yes (2 recipients)") && !out.contains(" no\n"),
        "{out}{stderr}"
    );
    let (ok, out, stderr) = cli(&["info", &url], &[]);
    assert!(
        ok && out.contains("encrypted (LTX v4), to 2 recipient(s)"),
        "{out}{stderr}"
    );

    // The second key alone restores and reads the replica.
    let restored = dir.path().join("restored.db");
    let (ok, _, stderr) = cli(
        &["restore", "-key", &private, "-o", restored.to_str().unwrap(), &url],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(dump(&restored), want);
    let (_, out, stderr) = sqlite_output_env(
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&encryption_key={private}\n.dump",
            dir.path().join("view.db").display()
        ),
        &[],
    );
    assert_eq!(out, want, "{stderr}");

    // What the server wrote to its own disk (JetStream's message blocks) holds no plaintext
    // either; it holds at least the objects' bytes, so the scan is not of an empty store.
    nats.stop();
    let stored: Vec<(String, Vec<u8>)> = files_under(nats.dir())
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "log"))
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    let stored_bytes: usize = stored.iter().map(|(_, b)| b.len()).sum();
    let object_bytes: usize = objects.iter().map(|(_, b)| b.len()).sum();
    assert!(
        stored_bytes >= object_bytes,
        "{stored_bytes} bytes on disk, {object_bytes} in objects"
    );
    for (name, bytes) in &stored {
        for n in &needles {
            assert!(
                !bytes.windows(n.len()).any(|w| w == &n[..]),
                "{name} holds plaintext {:?}",
                String::from_utf8_lossy(n)
            );
        }
    }
}
