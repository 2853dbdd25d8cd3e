//! `s3://bucket/path?...` — Amazon S3 and S3-compatible stores (MinIO, R2, Tigris, moto...).
//!
//! Query parameters are those Litestream 0.5.17's `s3.NewReplicaClientFromURL` reads, in both
//! its camelCase and kebab-case spellings. Settings come from [`StoreOptions`] first, then the
//! URL, then the environment. Credentials are never read from the URL.

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::Attribute;

use super::error::{Error, Redactor, Result};
use super::http::{client_options, retry_config};
use super::layout::LevelStyle;
use super::multipart::Multipart;
use super::object::ObjectReplica;
use super::options::{parse_bool, StoreOptions};
use super::target::{first_env, EnvFn, Target};

/// Object metadata key holding the LTX header timestamp (Litestream's `MetadataKeyTimestamp`).
pub const S3_TIMESTAMP_METADATA: &str = "litestream-timestamp";

const KNOWN_PARAMS: &[&str] = &[
    "endpoint",
    "region",
    "forcePathStyle",
    "force-path-style",
    "skipVerify",
    "skip-verify",
    "signPayload",
    "sign-payload",
    "requireContentMD5",
    "require-content-md5",
    "concurrency",
    "partSize",
    "part-size",
    "storageClass",
    "storage-class",
    "sseKmsKeyId",
    "sse-kms-key-id",
    "sseCustomerAlgorithm",
    "sse-customer-algorithm",
    "sseCustomerKey",
    "sse-customer-key",
    "sseCustomerKeyMD5",
    "sse-customer-key-md5",
];

/// The parameters are store options (`StoreOptions`), which only a database opened through
/// the VFS is given, as its own URI parameters; the replica URL refuses them as unknown, so
/// litestream_restore() and the CLI, which take a replica URL alone, have the environment
/// only. The hint said "the access-key-id and secret-access-key parameters" to all of them.
const CREDENTIAL_HINT: &str = "set LITESTREAM_ACCESS_KEY_ID and LITESTREAM_SECRET_ACCESS_KEY \
    (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY); a database opened through the VFS also takes \
    the access-key-id and secret-access-key URI parameters of its own, beside replica=, never inside the replica URL";

pub(crate) fn open(t: &Target, opts: &StoreOptions, env: EnvFn<'_>) -> Result<ObjectReplica> {
    t.params.check_known("s3", KNOWN_PARAMS, &t.name)?;
    t.no_credentials_in_url(CREDENTIAL_HINT)?;
    let q = |names: &[&str]| t.params.get(names).filter(|v| !v.is_empty()).map(str::to_string);
    let q_bool = |names: &[&str]| q(names).map(|v| parse_bool(names[0], &v)).transpose();

    let (bucket, host_region) = parse_host(&t.host);
    if bucket.is_empty() {
        return Err(Error::config(format!(
            "replica URL {} names no bucket: use s3://BUCKET/path",
            t.name
        )));
    }

    if t.path.split('/').all(str::is_empty) {
        // Litestream 0.5.17 builds S3 keys as `path + "/" + level`, and cleans an empty path
        // to ".": a path-less replica lives under "./0000/...", which object_store cannot
        // address. Refuse rather than write somewhere Litestream does not look.
        return Err(Error::config(format!(
            "replica URL {} needs a path inside the bucket (s3://BUCKET/PATH); Litestream keeps a \
             path-less S3 replica under the prefix \"./\", which this extension cannot address",
            t.name
        )));
    }

    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| q(&["endpoint"]))
        .or_else(|| {
            first_env(
                env,
                &["LITESTREAM_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"],
            )
            .map(|e| e.1)
        })
        .map(|e| with_scheme(&e));
    // Litestream defaults to path-style requests whenever a custom endpoint is set.
    let path_style = match opts.force_path_style {
        Some(v) => v,
        None => q_bool(&["forcePathStyle", "force-path-style"])?.unwrap_or(endpoint.is_some()),
    };
    let skip_verify = match opts.skip_verify {
        Some(v) => v,
        None => q_bool(&["skipVerify", "skip-verify"])?.unwrap_or(false),
    };
    let region = opts
        .region
        .clone()
        .or_else(|| q(&["region"]))
        .or(host_region)
        .or_else(|| first_env(env, &["AWS_REGION", "AWS_DEFAULT_REGION"]).map(|e| e.1))
        // Litestream uses us-east-1 for custom endpoints; for AWS itself it asks the bucket,
        // which needs a request we do not make while opening.
        .or_else(|| endpoint.as_ref().map(|_| "us-east-1".to_string()))
        .ok_or_else(|| {
            Error::config(format!(
                "no region for {}: set the region parameter (?region=us-east-1) or AWS_REGION",
                t.name
            ))
        })?;

    let mut redactor = Redactor::default();
    // A proxy taking basic auth in front of S3: its password can come back in errors.
    if let Some(e) = &endpoint {
        redactor.add_url_password(e);
    }
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(region)
        .with_virtual_hosted_style_request(!path_style)
        .with_client_options(client_options(
            endpoint.as_deref().is_some_and(|e| e.starts_with("http://")),
            skip_verify,
        ))
        .with_retry(retry_config())
        .with_http_connector(super::http::SharedConnector);
    if let Some(e) = &endpoint {
        b = b.with_endpoint(e.clone());
    }
    b = with_credentials(b, t, opts, env, &mut redactor)?;

    if let Some(v) = q_bool(&["signPayload", "sign-payload"])? {
        b = b.with_unsigned_payload(!v);
    }
    if let Some(k) = q(&["sseKmsKeyId", "sse-kms-key-id"]) {
        b = b.with_sse_kms_encryption(k);
    }
    if let Some(key) = q(&["sseCustomerKey", "sse-customer-key"]) {
        if let Some(alg) = q(&["sseCustomerAlgorithm", "sse-customer-algorithm"]).filter(|a| a != "AES256") {
            return Err(Error::config(format!(
                "sse-customer-algorithm must be AES256, got {alg:?}"
            )));
        }
        redactor.add(&key);
        b = b.with_ssec_encryption(key);
    }
    // concurrency, part-size and require-content-md5 tune Litestream's multipart uploader and
    // DeleteObjects; they are accepted and have no effect: our uploads in parts take
    // multipart_threshold and multipart_part_size (multipart.rs).
    let multipart = Multipart::from_options(opts.multipart_threshold, opts.multipart_part_size, env)
        .map_err(|e| Error::config(format!("{}: {e}", t.name)))?;

    let mut replica = ObjectReplica::from_builder(b.build(), t, LevelStyle::S3Hex, S3_TIMESTAMP_METADATA, redactor)?
        .with_multipart(multipart);
    if let Some(class) = q(&["storageClass", "storage-class"]) {
        replica = replica.with_attribute(Attribute::StorageClass, class);
    }
    Ok(replica)
}

/// Static keys (options, then LITESTREAM_*, then AWS_*), else a role from the environment
/// (web identity, ECS/EKS container credentials), else the EC2 instance profile if allowed.
fn with_credentials(
    mut b: AmazonS3Builder,
    t: &Target,
    opts: &StoreOptions,
    env: EnvFn<'_>,
    redactor: &mut Redactor,
) -> Result<AmazonS3Builder> {
    let key_id = opts
        .access_key_id
        .clone()
        .map(|v| ("access-key-id", v))
        .or_else(|| first_env(env, &["LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"]));
    let secret = opts
        .secret_access_key
        .clone()
        .map(|v| ("secret-access-key", v))
        .or_else(|| first_env(env, &["LITESTREAM_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"]));
    match (key_id, secret) {
        (Some((id_from, id)), Some((_, secret))) => {
            redactor.add(&secret);
            b = b.with_access_key_id(id).with_secret_access_key(secret);
            // A session token belongs to AWS_* keys only; pairing it with other keys would
            // produce signatures S3 rejects.
            if id_from == "AWS_ACCESS_KEY_ID" {
                if let Some((_, token)) = first_env(env, &["AWS_SESSION_TOKEN"]) {
                    redactor.add(&token);
                    b = b.with_token(token);
                }
            }
            Ok(b)
        }
        (Some((from, _)), None) => Err(Error::config(format!(
            "{}: access key id is set (from {from}) but no secret access key: set LITESTREAM_SECRET_ACCESS_KEY \
             (or AWS_SECRET_ACCESS_KEY, or the database URI's secret-access-key parameter)",
            t.name
        ))),
        (None, Some((from, _))) => Err(Error::config(format!(
            "{}: secret access key is set (from {from}) but no access key id: set LITESTREAM_ACCESS_KEY_ID \
             (or AWS_ACCESS_KEY_ID, or the database URI's access-key-id parameter)",
            t.name
        ))),
        (None, None) => {
            if first_env(env, &["AWS_WEB_IDENTITY_TOKEN_FILE"]).is_some() && first_env(env, &["AWS_ROLE_ARN"]).is_some()
            {
                return Ok(b); // object_store reads these two itself
            }
            if let Some((_, uri)) = first_env(env, &["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"]) {
                return Ok(b.with_config(AmazonS3ConfigKey::ContainerCredentialsRelativeUri, uri));
            }
            if let Some((_, uri)) = first_env(env, &["AWS_CONTAINER_CREDENTIALS_FULL_URI"]) {
                b = b.with_config(AmazonS3ConfigKey::ContainerCredentialsFullUri, uri);
                if let Some((_, file)) = first_env(env, &["AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"]) {
                    b = b.with_config(AmazonS3ConfigKey::ContainerAuthorizationTokenFile, file);
                }
                return Ok(b);
            }
            if opts.instance_credentials {
                return Ok(b); // object_store falls back to the EC2 instance metadata service
            }
            Err(Error::config(format!(
                "no S3 credentials for {}: {CREDENTIAL_HINT}; on EC2 with an instance profile, \
                 enable the instance-credentials option",
                t.name
            )))
        }
    }
}

/// Bucket (and region, when the host says) from the URL host: `bucket`, or AWS's
/// virtual-hosted forms `bucket.s3.amazonaws.com` / `bucket.s3.REGION.amazonaws.com`.
fn parse_host(host: &str) -> (String, Option<String>) {
    if let Some(rest) = host.strip_suffix(".amazonaws.com") {
        if let Some((bucket, after)) = rest.split_once(".s3") {
            let region = after.strip_prefix('.').filter(|r| !r.is_empty()).map(str::to_string);
            if after.is_empty() || region.is_some() {
                return (bucket.to_string(), region);
            }
        }
    }
    (host.to_string(), None)
}

/// Litestream's `EnsureEndpointScheme`: an endpoint without a scheme is http for local
/// addresses and https otherwise.
fn with_scheme(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.starts_with("http://") || e.starts_with("https://") {
        return e.to_string();
    }
    let host = e.split([':', '/']).next().unwrap_or("");
    let local = host == "localhost"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_private());
    format!("{}://{e}", if local { "http" } else { "https" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_credentials_says_the_parameters_belong_to_the_database_uri_not_the_replica_url() {
        // What litestream_restore() and the CLI get: a replica URL alone, no store options.
        let t = Target::parse("s3://bucket/app?region=us-east-1").unwrap();
        let e = open(&t, &StoreOptions::default(), &|_| None).unwrap_err().to_string();
        assert!(
            e.contains("no S3 credentials") && e.contains("never inside the replica URL"),
            "{e}"
        );
        // Where the hint sends people, the replica URL refuses them.
        let t = Target::parse("s3://bucket/app?region=us-east-1&access-key-id=a&secret-access-key=b").unwrap();
        let e = open(&t, &StoreOptions::default(), &|_| None).unwrap_err().to_string();
        assert!(e.contains("unknown parameter \"access-key-id\""), "{e}");
    }

    #[test]
    fn parses_aws_virtual_hosts() {
        assert_eq!(parse_host("b"), ("b".into(), None));
        assert_eq!(parse_host("b.s3.amazonaws.com"), ("b".into(), None));
        assert_eq!(
            parse_host("my.b.s3.eu-west-1.amazonaws.com"),
            ("my.b".into(), Some("eu-west-1".into()))
        );
    }

    #[test]
    fn endpoint_scheme_defaults() {
        assert_eq!(with_scheme("localhost:9000"), "http://localhost:9000");
        assert_eq!(with_scheme("127.0.0.1:9000/"), "http://127.0.0.1:9000");
        assert_eq!(with_scheme("s3.example.com"), "https://s3.example.com");
        assert_eq!(with_scheme("http://minio:9000"), "http://minio:9000");
    }
}
