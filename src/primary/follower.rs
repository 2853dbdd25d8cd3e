//! What the replicating process and the others that write the same database tell each
//! other, through files (they share nothing else):
//!
//! - `leader.json` beside the replication lock (`<db>-litestream/`, whatever the staging
//!   settings: `shared_staging.rs`): the replicating process's pid, node id and
//!   [`Destination`], written when it takes the replication lock (`leader_lock.rs`);
//! - `leader-error.json` beside it: the replicating process's status error
//!   (`leader_error.rs`);
//!
//! and in the staging directory:
//!
//! - `uploaded.json`: the highest TXID it has stored, after every upload;
//! - `sync/<name>.req`: a follower's `litestream_sync()` asking "store everything
//!   committed so far"; the replicating process answers with `sync/<name>.ans` holding
//!   the TXID that covers every commit made before the request (it catches up on the WAL
//!   and the hand-off records after seeing the request), and the follower waits until
//!   `uploaded.json` reaches it. TXIDs, not WAL positions: generations of the WAL cannot
//!   be ordered by their salts.

use super::leader_error;
use super::quiet_dir::QuietDir;
use super::shared_staging::{self, StagingDir};
use super::Primary;
use crate::config::Config;
use crate::engine::{DirWatch, JobId};
use crate::file_modes::FileModes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub pid: u32,
    pub node_id: u64,
    pub since_ms: i64,
    /// Absent when written by a version that did not say.
    #[serde(default)]
    pub destination: Option<Destination>,
}

/// Where the replicating process stores the database's commits, its followers' too: a
/// follower whose own settings name another place would otherwise see its
/// `litestream_sync()` succeed for commits that went elsewhere (or in plaintext when it
/// has a key), and the replica it names would later be taken over without them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// The replica URL (credentials redacted, no trailing slash) and any endpoint.
    pub replica: String,
    /// Public keys (hex) new files are encrypted to; none: plaintext.
    pub recipients: Vec<String>,
    /// The staging directory, where followers leave hand-off records and sync requests.
    /// Absent when written by a version that did not say, or not created yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging: Option<StagingDir>,
}

impl Destination {
    pub fn of(config: &Config) -> Destination {
        let url = match url::Url::parse(&config.replica_url) {
            Ok(mut u) => {
                let path = u.path().trim_end_matches('/').to_string();
                u.set_path(&path);
                u.to_string()
            }
            Err(_) => config.replica_url.trim_end_matches('/').to_string(),
        };
        let mut replica = crate::storage::redact_url(&url);
        if let Some(endpoint) = &config.store_options.endpoint {
            replica.push_str(&format!(" (endpoint {})", crate::storage::redact_url(endpoint)));
        }
        let mut recipients: Vec<String> = config
            .encryption
            .iter()
            .flat_map(|e| e.recipients().iter().map(|k| k.to_hex()))
            .collect();
        recipients.sort();
        Destination {
            replica,
            recipients,
            staging: StagingDir::of(&config.staging_dir),
        }
    }

    /// The replica and its encryption, naming the public keys by their first 16 hex
    /// digits, at most three: two destinations that differ only in their keys read
    /// differently. Not whole: a private key pasted into `encrypt_to=` by mistake is a
    /// "public key" here too.
    pub fn describe(&self) -> String {
        const SHOWN: usize = 3;
        match self.recipients.len() {
            0 => format!("{} (unencrypted)", self.replica),
            n => {
                let short: Vec<String> = self.recipients[..n.min(SHOWN)]
                    .iter()
                    .map(|k| format!("{}…", k.get(..16).unwrap_or(k)))
                    .collect();
                let mut keys = short.join(", ");
                if n > SHOWN {
                    keys.push_str(&format!(" and {} more", n - SHOWN));
                }
                format!(
                    "{} (encrypted to {n} key{}: public {keys})",
                    self.replica,
                    if n == 1 { "" } else { "s" }
                )
            }
        }
    }
}

/// Why this process's commits do not go where its settings say: the replicating
/// process (`leader`) stores them elsewhere or encrypted otherwise. `None` when they
/// agree, or the leader did not say.
/// Whether two processes' replicas (as [`Destination`] writes them: redacted, with the
/// endpoint after the URL) are one location: `//`, `.`, `..` and, for `file://`,
/// symlinks resolved as one process resolves its own databases' locations. Compared as
/// text before, a follower spelling the leader's directory `R//rep`, or through a
/// symlink, was told its commits went to "another replica" and its syncs failed (a
/// workers tester, 3 of 3).
fn same_location(theirs: &str, ours: &str) -> bool {
    let split = |d: &str| match d.find(" (endpoint ") {
        Some(i) => (d[..i].to_string(), d[i..].to_string()),
        None => (d.to_string(), String::new()),
    };
    let ((their_url, their_endpoint), (our_url, our_endpoint)) = (split(theirs), split(ours));
    theirs == ours
        || (their_endpoint == our_endpoint
            && crate::storage::location_key(&their_url) == crate::storage::location_key(&our_url))
}

pub fn destination_differs(db_path: &Path, leader: &Leader, ours: &Destination) -> Option<String> {
    let theirs = leader.destination.as_ref()?;
    let same_replica = same_location(&theirs.replica, &ours.replica);
    if same_replica && theirs.recipients == ours.recipients {
        // Ours as the directory is now: it may have been removed and made again.
        let ours_now = ours
            .staging
            .as_ref()
            .map(|s| StagingDir::of(&s.path).unwrap_or_else(|| s.clone()));
        let why = shared_staging::differs(theirs.staging.as_ref(), ours_now.as_ref())?;
        return Some(format!(
            "the process replicating {} (pid {}) {why} (litestream_sync() fails here until then)",
            db_path.display(),
            leader.pid
        ));
    }
    let what = if !same_replica {
        "another replica"
    } else if ours.recipients.is_empty() {
        "the same replica, encrypted"
    } else if theirs.recipients.is_empty() {
        "the same replica, unencrypted"
    } else {
        "the same replica, encrypted to other keys"
    };
    Some(format!(
        "the process replicating {} (pid {}) stores this process's commits in {what}: {}, not {} as this \
         connection's settings say; open every process that writes the database with the same replica= \
         and encryption settings (litestream_sync() fails here until then)",
        db_path.display(),
        leader.pid,
        theirs.describe(),
        ours.describe()
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub txid: u64,
    pub node_id: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Answer {
    txid: u64,
    node_id: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replaces `name` in `dir` atomically (no fsync: these are messages between live
/// processes, not recovery state), with the database's permissions.
pub(super) fn write_json(path: &Path, modes: FileModes, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    modes.write_file(&tmp, &serde_json::to_vec(value).expect("serialises"))?;
    fs::rename(tmp, path)
}

pub(super) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&crate::file_modes::read(path).ok()?).ok()
}

/// The process that just took the replication lock says so, and where it stores.
pub fn announce_leader(lock_dir: &Path, modes: FileModes, node_id: u64, mut destination: Destination) {
    // As the directory is now: it may have been removed and made again since the open.
    if let Some(staging) = destination.staging.as_mut() {
        *staging = StagingDir::of(&staging.path).unwrap_or_else(|| staging.clone());
    }
    let leader = Leader {
        pid: std::process::id(),
        node_id,
        since_ms: now_ms(),
        destination: Some(destination),
    };
    if let Err(e) = write_json(&lock_dir.join("leader.json"), modes, &leader) {
        tracing::warn!("writing {}: {e}", lock_dir.join("leader.json").display());
    }
}

pub fn read_leader(lock_dir: &Path) -> Option<Leader> {
    read_json(&lock_dir.join("leader.json"))
}

/// Leader side: everything up to `txid` is stored.
pub fn publish_uploaded(staging_dir: &Path, modes: FileModes, uploaded: Uploaded) {
    if let Err(e) = write_json(&staging_dir.join("uploaded.json"), modes, &uploaded) {
        tracing::warn!("publishing upload progress: {e}");
    }
}

pub fn read_uploaded(staging_dir: &Path) -> Option<Uploaded> {
    read_json(&staging_dir.join("uploaded.json"))
}

fn sync_dir(staging_dir: &Path) -> PathBuf {
    staging_dir.join("sync")
}

/// Leader side: wakes `worker` as soon as a follower writes a request, rather than at its
/// next turn (`None` when the directory cannot be watched: the turns serve them).
pub fn watch_requests(staging_dir: &Path, modes: FileModes, worker: JobId) -> Option<DirWatch> {
    let dir = sync_dir(staging_dir);
    if let Err(e) = modes.create_dir_all(&dir) {
        tracing::debug!("{}: {e}", dir.display());
        return None;
    }
    crate::engine::wake_on_new_file(&dir, ".req", worker)
}

/// Leader side: the requests waiting, listed *before* catching up on the WAL (a commit
/// made before a request is then in the WAL or a hand-off record by the time it is read).
/// Answers nobody collected for a minute (their process died) are removed.
pub fn pending_requests(staging_dir: &Path, quiet: &QuietDir) -> Vec<PathBuf> {
    let dir = sync_dir(staging_dir);
    quiet.list(&dir, 0, || Ok(requests_in(&dir))).unwrap_or_default()
}

fn requests_in(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut requests = Vec::new();
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        match path.extension().and_then(|x| x.to_str()) {
            Some("req") => requests.push(path),
            Some("ans") | Some("tmp") => {
                let stale = fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > Duration::from_secs(60));
                if stale {
                    let _ = fs::remove_file(&path);
                }
            }
            _ => {}
        }
    }
    requests
}

/// Leader side: every commit made before `request` is in TXIDs up to `txid`.
pub fn answer(request: &Path, modes: FileModes, txid: u64, node_id: u64) {
    let answer = request.with_extension("ans");
    if let Err(e) = write_json(&answer, modes, &Answer { txid, node_id }) {
        tracing::warn!("answering {}: {e}", request.display());
    }
    let _ = fs::remove_file(request);
}

/// What a follower asks of the replicating process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `litestream_sync()`: store every commit made so far.
    Sync,
    /// `litestream_snapshot()`: take a full snapshot, then store it.
    Snapshot,
}

/// The content of a request file asking for a snapshot (a sync request is empty).
const SNAPSHOT_REQUEST: &[u8] = b"snapshot";

/// Leader side: whether any of `requests` asks for a snapshot. Call it, then
/// [`snapshot_requests_taken`] once the snapshot is due: a replicating process that dies
/// in between leaves the requests asking, for the next one.
pub fn snapshot_asked(requests: &[PathBuf]) -> bool {
    requests
        .iter()
        .any(|r| crate::file_modes::read(r).is_ok_and(|c| c == SNAPSHOT_REQUEST))
}

/// Leader side: the snapshot `requests` asked for is due; they are sync requests from
/// now on, answered once it has its TXID.
pub fn snapshot_requests_taken(requests: &[PathBuf]) {
    for request in requests {
        if crate::file_modes::read(request).is_ok_and(|c| c == SNAPSHOT_REQUEST) {
            // Not created again if its asker gave up and removed it meanwhile.
            let truncate = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(request);
            if let Err(e) = truncate {
                tracing::debug!("{}: {e}", request.display());
            }
        }
    }
}

/// Follower side of `litestream_sync()` and `litestream_snapshot()` (`what`): asks the
/// replicating process for the TXID that covers this process's commits (after the
/// snapshot it takes, if asked), then waits until it is stored. If this process takes
/// replication over meanwhile (`leader` returns its primary), it finishes the work
/// itself. Fails at once when the replicating process stores elsewhere than `ours`.
pub fn ask(
    db_path: &Path,
    staging_dir: &Path,
    modes: FileModes,
    timeout: Duration,
    ours: &Destination,
    leader: &dyn Fn() -> Option<Arc<Primary>>,
    what: Ask,
) -> Result<u64, String> {
    let lock_dir = shared_staging::lock_dir(db_path);
    let differs = || read_leader(&lock_dir).and_then(|l| destination_differs(db_path, &l, ours));
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let deadline = Instant::now() + timeout;
    let dir = sync_dir(staging_dir);
    modes
        .create_dir_all(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // Before asking, and again with the answer (a takeover may come between).
    if let Some(why) = differs() {
        return Err(why);
    }
    let name = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let request = dir.join(format!("{name}.req"));
    let answer_path = dir.join(format!("{name}.ans"));
    match what {
        Ask::Sync => modes.write_file(&request, b"").map(drop),
        // Whole or not at all: a leader reading it half written would take it for a
        // sync request.
        Ask::Snapshot => {
            let written = dir.join(format!("{name}.tmp"));
            modes
                .write_file(&written, SNAPSHOT_REQUEST)
                .and_then(|_| fs::rename(&written, &request))
        }
    }
    .map_err(|e| format!("{}: {e}", request.display()))?;
    let cleanup = || {
        let _ = fs::remove_file(&request);
        let _ = fs::remove_file(&answer_path);
    };
    let mut answered: Option<Answer> = None;
    loop {
        if let Some(primary) = leader() {
            // This process replicates now: its own capture has every commit.
            cleanup();
            let left = deadline.saturating_duration_since(Instant::now());
            return match what {
                Ask::Sync => primary.sync_all(left),
                Ask::Snapshot => primary.snapshot_now(left),
            };
        }
        if answered.is_none() {
            answered = read_json(&answer_path);
        }
        if let Some(answer) = answered {
            let stored = read_uploaded(staging_dir).filter(|u| u.node_id == answer.node_id);
            if let Some(stored) = stored.filter(|u| u.txid >= answer.txid) {
                cleanup();
                return match differs() {
                    Some(why) => Err(why),
                    None => Ok(stored.txid),
                };
            }
        }
        if Instant::now() >= deadline {
            cleanup();
            let why = match (read_leader(&lock_dir), answered) {
                (_, Some(a)) => format!("the replicating process has not stored TXID {} yet", a.txid),
                // leader.json names this process: it took the lock to take replication
                // over, and its open of the replica has not succeeded (the log says why).
                (Some(l), None) if l.pid == std::process::id() => "this process took the replication lock to \
                    take replication over and has not managed to open the replica (its log says why)"
                    .to_string(),
                (Some(l), None) => format!(
                    "the replicating process (pid {}) has not answered; it catches up once per sync_interval",
                    l.pid
                ),
                (None, None) => "no process replicates it".to_string(),
            };
            return Err(format!(
                "timed out after {timeout:?} waiting for the commits of this process to {} to be stored: {why}",
                db_path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A follower's commit unstored this long (or 3 `sync_interval`s if longer) is its
/// status `error`.
const UNSTORED_ERROR_AFTER: Duration = Duration::from_secs(10);

/// `litestream_status()` in a process that does not replicate the database.
/// `oldest_unstored`: given when the replicating process last stored, the oldest write
/// of this process after it; `unstored_seconds` says how long that commit has waited (a
/// replicating process that is stuck shows here).
pub fn status(
    db_path: &Path,
    staging_dir: &Path,
    someone_replicates: bool,
    oldest_unstored: &dyn Fn(Option<i64>) -> Option<i64>,
    ours: &Destination,
    sync_interval: Duration,
) -> serde_json::Value {
    let uploaded = read_uploaded(staging_dir);
    let uploaded_at_ms = fs::metadata(staging_dir.join("uploaded.json"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let unstored_seconds = match oldest_unstored(uploaded_at_ms) {
        Some(w) => (now_ms() - w).max(0) as f64 / 1000.0,
        None => 0.0,
    };
    let lock_dir = shared_staging::lock_dir(db_path);
    let leader = read_leader(&lock_dir).filter(|_| someone_replicates);
    let differs = leader.as_ref().and_then(|l| destination_differs(db_path, l, ours));
    let leader_error = leader.as_ref().and_then(|l| leader_error::read(&lock_dir, l.pid));
    let reported = leader_error
        .as_ref()
        .map(|e| format!("the replicating process (pid {}) reports: {}", e.pid, e.message));
    // The replicating process stores nothing (the store is down, or it is stuck): its
    // own status says why, but a worker that polls only its own saw no error while its
    // commits waited (an operations tester: 14 s of an outage, `error` null).
    let waited_too_long = unstored_seconds >= UNSTORED_ERROR_AFTER.max(sync_interval * 3).as_secs_f64();
    let stuck = leader.as_ref().filter(|_| waited_too_long).map(|l| {
        format!(
            "this process's commits have waited {unstored_seconds:.0} s to be stored: the replicating process \
             (pid {}) has stored nothing since; its litestream_status() error and its log say why",
            l.pid
        )
    });
    // Nobody replicates and this process's commits wait: every process that has the
    // database open failed to take replication over (a key the replica refuses, a
    // replica it may not write). The note said a takeover comes within 2 x sync_interval
    // while none could (a keys tester: 140 rows of two workers never stored, `error` null).
    let unreplicated = (!someone_replicates && waited_too_long).then(|| {
        format!(
            "this process's commits have waited {unstored_seconds:.0} s to be stored, and no process replicates \
             the database: taking replication over has failed (this process's log says why)"
        )
    });
    serde_json::json!({
        "role": "follower",
        "replicating": false,
        "database": db_path.display().to_string(),
        "replicated_by": leader.as_ref().map(|l| serde_json::json!({
            "pid": l.pid,
            "since_ms": l.since_ms,
            "replica": l.destination.as_ref().map(|d| d.replica.clone()),
            "encrypted_to": l.destination.as_ref().map(|d| d.recipients.len()),
            "staging": l.destination.as_ref().and_then(|d| d.staging.as_ref()).map(|s| s.path.display().to_string()),
            "error": leader_error.as_ref().map(|e| e.message.clone()),
            "error_since_ms": leader_error.as_ref().map(|e| e.since_ms),
        })),
        // The replicating process's own reason first: it says why the commits wait.
        "error": differs.or(reported).or(stuck).or(unreplicated),
        // What the replicating process writes, as its own status says it (without the
        // counts only it keeps): null when it did not say.
        "encryption": leader.as_ref().and_then(|l| l.destination.as_ref()).map(|d| serde_json::json!({
            "encrypted": !d.recipients.is_empty(),
            "recipients": d.recipients.len(),
        })),
        "replicated_by_pid": leader.as_ref().map(|l| l.pid),
        "uploaded_txid": uploaded.map(|u| u.txid),
        "unstored_seconds": unstored_seconds,
        "note": if someone_replicates {
            serde_json::Value::Null
        } else {
            serde_json::json!("no process replicates this database right now: the replicating process exited; \
                a process that has it open takes over within 2 x sync_interval")
        },
    })
}

#[cfg(test)]
#[path = "follower_tests.rs"]
mod tests;
