//! Overrides for opening a replica store, usually from the database URI's parameters.
//!
//! Precedence when opening a store: these options, then the replica URL's own query
//! parameters, then environment variables (Litestream's names first, then the standard ones).

use super::error::{Error, Result};

/// Optional settings that override what the replica URL and the environment say.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreOptions {
    /// S3 / Azure endpoint URL, e.g. `http://127.0.0.1:9000` (plain http is allowed then).
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// S3 path-style requests (`http://host/bucket/key`) instead of virtual-hosted style.
    pub force_path_style: Option<bool>,
    /// Accept any TLS certificate (self-signed test servers only).
    pub skip_verify: Option<bool>,
    /// S3 access key id.
    pub access_key_id: Option<String>,
    /// S3 secret access key.
    pub secret_access_key: Option<String>,
    /// Azure storage account name.
    pub account_name: Option<String>,
    /// Azure storage account key.
    pub account_key: Option<String>,
    /// Azure SAS token (`sv=...&sig=...`).
    pub sas_token: Option<String>,
    /// Allow credentials from the cloud's instance metadata service (EC2 instance profile,
    /// GCE service account, Azure managed identity) when nothing else is configured.
    /// Off by default so that a forgotten credential is an error at open, not a timeout
    /// at the first upload.
    pub instance_credentials: bool,
    /// NATS settings (`nats://` replicas only).
    pub nats: NatsOptions,
    /// `file://` replicas only: permissions of the files and directories puts create,
    /// those of the database replicated there (never a URI parameter: the primary sets
    /// it). `None`: the process's defaults.
    pub file_modes: Option<crate::file_modes::FileModes>,
    /// Budget of requests per second to the store's endpoint, shared by the process
    /// (`requests_per_second`; 0: none; `pacing.rs`).
    pub requests_per_second: Option<u32>,
    /// S3 and Azure: files larger than this many bytes go up in parts
    /// (`multipart_threshold`; else `LITESTREAM_MULTIPART_THRESHOLD`, else 100 MiB;
    /// `multipart.rs`).
    pub multipart_threshold: Option<u64>,
    /// S3 and Azure: the size of those parts (`multipart_part_size`; else
    /// `LITESTREAM_MULTIPART_PART_SIZE`, else 16 MiB), grown for files that would need
    /// more than 10,000.
    pub multipart_part_size: Option<u64>,
}

/// Settings of a `nats://` replica that do not fit in its URL. Each falls back to the URL's
/// query parameter of the same name, then to the `NATS_*` variable the `nats` CLI reads.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct NatsOptions {
    /// Credentials file (user JWT + nkey seed), `nats_creds` / `NATS_CREDS`.
    pub creds: Option<String>,
    /// File holding an nkey seed, `nats_nkey` / `NATS_NKEY`.
    pub nkey: Option<String>,
    /// Authentication token, `nats_token` / `NATS_TOKEN`.
    pub token: Option<String>,
    /// User name, `nats_user` / `NATS_USER`.
    pub user: Option<String>,
    /// Password, `nats_password` / `NATS_PASSWORD`.
    pub password: Option<String>,
    /// Require TLS even without a CA or client certificate, `nats_tls`.
    pub tls: Option<bool>,
    /// PEM file of CA certificates to trust, `nats_tls_ca` / `NATS_CA`.
    pub tls_ca: Option<String>,
    /// PEM client certificate for mutual TLS, `nats_tls_cert` / `NATS_CERT`.
    pub tls_cert: Option<String>,
    /// PEM key of the client certificate, `nats_tls_key` / `NATS_KEY`.
    pub tls_key: Option<String>,
    /// Size of the chunk messages of the objects we write, `nats_chunk_size` (bytes, or
    /// with a `k` suffix). Default 128k, as the NATS clients; smaller chunks make a
    /// replica's page reads cheaper and whole-file reads slower (docs/nats.md).
    pub chunk_size: Option<usize>,
}

impl std::fmt::Debug for NatsOptions {
    // Not derived: the token and password must not reach logs. File paths are not secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsOptions")
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("token", &hide(&self.token))
            .field("user", &self.user)
            .field("password", &hide(&self.password))
            .field("tls", &self.tls)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("chunk_size", &self.chunk_size)
            .finish()
    }
}

impl NatsOptions {
    /// The parameter names, in the `nats_*` spelling (the `nats-*` one is accepted too).
    pub const PARAMS: &'static [&'static str] = &[
        "nats_creds",
        "nats_nkey",
        "nats_token",
        "nats_user",
        "nats_password",
        "nats_tls",
        "nats_tls_ca",
        "nats_tls_cert",
        "nats_tls_key",
        "nats_chunk_size",
    ];

    /// Sets `key` (`nats_creds` or `nats-creds`, ...); `Ok(false)` if it is not a NATS option.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(name) = key.strip_prefix("nats_").or_else(|| key.strip_prefix("nats-")) else {
            return Ok(false);
        };
        let text = Some(value.to_string());
        match name.replace('-', "_").as_str() {
            "creds" => self.creds = text,
            "nkey" => self.nkey = text,
            "token" => self.token = text,
            "user" => self.user = text,
            "password" => self.password = text,
            "tls" => self.tls = Some(parse_bool(key, value)?),
            "tls_ca" => self.tls_ca = text,
            "tls_cert" => self.tls_cert = text,
            "tls_key" => self.tls_key = text,
            "chunk_size" => self.chunk_size = Some(parse_chunk_size(key, value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl std::fmt::Debug for StoreOptions {
    // Not derived: secrets must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hide = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("StoreOptions")
            // An endpoint can be a proxy taking basic auth: http://user:password@proxy.
            .field("endpoint", &self.endpoint.as_deref().map(super::error::redact_url))
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("skip_verify", &self.skip_verify)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hide(&self.secret_access_key))
            .field("account_name", &self.account_name)
            .field("account_key", &hide(&self.account_key))
            .field("sas_token", &hide(&self.sas_token))
            .field("instance_credentials", &self.instance_credentials)
            .field("nats", &self.nats)
            .field("file_modes", &self.file_modes)
            .field("requests_per_second", &self.requests_per_second)
            .field("multipart_threshold", &self.multipart_threshold)
            .field("multipart_part_size", &self.multipart_part_size)
            .finish()
    }
}

impl StoreOptions {
    /// Sets the option named `key` (a URI parameter name; Litestream's camelCase spelling and
    /// its kebab-case config-file spelling are both accepted). Returns `Ok(false)` when `key`
    /// is not a storage option, so the caller can report it as unknown along with its own.
    pub fn set(&mut self, key: &str, value: &str) -> Result<bool> {
        let text = |v: &str| Some(v.to_string());
        match key {
            "endpoint" => self.endpoint = text(value),
            "requests_per_second" | "requests-per-second" | "requestsPerSecond" => {
                self.requests_per_second =
                    Some(super::pacing::parse_rate(value).map_err(|e| Error::config(format!("{key}: {e}")))?)
            }
            "multipart_threshold" | "multipart-threshold" => self.multipart_threshold = Some(parse_size(key, value)?),
            "multipart_part_size" | "multipart-part-size" => self.multipart_part_size = Some(parse_size(key, value)?),
            "region" => self.region = text(value),
            "force-path-style" | "forcePathStyle" => self.force_path_style = Some(parse_bool(key, value)?),
            "skip-verify" | "skipVerify" => self.skip_verify = Some(parse_bool(key, value)?),
            "access-key-id" | "accessKeyId" => self.access_key_id = text(value),
            "secret-access-key" | "secretAccessKey" => self.secret_access_key = text(value),
            "account-name" | "accountName" => self.account_name = text(value),
            "account-key" | "accountKey" => self.account_key = text(value),
            "sas-token" | "sasToken" => self.sas_token = text(value),
            "instance-credentials" | "instanceCredentials" => self.instance_credentials = parse_bool(key, value)?,
            _ => return self.nats.set(key, value),
        }
        Ok(true)
    }
}

/// A chunk size: bytes, or KiB with a `k` suffix; 1k to 512k (the server's default
/// `max_payload` is 1 MiB, headers included).
fn parse_chunk_size(key: &str, value: &str) -> Result<usize> {
    let v = value.trim().to_ascii_lowercase();
    let (digits, unit) = match v.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => (v.as_str(), 1),
    };
    match digits.parse::<usize>().ok().and_then(|n| n.checked_mul(unit)) {
        Some(n) if (1024..=512 * 1024).contains(&n) => Ok(n),
        _ => Err(Error::config(format!(
            "parameter {key}={value:?} must be a size from 1k to 512k"
        ))),
    }
}

/// A size parameter: bytes, or with a unit (`8MiB`, `1g`).
fn parse_size(key: &str, value: &str) -> Result<u64> {
    crate::config::parse_size(value).map_err(|e| Error::config(format!("parameter {key}: {e}")))
}

/// A boolean parameter, read like every other boolean setting
/// ([`crate::config::parse_bool`]: the spellings Go's `litestream.BoolQueryValue` accepts
/// and SQLite's). Unlike Litestream (which reads anything else as false), other values are
/// an error.
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool> {
    crate::config::parse_bool(value).map_err(|e| Error::config(format!("parameter {key}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_both_spellings() {
        let mut o = StoreOptions::default();
        assert!(o.set("forcePathStyle", "true").unwrap());
        assert!(o.set("skip-verify", "1").unwrap());
        assert!(!o.set("vfs", "litestream").unwrap());
        assert_eq!(o.force_path_style, Some(true));
        assert_eq!(o.skip_verify, Some(true));
        assert!(o.set("force-path-style", "maybe").is_err());
        assert!(o.set("multipart_threshold", "8MiB").unwrap());
        assert!(o.set("multipart-part-size", "6m").unwrap());
        assert_eq!(
            (o.multipart_threshold, o.multipart_part_size),
            (Some(8 << 20), Some(6 << 20))
        );
        assert!(o.set("multipart_threshold", "big").is_err());
    }

    #[test]
    fn nats_options_take_both_spellings() {
        let mut o = StoreOptions::default();
        assert!(o.set("nats_creds", "/etc/nats/user.creds").unwrap());
        assert!(o.set("nats-tls-ca", "/etc/nats/ca.pem").unwrap());
        assert!(o.set("nats_tls", "yes").unwrap());
        assert!(!o.set("nats_color", "blue").unwrap());
        assert!(o.set("nats_tls", "perhaps").is_err());
        assert!(o.set("nats_chunk_size", "32k").unwrap());
        assert_eq!(o.nats.chunk_size, Some(32 * 1024));
        assert!(o.set("nats_chunk_size", "2048").unwrap());
        assert_eq!(o.nats.chunk_size, Some(2048));
        for bad in ["0", "1m", "600k", "lots"] {
            assert!(o.set("nats_chunk_size", bad).is_err(), "{bad}");
        }
        assert_eq!(o.nats.creds.as_deref(), Some("/etc/nats/user.creds"));
        assert_eq!(o.nats.tls_ca.as_deref(), Some("/etc/nats/ca.pem"));
        assert_eq!(o.nats.tls, Some(true));
    }

    #[test]
    fn debug_hides_secrets() {
        let mut o = StoreOptions::default();
        o.set("secret-access-key", "hunter2hunter2").unwrap();
        o.set("sas-token", "sv=1&sig=abcdef").unwrap();
        o.set("nats_token", "natstokensecret").unwrap();
        o.set("nats_password", "natspasswordsecret").unwrap();
        let d = format!("{o:?}");
        assert!(!d.contains("hunter2") && !d.contains("abcdef"), "{d}");
        assert!(
            !d.contains("natstokensecret") && !d.contains("natspasswordsecret"),
            "{d}"
        );
    }
}
