//! Replica URL → store.

use std::sync::Arc;

use super::error::{redact_url, Error, Result};
use super::metered::Metered;
use super::options::StoreOptions;
use super::pacing::{self, Paced};
use super::store::ReplicaStore;
use super::target::{EnvFn, Target};
use super::{azure, gcs, local, nats, s3};

/// Opens the replica store a URL names, reading credentials from the process environment.
///
/// Schemes: `file:///abs/path`, `s3://bucket/path?endpoint=...&region=...&forcePathStyle=true`,
/// `gs://bucket/path`, `abs://[account@]container/path` (also `az://`), `memory://name/path`,
/// `nats://[user:pass@|token@]host:port/bucket[/path]` (NATS JetStream object store).
/// `options` override the URL's parameters, which override the environment. Opening makes no
/// request; a bad URL, an unknown parameter or a missing credential fails here, with a message
/// that names what to set and contains no secret. Every operation of the store is counted
/// for the metrics (`metered.rs`) and waits for its endpoint's budget (`pacing.rs`).
pub fn open_store(url: &str, options: &StoreOptions) -> Result<Arc<dyn ReplicaStore>> {
    open_store_with_env(url, options, &|k| std::env::var(k).ok())
}

/// [`open_store`] with the environment supplied by the caller (tests, embedders).
pub fn open_store_with_env(url: &str, options: &StoreOptions, env: EnvFn<'_>) -> Result<Arc<dyn ReplicaStore>> {
    let t = Target::parse(url)?;
    let rate = pacing::rate_for(
        &t.scheme,
        options.requests_per_second,
        env("LITESTREAM_REQUESTS_PER_SECOND").as_deref(),
    )
    .map_err(Error::config)?;
    let replica = match t.scheme.as_str() {
        "file" => local::open_file(&t, options)?,
        "memory" => local::open_memory(&t, options)?,
        "s3" => s3::open(&t, options, env)?,
        "gs" | "gcs" => gcs::open(&t, options, env)?,
        "abs" | "az" => azure::open(&t, options, env)?,
        "nats" => {
            let replica = nats::open(&t, options, env)?;
            tracing::debug!(store = %replica.describe(), layout = ?replica.layout(), "opened replica store");
            let budget = pacing::budget(&endpoint(&t, options), rate);
            return Ok(Paced::wrap(Metered::wrap(&t.scheme, Arc::new(replica)), budget));
        }
        other => {
            return Err(Error::config(format!(
                "unsupported replica URL scheme {other:?} in {}; supported: file, s3, gs, abs (az), nats, memory",
                t.name
            )))
        }
    };
    tracing::debug!(store = %t.name, layout = ?replica.layout(), "opened replica store");
    // Only a store that opened gets a budget: a failed open (a bad URL, a missing
    // credential) leaves no endpoint in `litestream_status()`'s engine.
    let budget = pacing::budget(&endpoint(&t, options), rate);
    // Metered inside: its durations are the store's, not the wait for the budget.
    Ok(Paced::wrap(Metered::wrap(&t.scheme, Arc::new(replica)), budget))
}

/// What one request budget covers: a bucket (container, NATS server) at its endpoint;
/// the local disk as a whole. Also what `litestream_status()` shows as the store's
/// endpoint, so an endpoint's password (`http://user:password@proxy`) is redacted here,
/// once, for every reader (it was shown whole: a security tester).
fn endpoint(t: &Target, options: &StoreOptions) -> String {
    match t.scheme.as_str() {
        "file" => "file://".into(),
        "nats" => format!(
            "nats://{}:{}",
            t.url.host_str().unwrap_or_default(),
            t.url.port().unwrap_or(4222)
        ),
        scheme => {
            let at = options.endpoint.as_deref().or_else(|| t.params.get(&["endpoint"]));
            match at {
                Some(at) => format!("{scheme}://{} at {}", t.host, redact_url(at)),
                None => format!("{scheme}://{}", t.host),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_password_is_not_in_the_store_description_or_endpoint() {
        let env = |k: &str| match k {
            "AWS_ACCESS_KEY_ID" => Some("a".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("b".to_string()),
            _ => None,
        };
        let endpoint = "http://proxyuser:CanaryEndpointPw@127.0.0.1:1";
        // Given as a store option (the database's own endpoint= parameter) and in the URL.
        let as_option = StoreOptions {
            endpoint: Some(endpoint.to_string()),
            ..Default::default()
        };
        let in_url = format!("s3://bkt/app?endpoint={endpoint}&region=us-east-1");
        for (url, options) in [
            ("s3://bkt/app", &as_option),
            (in_url.as_str(), &StoreOptions::default()),
        ] {
            let store = open_store_with_env(url, options, &env).unwrap();
            let (describe, at) = (store.describe(), store.endpoint().unwrap_or_default());
            assert!(
                !describe.contains("CanaryEndpointPw") && !at.contains("CanaryEndpointPw"),
                "{describe} / {at}"
            );
            assert!(at.contains("proxyuser:%3Credacted%3E@127.0.0.1:1"), "{at}");
        }
        assert!(!format!("{as_option:?}").contains("CanaryEndpointPw"));
    }
}
