//! A real NATS server with JetStream for tests: Debian's `nats-server -js` on a free loopback
//! port, its store in a temporary directory so that it can be stopped and started again
//! with its data (the outage tests), plus a monitoring port to read per-connection byte
//! counts (what a ranged read costs).
//!
//! Found via `$NATS_SERVER`, else `/usr/sbin/nats-server` (installed by `make setup`). Missing
//! is a test failure, not a skip.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::request;
use super::server::free_port;
use super::tools::{env_or, require};

/// A running nats-server, killed when dropped.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    /// HTTP monitoring port (`/connz`, `/jsz`).
    pub monitor_port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    starts: u32,
}

pub fn nats_server_path() -> PathBuf {
    require(
        "nats-server",
        "NATS_SERVER",
        env_or("NATS_SERVER", || PathBuf::from("/usr/sbin/nats-server")),
    )
}

impl Nats {
    /// A plain server: JetStream on, no authentication, no TLS.
    pub fn start() -> Nats {
        Self::start_with(&[])
    }

    /// A server with extra command-line options (`--auth TOKEN`, `--tls ...`).
    pub fn start_with(extra: &[&str]) -> Nats {
        let mut n = Nats {
            child: None,
            port: free_port(),
            monitor_port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            starts: 0,
        };
        n.spawn();
        n
    }

    /// The temporary directory (store, logs), for fixtures such as TLS files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.dir.path().join(format!("nats-{}.log", self.starts));
        let log_file = std::fs::File::create(&log).expect("create nats log");
        let child = Command::new(nats_server_path())
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-m", &self.monitor_port.to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start nats-server: {e} (run make setup)"));
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("nats-server exited early ({status}):\n{}", self.log_tail());
            }
            if self.answers() && self.log().contains("Server is ready") {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "nats-server did not answer on port {}:\n{}",
                self.port,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server greets every client with `INFO {...}`.
    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).is_ok() && &buf == b"INFO"
    }

    /// Kills the server (SIGKILL: nothing flushed on the way out). Its store stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `nats://127.0.0.1:PORT/<bucket_and_path>`
    pub fn url(&self, bucket_and_path: &str) -> String {
        format!("nats://127.0.0.1:{}/{bucket_and_path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("nats-{}.log", self.starts))).unwrap_or_default()
    }

    /// The end of the current server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Bytes the server has sent to connections named `name` (from `/connz`), summed.
    pub fn bytes_sent_to(&self, name: &str) -> u64 {
        let r = request(self.monitor_port, "GET", "/connz?limit=1024", &[], b"").expect("GET /connz");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("connz JSON");
        v["connections"]
            .as_array()
            .map(|cs| {
                cs.iter()
                    .filter(|c| c["name"] == name)
                    .map(|c| c["out_bytes"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Bytes that differ at every offset, so a misplaced range shows.
pub fn patterned(len: usize, seed: u32) -> bytes::Bytes {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8)
        .collect::<Vec<u8>>()
        .into()
}
