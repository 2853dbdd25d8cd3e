//! Every S3 behaviour replication's correctness rests on, against each real S3
//! implementation we have on loopback: moto (a Python mock) and SeaweedFS 4.48 (a
//! distributed store) in `make test`, Ceph RGW in `make torture` (`--ignored`).
//!
//! Each scenario is one function taking the server; `on_each_store!` makes one test per
//! store of it, named `<store>::<scenario>` (`cargo test --release --test s3_stores
//! seaweedfs` runs one store's). A store is shared by the tests of this binary, each in its
//! own bucket. The scenarios:
//!
//! - `storage.rs`: the store's operations (listing, ranged reads, metadata, conditional
//!   creates refused with 412), racing conditional creates with exactly one winner,
//!   listings past 1,000 objects, reading what the real `litestream` 0.5.17 wrote, and the
//!   fencing probe finding conditional creates honoured.
//! - `primary.rs`: a primary's replication restores equal with `litestream restore`, a
//!   second primary is fenced (at open, and by a conditional create it loses), racing
//!   primaries leave exactly one winner, a replica reads cold and follows.
//! - `history.rs`: point-in-time restores over a compacted history, retention deleting
//!   files (the server's own listing agrees).
//! - `multipart.rs`: files above the multipart threshold go up in parts at every level
//!   (the server's ETags say so), both restores equal the primary, no upload is left
//!   incomplete; through the fault proxy (moto only), a failing upload is retried until
//!   whole and its failed attempts leave no parts.
//! - `unfenced.rs` (moto behind the fault proxy only): a store that ignores
//!   `If-None-Match`, or lets racing creates all win, is found, and refused unless
//!   `fencing=off`.

#[path = "../common/mod.rs"]
mod common;
#[path = "../harness/mod.rs"]
mod harness;

mod history;
mod multipart;
mod primary;
mod storage;
mod unfenced;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use common::ceph::CephRgw;
use common::moto::Moto;
use common::s3::{S3Server, CREDS};
use common::seaweedfs::SeaweedFs;
use litestream_vfs::storage::{open_store_with_env, ReplicaStore, StoreOptions};

/// One scenario's place on one store: its own bucket, and a scratch directory.
pub struct Ctx<'a> {
    pub s3: &'a dyn S3Server,
    pub bucket: String,
    pub dir: tempfile::TempDir,
}

impl<'a> Ctx<'a> {
    /// Creates the scenario's bucket (its name, `_` as `-`).
    pub fn new(s3: &'a dyn S3Server, scenario: &str) -> Ctx<'a> {
        let bucket = scenario.replace('_', "-");
        s3.create_bucket(&bucket);
        Ctx {
            s3,
            bucket,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The `s3://` URL of `path` in the scenario's bucket.
    pub fn url(&self, path: &str) -> String {
        self.s3.url(&self.bucket, path)
    }

    /// Our store on `path`, with the test credentials and nothing from the process
    /// environment (which may carry AWS_CA_BUNDLE, AWS_PROFILE, ...).
    pub fn store(&self, path: &str) -> Arc<dyn ReplicaStore> {
        store_at(&self.url(path))
    }

    /// Every key in the bucket under `prefix`, as the server lists it.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.s3.list_keys(&self.bucket, prefix)
    }

    /// `s3.name()` and the server's log, for failure messages.
    pub fn log(&self) -> String {
        format!("{} log:\n{}", self.s3.name(), self.s3.log_tail())
    }
}

/// Our store at `url` with the test credentials only.
pub fn store_at(url: &str) -> Arc<dyn ReplicaStore> {
    let env: HashMap<&str, &str> = HashMap::from(CREDS);
    open_store_with_env(url, &StoreOptions::default(), &|k| env.get(k).map(|v| v.to_string())).unwrap()
}

/// A command with the test credentials and none of the machine's AWS settings.
pub fn with_creds(cmd: &mut Command) -> &mut Command {
    for var in [
        "AWS_CA_BUNDLE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_REGION",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(CREDS)
}

/// `litestream restore -o out [extra] url` with the real 0.5.17 and the test credentials.
pub fn litestream_restore(url: &str, out: &Path, extra: &[&str]) {
    harness::litestream_restore_env(url, out, extra, &CREDS).unwrap_or_else(|e| panic!("{extra:?}: {e}"));
}

/// `litestream restore` with the test credentials, its error returned.
pub fn litestream_restore_result(url: &str, out: &Path, extra: &[&str]) -> Result<String, String> {
    harness::litestream_restore_env(url, out, extra, &CREDS)
}

/// Our restore (`litestream_restore()` in the sqlite3 shell) of the latest state.
pub fn our_restore(url: &str, out: &Path) {
    harness::sql_restore(url, out, &CREDS);
}

/// The one moto of this binary, started on first use; it dies with the binary.
fn moto() -> &'static Moto {
    static SHARED: OnceLock<Moto> = OnceLock::new();
    SHARED.get_or_init(Moto::start_guarded)
}

/// One test per store for each scenario: `moto::<name>`, `seaweedfs::<name>`, and
/// `ceph_rgw::<name>`, which `make torture` runs (`--ignored`).
macro_rules! on_each_store {
    ($($module:ident::$name:ident),* $(,)?) => {
        mod moto {
            $(#[test] fn $name() { crate::$module::$name(crate::moto()); })*
        }
        mod seaweedfs {
            $(#[test] fn $name() { crate::$module::$name(crate::SeaweedFs::shared()); })*
        }
        mod ceph_rgw {
            $(#[test] #[ignore = "Ceph RGW: make torture"] fn $name() { crate::$module::$name(crate::CephRgw::shared()); })*
        }
    };
}

on_each_store!(
    storage::operations_behave_as_replication_needs,
    storage::racing_conditional_creates_have_one_winner,
    storage::listings_go_past_1000_objects,
    storage::reads_what_litestream_wrote,
    storage::the_fencing_probe_finds_conditional_creates_honoured,
    primary::replication_restores_equal_with_litestream,
    primary::a_second_primary_is_fenced,
    primary::racing_primaries_leave_one_winner,
    primary::a_replica_reads_cold_and_follows,
    history::point_in_time_restores_and_retention,
    multipart::large_files_go_up_in_parts,
);

/// The signer of the tests' raw requests reproduces the GET Object example of AWS's
/// SigV4 documentation for S3 (a ranged GET of examplebucket/test.txt).
#[test]
fn raw_requests_are_signed_as_aws_documents() {
    let signed = common::sigv4::sign(
        "GET",
        "examplebucket.s3.amazonaws.com",
        "/test.txt",
        &[],
        &[("range", "bytes=0-9")],
        b"",
        (
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "us-east-1",
        ),
        1_369_353_600, // 2013-05-24T00:00:00Z
    );
    assert_eq!(
        signed.authorization,
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
         SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
         Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    );
}
