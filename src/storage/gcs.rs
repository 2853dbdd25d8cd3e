//! `gs://bucket/path` — Google Cloud Storage. Like Litestream, no URL parameters.
//!
//! Credentials: `GOOGLE_APPLICATION_CREDENTIALS` (a service-account or authorized-user JSON
//! file), `GOOGLE_SERVICE_ACCOUNT_KEY` (the JSON itself), gcloud's application-default
//! credentials file, or — when allowed — the GCE metadata server.
//!
//! `STORAGE_EMULATOR_HOST` (`host:port` or a URL; plain `host:port` means http), the variable
//! Google's client libraries and so Litestream honour, sends every request to an emulator
//! such as fake-gcs-server, unauthenticated, and overrides the credentials above.

use object_store::gcp::GoogleCloudStorageBuilder;

use super::error::{Error, Redactor, Result};
use super::http::{client_options, retry_config};
use super::layout::LevelStyle;
use super::object::ObjectReplica;
use super::options::StoreOptions;
use super::target::{first_env, EnvFn, Target};

/// Object metadata key holding the LTX header timestamp (Litestream's gs `MetadataKeyTimestamp`).
pub const GCS_TIMESTAMP_METADATA: &str = "litestream-timestamp";

pub(crate) fn open(t: &Target, opts: &StoreOptions, env: EnvFn<'_>) -> Result<ObjectReplica> {
    t.params.check_known("gs", &[], &t.name)?;
    t.no_credentials_in_url("set GOOGLE_APPLICATION_CREDENTIALS")?;
    if t.host.is_empty() {
        return Err(Error::config(format!(
            "replica URL {} names no bucket: use gs://BUCKET/path",
            t.name
        )));
    }
    if opts.endpoint.is_some() || opts.region.is_some() || opts.access_key_id.is_some() {
        return Err(Error::config(format!(
            "{}: endpoint, region and access keys are S3 options; gs:// uses GOOGLE_APPLICATION_CREDENTIALS",
            t.name
        )));
    }

    let emulator = first_env(env, &["STORAGE_EMULATOR_HOST"]).map(|(_, host)| emulator_base_url(&host));
    let allow_http = emulator.as_deref().is_some_and(|u| u.starts_with("http://"));
    let mut b = GoogleCloudStorageBuilder::new()
        .with_bucket_name(&t.host)
        .with_client_options(client_options(allow_http, opts.skip_verify.unwrap_or(false)))
        .with_retry(retry_config())
        .with_http_connector(super::http::SharedConnector);
    let mut redactor = Redactor::default();
    if let Some(base_url) = emulator {
        // object_store takes a custom base URL only from a service-account key, where
        // `disable_oauth` also makes it send an empty bearer token instead of fetching one.
        let key = serde_json::json!({
            "gcs_base_url": base_url,
            "disable_oauth": true,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        });
        b = b.with_service_account_key(key.to_string());
    } else if let Some((_, path)) = first_env(env, &["GOOGLE_APPLICATION_CREDENTIALS"]) {
        b = b.with_application_credentials(path);
    } else if let Some((_, key)) = first_env(env, &["GOOGLE_SERVICE_ACCOUNT_KEY"]) {
        redactor.add(&key);
        b = b.with_service_account_key(key);
    } else if !gcloud_adc_exists(env) && !opts.instance_credentials {
        return Err(Error::config(format!(
            "no Google Cloud credentials for {}: set GOOGLE_APPLICATION_CREDENTIALS to a service account \
             key file (or run `gcloud auth application-default login`); on GCE, enable the \
             instance-credentials option",
            t.name
        )));
    }
    // Otherwise object_store itself finds gcloud's file or asks the metadata server.

    ObjectReplica::from_builder(b.build(), t, LevelStyle::LtxDecimal, GCS_TIMESTAMP_METADATA, redactor)
}

/// The emulator's base URL from `STORAGE_EMULATOR_HOST`: a bare `host:port` is plain http, as
/// in Google's Go client; a trailing '/' is dropped (object_store appends `/<bucket>/<key>`).
fn emulator_base_url(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.contains("://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

/// gcloud's application-default credentials file, where object_store looks for it.
fn gcloud_adc_exists(env: EnvFn<'_>) -> bool {
    first_env(env, &["HOME"])
        .map(|(_, home)| std::path::Path::new(&home).join(".config/gcloud/application_default_credentials.json"))
        .is_some_and(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_host_forms() {
        assert_eq!(emulator_base_url("127.0.0.1:4443"), "http://127.0.0.1:4443");
        assert_eq!(emulator_base_url("https://localhost:4443/"), "https://localhost:4443");
        assert_eq!(emulator_base_url(" http://127.0.0.1:9000 "), "http://127.0.0.1:9000");
    }

    #[test]
    fn emulator_needs_no_credentials() {
        let t = Target::parse("gs://bucket/db").unwrap();
        let env = |k: &str| (k == "STORAGE_EMULATOR_HOST").then(|| "127.0.0.1:1".to_string());
        assert!(open(&t, &StoreOptions::default(), &env).is_ok());
        let none = |_: &str| None;
        let err = open(&t, &StoreOptions::default(), &none).unwrap_err();
        assert!(err.to_string().contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
    }
}
