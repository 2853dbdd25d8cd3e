//! HTTP client settings shared by the cloud backends.

use std::time::Duration;

use object_store::client::{HttpClient, HttpConnector, ReqwestConnector};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::silence::{silence_limit, Watchful};
use crate::vfs::sys::fork::ProcessMutex;

/// Connection setup longer than this means the endpoint is unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whole-request limit. object_store's default (30 s) is too short to move a multi-GB
/// snapshot; a store that goes silent ends a request much sooner (`silence.rs`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// HTTP client options: `allow_http` for `http://` endpoints (local test servers, MinIO),
/// `skip_verify` to accept self-signed certificates.
pub(crate) fn client_options(allow_http: bool, skip_verify: bool) -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_allow_http(allow_http)
        .with_allow_invalid_certificates(skip_verify)
}

/// object_store's own per-request retries, kept short: they smooth over a dropped
/// connection or a single 503, while long outages are the caller's business
/// (see [`retry`](super::retry::retry)) so that a stalled store never blocks a caller
/// for minutes inside one call.
pub(crate) fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(20),
    }
}

/// Hands every store of the process the same HTTP client for the same client options:
/// a thousand databases in one bucket share one connection pool and one TLS set-up
/// instead of each building its own (bench-scale on S3: ~110 KiB per database, and a
/// new connection and handshake for each database's first request). Options differ
/// only in what [`client_options`] and object_store's own credential clients set, so
/// the cache stays a handful of entries.
///
/// The cache is per process: a child of `fork()` must not reuse its parent's pooled
/// keep-alive connections. Their sockets are the parent's too (one request stream written
/// by two processes, each able to read the other's answer), and their readiness is
/// driven by the parent's runtime, which has no thread in the child: a child's first
/// request on one went unanswered until the store was declared silent (10 s).
#[derive(Debug, Default)]
pub(crate) struct SharedConnector;

impl HttpConnector for SharedConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        static CLIENTS: ProcessMutex<Vec<(String, HttpClient)>> = ProcessMutex::new();
        // ClientOptions has no equality; its Debug form names every setting.
        let key = format!("{options:?}");
        let mut clients = CLIENTS.lock();
        if let Some((_, client)) = clients.iter().find(|(k, _)| *k == key) {
            return Ok(client.clone());
        }
        let client = HttpClient::new(Watchful {
            inner: ReqwestConnector::default().connect(options)?,
            limit: silence_limit(),
        });
        clients.push((key, client.clone()));
        Ok(client)
    }
}
