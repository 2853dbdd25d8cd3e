//! Tests of reading a database's settings (`config.rs`).

use super::*;

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn defaults_apply_when_only_the_replica_is_given() {
    let c = Config::from_params(Path::new("/d/app.db"), &params(&[("replica", "memory://x")]), &no_env).unwrap();
    assert_eq!(c.role, Role::Primary);
    assert_eq!(c.sync_interval, Duration::from_secs(1));
    assert_eq!(c.sync_mode, SyncMode::Async);
    assert_eq!(c.staging_dir, PathBuf::from("/d/app.db-litestream"));
    assert_eq!(c.zstd_level, None);
    assert_eq!(c.poll_interval, Duration::from_secs(1));
    assert_eq!(c.cache_size, 64 << 20);
    assert!(!c.allow_unfenced, "fencing is required unless fencing=off");
    let ladder = c.compaction.unwrap();
    let minutes: Vec<u64> = ladder.levels.iter().map(|d| d.as_secs()).collect();
    assert_eq!(minutes, [30, 180, 900, 3600, 6 * 3600]);
    assert_eq!(ladder.snapshot_interval, Duration::from_secs(86400));
    assert_eq!(ladder.retention, Duration::from_secs(86400));
    assert_eq!(ladder.max_input_bytes, 64 << 20);
}

#[test]
fn the_fencing_probe_is_once_per_bucket_and_endpoint_but_per_directory_on_file() {
    let location = |replica: &str, endpoint: Option<&str>| {
        let mut p = vec![("replica", replica)];
        if let Some(e) = endpoint {
            p.push(("endpoint", e));
        }
        Config::from_params(Path::new("a.db"), &params(&p), &no_env)
            .unwrap()
            .replica_location()
    };
    let tenant = |i: u32| location(&format!("s3://bucket/tenants/{i}"), Some("http://127.0.0.1:9000"));
    assert_eq!(tenant(1), tenant(2));
    assert_ne!(
        tenant(1),
        location("s3://other/tenants/1", Some("http://127.0.0.1:9000"))
    );
    assert_ne!(
        tenant(1),
        location("s3://bucket/tenants/1", Some("http://127.0.0.1:9001"))
    );
    assert_ne!(tenant(1), location("gs://bucket/tenants/1", None));
    assert_ne!(location("file:///mnt/a/1", None), location("file:///mnt/b/1", None));
}

#[test]
fn the_compaction_ladder_is_configurable_or_off() {
    let c = Config::from_params(
        Path::new("a.db"),
        &params(&[
            ("replica", "memory://x"),
            ("l1_interval", "1s"),
            ("retention", "2d"),
            ("max_compaction_input", "16MiB"),
        ]),
        &|k| (k == "LITESTREAM_SNAPSHOT_INTERVAL").then(|| "90s".to_string()),
    )
    .unwrap()
    .compaction
    .unwrap();
    assert_eq!(c.max_input_bytes, 16 << 20);
    assert_eq!(c.levels[0], Duration::from_secs(1));
    assert_eq!(c.snapshot_interval, Duration::from_secs(90));
    assert_eq!(c.retention, Duration::from_secs(2 * 86400));
    // Litestream's own ladder, then one of its levels changed.
    let litestream = Config::from_params(
        Path::new("a.db"),
        &params(&[
            ("replica", "memory://x"),
            ("levels", "30s, 5m,1h"),
            ("l2_interval", "10m"),
        ]),
        &no_env,
    )
    .unwrap()
    .compaction
    .unwrap();
    let secs: Vec<u64> = litestream.levels.iter().map(|d| d.as_secs()).collect();
    assert_eq!(secs, [30, 600, 3600]);
    let off = Config::from_params(
        Path::new("a.db"),
        &params(&[("replica", "memory://x"), ("compaction", "off")]),
        &no_env,
    )
    .unwrap();
    assert_eq!(off.compaction, None);
}

#[test]
fn uri_parameters_win_over_the_environment() {
    let env = |k: &str| match k {
        "LITESTREAM_REPLICA_URL" => Some("file:///env".to_string()),
        "LITESTREAM_SYNC_INTERVAL" => Some("5s".to_string()),
        _ => None,
    };
    let c = Config::from_params(Path::new("a.db"), &params(&[("sync_interval", "250ms")]), &env).unwrap();
    assert_eq!(c.replica_url, "file:///env");
    assert_eq!(c.sync_interval, Duration::from_millis(250));
}

#[test]
fn mistakes_are_errors_that_name_the_problem() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[], "no replica URL"),
        (
            &[("replica", "memory://x"), ("replca", "y")],
            "unknown URI parameter 'replca'",
        ),
        (&[("replica", "memory://x"), ("role", "leader")], "role: must be"),
        (&[("replica", "memory://x"), ("sync_interval", "fast")], "sync_interval"),
        (
            &[("replica", "memory://x"), ("sync_interval", "0s")],
            "greater than zero",
        ),
        (&[("replica", "memory://x"), ("sync", "always")], "sync: must be"),
        (&[("replica", "memory://x"), ("max_staging", "lots")], "max_staging"),
        (
            &[("replica", "memory://x"), ("compression", "gzip")],
            "compression: must be",
        ),
        (&[("replica", "memory://x"), ("poll_interval", "0s")], "poll_interval"),
        (&[("replica", "memory://x"), ("cache_size", "big")], "cache_size"),
        (
            &[("replica", "memory://x"), ("retention", "0s")],
            "retention: must be greater",
        ),
        (
            &[("replica", "memory://x"), ("compaction", "maybe")],
            "compaction: 'maybe' is not a boolean",
        ),
        (
            &[("replica", "memory://x"), ("fencing", "sometimes")],
            "fencing: 'sometimes' is not a boolean",
        ),
        (
            &[("replica", "memory://x"), ("l1_interval", "10m")],
            "intervals must grow",
        ),
        (
            &[("replica", "memory://x"), ("levels", "1s,2s,3s,4s,5s,6s,7s,8s,9s")],
            "between 1 and 8 intervals",
        ),
        (&[("replica", "memory://x"), ("levels", "1s,0s")], "greater than zero"),
        (
            &[("replica", "memory://x"), ("levels", "1s,1m"), ("l3_interval", "1h")],
            "l3_interval: the ladder has 2 levels",
        ),
        (
            &[("replica", "memory://x"), ("metrics_addr", "localhost")],
            "metrics_addr: 'localhost'",
        ),
    ];
    for (given, expected) in cases {
        let err = Config::from_params(Path::new("a.db"), &params(given), &no_env).unwrap_err();
        assert!(err.contains(expected), "{given:?}: {err}");
    }
}

#[test]
fn an_error_names_the_uri_parameter_or_the_environment_variable_the_value_came_from() {
    // Every setting read through `Given::parse`, with a value it refuses.
    let cases = [
        ("role", "LITESTREAM_ROLE", "replcia"),
        ("sync_interval", "LITESTREAM_SYNC_INTERVAL", "5x"),
        ("sync_interval", "LITESTREAM_SYNC_INTERVAL", "0s"),
        ("sync", "LITESTREAM_SYNC", "always"),
        ("sync_timeout", "LITESTREAM_SYNC_TIMEOUT", "soon"),
        ("max_staging", "LITESTREAM_MAX_STAGING", "lots"),
        ("max_queue", "LITESTREAM_MAX_QUEUE", "1x"),
        ("compression", "LITESTREAM_COMPRESSION", "gzip"),
        ("poll_interval", "LITESTREAM_POLL_INTERVAL", "0"),
        ("cache_size", "LITESTREAM_CACHE_SIZE", "big"),
        ("takeover", "LITESTREAM_TAKEOVER", "maybe"),
        ("fencing", "LITESTREAM_FENCING", "maybe"),
        ("compaction", "LITESTREAM_COMPACTION", "maybe"),
        ("levels", "LITESTREAM_LEVELS", "1s,x"),
        ("l1_interval", "LITESTREAM_L1_INTERVAL", "0s"),
        ("snapshot_interval", "LITESTREAM_SNAPSHOT_INTERVAL", "1y"),
        ("retention", "LITESTREAM_RETENTION", "0s"),
        ("l0_retention", "LITESTREAM_L0_RETENTION", "-1s"),
        ("max_compaction_input", "LITESTREAM_MAX_COMPACTION_INPUT", "0"),
        ("metrics_addr", "LITESTREAM_METRICS_ADDR", "localhost"),
        ("encryption_key", "LITESTREAM_ENCRYPTION_KEY", "xyz"),
        (
            "encryption_key_file",
            "LITESTREAM_ENCRYPTION_KEY_FILE",
            "/nonexistent/key",
        ),
    ];
    for (key, env_key, bad) in cases {
        let from_uri = Config::from_params(
            Path::new("a.db"),
            &params(&[("replica", "memory://x"), (key, bad)]),
            &no_env,
        )
        .unwrap_err();
        assert!(from_uri.starts_with(&format!("{key}: ")), "{key}={bad}: {from_uri}");
        let env = |k: &str| (k == env_key).then(|| bad.to_string());
        let from_env = Config::from_params(Path::new("a.db"), &params(&[("replica", "memory://x")]), &env).unwrap_err();
        assert!(
            from_env.starts_with(&format!("{env_key}: ")),
            "{env_key}={bad}: {from_env}"
        );
        // The rest of the message is the same whichever source gave the value.
        assert_eq!(&from_env[env_key.len()..], &from_uri[key.len()..]);
    }
}

#[test]
fn every_boolean_setting_takes_the_same_spellings_and_refuses_others() {
    let open = |key: &str, value: &str| {
        Config::from_params(
            Path::new("a.db"),
            &params(&[("replica", "s3://b/p"), (key, value)]),
            &no_env,
        )
    };
    /// How a configuration shows one boolean setting.
    type Reader = fn(&Config) -> bool;
    let read: [(&str, Reader); 5] = [
        ("takeover", |c| c.takeover),
        ("fencing", |c| !c.allow_unfenced),
        ("compaction", |c| c.compaction.is_some()),
        ("force-path-style", |c| c.store_options.force_path_style.unwrap()),
        ("skip-verify", |c| c.store_options.skip_verify.unwrap()),
    ];
    for (key, value_of) in read {
        for yes in ["1", "true", "TRUE", "yes", "Yes", "on", "ON", "t"] {
            assert!(value_of(&open(key, yes).unwrap()), "{key}={yes}");
        }
        for no in ["0", "false", "False", "no", "NO", "off", "Off", "f"] {
            assert!(!value_of(&open(key, no).unwrap()), "{key}={no}");
        }
        let err = open(key, "maybe").unwrap_err();
        assert!(
            err.contains(key) && err.contains("'maybe' is not a boolean (use 1, true, yes or on; 0, false, no or off"),
            "{key}: {err}"
        );
    }
}

#[test]
fn store_options_and_sqlite_parameters_are_accepted() {
    let c = Config::from_params(
        Path::new("a.db"),
        &params(&[
            ("replica", "s3://b/p"),
            ("endpoint", "http://127.0.0.1:1"),
            ("vfs", "litestream"),
            ("mode", "rwc"),
        ]),
        &no_env,
    )
    .unwrap();
    assert_eq!(c.store_options.endpoint.as_deref(), Some("http://127.0.0.1:1"));
}

#[test]
fn durations_and_sizes_parse_with_units() {
    assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert!(parse_duration("-1s").is_err());
    assert_eq!(parse_size("64MB").unwrap(), 64 << 20);
    assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
    assert_eq!(parse_size("4096").unwrap(), 4096);
    assert!(parse_size("1x").is_err());
}

#[test]
fn a_relative_staging_directory_is_resolved_against_the_working_directory_at_open() {
    let given = params(&[("replica", "memory://x"), ("staging", "stg/app")]);
    let c = Config::from_params(Path::new("/d/app.db"), &given, &no_env).unwrap();
    assert_eq!(c.staging_dir, std::env::current_dir().unwrap().join("stg/app"));
    let given = params(&[("replica", "memory://x"), ("staging", "/s/app")]);
    let c = Config::from_params(Path::new("/d/app.db"), &given, &no_env).unwrap();
    assert_eq!(c.staging_dir, PathBuf::from("/s/app"));
}

/// An empty `encryption_key=` in the URI was "unset": no encryption, and the valid key
/// in `LITESTREAM_ENCRYPTION_KEY` ignored. Now it is refused, naming the parameter.
#[test]
fn an_empty_encryption_key_in_the_uri_is_refused_not_a_silent_override() {
    let key = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
    let env = |k: &str| (k == "LITESTREAM_ENCRYPTION_KEY").then(|| key.to_string());
    let err = Config::from_params(
        Path::new("a.db"),
        &params(&[("replica", "memory://x"), ("encryption_key", "")]),
        &env,
    )
    .unwrap_err();
    assert!(err.starts_with("encryption_key is empty"), "{err}");
    let keyed = Config::from_params(Path::new("a.db"), &params(&[("replica", "memory://x")]), &env).unwrap();
    assert!(keyed.encryption.is_some());
    let empty_env = |k: &str| (k == "LITESTREAM_ENCRYPTION_KEY_FILE").then(String::new);
    let err = Config::from_params(Path::new("a.db"), &params(&[("replica", "memory://x")]), &empty_env).unwrap_err();
    assert!(err.starts_with("LITESTREAM_ENCRYPTION_KEY_FILE is empty"), "{err}");
}

/// An empty URI parameter of ours was "unset" and hid its environment variable: a reader
/// with an empty `role=` beside `LITESTREAM_ROLE=replica` opened as a primary. Refused now.
#[test]
fn an_empty_uri_parameter_is_refused_not_a_silent_override_of_the_environment() {
    let env = |k: &str| (k == "LITESTREAM_ROLE").then(|| "replica".to_string());
    for key in ["role", "sync", "sync_interval", "compaction", "staging", "hydrate"] {
        let err = Config::from_params(
            Path::new("a.db"),
            &params(&[("replica", "memory://x"), (key, "")]),
            &env,
        )
        .unwrap_err();
        assert!(err.starts_with(&format!("{key}= is empty")), "{err}");
    }
    let c = Config::from_params(Path::new("a.db"), &params(&[("replica", "memory://x")]), &env).unwrap();
    assert_eq!(
        c.role,
        Role::Replica,
        "the environment applies when the parameter is left out"
    );
}

/// Parameters the open's role does not read are named (and logged as ignored).
#[test]
fn parameters_the_role_does_not_use_are_named() {
    let given = params(&[
        ("replica", "memory://x"),
        ("hydrate", "/h"),
        ("sync", "commit"),
        ("cache_size", "1MiB"),
    ]);
    assert_eq!(
        crate::config::ignored_params(&given, Role::Primary),
        ["hydrate", "cache_size"]
    );
    assert_eq!(crate::config::ignored_params(&given, Role::Replica), ["sync"]);
    let plain = params(&[("replica", "memory://x"), ("role", "replica"), ("poll_interval", "2s")]);
    assert!(crate::config::ignored_params(&plain, Role::Replica).is_empty());
}
