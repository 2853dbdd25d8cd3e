//! Not listing a directory nothing was added to. Each engine turn of every primary
//! looks for follower sync requests (`sync/`), hand-off records (`handoff/`) and staged
//! files (`ltx/`): three listings a second per idle database, most of the ~25 system
//! calls of an idle turn (12% of a core for 1,000 idle databases). Adding, removing or
//! renaming an entry sets a directory's modification time, so a directory whose time
//! is the one it had when a listing found nothing in it still holds nothing: one
//! `stat` instead of a listing.
//!
//! The time is trusted only once it is [`SETTLED`] old when recorded: a file system
//! with coarse times (ext4's clock tick, FAT's 2 s) could give an entry added in the
//! same tick as the listing the same time. A full listing still runs every [`REFRESH`]
//! (stale files are swept then).

use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How old a directory's time must be before it vouches for the directory.
const SETTLED: Duration = Duration::from_secs(5);

/// A quiet directory is listed again after this, whatever its time says.
const REFRESH: Duration = Duration::from_secs(60);

/// What one directory looked like when a listing last found nothing in it.
#[derive(Clone, Debug, Default)]
pub struct QuietDir(Arc<Mutex<Option<Quiet>>>);

#[derive(Debug)]
struct Quiet {
    modified: SystemTime,
    listed_at: Instant,
    /// The caller's position when nothing was found (a record number): a listing from
    /// an earlier position could find what that one skipped.
    from: u64,
}

impl QuietDir {
    /// `list()`'s answer, or nothing without calling it when `dir` is unchanged since
    /// a listing from position `from` or earlier found nothing.
    pub fn list<T>(&self, dir: &Path, from: u64, list: impl FnOnce() -> io::Result<Vec<T>>) -> io::Result<Vec<T>> {
        // Read before listing: an entry added after this read changes the time, one
        // added before it is in the listing.
        let modified = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        let mut quiet = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some(modified), Some(q)) = (modified, quiet.as_ref()) {
            if q.modified == modified && from >= q.from && q.listed_at.elapsed() < REFRESH {
                return Ok(Vec::new());
            }
        }
        let found = list();
        let settled = |m: SystemTime| SystemTime::now().duration_since(m).is_ok_and(|age| age >= SETTLED);
        *quiet = match (&found, modified) {
            (Ok(found), Some(modified)) if found.is_empty() && settled(modified) => Some(Quiet {
                modified,
                listed_at: Instant::now(),
                from,
            }),
            _ => None,
        };
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::fs;

    /// Sets `dir`'s time `age` in the past, as a directory untouched that long.
    fn age(dir: &Path, age: Duration) {
        let f = fs::File::open(dir).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
    }

    fn listing(dir: &Path, calls: &Cell<u32>) -> io::Result<Vec<String>> {
        calls.set(calls.get() + 1);
        Ok(fs::read_dir(dir)?
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn a_settled_empty_directory_is_not_listed_again_until_an_entry_arrives() {
        let dir = tempfile::tempdir().unwrap();
        let (quiet, calls) = (QuietDir::default(), Cell::new(0));
        age(dir.path(), Duration::from_secs(10));
        assert!(quiet
            .list(dir.path(), 0, || listing(dir.path(), &calls))
            .unwrap()
            .is_empty());
        assert!(quiet
            .list(dir.path(), 0, || listing(dir.path(), &calls))
            .unwrap()
            .is_empty());
        assert_eq!(calls.get(), 1, "the second look is a stat");
        fs::write(dir.path().join("a.req"), b"").unwrap();
        assert_eq!(
            quiet.list(dir.path(), 0, || listing(dir.path(), &calls)).unwrap(),
            ["a.req"]
        );
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn a_directory_changed_within_the_settling_time_is_listed_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let (quiet, calls) = (QuietDir::default(), Cell::new(0));
        for _ in 0..3 {
            assert!(quiet
                .list(dir.path(), 0, || listing(dir.path(), &calls))
                .unwrap()
                .is_empty());
        }
        assert_eq!(calls.get(), 3, "a fresh time could hide an entry added in its tick");
    }

    #[test]
    fn an_entry_removed_and_another_added_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let (quiet, calls) = (QuietDir::default(), Cell::new(0));
        fs::write(dir.path().join("old"), b"").unwrap();
        age(dir.path(), Duration::from_secs(10));
        assert_eq!(
            quiet.list(dir.path(), 0, || listing(dir.path(), &calls)).unwrap().len(),
            1
        );
        assert_eq!(
            quiet.list(dir.path(), 0, || listing(dir.path(), &calls)).unwrap().len(),
            1
        );
        assert_eq!(calls.get(), 2, "a listing that found something is not trusted");
    }

    #[test]
    fn a_listing_from_an_earlier_position_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let (quiet, calls) = (QuietDir::default(), Cell::new(0));
        age(dir.path(), Duration::from_secs(10));
        quiet.list(dir.path(), 7, || listing(dir.path(), &calls)).unwrap();
        quiet.list(dir.path(), 9, || listing(dir.path(), &calls)).unwrap();
        assert_eq!(calls.get(), 1, "nothing after 7 means nothing after 9");
        quiet.list(dir.path(), 3, || listing(dir.path(), &calls)).unwrap();
        assert_eq!(calls.get(), 2, "records 4 to 7 were not looked for");
    }
}
