//! The extension as a primary replicating to a real Azure Blob API (Azurite on loopback):
//! a randomized workload restores to exactly the primary's database, both with our own
//! restore and with `litestream restore` 0.5.17.

mod common;
mod harness;

use std::collections::HashMap;
use std::process::Command;

use common::azurite::{Azurite, ACCOUNT, ACCOUNT_KEY};
use harness::*;
use litestream_vfs::storage::{open_store_with_env, StoreOptions};

#[test]
fn randomized_workload_replicated_to_azure_restores_equal() {
    let az = Azurite::start();
    az.create_container("primary");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    // Litestream's URL form, account in the user part; the endpoint goes in as a top-level
    // URI parameter (`&endpoint=...` after `replica=`), which the extension accepts as a
    // storage option.
    let url = format!("abs://{ACCOUNT}@primary/app");
    let endpoint = format!("endpoint={}", az.endpoint);
    for seed in 1..=3 {
        let mut cmd = workload_command(&db, &url, seed, 150, &["sync_interval=100ms", &endpoint]);
        cmd.env("LITESTREAM_AZURE_ACCOUNT_KEY", ACCOUNT_KEY);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "workload seed {seed}: {}\nazurite log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            az.log_tail()
        );
    }

    // Litestream's abs layout: <path>/ltx/<level>/<min>-<max>.ltx.
    let keys = az.list_blobs("primary", "app/");
    assert!(
        keys.iter().any(|k| k.starts_with("app/ltx/0/0000000000000001-")),
        "{keys:?}"
    );
    assert!(
        keys.iter().all(|k| k.starts_with("app/ltx/") && k.ends_with(".ltx")),
        "{keys:?}"
    );
    let mut l0: Vec<(u64, u64)> = keys
        .iter()
        .filter_map(|k| k.strip_prefix("app/ltx/0/")?.strip_suffix(".ltx")?.split_once('-'))
        .map(|(a, b)| (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap()))
        .collect();
    l0.sort();
    assert_contiguous(&l0);
    // Every blob carries the header timestamp under Litestream's abs metadata key.
    for k in &keys {
        let head = az.raw("HEAD", &format!("/{ACCOUNT}/primary/{k}"), &[], b"");
        assert!(
            head.header("x-ms-meta-litestreamtimestamp").is_some(),
            "{k}: {:?}",
            head.headers
        );
    }

    // Our restore, through the same URL form with the endpoint in the URL this time.
    let env: HashMap<&str, &str> = HashMap::from([("LITESTREAM_AZURE_ACCOUNT_KEY", ACCOUNT_KEY)]);
    let store = open_store_with_env(&az.url("primary", "app"), &StoreOptions::default(), &|k| {
        env.get(k).map(|v| v.to_string())
    })
    .unwrap();
    let ours = dir.path().join("restored-ours.db");
    let pos = litestream_vfs::restore::restore_latest(&store, &ours).unwrap();
    assert_eq!(pos.txid, l0.last().unwrap().1, "restored to the last uploaded TXID");
    assert_eq!(integrity(&ours), "ok");
    assert_eq!(dump(&ours), dump(&db));

    // The real Litestream 0.5.17 restores the same replica. It reads the Azure endpoint only
    // from a config file's `endpoint:` (an `abs://` URL's query is ignored, so a bare URL
    // would go to https://devstoreaccount1.blob.core.windows.net), and the key from
    // LITESTREAM_AZURE_ACCOUNT_KEY.
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: abs\n      account-name: {ACCOUNT}\n      \
             bucket: primary\n      path: app\n      endpoint: {}\n",
            db.display(),
            az.endpoint
        ),
    )
    .unwrap();
    let theirs = dir.path().join("restored-litestream.db");
    let restore = Command::new(litestream_bin())
        .env("LITESTREAM_AZURE_ACCOUNT_KEY", ACCOUNT_KEY)
        .args(["restore", "-config"])
        .arg(&config)
        .arg("-o")
        .arg(&theirs)
        .arg(&db)
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "litestream restore: {}{}",
        String::from_utf8_lossy(&restore.stdout),
        String::from_utf8_lossy(&restore.stderr)
    );
    assert_eq!(integrity(&theirs), "ok");
    assert_eq!(dump(&theirs), dump(&db));
}
