//! The opens that failed lately in this process, for `litestream_status()`
//! (`failed_opens`). SQLite gives the application nothing but "unable to open database
//! file" for a refused open: the VFS cannot pass a message through `sqlite3_open_v2`.
//! The reason goes to the log and `sqlite3_log`, but a server that drops its stderr
//! still needs to see it: any connection of the process (`:memory:` too) reads it here.

use crate::vfs::sys::fork::ProcessMutex;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Databases remembered; the oldest failure goes first.
const KEPT: usize = 16;

struct Failure {
    path: PathBuf,
    error: String,
    at: Instant,
    times: u64,
}

/// Per process (`vfs::sys::fork`): a child's opens are its own.
static FAILED: ProcessMutex<Vec<Failure>> = ProcessMutex::new();

/// An open of `path` failed with `error`.
pub fn failed(path: &Path, error: &str) {
    let mut failed = FAILED.lock();
    let times = match failed.iter().position(|f| f.path == path) {
        Some(i) => failed.remove(i).times + 1,
        None => 1,
    };
    if failed.len() >= KEPT {
        failed.remove(0);
    }
    failed.push(Failure {
        path: path.to_path_buf(),
        error: error.to_string(),
        at: Instant::now(),
        times,
    });
}

/// An open of `path` succeeded: its earlier failures are over.
pub fn opened(path: &Path) {
    let mut failed = FAILED.lock();
    if !failed.is_empty() {
        failed.retain(|f| f.path != path);
    }
}

/// The failures still standing, newest first.
pub fn json() -> serde_json::Value {
    let failed = FAILED.lock();
    failed
        .iter()
        .rev()
        .map(|f| {
            json!({
                "path": f.path.display().to_string(),
                "error": f.error,
                "seconds_ago": f.at.elapsed().as_secs(),
                "times": f.times,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_open_is_listed_with_its_reason_until_the_database_opens_and_only_the_newest_are_kept() {
        let path = Path::new("/failed-opens-test/app.db");
        failed(path, "unknown URI parameter 'bogus'");
        failed(path, "unsupported replica URL scheme \"ftp\"");
        let listed = json();
        let mine: Vec<_> = listed
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["path"] == "/failed-opens-test/app.db")
            .collect();
        assert_eq!(mine.len(), 1, "one entry per database: {listed}");
        assert_eq!(mine[0]["error"], "unsupported replica URL scheme \"ftp\"");
        assert_eq!(mine[0]["times"], 2);
        opened(path);
        assert!(!json().to_string().contains("/failed-opens-test/app.db"));
        // Only the newest are kept (one test: the list is the process's).
        for i in 0..KEPT + 5 {
            failed(Path::new(&format!("/failed-opens-keep/{i}.db")), "refused");
        }
        let listed = json();
        assert!(listed.as_array().unwrap().len() <= KEPT);
        assert!(listed
            .to_string()
            .contains(&format!("/failed-opens-keep/{}.db", KEPT + 4)));
        assert!(!listed.to_string().contains("/failed-opens-keep/0.db\""));
    }
}
