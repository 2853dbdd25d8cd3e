//! The FFI boundary: every `unsafe` block of the crate lives under this module (lib.rs
//! denies `unsafe_code` elsewhere): SQLite's trampolines here, the operating system's
//! and the CPU's pieces (mappings, OFD locks, the CRC kernel's dispatch) in `sys`.
//!
//! Layering follows SQLite's own shims (`test_demovfs.c`, `vfsstat.c`): our
//! `sqlite3_vfs` wraps the default ("root") VFS, our files wrap the root VFS's files,
//! and each trampoline forwards to the wrapped object after doing our part. Each
//! trampoline runs inside [`guard::guard`], so a Rust panic becomes an SQLite error
//! code with a message in `sqlite3_log`, never an unwind across C frames.

mod claims;
mod entry;
mod file;
mod functions;
mod guard;
mod pin;
mod private;
mod register;
mod replica_file;
pub(crate) mod sys;

pub use entry::sqlite3_litestreamvfs_init;
/// For the command-line tool (`src/bin`): see `sys::sigpipe`.
pub use sys::sigpipe::terminate_on_broken_pipe;

/// Name under which the VFS is registered: `?vfs=litestream`.
pub const VFS_NAME: &str = "litestream";
