//! The replicating process's status error, told to the processes that follow it:
//! `leader-error.json` beside `leader.json` (`follower.rs`). A web server's workers are
//! asked for their status at random, and the one asked is usually a follower: its status
//! knew nothing of the uploads failing in another process until its own commits had
//! waited 10 s, and then only that they waited. The replicating process writes the file
//! from its leadership turn (every 5 s) when its error changes and removes it when the
//! error clears; a follower shows it only when it names the pid `leader.json` names, so
//! an exited process's error is not taken for the next one's.

use super::follower::{read_json, write_json};
use crate::file_modes::FileModes;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderError {
    pub pid: u32,
    pub message: String,
    /// When the replicating process first reported an error since it last had none
    /// (the message may change meanwhile: "no answer … for N s").
    pub since_ms: i64,
}

fn file(lock_dir: &Path) -> PathBuf {
    lock_dir.join("leader-error.json")
}

/// What one replicating process last published: `None` until its first turn, which
/// writes or removes the file whatever a process before it left.
#[derive(Debug, Default)]
pub struct Published(Mutex<Option<Option<LeaderError>>>, Mutex<Option<String>>);

impl Published {
    /// Writes `error` (this process's status error now) when it differs from what was
    /// published; removes the file when it cleared.
    pub fn publish(&self, lock_dir: &Path, modes: FileModes, error: Option<String>) {
        let mut published = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let before = published.clone().flatten();
        if published.is_some() && before.as_ref().map(|e| &e.message) == error.as_ref() {
            return;
        }
        let now = error.map(|message| LeaderError {
            pid: std::process::id(),
            message,
            since_ms: before.map_or_else(now_ms, |b| b.since_ms),
        });
        let written = match &now {
            Some(e) => write_json(&file(lock_dir), modes, e),
            None => match std::fs::remove_file(file(lock_dir)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        let failure = written
            .as_ref()
            .err()
            .map(|e| format!("{}: {e}", file(lock_dir).display()));
        if let Ok(()) = written {
            *published = Some(now);
        }
        // Tried again every turn (5 s) while it fails (a full disk): said once.
        let mut failed = self.1.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(why) = failure.as_ref().filter(|why| failed.as_ref() != Some(*why)) {
            tracing::warn!("telling the other processes this one's status error: {why}");
        }
        *failed = failure;
    }
}

/// A replicating process closing with commits not stored leaves why, for the next one
/// to open: with a connection per request no process lives to its first leadership
/// turn, nor, on a store that does not answer, to its own upload's failure, so every
/// new connection's status said nothing during an outage (a tester: 0 of 85 samples in
/// 90 s). One that stored everything removes what an earlier one left.
pub fn at_close(lock_dir: &Path, modes: FileModes, unstored: Option<String>) {
    let path = file(lock_dir);
    let written = match unstored {
        Some(message) => {
            let since_ms = read_json::<LeaderError>(&path).map_or_else(now_ms, |e| e.since_ms);
            let left = LeaderError {
                pid: std::process::id(),
                message,
                since_ms,
            };
            write_json(&path, modes, &left)
        }
        None => match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    };
    if let Err(e) = written {
        tracing::debug!("{}: {e}", path.display());
    }
}

/// What the replicating process before this one left (`at_close`; this process too,
/// for its earlier connection), if any.
pub fn left_before(lock_dir: &Path) -> Option<LeaderError> {
    read_json::<LeaderError>(&file(lock_dir))
}

/// The error the replicating process `pid` reports, if any.
pub fn read(lock_dir: &Path, pid: u32) -> Option<LeaderError> {
    read_json::<LeaderError>(&file(lock_dir)).filter(|e| e.pid == pid)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_is_published_once_kept_since_its_start_and_removed_when_it_clears() {
        let dir = tempfile::tempdir().unwrap();
        let modes = FileModes::NewDatabase;
        let me = std::process::id();
        // A file an exited process left is removed by the first turn with no error.
        let stale = LeaderError {
            pid: me,
            message: "old".into(),
            since_ms: 1,
        };
        write_json(&file(dir.path()), modes, &stale).unwrap();
        let published = Published::default();
        published.publish(dir.path(), modes, None);
        assert_eq!(read(dir.path(), me), None);

        published.publish(dir.path(), modes, Some("no answer for 6 s".into()));
        let first = read(dir.path(), me).unwrap();
        assert_eq!(first.message, "no answer for 6 s");
        published.publish(dir.path(), modes, Some("no answer for 11 s".into()));
        let second = read(dir.path(), me).unwrap();
        assert_eq!(
            (second.message.as_str(), second.since_ms),
            ("no answer for 11 s", first.since_ms),
            "the same outage: since its start"
        );
        assert_eq!(
            read(dir.path(), me + 1),
            None,
            "another process's error is not this one's"
        );
        published.publish(dir.path(), modes, None);
        assert!(!file(dir.path()).exists());
    }
}
