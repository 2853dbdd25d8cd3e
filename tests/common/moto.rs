//! A real S3 API server for tests: moto's `moto_server` on a free loopback port.
//!
//! Found via `$MOTO_SERVER`, else `<CARGO_MANIFEST_DIR>/.venv/bin/moto_server` (installed by
//! `make setup`). Missing is a test failure, not a skip: a suite that silently skips its S3
//! tests proves nothing.

use std::net::TcpStream;
use std::path::PathBuf;

use super::http::{request, Response};
use super::server::Server;
use super::tools::{env_or, in_repo, require};

/// Credentials moto accepts (it checks none); used explicitly so the tests never depend on
/// the AWS_* variables of the machine they run on.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing-secret";
pub const REGION: &str = "us-east-1";

/// A running moto server, killed when dropped.
pub struct Moto {
    server: Server,
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// Path of the moto_server executable.
pub fn moto_server_path() -> PathBuf {
    env_or("MOTO_SERVER", || in_repo(".venv/bin/moto_server"))
}

impl Moto {
    /// Starts moto_server and waits until it answers HTTP.
    pub fn start() -> Moto {
        let bin = require("moto_server", "MOTO_SERVER", moto_server_path());
        let server = Server::start(
            "moto_server",
            &bin,
            |cmd, port, _| {
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                    .env_remove("AWS_CA_BUNDLE");
            },
            |port| {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && request(port, "GET", "/", &[], b"").is_ok_and(|r| r.status < 500)
            },
        );
        Moto {
            port: server.port,
            endpoint: format!("http://127.0.0.1:{}", server.port),
            server,
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
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
