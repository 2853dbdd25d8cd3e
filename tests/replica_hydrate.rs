//! Hydration (`hydrate=path`): the replica downloads the whole database into a local
//! file in the background; once complete, reads need no store at all, and the file
//! follows new TXIDs.

mod harness;

use harness::*;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const END: &str = "__litestream_test_end__";

/// A long-lived sqlite3 shell (one connection), stderr to a file.
struct Shell {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    stderr: std::path::PathBuf,
}

impl Shell {
    fn start(dir: &Path, open: &str) -> Shell {
        let stderr = dir.join("shell.stderr");
        let mut child = Command::new("stdbuf")
            .args(["-o0", "sqlite3", "-batch", "-cmd"])
            .arg(format!(".load {}", extension().display()))
            .arg(":memory:")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut s = Shell {
            child,
            stdin,
            stdout,
            stderr,
        };
        s.run(open);
        s
    }

    fn run(&mut self, sql: &str) -> String {
        writeln!(self.stdin, "{sql}\n.print {END}").unwrap();
        self.stdin.flush().unwrap();
        let mut out = String::new();
        loop {
            let mut line = String::new();
            assert!(self.stdout.read_line(&mut line).unwrap() > 0, "sqlite3 exited");
            if line.trim_end() == END {
                return out;
            }
            out.push_str(&line);
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until the hydration file holds the newest state.
    fn wait_hydrated(&mut self) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let status: serde_json::Value =
                serde_json::from_str(&self.run("SELECT litestream_status() ->> '$.hydration';")).unwrap();
            if status["complete"] == true {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not hydrated: {status}\n{}",
                self.stderr()
            );
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, ".quit");
        let _ = self.child.wait();
    }
}

#[test]
fn a_hydrated_replica_reads_locally_and_keeps_following() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let replica = dir.path().join("replica");
    let url = format!("file://{}", replica.display());
    let local = dir.path().join("hydrated.db");
    let t1 = python_workload(&db, &url, 11, 200, &["sync_interval=100ms"]);

    // A page cache too small for the database: reads must come from somewhere else.
    let mut r = Shell::start(
        dir.path(),
        &format!(
            ".open file:{}?vfs=litestream&role=replica&replica={url}&poll_interval=50ms&cache_size=4k&hydrate={}",
            dir.path().join("view.db").display(),
            local.display()
        ),
    );
    let status = r.wait_hydrated();
    assert_eq!(status["txid"], t1, "{status}");
    assert_eq!(status["pages_local"], status["pages"], "{status}");

    // The store disappears: everything is still served, from the local file.
    let away = dir.path().join("replica-away");
    std::fs::rename(&replica, &away).unwrap();
    assert_eq!(r.run(".dump"), dump(&db), "{}", r.stderr());
    assert_eq!(r.run("PRAGMA integrity_check;").trim(), "ok");
    let local_reads = |r: &mut Shell| -> u64 {
        r.run("SELECT litestream_status() ->> '$.hydration.local_reads';")
            .trim()
            .parse()
            .unwrap()
    };
    assert!(local_reads(&mut r) > 10);
    // While idle and complete, the file is the database at that TXID.
    let image = Command::new("sqlite3")
        .arg(format!("file:{}?immutable=1", local.display()))
        .arg(".dump")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&image.stdout), dump(&db));

    // The store comes back with new TXIDs: the replica and its file follow.
    std::fs::rename(&away, &replica).unwrap();
    let t2 = python_workload(&db, &url, 12, 100, &["sync_interval=100ms"]);
    assert_eq!(
        r.run(&format!("SELECT litestream_wait({t2}, 30000);")).trim(),
        t2.to_string()
    );
    let status = r.wait_hydrated();
    assert_eq!(status["txid"], t2, "{status}");
    std::fs::rename(&replica, &away).unwrap();
    assert_eq!(r.run(".dump"), dump(&db), "{}", r.stderr());
}
