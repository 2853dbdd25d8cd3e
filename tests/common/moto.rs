//! A real S3 API server for tests: moto's `moto_server` on a free loopback port.
//!
//! Found via `$MOTO_SERVER`, else `<CARGO_MANIFEST_DIR>/.venv/bin/moto_server` (installed by
//! `make setup`). Missing is a test failure, not a skip: a suite that silently skips its S3
//! tests proves nothing.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::http::{request, Response};

/// Credentials moto accepts (it checks none); used explicitly so the tests never depend on
/// the AWS_* variables of the machine they run on.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing-secret";
pub const REGION: &str = "us-east-1";

/// A running moto server, killed when dropped.
pub struct Moto {
    child: Child,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Path of the moto_server executable.
pub fn moto_server_path() -> PathBuf {
    if let Some(p) = std::env::var_os("MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server")
}

/// A port nothing listens on right now (bind port 0, read it, release it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind a loopback port");
    l.local_addr().expect("local addr").port()
}

impl Moto {
    /// Starts moto_server and waits until it answers HTTP.
    pub fn start() -> Moto {
        let bin = moto_server_path();
        assert!(
            bin.is_file(),
            "moto_server not found at {} (set MOTO_SERVER or run make setup)",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("moto.log");
        let log_file = std::fs::File::create(&log).expect("create moto log");
        let port = free_port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run make setup)", bin.display()));
        let mut moto = Moto {
            child,
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        moto.wait_ready(Duration::from_secs(60));
        moto
    }

    fn wait_ready(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited early ({status}):\n{}", self.log_tail());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && request(self.port, "GET", "/", &[], b"").is_ok_and(|r| r.status < 500)
            {
                return;
            }
            if start.elapsed() > limit {
                panic!(
                    "moto_server did not answer on port {} within {limit:?}:\n{}",
                    self.port,
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Creates a bucket with a plain `PUT /bucket`.
    pub fn create_bucket(&self, bucket: &str) {
        let r = self.raw("PUT", &format!("/{bucket}"), &[], b"");
        assert!(r.status == 200, "create bucket {bucket}: {} {}", r.status, r.text());
    }

    /// One raw request to the server (path-style: `/bucket/key?query`). It carries an
    /// Authorization header because moto answers anonymous object reads with 403; moto
    /// checks no signatures, so a well-formed dummy is enough.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY_ID}/20240101/{REGION}/s3/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let mut all = vec![("Authorization", auth.as_str())];
        all.extend_from_slice(headers);
        request(self.port, method, path, &all, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// All keys in `bucket` under `prefix` (ListObjectsV2; enough for test-sized buckets).
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = self.raw(
            "GET",
            &format!("/{bucket}?list-type=2&max-keys=1000&prefix={prefix}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "list {bucket}: {}", r.text());
        let text = r.text();
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// An `s3://` URL for `bucket/path` on this server, with Litestream's parameter names.
    pub fn url(&self, bucket: &str, path: &str) -> String {
        format!(
            "s3://{bucket}/{path}?endpoint={}&region={REGION}&forcePathStyle=true",
            self.endpoint
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
