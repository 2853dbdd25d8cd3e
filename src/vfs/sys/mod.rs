//! The operating system and CPU below the crate: the pieces whose Rust needs `unsafe`
//! but which are not SQLite's FFI, each behind a small safe API the rest of the crate
//! calls. House rule: every `unsafe` lives under `src/vfs/` (lib.rs denies `unsafe_code`
//! everywhere else); each block here says why it holds.
//!
//! - [`pages`]: anonymous mappings cut into slots, for capture's page buffers.
//! - [`file_map`]: read-only mappings of finished files, for PUT bodies.
//! - [`ofd_lock`]: open-file-description locks, for the leader lock.
//! - [`clmul`]: calling the CRC-64 kernels compiled for CPU features, once detected.
//! - [`file_clock`]: the coarse clock file modification times come from.
//! - [`fork`]: noticing `fork()`, and values made again in a child.
//! - [`inotify`]: noticing files created in a directory, for follower sync requests.
//! - [`sigpipe`]: the command-line tool's quiet end on a closed pipe.
//! - [`stderr`]: log lines to descriptor 2 without a lock a fork could leave held.
//! - [`xattr`]: a file's extended attributes, for the note of which replica state it holds.

pub mod clmul;
pub mod file_clock;
pub mod file_map;
pub mod fork;
pub mod inotify;
pub mod ofd_lock;
pub mod pages;
pub mod sigpipe;
pub mod stderr;
pub mod xattr;
