//! litestream-vfs: a SQLite extension that replicates a database to object storage in
//! Litestream's LTX v3 format and serves lazily-loaded read replicas from it.
//!
//! Layout (see `shared/design.md`): `ltx` is the pure file format, `vfs` holds every
//! `unsafe` (the FFI trampolines, and in `vfs::sys` the mappings, locks and CPU dispatch
//! the rest of the crate reaches through safe wrappers), `sql` the SQL functions in safe
//! Rust. The loadable entry point is [`sqlite3_litestreamvfs_init`].

// The house rule, checked by the compiler: `unsafe` only under `src/vfs/` (the one
// module allowed below).
#![deny(unsafe_code)]

pub mod config;
pub mod durable;
pub mod engine;
pub mod failed_opens;
pub mod file_modes;
pub mod keys;
pub mod logging;
pub mod ltx;
pub mod metrics;
pub mod primary;
pub mod provenance;
pub mod replica;
pub mod restore;
pub mod runtime;
pub mod sql;
pub mod storage;
pub mod time_target;
#[allow(unsafe_code)]
pub mod vfs;
pub mod wal;

pub use vfs::sqlite3_litestreamvfs_init;

/// Version of this extension, as returned by `litestream_version()`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
