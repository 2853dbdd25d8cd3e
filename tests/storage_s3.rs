//! ReplicaStore's errors against a real S3 API (moto_server). What every S3 implementation
//! must do for replication (operations, conditional creates, listings, Litestream's files)
//! is in `s3_stores`, run on moto, SeaweedFS and Ceph RGW.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::moto::Moto;
use common::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use litestream_vfs::storage::{open_store_with_env, ReplicaStore, StoreOptions};

/// Our store on `url`, with moto's credentials and nothing from the process environment
/// (which may carry AWS_CA_BUNDLE, AWS_PROFILE, ...).
fn open(url: &str) -> Arc<dyn ReplicaStore> {
    let env: HashMap<&str, &str> = HashMap::from([
        ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
    ]);
    open_store_with_env(url, &StoreOptions::default(), &|k| env.get(k).map(|v| v.to_string())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_errors_are_typed() {
    let moto = Moto::start();
    // No such bucket: a clear, non-transient error that names the store.
    let store = open(&moto.url("missing-bucket", "db"));
    let err = store.get(0, 1, 1).await.unwrap_err();
    assert!(!err.is_transient(), "{err:?}");
    let err = store.list(0).await.unwrap_err();
    assert!(err.to_string().contains("s3://missing-bucket/db"), "{err}");
    assert!(!err.to_string().contains(SECRET_ACCESS_KEY), "{err}");

    // Nothing listening: transient.
    let port = common::server::free_port();
    let url = format!("s3://b/db?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let err = open(&url).list(0).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}
