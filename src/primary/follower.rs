//! Replication progress shared between processes. Only one process replicates a
//! database (it holds the staging lock); others that write it through the VFS are
//! followers, whose commits the leader picks up from the WAL. The leader publishes
//! the WAL position its uploads have reached in `<staging>/uploaded.json`, so that
//! `litestream_sync()` in a follower can wait for its own commits.

use super::capture::Capture;
use super::wal_file::WalFile;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the leader's uploads stand: TXID and the WAL position right after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uploaded {
    pub txid: u64,
    pub salt1: u32,
    pub salt2: u32,
    pub next_frame: u64,
}

fn progress_file(staging_dir: &Path) -> PathBuf {
    staging_dir.join("uploaded.json")
}

/// Leader side: replaces the published position (atomically; no fsync — it is a
/// hint for live processes, not recovery state).
pub fn publish(staging_dir: &Path, uploaded: &Uploaded) -> std::io::Result<()> {
    let path = progress_file(staging_dir);
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec(uploaded).expect("serialises"))?;
    fs::rename(tmp, path)
}

pub fn read_published(staging_dir: &Path) -> Option<Uploaded> {
    serde_json::from_slice(&fs::read(progress_file(staging_dir)).ok()?).ok()
}

/// Salt-1 goes up by one at every WAL restart: `a` is a later generation than `b`.
fn later_generation(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < (1 << 31)
}

/// A process that writes a database another process replicates.
#[derive(Clone, Debug)]
pub struct Follower {
    pub db_path: PathBuf,
    pub staging_dir: PathBuf,
}

impl Follower {
    /// Blocks until the leader has uploaded every commit now in the WAL (which
    /// includes this process's), or `timeout`. Returns the TXID uploaded.
    pub fn sync(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let mut wal = WalFile::open(&self.db_path).map_err(|e| format!("reading the WAL: {e}"))?;
        let mut capture = Capture::new();
        capture
            .skip_to_end(&mut wal)
            .map_err(|e| format!("reading the WAL: {e}"))?;
        let target = capture.position();
        loop {
            let published = read_published(&self.staging_dir);
            match (published, target) {
                // No WAL: everything was checkpointed; what the leader published stands.
                (Some(up), None) => return Ok(up.txid),
                (Some(up), Some(t)) => {
                    let covered = if (up.salt1, up.salt2) == (t.salt1, t.salt2) {
                        up.next_frame >= t.next_frame
                    } else {
                        later_generation(up.salt1, t.salt1)
                    };
                    if covered {
                        return Ok(up.txid);
                    }
                }
                (None, _) => {}
            }
            if self.leader_gone() {
                return Err(format!(
                    "no process replicates {} any more (its replicating process exited); reopen the database \
                     to take replication over",
                    self.db_path.display()
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "timed out after {timeout:?}: another process replicates {} (it holds {}/lock) and has not \
                     uploaded this process's commits yet; is it still running?",
                    self.db_path.display(),
                    self.staging_dir.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// True when no process holds the staging lock any more.
    fn leader_gone(&self) -> bool {
        super::registry::lock_is_free(&self.staging_dir)
    }

    pub fn status(&self) -> serde_json::Value {
        let published = read_published(&self.staging_dir);
        serde_json::json!({
            "role": "follower",
            "database": self.db_path.display().to_string(),
            "replicated_by": "another process (it holds the staging lock)",
            "uploaded_txid": published.map(|u| u.txid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_compare_by_salt1_with_wraparound() {
        assert!(later_generation(5, 4));
        assert!(!later_generation(4, 5));
        assert!(!later_generation(4, 4));
        assert!(later_generation(0, u32::MAX));
    }

    #[test]
    fn published_progress_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_published(dir.path()), None);
        let up = Uploaded {
            txid: 9,
            salt1: 1,
            salt2: 2,
            next_frame: 30,
        };
        publish(dir.path(), &up).unwrap();
        assert_eq!(read_published(dir.path()), Some(up));
    }
}
