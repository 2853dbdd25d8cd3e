//! "Read replicas in any language": each program in `examples/` writes rows through a
//! primary, waits for `litestream_sync()`, opens a read replica on the replica alone and
//! compares. The sqlite3 shell, Debian's Python `sqlite3` module, Node's better-sqlite3
//! (built by `make setup` into examples/node/node_modules) and a C program linked against
//! the static library with `include/litestream_vfs.h`.
//!
//! Each run must exit 0 and print the two lines the examples share, and the `file://`
//! replica the example wrote must hold contiguous TXIDs up to exactly the one it reported.
//! Each example is also run where its first write must fail, to show that an error inside
//! it reaches its exit status (which the passing run relies on).

mod harness;

use harness::*;
use std::path::PathBuf;
use std::process::Command;

const ROWS: u32 = 503;

/// The example's command, without the working directory argument.
fn example(rel: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg(repo_root().join(rel));
    cmd
}

/// Runs `make_command()` in a fresh directory and checks what it printed against what it
/// left in the replica; then runs it again on a copy of that replica, where it must fail.
fn passes_and_fails_honestly(make_command: &dyn Fn() -> Command) {
    let work = tempfile::tempdir().unwrap();
    let out = make_command()
        .arg(work.path())
        .env("LITESTREAM_VFS_EXT", extension())
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}:\n{stdout}\n{stderr}", out.status);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "two lines expected:\n{stdout}\n{stderr}");
    let txid: u64 = lines[0]
        .strip_prefix(&format!("primary: {ROWS} rows, synced at TXID "))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {stdout}"));
    assert_eq!(
        lines[1],
        format!("replica: {ROWS} rows at TXID {txid}, same as the primary")
    );
    let ranges = level0_ranges(&work.path().join("replica"));
    assert_contiguous(&ranges);
    assert_eq!(
        ranges.last().unwrap().1,
        txid,
        "the replica's newest TXID is the one litestream_sync() reported"
    );

    // A new primary on that replica is restored from it, so its CREATE TABLE fails: the
    // example must exit nonzero and show the error.
    let again = tempfile::tempdir().unwrap();
    copy_dir(&work.path().join("replica"), &again.path().join("replica"));
    let out = make_command()
        .arg(again.path())
        .env("LITESTREAM_VFS_EXT", extension())
        .output()
        .expect("the example runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "a failing write went unnoticed:\n{all}");
    assert!(all.contains("table notes already exists"), "{all}");
}

#[test]
fn the_sqlite3_shell_reads_back_what_it_replicated() {
    passes_and_fails_honestly(&|| example("examples/shell/replicate.sh", "bash"));
}

#[test]
fn debian_python_sqlite3_module_reads_back_what_it_replicated() {
    passes_and_fails_honestly(&|| example("examples/python/replicate.py", python()));
}

#[test]
fn node_better_sqlite3_reads_back_what_it_replicated() {
    let module = repo_root().join("examples/node/node_modules/better-sqlite3");
    assert!(
        module.is_dir(),
        "{} is missing: run make setup (it builds better-sqlite3)",
        module.display()
    );
    passes_and_fails_honestly(&|| example("examples/node/replicate.js", "node"));
}

#[test]
fn a_c_program_linked_against_the_static_library_reads_back_what_it_replicated() {
    let lib = PathBuf::from(format!("{}.a", extension().display()));
    assert!(lib.is_file(), "{} is missing: build it (make build)", lib.display());
    let build = tempfile::tempdir().unwrap();
    let program = build.path().join("replicate");
    let out = Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(repo_root().join("examples/c"))
        .arg(format!("OUT={}", program.display()))
        .arg(format!("LIB={}", lib.display()))
        .output()
        .expect("make runs");
    assert!(
        out.status.success(),
        "building examples/c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    passes_and_fails_honestly(&|| Command::new(&program));
}
