//! `abs://[account@]container/path` (Litestream's scheme) and `az://` — Azure Blob Storage.
//!
//! Account: the URL's user part, then the account-name option, then `AZURE_STORAGE_ACCOUNT_NAME`
//! / `AZURE_STORAGE_ACCOUNT`. Credentials: account key (option, `LITESTREAM_AZURE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_KEY`), SAS token (option,
//! `LITESTREAM_AZURE_SAS_TOKEN`, `AZURE_STORAGE_SAS_TOKEN`), a service principal
//! (`AZURE_CLIENT_ID` + `AZURE_CLIENT_SECRET` + `AZURE_TENANT_ID`), or — when allowed — managed
//! identity. `?endpoint=` points at Azurite or another custom endpoint, e.g.
//! `http://127.0.0.1:10000/devstoreaccount1`.

use object_store::azure::MicrosoftAzureBuilder;

use super::error::{Error, Redactor, Result};
use super::http::{client_options, retry_config};
use super::layout::LevelStyle;
use super::multipart::Multipart;
use super::object::ObjectReplica;
use super::options::{parse_bool, StoreOptions};
use super::target::{first_env, EnvFn, Target};

/// Metadata key for the LTX header timestamp. Azure metadata names must be C# identifiers,
/// so Litestream's abs client drops the dash (`abs.MetadataKeyTimestamp`).
pub const AZURE_TIMESTAMP_METADATA: &str = "litestreamtimestamp";

const KNOWN_PARAMS: &[&str] = &["endpoint", "skipVerify", "skip-verify"];

/// account-key= and sas-token= are store options, a database's own URI parameters, which
/// the replica URL (all litestream_restore() and the CLI take) refuses: as for S3's hint.
const CREDENTIAL_HINT: &str = "set LITESTREAM_AZURE_ACCOUNT_KEY (or AZURE_STORAGE_ACCOUNT_KEY), or a SAS \
    token in LITESTREAM_AZURE_SAS_TOKEN; a database opened through the VFS also takes the account-key or \
    sas-token URI parameters of its own, beside replica=, never inside the replica URL";

pub(crate) fn open(t: &Target, opts: &StoreOptions, env: EnvFn<'_>) -> Result<ObjectReplica> {
    t.params.check_known(&t.scheme, KNOWN_PARAMS, &t.name)?;
    t.no_credentials_in_url(CREDENTIAL_HINT)?;
    if t.host.is_empty() {
        return Err(Error::config(format!(
            "replica URL {} names no container: use abs://[ACCOUNT@]CONTAINER/path",
            t.name
        )));
    }
    let account = t
        .user
        .clone()
        .or_else(|| opts.account_name.clone())
        .or_else(|| first_env(env, &["AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT"]).map(|e| e.1))
        .ok_or_else(|| {
            Error::config(format!(
                "no Azure storage account for {}: use abs://ACCOUNT@container/path or set AZURE_STORAGE_ACCOUNT",
                t.name
            ))
        })?;
    let endpoint = opts
        .endpoint
        .clone()
        .or_else(|| t.params.get(&["endpoint"]).map(str::to_string));
    let skip_verify = match opts.skip_verify {
        Some(v) => v,
        None => t
            .params
            .get(&["skipVerify", "skip-verify"])
            .map(|v| parse_bool("skipVerify", v))
            .transpose()?
            .unwrap_or(false),
    };
    let allow_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));

    let mut b = MicrosoftAzureBuilder::new()
        .with_account(account)
        .with_container_name(&t.host)
        .with_allow_http(allow_http)
        .with_client_options(client_options(allow_http, skip_verify))
        .with_retry(retry_config())
        .with_http_connector(super::http::SharedConnector);
    let mut redactor = Redactor::default();
    // A proxy taking basic auth in front of the endpoint: its password can come back in errors.
    if let Some(e) = endpoint {
        redactor.add_url_password(&e);
        b = b.with_endpoint(e);
    }

    let key = opts.account_key.clone().or_else(|| {
        first_env(
            env,
            &[
                "LITESTREAM_AZURE_ACCOUNT_KEY",
                "AZURE_STORAGE_ACCOUNT_KEY",
                "AZURE_STORAGE_KEY",
            ],
        )
        .map(|e| e.1)
    });
    let sas = opts
        .sas_token
        .clone()
        .or_else(|| first_env(env, &["LITESTREAM_AZURE_SAS_TOKEN", "AZURE_STORAGE_SAS_TOKEN"]).map(|e| e.1));
    let principal = (
        first_env(env, &["AZURE_CLIENT_ID"]),
        first_env(env, &["AZURE_CLIENT_SECRET"]),
        first_env(env, &["AZURE_TENANT_ID"]),
    );
    if let Some(key) = key {
        redactor.add(&key);
        b = b.with_access_key(key);
    } else if let Some(sas) = sas {
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
            .map(|(k, v)| {
                // Only the signature is secret; redacting every value would also blank out
                // dates and permission letters elsewhere in messages.
                if k == "sig" {
                    redactor.add(&v);
                }
                (k.into_owned(), v.into_owned())
            })
            .collect();
        redactor.add(&sas);
        b = b.with_sas_authorization(pairs);
    } else if let (Some((_, id)), Some((_, secret)), Some((_, tenant))) = principal {
        redactor.add(&secret);
        b = b.with_client_secret_authorization(id, secret, tenant);
    } else if !opts.instance_credentials {
        return Err(Error::config(format!(
            "no Azure credentials for {}: {CREDENTIAL_HINT}",
            t.name
        )));
    }

    // Put Blob takes at most 5,000 MiB; larger files go up as blocks.
    let multipart = Multipart::from_options(opts.multipart_threshold, opts.multipart_part_size, env)
        .map_err(|e| Error::config(format!("{}: {e}", t.name)))?;
    Ok(
        ObjectReplica::from_builder(b.build(), t, LevelStyle::LtxDecimal, AZURE_TIMESTAMP_METADATA, redactor)?
            .with_multipart(multipart),
    )
}
