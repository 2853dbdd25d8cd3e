//! Does this replica location stop a second primary?
//!
//! Fencing rests on the store: every new TXID is uploaded with a conditional create (S3
//! `If-None-Match: *`), and a store that refuses the second create of a key tells the
//! slower of two primaries that the replica is not its own. Not every S3 implementation
//! does: Garage 2.5 ignores the header (the second PUT overwrites), OpenStack Swift's
//! s3api and s3s-fs refuse a second PUT that comes after the first but let several
//! simultaneous ones all succeed. On such a store two primaries would overwrite each
//! other's history without a word.
//!
//! So before a primary first writes to a location, it probes it once per process: it
//! creates a marker object under the replica path, creates it again (which must fail),
//! and lets a few conditional creates of a second marker race (exactly one may succeed);
//! then it deletes both. A race can only show a store racy when the requests overlap, so
//! that half of the probe finds stores that check and then write, not every such store.

use crate::vfs::sys::fork::ProcessMap;
use std::time::Duration;

use bytes::Bytes;

use super::error::{Error, Result};
use super::retry::{retry, RetryPolicy};
use super::store::ReplicaStore;

/// Simultaneous conditional creates in the race half of the probe.
const RACERS: usize = 4;

/// How long the whole probe may take before the location counts as unchecked.
const PROBE_LIMIT: Duration = Duration::from_secs(30);

/// What a store was found to do with conditional creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionalCreates {
    /// A second create of an existing key was refused, and exactly one of several
    /// simultaneous creates of a new key succeeded.
    Honoured,
    /// A second create of an existing key succeeded.
    Ignored,
    /// `won` of `racers` simultaneous creates of one new key succeeded.
    Racy { won: usize, racers: usize },
}

impl ConditionalCreates {
    /// The behaviour found, as an error message says it.
    fn describe(self) -> String {
        match self {
            ConditionalCreates::Honoured => "refuses a second conditional create of an object".into(),
            ConditionalCreates::Ignored => {
                "accepted a second conditional create (If-None-Match: *) of an object that exists: it \
                 ignores conditional writes"
                    .into()
            }
            ConditionalCreates::Racy { won, racers } => format!(
                "let {won} of {racers} simultaneous conditional creates (If-None-Match: *) of one new \
                 object succeed: it refuses a second create only when the first has finished"
            ),
        }
    }
}

/// Whether a primary is protected against a second primary on its replica, as
/// `litestream_status()` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fencing {
    /// The store was found to honour conditional creates.
    On,
    /// The store was found not to, and the user accepted that (`fencing=off`).
    Off,
    /// The probe could not finish (the store did not answer); the next open checks again.
    Unchecked,
}

impl Fencing {
    pub fn as_str(self) -> &'static str {
        match self {
            Fencing::On => "on",
            Fencing::Off => "off",
            Fencing::Unchecked => "unchecked",
        }
    }
}

/// Probes `store` (see the module's comment). Costs 2 + [`RACERS`] PUTs and 2 DELETEs.
pub async fn probe_conditional_creates(store: &dyn ReplicaStore) -> Result<ConditionalCreates> {
    let id = unique_id();
    let (first, second) = (
        format!(".litestream-fencing-probe-{id:016x}"),
        format!(".litestream-fencing-probe-{id:016x}-race"),
    );
    let found = probe_markers(store, &first, &second).await;
    // Retried: a marker left behind by a flaky network is litter in the user's bucket.
    let policy = RetryPolicy {
        max_attempts: Some(6),
        deadline: Some(Duration::from_secs(10)),
        ..RetryPolicy::default()
    };
    for name in [&first, &second] {
        if let Err(e) = retry(|| store.delete_marker(name), &policy).await {
            tracing::warn!(store = %store.describe(), marker = %name, "could not remove the fencing probe's marker: {e}");
        }
    }
    found
}

async fn probe_markers(store: &dyn ReplicaStore, first: &str, second: &str) -> Result<ConditionalCreates> {
    store
        .create_marker(first, Bytes::from_static(b"fencing probe: first"))
        .await?;
    match store
        .create_marker(first, Bytes::from_static(b"fencing probe: second"))
        .await
    {
        Ok(()) => return Ok(ConditionalCreates::Ignored),
        Err(e) if e.is_already_exists() => {}
        Err(e) => return Err(e),
    }
    let racers = (0..RACERS).map(|i| store.create_marker(second, Bytes::from(format!("fencing probe: racer {i}"))));
    let results = futures::future::join_all(racers).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    match won {
        1 => Ok(ConditionalCreates::Honoured),
        0 => Err(results
            .into_iter()
            .find_map(|r| r.err().filter(|e| !e.is_already_exists()))
            .unwrap_or_else(|| Error::config(format!("{}: every racing create was refused", store.describe())))),
        won => Ok(ConditionalCreates::Racy { won, racers: RACERS }),
    }
}

/// A name no other probe uses at the same time: time, process and a counter.
fn unique_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 40) ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_right(8)
}

/// What each location (`location` as given to [`check_fencing`]) was found to do, so a
/// process probes a location once: only answers are kept, never failures to probe.
/// Per process (`vfs::sys::fork`): a child probes for itself.
static FOUND: ProcessMap<String, ConditionalCreates> = ProcessMap::new();

/// Checks, once per process and `location` (a key naming the store and path, e.g. the
/// replica URL and endpoint), that `store` stops a second primary. A store found not to is
/// an error that names what it did, unless `allow_unfenced` (`fencing=off`): then a
/// warning, and [`Fencing::Off`]. A probe that cannot finish is a warning and
/// [`Fencing::Unchecked`]: an unreachable store must not keep a database from opening.
pub async fn check_fencing(
    store: &dyn ReplicaStore,
    location: &str,
    allow_unfenced: bool,
) -> std::result::Result<Fencing, String> {
    let known = FOUND.lock().get(location).copied();
    let found = match known {
        Some(found) => found,
        None => match tokio::time::timeout(PROBE_LIMIT, probe_conditional_creates(store)).await {
            Ok(Ok(found)) => {
                FOUND.lock().insert(location.to_string(), found);
                found
            }
            Ok(Err(e)) => {
                tracing::warn!(store = %store.describe(), "could not check that the store refuses a second conditional create (fencing of a second primary); checking again at the next open: {e}");
                return Ok(Fencing::Unchecked);
            }
            Err(_) => {
                tracing::warn!(store = %store.describe(), "checking that the store refuses a second conditional create took over {PROBE_LIMIT:?}; checking again at the next open");
                return Ok(Fencing::Unchecked);
            }
        },
    };
    match found {
        ConditionalCreates::Honoured => Ok(Fencing::On),
        unfenced if allow_unfenced => {
            tracing::warn!(store = %store.describe(), "the store {}; fencing=off: a second primary writing to this replica would not be detected", unfenced.describe());
            Ok(Fencing::Off)
        }
        unfenced => Err(format!(
            "replica {}: the store {}, so a second primary writing to this replica would not be stopped \
             and could overwrite its history; refusing to replicate. Use a store that honours conditional \
             writes, or open with fencing=off to replicate without that protection",
            store.describe(),
            unfenced.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{open_store, open_store_with_env, StoreOptions};

    /// An S3 store on a loopback port nothing listens on: every request fails.
    fn unreachable() -> std::sync::Arc<dyn ReplicaStore> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("s3://bucket/db?endpoint=http://127.0.0.1:{port}&region=us-east-1");
        // Credentials of any name; the request budget and the multipart sizes are left
        // to their defaults.
        let env = |k: &str| {
            (k.starts_with("LITESTREAM_") && k != "LITESTREAM_REQUESTS_PER_SECOND" && !k.contains("MULTIPART"))
                .then(|| "x".to_string())
        };
        open_store_with_env(&url, &StoreOptions::default(), &env).unwrap()
    }

    #[tokio::test]
    async fn a_store_with_atomic_creates_is_fenced_once_per_location() {
        let memory = open_store("memory://fencing-probe/db", &StoreOptions::default()).unwrap();
        assert_eq!(
            probe_conditional_creates(memory.as_ref()).await.unwrap(),
            ConditionalCreates::Honoured
        );
        assert_eq!(check_fencing(memory.as_ref(), "loc-a", false).await, Ok(Fencing::On));
        // Known now: no request is made for this location again (this store answers none).
        assert_eq!(
            check_fencing(unreachable().as_ref(), "loc-a", false).await,
            Ok(Fencing::On)
        );
        // An unanswered probe is not an answer: unchecked, and not remembered.
        assert_eq!(
            check_fencing(unreachable().as_ref(), "loc-b", false).await,
            Ok(Fencing::Unchecked)
        );
        assert!(FOUND.lock().get("loc-b").is_none());
    }

    #[tokio::test]
    async fn the_probe_creates_a_private_databases_file_replica_directory_private() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("replica");
        let options = StoreOptions {
            file_modes: Some(crate::file_modes::FileModes::bits(0o600)),
            ..StoreOptions::default()
        };
        let store = open_store(&format!("file://{}", replica.display()), &options).unwrap();
        assert_eq!(
            probe_conditional_creates(store.as_ref()).await.unwrap(),
            ConditionalCreates::Honoured
        );
        assert_eq!(crate::file_modes::permission_bits(&replica).unwrap(), 0o700);
        assert_eq!(std::fs::read_dir(&replica).unwrap().count(), 0, "markers removed");
    }

    #[test]
    fn every_finding_names_what_the_store_did() {
        assert!(ConditionalCreates::Ignored
            .describe()
            .contains("ignores conditional writes"));
        assert!(ConditionalCreates::Racy { won: 3, racers: 4 }
            .describe()
            .contains("3 of 4 simultaneous"));
    }
}
