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
        let get = |key: &str, env_key: &str| -> Option<String> {
            params
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .or_else(|| env(env_key))
                .filter(|v| !v.is_empty())
        };
        let role = match get("role", "LITESTREAM_ROLE").as_deref() {
            None | Some("primary") => Role::Primary,
            Some("replica") => Role::Replica,
            Some(other) => return Err(format!("role must be 'primary' or 'replica', not '{other}'")),
        };
        let replica_url = get("replica", "LITESTREAM_REPLICA_URL").ok_or_else(|| {
            "no replica URL: open with ?replica=<url> (file:///path, s3://bucket/path, memory://name, ...) \
             or set LITESTREAM_REPLICA_URL"
                .to_string()
        })?;
        let sync_interval = match get("sync_interval", "LITESTREAM_SYNC_INTERVAL") {
            Some(v) => parse_duration(&v).map_err(|e| format!("sync_interval: {e}"))?,
            None => Duration::from_secs(1),
        };
        if sync_interval.is_zero() {
            return Err("sync_interval must be greater than zero".into());
        }
        let sync_mode = match get("sync", "LITESTREAM_SYNC").as_deref() {
            None | Some("async") => SyncMode::Async,
            Some("commit") => SyncMode::Commit,
            Some(other) => return Err(format!("sync must be 'async' or 'commit', not '{other}'")),
        };
        let sync_timeout = match get("sync_timeout", "LITESTREAM_SYNC_TIMEOUT") {
            Some(v) => parse_duration(&v).map_err(|e| format!("sync_timeout: {e}"))?,
            None => Duration::from_secs(30),
        };
        let staging_dir = match get("staging", "LITESTREAM_STAGING_DIR") {
            Some(dir) => PathBuf::from(dir),
            None => default_staging_dir(db_path),
        };
        let max_staging_bytes = match get("max_staging", "LITESTREAM_MAX_STAGING") {
            Some(v) => parse_size(&v).map_err(|e| format!("max_staging: {e}"))?,
            None => 1 << 30,
        };
        let max_queue_bytes = match get("max_queue", "LITESTREAM_MAX_QUEUE") {
            Some(v) => parse_size(&v).map_err(|e| format!("max_queue: {e}"))?,
            None => 64 << 20,
        };
        let zstd_level = match get("compression", "LITESTREAM_COMPRESSION").as_deref() {
            None | Some("lz4") => None,
            Some("zstd") => Some(3),
            Some(other) => match other.strip_prefix("zstd:").map(str::parse::<i32>) {
                Some(Ok(level)) if (1..=19).contains(&level) => Some(level),
                _ => return Err(format!("compression must be lz4, zstd or zstd:<1-19>, not '{other}'")),
            },
        };
        let poll_interval = match get("poll_interval", "LITESTREAM_POLL_INTERVAL") {
            Some(v) => parse_duration(&v).map_err(|e| format!("poll_interval: {e}"))?,
            None => Duration::from_secs(1),
        };
        if poll_interval.is_zero() {
            return Err("poll_interval must be greater than zero".into());
        }
        let cache_size = match get("cache_size", "LITESTREAM_CACHE_SIZE") {
            Some(v) => parse_size(&v).map_err(|e| format!("cache_size: {e}"))?,
            None => 64 << 20,
        };
        let takeover = match get("takeover", "LITESTREAM_TAKEOVER").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => return Err(format!("takeover must be 1 or 0, not '{other}'")),
        };
        let allow_unfenced = match get("fencing", "LITESTREAM_FENCING").as_deref() {
            None | Some("on") => false,
            Some("off") => true,
            Some(other) => return Err(format!("fencing must be on or off, not '{other}'")),
        };
        let compaction = match get("compaction", "LITESTREAM_COMPACTION").as_deref() {
            None | Some("1") | Some("on") => {
                let mut c = CompactionConfig::default();
                let duration = |key: &str, env_key: &str, slot: &mut Duration| -> Result<(), String> {
                    if let Some(v) = get(key, env_key) {
                        *slot = parse_duration(&v).map_err(|e| format!("{key}: {e}"))?;
                        if slot.is_zero() {
                            return Err(format!("{key} must be greater than zero"));
                        }
                    }
                    Ok(())
                };
                if let Some(list) = get("levels", "LITESTREAM_LEVELS") {
                    c.levels = parse_levels(&list)?;
                }
                for (i, key) in LEVEL_KEYS.iter().enumerate() {
                    let env_key = format!("LITESTREAM_{}", key.to_uppercase());
                    if get(key, &env_key).is_some() && i >= c.levels.len() {
                        return Err(format!(
                            "{key}: the ladder has {} levels; list them all with levels=",
                            c.levels.len()
                        ));
                    }
                    if let Some(slot) = c.levels.get_mut(i) {
                        duration(key, &env_key, slot)?;
                    }
                }
                duration(
                    "snapshot_interval",
                    "LITESTREAM_SNAPSHOT_INTERVAL",
                    &mut c.snapshot_interval,
                )?;
                duration("retention", "LITESTREAM_RETENTION", &mut c.retention)?;
                duration("l0_retention", "LITESTREAM_L0_RETENTION", &mut c.l0_retention)?;
                if let Some(v) = get("max_compaction_input", "LITESTREAM_MAX_COMPACTION_INPUT") {
                    c.max_input_bytes = parse_size(&v).map_err(|e| format!("max_compaction_input: {e}"))?;
                    if c.max_input_bytes == 0 {
                        return Err("max_compaction_input must be greater than zero".into());
                    }
                }
                if c.levels.windows(2).any(|w| w[0] > w[1]) {
                    let ladder: Vec<String> = c.levels.iter().map(|d| format!("{d:?}")).collect();
                    return Err(format!(
                        "compaction intervals must grow with the level: {}",
                        ladder.join(", ")
                    ));
                }
                Some(c)
            }
            Some("0") | Some("off") => None,
            Some(other) => return Err(format!("compaction must be on or off, not '{other}'")),
        };
        let metrics_addr = get("metrics_addr", "LITESTREAM_METRICS_ADDR");
        if let Some(addr) = &metrics_addr {
            crate::metrics::parse_addr(addr)?;
        }
        let encryption = crate::keys::encryption_from(
            get("encryption_key", "LITESTREAM_ENCRYPTION_KEY").as_deref(),
            get("encryption_key_file", "LITESTREAM_ENCRYPTION_KEY_FILE").as_deref(),
            get("encrypt_to", "LITESTREAM_ENCRYPT_TO").as_deref(),
        )?;
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
            hydrate: get("hydrate", "LITESTREAM_HYDRATE").map(PathBuf::from),
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
        .map(|d| parse_duration(d.trim()).map_err(|e| format!("levels: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if levels.is_empty() || levels.len() > MAX_LEVELS {
        return Err(format!(
            "levels: between 1 and {MAX_LEVELS} intervals, not {}",
            levels.len()
        ));
    }
    if levels.iter().any(Duration::is_zero) {
        return Err("levels: every interval must be greater than zero".into());
    }
    Ok(levels)
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
