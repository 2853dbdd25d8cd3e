//! Replica storage: LTX files in object storage, in Litestream 0.5's exact layout.
//!
//! The rest of the crate speaks only [`ReplicaStore`] (held as `Arc<dyn ReplicaStore>`),
//! in terms of LTX files — (level, min TXID, max TXID) — never raw keys. [`open_store`]
//! turns a replica URL into one. Backends: `object_store` for S3, GCS, Azure, local files and
//! memory; NATS JetStream object stores through their own implementation (`nats/`).
//!
//! Key layout (see `layout.rs`): `<path>/ltx/<level>/<name>` everywhere except S3, which uses
//! `<path>/<level %04x>/<name>`; names are `%016x-%016x.ltx`.

mod azure;
mod compare;
mod error;
mod fencing;
mod gcs;
mod hedge;
mod http;
mod layout;
mod local;
mod local_durable;
mod location;
mod metered;
mod multipart;
mod name;
mod nats;
mod object;
#[cfg(test)]
mod object_parts_tests;
mod open;
mod options;
mod pacing;
mod retry;
mod s3;
mod silence;
mod stoppable;
mod store;
mod target;
mod timestamp;

pub use azure::AZURE_TIMESTAMP_METADATA;
pub use compare::{compare, stored_equals, Found};
pub use error::{redact_url, Error, Result};
pub use fencing::{check_fencing, probe_conditional_creates, ConditionalCreates, Fencing};
pub use gcs::GCS_TIMESTAMP_METADATA;
pub use hedge::Latencies;
pub use layout::{Layout, LevelStyle};
pub use location::location_key;
pub use metered::{operation_stats, OperationStats, DURATION_BUCKETS};
pub use multipart::{Multipart, DEFAULT_PART_SIZE, DEFAULT_THRESHOLD};
pub use name::{format_name, parse_name};
pub use nats::{NatsReplica, NATS_TIMESTAMP_HEADER};
pub use object::ObjectReplica;
pub use open::{open_store, open_store_with_env};
pub use options::{NatsOptions, StoreOptions};
pub use pacing::{budgets_json, requests_per_second, DEFAULT_RATE};
pub use retry::{hedged, retry, while_application_waits, within, RetryPolicy, APPLICATION_WAIT};
pub use s3::S3_TIMESTAMP_METADATA;
pub use silence::silent_requests;
pub use stoppable::{Stop, Stoppable};
pub use store::{LtxObject, ReplicaStore};
pub use target::EnvFn;
pub use timestamp::{format_rfc3339_nano, parse_rfc3339_ms};
