//! Per-database configuration from URI parameters, then `LITESTREAM_*` environment
//! variables, then defaults. Anything unknown or malformed is an error at open: a
//! typo must never leave a database silently unreplicated.

use crate::file_modes::FileModes;
use crate::ltx::crypto::Encryption;
use crate::storage::StoreOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Which side of replication a connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

/// When a commit returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Commits return at once; uploads follow every `sync_interval`.
    Async,
    /// A commit returns once its TXID is in object storage.
    Commit,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub role: Role,
    pub replica_url: String,
    /// Store options given as top-level URI parameters (endpoint, region, ...): a
    /// replica URL nested in a SQLite URI loses its own `&`-separated query to SQLite.
    pub store_options: StoreOptions,
    pub sync_interval: Duration,
    pub sync_mode: SyncMode,
    /// How long `sync=commit` waits before the commit returns with a logged error, and
    /// the longest a close waits for its last upload (the rest stays staged).
    pub sync_timeout: Duration,
    pub staging_dir: PathBuf,
    /// Staged bytes not yet uploaded beyond which capture stops and a snapshot is
    /// taken once the store is back.
    pub max_staging_bytes: u64,
    /// Captured bytes waiting in memory beyond which they are staged early.
    pub max_queue_bytes: u64,
    /// Use zstd page payloads (smaller; Litestream cannot read them).
    pub zstd_level: Option<i32>,
    /// Continue a replica written by another database or writer (e.g. Litestream
    /// itself) with a full snapshot at its next TXID, instead of refusing to open.
    pub takeover: bool,
    /// Replica: how often the store is polled for new TXIDs.
    pub poll_interval: Duration,
    /// Replica: bytes of decompressed pages kept in memory.
    pub cache_size: u64,
    /// Replica: local file the whole database is downloaded into in the background.
    pub hydrate: Option<PathBuf>,
    /// Primary: the compaction ladder, snapshots and retention; `None` = off.
    pub compaction: Option<CompactionConfig>,
    /// Primary: permissions of the files and directories created for the database
    /// (staging, snapshots, `file://` replica files): the database file's own, set by
    /// [`Config::set_file_modes`] once the database is known.
    pub file_modes: FileModes,
    /// Where the process serves Prometheus metrics (`/metrics`); `None` = nowhere. One
    /// listener per process: the first database opened with an address starts it.
    pub metrics_addr: Option<String>,
    /// Encryption at rest (LTX v4): the key reads the replica; a primary writes every new
    /// file encrypted to its recipients. `None` = plaintext.
    pub encryption: Option<Arc<Encryption>>,
    /// Primary: replicate even to a store found not to honour conditional creates
    /// (`fencing=off`), where a second primary on the replica would go unnoticed.
    pub allow_unfenced: bool,
}

/// When the primary compacts, snapshots and deletes (Litestream's defaults). Windows are
/// aligned to wall-clock time: level 1 runs at :00 and :30 of every minute, and so on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactionConfig {
    /// Intervals of levels 1, 2, … (at most [`MAX_LEVELS`], each at least the one below).
    pub levels: Vec<Duration>,
    /// A full snapshot (level 9) every this long.
    pub snapshot_interval: Duration,
    /// How far back point-in-time restores reach.
    pub retention: Duration,
    /// How long level-0 files stay once compacted into level 1 (restores finer than a
    /// level-1 window reach this far back).
    pub l0_retention: Duration,
    /// The most input bytes one compaction merges into one file: a busy window is written
    /// as several files under this, each a size a restore's plan and one PUT handle well.
    pub max_input_bytes: u64,
}

impl Default for CompactionConfig {
    fn default() -> Self {
        CompactionConfig {
            // Five levels, each 4 to 6 times the one below, so that a restore to any
            // point of the day chains about 11 files (Litestream's three levels of
            // 30 s, 5 min and 1 h need about 22); README "Point-in-time restore".
            levels: vec![
                Duration::from_secs(30),
                Duration::from_secs(3 * 60),
                Duration::from_secs(15 * 60),
                Duration::from_secs(3600),
                Duration::from_secs(6 * 3600),
            ],
            snapshot_interval: Duration::from_secs(24 * 3600),
            retention: Duration::from_secs(24 * 3600),
            l0_retention: Duration::from_secs(5 * 60),
            max_input_bytes: 64 << 20,
        }
    }
}

/// Parameters SQLite itself understands in a URI filename; passed through untouched.
const SQLITE_PARAMS: &[&str] = &[
    "vfs",
    "mode",
    "cache",
    "psow",
    "nolock",
    "immutable",
    "modeof",
    "readonly_shm",
];
const OUR_PARAMS: &[&str] = &[
    "replica",
    "role",
    "sync_interval",
    "sync",
    "sync_timeout",
    "staging",
    "max_staging",
    "max_queue",
    "compression",
    "takeover",
    "fencing",
    "poll_interval",
    "cache_size",
    "hydrate",
    "compaction",
    "levels",
    "l1_interval",
    "l2_interval",
    "l3_interval",
    "l4_interval",
    "l5_interval",
    "snapshot_interval",
    "retention",
    "l0_retention",
    "max_compaction_input",
    "metrics_addr",
    "encryption_key",
    "encryption_key_file",
    "encrypt_to",
];

impl Config {
    /// Builds the configuration of the database at `db_path` from its URI parameters
    /// and the environment (`env` is a lookup so tests need not touch the process).
    pub fn from_params(
        db_path: &Path,
        params: &[(String, String)],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, String> {
        refuse_empty_params(params)?;
        let mut store_options = StoreOptions::default();
        for (key, value) in params {
            if SQLITE_PARAMS.contains(&key.as_str()) || OUR_PARAMS.contains(&key.as_str()) {
                continue;
            }
            match store_options.set(key, value) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(format!(
                        "unknown URI parameter '{key}' (ours: {}; store options: endpoint, region, \
                         force-path-style, skip-verify, access-key-id, secret-access-key, account-name, \
                         account-key, sas-token, requests_per_second, multipart_threshold, multipart_part_size, nats_creds, nats_token, nats_user, nats_password, nats_tls_*, nats_chunk_size)",
                        OUR_PARAMS.join(", ")
                    ))
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let given = Given { params, env };
        let role = given
            .parse("role", "LITESTREAM_ROLE", |v| match v {
                "primary" => Ok(Role::Primary),
                "replica" => Ok(Role::Replica),
                other => Err(format!("must be 'primary' or 'replica', not '{other}'")),
            })?
            .unwrap_or(Role::Primary);
        warn_of_ignored_params(db_path, params, role);
        let replica_url = given.text("replica", "LITESTREAM_REPLICA_URL").ok_or_else(|| {
            "no replica URL: open with ?replica=<url> (file:///path, s3://bucket/path, memory://name, ...) \
             or set LITESTREAM_REPLICA_URL"
                .to_string()
        })?;
        let sync_interval = given
            .parse("sync_interval", "LITESTREAM_SYNC_INTERVAL", positive_duration)?
            .unwrap_or(Duration::from_secs(1));
        let sync_mode = given
            .parse("sync", "LITESTREAM_SYNC", |v| match v {
                "async" => Ok(SyncMode::Async),
                "commit" => Ok(SyncMode::Commit),
                other => Err(format!("must be 'async' or 'commit', not '{other}'")),
            })?
            .unwrap_or(SyncMode::Async);
        let sync_timeout = given
            .parse("sync_timeout", "LITESTREAM_SYNC_TIMEOUT", parse_duration)?
            .unwrap_or(Duration::from_secs(30));
        let staging_dir = match given.text("staging", "LITESTREAM_STAGING_DIR") {
            // Resolved now: the directory is used for as long as the database is open,
            // and a process that changes its working directory meanwhile (a daemon, a
            // test runner) staged to another directory, where a takeover or the next open
            // did not find what was staged.
            Some(dir) => std::path::absolute(&dir).unwrap_or_else(|_| PathBuf::from(dir)),
            None => default_staging_dir(db_path),
        };
        let max_staging_bytes = given
            .parse("max_staging", "LITESTREAM_MAX_STAGING", parse_size)?
            .unwrap_or(1 << 30);
        let max_queue_bytes = given
            .parse("max_queue", "LITESTREAM_MAX_QUEUE", parse_size)?
            .unwrap_or(64 << 20);
        let zstd_level = given
            .parse("compression", "LITESTREAM_COMPRESSION", |v| match v {
                "lz4" => Ok(None),
                "zstd" => Ok(Some(3)),
                other => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                    Some(Ok(level)) if (1..=19).contains(&level) => Ok(Some(level)),
                    _ => Err(format!("must be lz4, zstd or zstd:<1-19>, not '{other}'")),
                },
            })?
            .flatten();
        let poll_interval = given
            .parse("poll_interval", "LITESTREAM_POLL_INTERVAL", positive_duration)?
            .unwrap_or(Duration::from_secs(1));
        let cache_size = given
            .parse("cache_size", "LITESTREAM_CACHE_SIZE", parse_size)?
            .unwrap_or(64 << 20);
        let takeover = given
            .parse("takeover", "LITESTREAM_TAKEOVER", parse_bool)?
            .unwrap_or(false);
        let allow_unfenced = !given
            .parse("fencing", "LITESTREAM_FENCING", parse_bool)?
            .unwrap_or(true);
        let compaction_on = given
            .parse("compaction", "LITESTREAM_COMPACTION", parse_bool)?
            .unwrap_or(true);
        let compaction = if compaction_on {
            let mut c = CompactionConfig::default();
            if let Some(levels) = given.parse("levels", "LITESTREAM_LEVELS", parse_levels)? {
                c.levels = levels;
            }
            for (i, key) in LEVEL_KEYS.iter().enumerate() {
                let env_key = format!("LITESTREAM_{}", key.to_uppercase());
                if let Some(name) = given.name(key, &env_key) {
                    if i >= c.levels.len() {
                        return Err(format!(
                            "{name}: the ladder has {} levels; list them all with levels=",
                            c.levels.len()
                        ));
                    }
                }
                if let Some(d) = given.parse(key, &env_key, positive_duration)? {
                    c.levels[i] = d;
                }
            }
            let durations = [
                (
                    "snapshot_interval",
                    "LITESTREAM_SNAPSHOT_INTERVAL",
                    &mut c.snapshot_interval,
                ),
                ("retention", "LITESTREAM_RETENTION", &mut c.retention),
                ("l0_retention", "LITESTREAM_L0_RETENTION", &mut c.l0_retention),
            ];
            for (key, env_key, slot) in durations {
                if let Some(d) = given.parse(key, env_key, positive_duration)? {
                    *slot = d;
                }
            }
            let max_input =
                given.parse(
                    "max_compaction_input",
                    "LITESTREAM_MAX_COMPACTION_INPUT",
                    |v| match parse_size(v)? {
                        0 => Err("must be greater than zero".to_string()),
                        bytes => Ok(bytes),
                    },
                )?;
            if let Some(bytes) = max_input {
                c.max_input_bytes = bytes;
            }
            if c.levels.windows(2).any(|w| w[0] > w[1]) {
                let ladder: Vec<String> = c.levels.iter().map(|d| format!("{d:?}")).collect();
                return Err(format!(
                    "compaction intervals must grow with the level: {}",
                    ladder.join(", ")
                ));
            }
            Some(c)
        } else {
            None
        };
        let metrics_addr = given.parse("metrics_addr", "LITESTREAM_METRICS_ADDR", |v| {
            crate::metrics::parse_addr(v).map(|_| v.to_string())
        })?;
        // As given, empty values included: an empty key is refused, never read as "no
        // key" (and an empty `encryption_key=` no longer hides LITESTREAM_ENCRYPTION_KEY
        // by being unset: it is an error too).
        let encryption = crate::keys::encryption_from(
            given.as_given("encryption_key", "LITESTREAM_ENCRYPTION_KEY").as_ref(),
            given
                .as_given("encryption_key_file", "LITESTREAM_ENCRYPTION_KEY_FILE")
                .as_ref(),
            given.as_given("encrypt_to", "LITESTREAM_ENCRYPT_TO").as_ref(),
        )?;
        let hydrate = given.text("hydrate", "LITESTREAM_HYDRATE").map(PathBuf::from);
        Ok(Config {
            metrics_addr,
            encryption,
            compaction,
            role,
            replica_url,
            store_options,
            sync_interval,
            sync_mode,
            sync_timeout,
            staging_dir,
            max_staging_bytes,
            max_queue_bytes,
            zstd_level,
            takeover,
            allow_unfenced,
            poll_interval,
            cache_size,
            hydrate,
            file_modes: FileModes::default(),
        })
    }

    /// Gives everything created for the database these permissions: staging and state
    /// files, and the files of a `file://` replica.
    pub fn set_file_modes(&mut self, modes: FileModes) {
        self.file_modes = modes;
        self.store_options.file_modes = Some(modes);
    }

    /// What names the replica's store for the once-per-process fencing check. Whether
    /// conditional creates are honoured is a property of the service and its bucket (or
    /// container), not of a path in it: a thousand tenants' databases in one bucket are
    /// probed once, not a thousand times (six requests each). A `file://` replica keeps
    /// its whole path (another directory may be another file system), and so does any
    /// URL without a host. The endpoint is part of it: URI parameters set it apart.
    pub fn replica_location(&self) -> String {
        let store = match url::Url::parse(&self.replica_url) {
            Ok(u) if u.scheme() != "file" && u.host_str().is_some_and(|h| !h.is_empty()) => {
                format!("{}://{}", u.scheme(), u.host_str().unwrap_or_default())
            }
            _ => self.replica_url.clone(),
        };
        format!("{store} {:?}", self.store_options.endpoint)
    }
}

/// The parameters of ours a read replica reads; the rest are a primary's.
const REPLICA_PARAMS: &[&str] = &[
    "replica",
    "role",
    "poll_interval",
    "cache_size",
    "hydrate",
    "metrics_addr",
    "encryption_key",
    "encryption_key_file",
];
/// The parameters of ours only a read replica reads.
const REPLICA_ONLY_PARAMS: &[&str] = &["poll_interval", "cache_size", "hydrate"];

/// Says which URI parameters this open ignores: `hydrate=` on a primary made no local
/// copy, `sync=commit` on a replica did nothing, without a word (found by a tester).
/// A warning, not a refusal: one URI template for both roles is a fair thing to have.
fn warn_of_ignored_params(db_path: &Path, params: &[(String, String)], role: Role) {
    let ignored = ignored_params(params, role);
    if !ignored.is_empty() {
        let (what, other) = match role {
            Role::Replica => ("a read replica", "a primary's"),
            Role::Primary => ("a primary", "a read replica's"),
        };
        tracing::warn!(
            db = %db_path.display(),
            "{} ignored: {what} does not use {} (each is {other} setting)",
            ignored.iter().map(|k| format!("{k}=")).collect::<Vec<_>>().join(", "),
            if ignored.len() == 1 { "it" } else { "them" }
        );
    }
}

/// The URI parameters of ours that an open as `role` does not read.
pub(crate) fn ignored_params(params: &[(String, String)], role: Role) -> Vec<&str> {
    params
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| OUR_PARAMS.contains(k))
        .filter(|k| match role {
            Role::Replica => !REPLICA_PARAMS.contains(k),
            Role::Primary => REPLICA_ONLY_PARAMS.contains(k),
        })
        .collect()
}

/// Refuses a URI parameter of ours given with an empty value (`role=`, `sync=`): nearly
/// always a template or shell variable that was not filled in. Read as "unset" it
/// silently hid the environment: with `LITESTREAM_ROLE=replica` a reader opened with an
/// empty `role=` became a primary of a restored copy, and an empty `sync=` turned
/// `LITESTREAM_SYNC=commit` back into async commits (found by a tester). The encryption
/// settings say it in their own words (`keys.rs`).
fn refuse_empty_params(params: &[(String, String)]) -> Result<(), String> {
    let keys = ["encryption_key", "encryption_key_file", "encrypt_to"];
    let empty = params
        .iter()
        .find(|(k, v)| v.trim().is_empty() && OUR_PARAMS.contains(&k.as_str()) && !keys.contains(&k.as_str()));
    match empty {
        Some((key, _)) => Err(format!(
            "{key}= is empty: give a value, or leave {key} out for its default or its environment \
             variable (an empty value is usually a variable that was not filled in; it is refused \
             rather than read as unset)"
        )),
        None => Ok(()),
    }
}

/// One setting's value and the name it was given under: the URI parameter, or the
/// environment variable when the URI did not set it. Errors name what the user wrote, so
/// a bad `LITESTREAM_SYNC_INTERVAL` is not reported as a `sync_interval` nobody typed.
pub struct Setting {
    pub value: String,
    pub name: String,
}

/// The URI parameters and the environment a database's settings are read from: a URI
/// parameter wins, an empty value is unset.
struct Given<'a> {
    params: &'a [(String, String)],
    env: &'a dyn Fn(&str) -> Option<String>,
}

impl Given<'_> {
    fn setting(&self, key: &str, env_key: &str) -> Option<Setting> {
        self.as_given(key, env_key).filter(|s| !s.value.is_empty())
    }

    /// The setting as given, even empty: the URI parameter if present, else the
    /// environment variable if set. For settings where an empty value is a mistake to
    /// report rather than "unset" (the encryption key).
    fn as_given(&self, key: &str, env_key: &str) -> Option<Setting> {
        let from_uri = self.params.iter().rev().find(|(k, _)| k == key);
        let (value, name) = match from_uri {
            Some((_, v)) => (v.clone(), key),
            None => ((self.env)(env_key)?, env_key),
        };
        Some(Setting {
            value,
            name: name.to_string(),
        })
    }

    fn text(&self, key: &str, env_key: &str) -> Option<String> {
        self.setting(key, env_key).map(|s| s.value)
    }

    /// The name the setting was given under, if it was.
    fn name(&self, key: &str, env_key: &str) -> Option<String> {
        self.setting(key, env_key).map(|s| s.name)
    }

    /// The setting read with `parse`; its error is prefixed with the name the value was
    /// given under (`sync_interval: …` or `LITESTREAM_SYNC_INTERVAL: …`).
    fn parse<T>(
        &self,
        key: &str,
        env_key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        self.setting(key, env_key)
            .map(|s| parse(&s.value).map_err(|e| format!("{}: {e}", s.name)))
            .transpose()
    }
}

/// A duration above zero (an interval of zero would spin).
fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// Where a database's staging directory is unless `staging=` says: beside it, named
/// after it.
pub fn default_staging_dir(db_path: &Path) -> PathBuf {
    let mut name = db_path.as_os_str().to_owned();
    name.push("-litestream");
    PathBuf::from(name)
}

/// Most incremental levels a ladder may have: level 9 holds snapshots, and Litestream's
/// restore looks for files in levels 0 to 8.
pub const MAX_LEVELS: usize = 8;

/// URI parameters that set one level's interval (the first levels of the default ladder).
const LEVEL_KEYS: [&str; 5] = [
    "l1_interval",
    "l2_interval",
    "l3_interval",
    "l4_interval",
    "l5_interval",
];

/// `levels=30s,5m,1h`: the whole ladder, level 1 first.
fn parse_levels(list: &str) -> Result<Vec<Duration>, String> {
    let levels = list
        .split(',')
        .map(|d| parse_duration(d.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    if levels.is_empty() || levels.len() > MAX_LEVELS {
        return Err(format!("between 1 and {MAX_LEVELS} intervals, not {}", levels.len()));
    }
    if levels.iter().any(Duration::is_zero) {
        return Err("every interval must be greater than zero".into());
    }
    Ok(levels)
}

/// Parses a boolean setting, URI parameter or environment variable (ours and the store
/// options alike), with the spellings SQLite's own boolean URI parameters take (`1`/`0`,
/// `true`/`false`, `yes`/`no`, `on`/`off`) and those of Go's `strconv.ParseBool`, which
/// Litestream's URLs use (`t`/`f`), in any case. Anything else is an error, never false:
/// a typo must not silently turn a setting off.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "on" => Ok(true),
        "0" | "false" | "f" | "no" | "off" => Ok(false),
        _ => Err(format!(
            "'{text}' is not a boolean (use 1, true, yes or on; 0, false, no or off; t and f also work, in any case)"
        )),
    }
}

/// Parses `250ms`, `1s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration like 500ms, 1s or 5m"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("'{text}' has an unknown unit (use ms, s, m, h or d)")),
    };
    if !seconds.is_finite() || !(0.0..=1e9).contains(&seconds) {
        return Err(format!("'{text}' is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses `4096`, `64k`, `256MB`, `1GiB` and the like into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size like 64MB"))?;
    let shift = match unit.trim().trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("'{text}' has an unknown unit (use k, m, g)")),
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
