//! Restoring a replica to a local database file, to the latest state or to a point in
//! time (a TXID or a timestamp).
//!
//! One plan serves restores and the replica VFS ([`plan`]): the newest snapshot at or
//! before the target, then the fewest contiguous files that reach it, highest level
//! first. A restore downloads every file of the plan at once with ranged GETs
//! ([`download`]), decodes the largest on threads of their own ([`decode`]; encrypted
//! pages are opened on a thread per core: [`open`]), merges them
//! page by page straight into a temporary file (each page is written once, newest wins,
//! by a writing thread: [`write`]), verifies every file checksum and, when the files carry
//! one, the database checksum, then fsyncs and renames the file into place. A file that
//! fails is named with the newest TXID restorable without it ([`damaged`]); `verify`
//! checks files without restoring ([`verify`]).

mod buffers;
mod damaged;
mod decode;
mod dest;
mod diagnose;
mod download;
pub use download::RemoteReader;
mod in_use;
mod oldest;
mod open;
pub mod plan;
mod progress;
mod run;
mod verify;
mod write;

pub use damaged::{file_name, restorable_without};
pub use dest::{refuse_directory, restore};
pub use oldest::oldest_restorable;
pub use plan::{
    check_chain, gap_before, plan, plan_at_time, plan_latest, plan_reachable, resolve_timestamp, Gap, Listing,
    EVERY_LEVEL, LEVELS, SNAPSHOT_LEVEL,
};
pub use progress::{progress_json, RestoreProgress};
pub use run::{open_elsewhere, restore_latest, RestoreOptions, Restored, Target};
pub use verify::{newest_restorable, verify_files, Verdict, VerifyOptions};

#[cfg(test)]
mod tests;
