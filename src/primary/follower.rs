//! What the replicating process and the others that write the same database tell each
//! other, through files in the staging directory (they share nothing else):
//!
//! - `leader.json`: the replicating process's pid and node id, written when it takes
//!   the replication lock (`leader_lock.rs`);
//! - `uploaded.json`: the highest TXID it has stored, after every upload;
//! - `sync/<name>.req`: a follower's `litestream_sync()` asking "store everything
//!   committed so far"; the replicating process answers with `sync/<name>.ans` holding
//!   the TXID that covers every commit made before the request (it catches up on the WAL
//!   and the hand-off records after seeing the request), and the follower waits until
//!   `uploaded.json` reaches it. TXIDs, not WAL positions: generations of the WAL cannot
//!   be ordered by their salts.

use super::Primary;
use crate::file_modes::FileModes;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub pid: u32,
    pub node_id: u64,
    pub since_ms: i64,
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
fn write_json(path: &Path, modes: FileModes, value: &impl Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    modes.write_file(&tmp, &serde_json::to_vec(value).expect("serialises"))?;
    fs::rename(tmp, path)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// The process that just took the replication lock says so.
pub fn announce_leader(staging_dir: &Path, modes: FileModes, node_id: u64) {
    let leader = Leader {
        pid: std::process::id(),
        node_id,
        since_ms: now_ms(),
    };
    if let Err(e) = write_json(&staging_dir.join("leader.json"), modes, &leader) {
        tracing::warn!("writing {}: {e}", staging_dir.join("leader.json").display());
    }
}

pub fn read_leader(staging_dir: &Path) -> Option<Leader> {
    read_json(&staging_dir.join("leader.json"))
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

/// Leader side: the requests waiting, listed *before* catching up on the WAL (a commit
/// made before a request is then in the WAL or a hand-off record by the time it is read).
/// Answers nobody collected for a minute (their process died) are removed.
pub fn pending_requests(staging_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(sync_dir(staging_dir)) else {
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

/// Follower side of `litestream_sync()`: asks the replicating process for the TXID that
/// covers this process's commits, then waits until it is stored. If this process takes
/// replication over meanwhile (`leader` returns its primary), it finishes the sync itself.
pub fn sync(
    db_path: &Path,
    staging_dir: &Path,
    modes: FileModes,
    timeout: Duration,
    leader: &dyn Fn() -> Option<Arc<Primary>>,
) -> Result<u64, String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let deadline = Instant::now() + timeout;
    let dir = sync_dir(staging_dir);
    modes
        .create_dir_all(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let request = dir.join(format!("{name}.req"));
    let answer_path = dir.join(format!("{name}.ans"));
    modes
        .write_file(&request, b"")
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
            return primary.sync_all(deadline.saturating_duration_since(Instant::now()));
        }
        if answered.is_none() {
            answered = read_json(&answer_path);
        }
        if let Some(answer) = answered {
            let stored = read_uploaded(staging_dir).filter(|u| u.node_id == answer.node_id);
            if let Some(stored) = stored.filter(|u| u.txid >= answer.txid) {
                cleanup();
                return Ok(stored.txid);
            }
        }
        if Instant::now() >= deadline {
            cleanup();
            let why = match (read_leader(staging_dir), answered) {
                (_, Some(a)) => format!("the replicating process has not stored TXID {} yet", a.txid),
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

/// `litestream_status()` in a process that does not replicate the database.
/// `last_write_ms`: when this process last wrote the WAL; commits it made after the
/// replicating process's last upload are not stored yet, and `unstored_seconds` says
/// for how long (a replicating process that is stuck shows here).
pub fn status(
    db_path: &Path,
    staging_dir: &Path,
    someone_replicates: bool,
    last_write_ms: Option<i64>,
) -> serde_json::Value {
    let uploaded = read_uploaded(staging_dir);
    let uploaded_at_ms = fs::metadata(staging_dir.join("uploaded.json"))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64);
    let unstored_seconds = match (last_write_ms, uploaded_at_ms) {
        (Some(w), Some(u)) if w > u => (now_ms() - w) as f64 / 1000.0,
        (Some(w), None) => (now_ms() - w) as f64 / 1000.0,
        _ => 0.0,
    };
    let leader = read_leader(staging_dir).filter(|_| someone_replicates);
    serde_json::json!({
        "role": "follower",
        "replicating": false,
        "database": db_path.display().to_string(),
        "replicated_by": leader.as_ref().map(|l| serde_json::json!({"pid": l.pid, "since_ms": l.since_ms})),
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
mod tests {
    use super::*;

    #[test]
    fn progress_and_leader_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_uploaded(dir.path()), None);
        let up = Uploaded { txid: 9, node_id: 3 };
        publish_uploaded(dir.path(), FileModes::NewDatabase, up);
        assert_eq!(read_uploaded(dir.path()), Some(up));
        announce_leader(dir.path(), FileModes::NewDatabase, 3);
        assert_eq!(read_leader(dir.path()).unwrap().pid, std::process::id());
    }

    #[test]
    fn a_request_is_answered_then_stored() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().to_path_buf();
        let answerer = {
            let staging = staging.clone();
            std::thread::spawn(move || loop {
                let pending = pending_requests(&staging);
                if let Some(request) = pending.first() {
                    answer(request, FileModes::NewDatabase, 7, 1);
                    std::thread::sleep(Duration::from_millis(50));
                    publish_uploaded(&staging, FileModes::NewDatabase, Uploaded { txid: 8, node_id: 1 });
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            })
        };
        // A stale progress file of another node does not count.
        publish_uploaded(&staging, FileModes::NewDatabase, Uploaded { txid: 100, node_id: 2 });
        let got = sync(
            Path::new("db"),
            &staging,
            FileModes::NewDatabase,
            Duration::from_secs(10),
            &|| None,
        )
        .unwrap();
        answerer.join().unwrap();
        assert_eq!(got, 8);
        assert!(
            fs::read_dir(sync_dir(&staging)).unwrap().next().is_none(),
            "request and answer removed"
        );
    }

    #[test]
    fn messages_between_processes_are_no_more_open_than_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let staging = dir.path().to_path_buf();
        let modes = FileModes::bits(0o640);
        let mode = |p: &Path| crate::file_modes::permission_bits(p).unwrap();
        let answerer = {
            let staging = staging.clone();
            std::thread::spawn(move || loop {
                if let Some(request) = pending_requests(&staging).first() {
                    let seen = (mode(&sync_dir(&staging)), mode(request));
                    answer(request, modes, 1, 1);
                    publish_uploaded(&staging, modes, Uploaded { txid: 1, node_id: 1 });
                    return seen;
                }
                std::thread::sleep(Duration::from_millis(5));
            })
        };
        sync(Path::new("db"), &staging, modes, Duration::from_secs(10), &|| None).unwrap();
        assert_eq!(
            answerer.join().unwrap(),
            (0o750, 0o640),
            "the sync directory and a request"
        );
        announce_leader(&staging, modes, 1);
        for name in ["uploaded.json", "leader.json"] {
            assert_eq!(mode(&staging.join(name)), 0o640, "{name}");
        }
    }

    #[test]
    fn an_unanswered_request_times_out_saying_why() {
        let dir = tempfile::tempdir().unwrap();
        let err = sync(
            Path::new("db"),
            dir.path(),
            FileModes::NewDatabase,
            Duration::from_millis(50),
            &|| None,
        )
        .unwrap_err();
        assert!(err.contains("no process replicates it"), "{err}");
    }
}
