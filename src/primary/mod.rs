//! The primary role: capture committed transactions from the WAL, stage them as LTX
//! files beside the database, upload them in the background.

pub mod batch;
pub mod capture;
mod chain_gaps;
pub mod compaction_due;
pub mod compaction_turn;
pub mod compactor;
pub mod database;
pub mod encryption;
pub mod follow;
pub mod follower;
mod follower_writes;
pub mod handoff;
mod header_time;
mod leader_error;
mod leader_lock;
pub mod level_cache;
mod needed_files;
pub mod page_pool;
mod quiet_dir;
pub mod registry;
mod replica_check;
mod replicator;
mod reseed;
mod shared_staging;
pub mod staging;
mod staging_owner;
pub mod state;
mod sync_stats;
pub mod wal_file;
pub mod wal_index;

pub use replicator::{Primary, SnapshotError, Snapshotter};
pub use wal_index::ShmWal;
