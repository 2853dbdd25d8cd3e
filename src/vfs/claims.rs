//! Which databases this process has open through the VFS as primaries, and the replica
//! location each writes: a replica location belongs to one database.
//!
//! SQLite opens an application's database, an `ATTACH`ed one and a `VACUUM INTO` target
//! alike: `SQLITE_OPEN_MAIN_DB`, through the connection's VFS (`attach.c`, `vacuum.c`),
//! so the open flags cannot tell them apart. What can is whether the open names its own
//! `replica=`. The environment (`LITESTREAM_REPLICA_URL`, ...) configures the first
//! database the process opens through the VFS; while any database is open through it, a
//! database opened without `replica=` is passed through untouched, as plain SQLite. Had
//! it taken the environment's location, it would have been restored from the other
//! database's replica and raced it for TXIDs under a node id of its own. Temporary and
//! transient files never carry `SQLITE_OPEN_MAIN_DB` and never get here.

use super::sys::fork::ProcessMap;
use crate::storage::{location_key, redact_url};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

struct Entry {
    /// The replica location's key (`location_key`): one string however it is spelled.
    location: String,
    /// Main-database handles open on the path (replicating or following).
    handles: usize,
}

/// A child of `fork()` starts with none of its parent's (those are the parent's;
/// `Database::inherited`).
static PRIMARIES: ProcessMap<PathBuf, Entry> = ProcessMap::new();

/// What an open of a main database gets.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Claim {
    /// It is (or joins) the primary of its location.
    Granted,
    /// It is left alone: `other` is open through the VFS, and this open named no
    /// replica of its own.
    PassThrough { other: PathBuf },
}

/// Another database than `path` open here as a primary, if any.
fn other_primary(map: &HashMap<PathBuf, Entry>, path: &Path) -> Option<PathBuf> {
    map.keys().find(|p| p.as_path() != path).cloned()
}

/// Before the configuration is even read: an open without its own `replica=` while
/// another database is open through the VFS (`other_replica`: as a read replica) passes
/// through. A path already open here keeps what it has.
pub(crate) fn pass_through(path: &Path, own_replica: bool, other_replica: Option<PathBuf>) -> Option<PathBuf> {
    if own_replica {
        return None;
    }
    let map = PRIMARIES.lock();
    if map.contains_key(path) {
        return None;
    }
    other_primary(&map, path).or(other_replica)
}

/// Claims `location` for the primary `path` (one more handle if it has it already).
/// An open without its own `replica=` passes through if another primary is open here
/// (checked again under the lock: two first opens may race); one that names a location
/// another database of this process writes is refused.
pub(crate) fn claim(path: &Path, location: &str, own_replica: bool) -> Result<Claim, String> {
    let (given, key) = (location, location_key(location));
    let mut map = PRIMARIES.lock();
    if let Some(entry) = map.get_mut(path) {
        entry.handles += 1;
        return Ok(Claim::Granted);
    }
    if !own_replica {
        if let Some(other) = other_primary(&map, path) {
            return Ok(Claim::PassThrough { other });
        }
    }
    if let Some((other, _)) = map.iter().find(|(_, e)| e.location == key) {
        // Both spellings keep the URL's user info: a NATS password or token was shown here.
        let (given, key) = (redact_url(given), redact_url(&key));
        return Err(format!(
            "replica location {given} (resolved: {key}) is already the replica of {} in this \
             process; a replica location belongs to one database (give this one its own replica=)",
            other.display()
        ));
    }
    map.insert(
        path.to_path_buf(),
        Entry {
            location: key,
            handles: 1,
        },
    );
    Ok(Claim::Granted)
}

/// Releases one handle of `path` (a closed main-database file, or a failed open).
pub(crate) fn release(path: &Path) {
    let mut map = PRIMARIES.lock();
    if let Some(entry) = map.get_mut(path) {
        entry.handles -= 1;
        if entry.handles == 0 {
            map.remove(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the map is process-wide, and tests run on parallel threads.
    #[test]
    fn a_location_belongs_to_one_database_and_the_environment_to_the_first() {
        let app = Path::new("/claims-test/app.db");
        let scratch = Path::new("/claims-test/scratch.db");
        let other = Path::new("/claims-test/other.db");
        assert_eq!(
            pass_through(app, false, None),
            None,
            "the first database takes the environment"
        );
        assert_eq!(claim(app, "file:///r/app/", false), Ok(Claim::Granted));
        assert_eq!(
            claim(app, "file:///r/app", false),
            Ok(Claim::Granted),
            "a second connection"
        );
        // ATTACH 'scratch.db' / VACUUM INTO 'scratch.db', with the environment's URL.
        assert_eq!(pass_through(scratch, false, None), Some(app.to_path_buf()));
        assert_eq!(
            claim(scratch, "file:///r/app", false),
            Ok(Claim::PassThrough {
                other: app.to_path_buf()
            })
        );
        // Its own replica= names the location of the database already open: refused.
        assert_eq!(pass_through(scratch, true, None), None);
        let err = claim(scratch, "file:///r/app", true).unwrap_err();
        assert!(err.contains("belongs to one database"), "{err}");
        // The refusal names the location without its secrets.
        let nats = Path::new("/claims-test/nats.db");
        assert_eq!(
            claim(nats, "nats://u:CanaryPw@127.0.0.1:4222/b", true),
            Ok(Claim::Granted)
        );
        let err = claim(scratch, "nats://u:CanaryPw@127.0.0.1:4222/b/", true).unwrap_err();
        assert!(
            err.contains("belongs to one database") && !err.contains("CanaryPw"),
            "{err}"
        );
        release(nats);
        // Its own location: a primary of its own.
        assert_eq!(claim(other, "file:///r/other", true), Ok(Claim::Granted));
        release(other);
        release(app);
        assert_eq!(
            pass_through(scratch, false, None),
            Some(app.to_path_buf()),
            "one handle left"
        );
        release(app);
        assert_eq!(
            pass_through(scratch, false, None),
            None,
            "all closed: the next takes it"
        );
        assert_eq!(
            pass_through(scratch, false, Some(other.to_path_buf())),
            Some(other.to_path_buf()),
            "a read replica open counts too"
        );
    }
}
