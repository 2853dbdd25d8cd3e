//! Replica URL parsing: which URLs open, which fail, and what the failures say.
//!
//! Every case runs against an explicit environment, never the process's.

use std::collections::HashMap;

use litestream_vfs::storage::{open_store_with_env, Error, StoreOptions};

const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-SECRETVALUE";
const AZURE_KEY: &str = "ZmFrZS1henVyZS1hY2NvdW50LWtleS1mb3ItdGVzdHM="; // base64, as Azure keys are
const SAS: &str = "sv=2022-11-02&ss=b&srt=co&sp=rwdl&se=2030-01-01T00:00:00Z&sig=SASSIGNATUREVALUE";

fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn open(url: &str, opts: &StoreOptions, env: &HashMap<String, String>) -> Result<String, Error> {
    open_store_with_env(url, opts, &|k| env.get(k).cloned()).map(|s| s.describe().to_string())
}

fn s3_env() -> HashMap<String, String> {
    env_of(&[
        ("LITESTREAM_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("LITESTREAM_SECRET_ACCESS_KEY", SECRET),
    ])
}

#[test]
fn good_urls_open() {
    let s3 = s3_env();
    let aws = env_of(&[
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", SECRET),
        ("AWS_REGION", "eu-west-1"),
    ]);
    let none = env_of(&[]);
    let gcs_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        gcs_file.path(),
        r#"{"type":"authorized_user","client_id":"id","client_secret":"s","refresh_token":"r"}"#,
    )
    .unwrap();
    let gcs = env_of(&[("GOOGLE_APPLICATION_CREDENTIALS", gcs_file.path().to_str().unwrap())]);
    let azure = env_of(&[("LITESTREAM_AZURE_ACCOUNT_KEY", AZURE_KEY)]);
    let azure_sas = env_of(&[("AZURE_STORAGE_ACCOUNT", "acct"), ("LITESTREAM_AZURE_SAS_TOKEN", SAS)]);
    let dir = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}/replica", dir.path().display());

    let cases: Vec<(&str, &HashMap<String, String>)> = vec![
        (&file_url, &none),
        ("memory://a", &none),
        ("memory://a/b/c", &none),
        (
            "s3://bucket/db?endpoint=http://127.0.0.1:9000&region=us-east-1&forcePathStyle=true",
            &s3,
        ),
        (
            "s3://bucket/db?endpoint=127.0.0.1:9000&force-path-style=false&skip-verify=true",
            &s3,
        ),
        (
            "s3://bucket/db?endpoint=https://s3.example.com&skipVerify=false&signPayload=true",
            &s3,
        ),
        (
            "s3://bucket/a/b/db?region=us-west-2&storageClass=STANDARD_IA&partSize=5242880&concurrency=2",
            &s3,
        ),
        ("s3://bucket/db?requireContentMD5=false&sseKmsKeyId=alias/x", &aws),
        ("s3://bucket/db", &aws),
        ("s3://bucket.s3.eu-central-1.amazonaws.com/db", &s3),
        ("gs://bucket/db", &gcs),
        ("abs://acct@container/db", &azure),
        ("abs://acct@container/db?endpoint=http://127.0.0.1:10000/acct", &azure),
        ("az://container/db", &azure_sas),
    ];
    for (url, env) in cases {
        let described = open(url, &StoreOptions::default(), env).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(!described.contains(SECRET), "{described}");
    }

    // Credentials and endpoint from options alone.
    let opts = StoreOptions {
        endpoint: Some("http://127.0.0.1:9000".into()),
        access_key_id: Some("AKID".into()),
        secret_access_key: Some(SECRET.into()),
        ..Default::default()
    };
    open("s3://bucket/db", &opts, &none).unwrap();

    // The EC2 instance profile only when asked for.
    let opts = StoreOptions {
        instance_credentials: true,
        region: Some("us-east-1".into()),
        ..Default::default()
    };
    open("s3://bucket/db", &opts, &none).unwrap();
}

/// Bad URLs fail at open with a configuration error whose message contains `needle`.
#[test]
fn bad_urls_fail_clearly() {
    let s3 = s3_env();
    let none = env_of(&[("HOME", "/nonexistent")]);
    let key_only = env_of(&[("LITESTREAM_ACCESS_KEY_ID", "AKID")]);
    let secret_only = env_of(&[("AWS_SECRET_ACCESS_KEY", SECRET)]);
    let bad_azure_key = env_of(&[("LITESTREAM_AZURE_ACCOUNT_KEY", "not base64 !! SECRETVALUE")]);
    let cases: Vec<(&str, &HashMap<String, String>, &str)> = vec![
        ("relative/path", &none, "no scheme"),
        ("/abs/path", &none, "no scheme"),
        ("ftp://host/x", &none, "unsupported replica URL scheme \"ftp\""),
        ("nats://127.0.0.1:4222/", &none, "no valid object store bucket"),
        (
            "nats://SECRETVALUE@127.0.0.1:4222/a.b",
            &none,
            "no valid object store bucket",
        ),
        (
            "nats://127.0.0.1:4222/b?region=x",
            &none,
            "unknown parameter \"region\"",
        ),
        (
            "nats://127.0.0.1:4222/b?nats_creds=/nonexistent/x.creds",
            &none,
            "x.creds",
        ),
        ("s3://bucket/db?bogus=1", &s3, "unknown parameter \"bogus\""),
        (
            "s3://bucket/db?force_path_style=true",
            &s3,
            "unknown parameter \"force_path_style\"",
        ),
        (
            "s3://bucket/db?forcePathStyle=maybe&endpoint=http://x",
            &s3,
            "parameter forcePathStyle: 'maybe' is not a boolean (use 1, true, yes or on; 0, false, no or off",
        ),
        ("s3:///db?endpoint=http://127.0.0.1:9000", &s3, "names no bucket"),
        (
            "s3://bucket?endpoint=http://127.0.0.1:9000",
            &s3,
            "needs a path inside the bucket",
        ),
        (
            "s3://bucket/?endpoint=http://127.0.0.1:9000",
            &s3,
            "needs a path inside the bucket",
        ),
        (
            "s3://bucket/db?endpoint=http://127.0.0.1:9000",
            &none,
            "LITESTREAM_ACCESS_KEY_ID",
        ),
        (
            "s3://bucket/db?endpoint=http://127.0.0.1:9000",
            &key_only,
            "LITESTREAM_SECRET_ACCESS_KEY",
        ),
        (
            "s3://bucket/db?endpoint=http://127.0.0.1:9000",
            &secret_only,
            "no access key id",
        ),
        ("s3://bucket/db", &s3, "AWS_REGION"),
        (
            "s3://AKID:SECRETVALUE@bucket/db?region=x",
            &s3,
            "credentials do not belong in URLs",
        ),
        (
            "s3://bucket/db?region=x&sseCustomerKey=SECRETVALUE&sseCustomerAlgorithm=DES",
            &s3,
            "AES256",
        ),
        ("file://otherhost/x", &none, "file URLs are local"),
        ("file:///tmp/x?foo=1", &none, "take no parameters"),
        ("memory://x?y=1", &none, "take no parameters"),
        ("gs://bucket/db", &none, "GOOGLE_APPLICATION_CREDENTIALS"),
        ("gs://bucket/db?endpoint=x", &none, "take no parameters"),
        ("abs://container/db", &none, "AZURE_STORAGE_ACCOUNT"),
        ("abs://acct@container/db", &none, "LITESTREAM_AZURE_ACCOUNT_KEY"),
        ("abs://acct@container/db?sig=SECRETVALUE", &none, "unknown parameter"),
        ("abs://acct@container/db", &bad_azure_key, "abs://acct@container/db"),
    ];
    for (url, env, needle) in cases {
        let err = match open(url, &StoreOptions::default(), env) {
            Ok(d) => panic!("{url} opened as {d}, expected an error mentioning {needle:?}"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{url}: not a config error: {err:?}");
        assert!(msg.contains(needle), "{url}: {msg:?} does not mention {needle:?}");
        for secret in [SECRET, "SECRETVALUE", AZURE_KEY] {
            assert!(!msg.contains(secret), "{url}: message leaks a secret: {msg}");
        }
    }
}

#[test]
fn options_override_url_and_env() {
    // An endpoint in the options makes an otherwise region-less AWS URL valid (us-east-1 is
    // the default for custom endpoints), and option credentials beat missing env ones.
    let opts = StoreOptions {
        endpoint: Some("http://127.0.0.1:1".into()),
        access_key_id: Some("AKID".into()),
        secret_access_key: Some(SECRET.into()),
        ..Default::default()
    };
    let d = open("s3://bucket/db", &opts, &env_of(&[])).unwrap();
    assert_eq!(d, "s3://bucket/db");
    // A bad option value is caught by StoreOptions::set before it gets here.
    let mut o = StoreOptions::default();
    assert!(o.set("skipVerify", "perhaps").is_err());
}
