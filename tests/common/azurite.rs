//! A real Azure Blob API server for tests: Azurite's `azurite-blob` on a free loopback port.
//!
//! Found via `$AZURITE_BLOB`, else `<CARGO_MANIFEST_DIR>/.tools/node/node_modules/.bin/azurite-blob`
//! (installed by `make setup` from the npm registry). Missing is a test failure, not a skip.
//!
//! Azurite serves the well-known development account `devstoreaccount1` path-style:
//! `http://127.0.0.1:PORT/devstoreaccount1/<container>/<blob>`. It checks Shared Key
//! signatures, so the raw requests below are signed with object_store's own authorizer.

use std::net::TcpStream;
use std::path::PathBuf;

use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::HeaderValue;

use super::http::{request, Response};
use super::server::Server;
use super::tools::{env_or, in_repo, require};

/// Azurite's development account and its published key (the same in every Azurite install).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob server, killed when dropped.
pub struct Azurite {
    server: Server,
    pub port: u16,
    /// The account URL, `http://127.0.0.1:PORT/devstoreaccount1`: what `?endpoint=` takes.
    pub endpoint: String,
}

/// Path of the azurite-blob launcher.
pub fn azurite_blob_path() -> PathBuf {
    env_or("AZURITE_BLOB", || in_repo(".tools/node/node_modules/.bin/azurite-blob"))
}

impl Azurite {
    /// Starts azurite-blob with its data in a fresh temporary directory and waits until it
    /// answers HTTP.
    pub fn start() -> Azurite {
        let bin = require("azurite-blob", "AZURITE_BLOB", azurite_blob_path());
        let server = Server::start(
            "azurite-blob",
            &bin,
            |cmd, port, dir| {
                let data = dir.join("data");
                std::fs::create_dir(&data).expect("azurite data dir");
                cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
                    .arg(&data)
                    // --silent: no access log; --loose: ignore headers Azurite does not implement;
                    // --skipApiVersionCheck: accept whatever x-ms-version the client speaks;
                    // --disableTelemetry: Azurite otherwise reports usage over the network.
                    .args(["--silent", "--loose", "--skipApiVersionCheck", "--disableTelemetry"]);
            },
            // A signed "list containers" answers 200 once the account is being served.
            |port| {
                TcpStream::connect(("127.0.0.1", port)).is_ok()
                    && signed_request(port, "GET", &format!("/{ACCOUNT}?comp=list"), &[], b"")
                        .is_ok_and(|r| r.status == 200)
            },
        );
        Azurite {
            port: server.port,
            endpoint: format!("http://127.0.0.1:{}/{ACCOUNT}", server.port),
            server,
        }
    }

    /// The end of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }

    /// Creates a container (Create Container: `PUT /account/name?restype=container`).
    pub fn create_container(&self, container: &str) {
        let r = self.raw("PUT", &format!("/{ACCOUNT}/{container}?restype=container"), &[], b"");
        assert_eq!(r.status, 201, "create container {container}: {}", r.text());
    }

    /// One raw request, Shared Key signed for the dev account. `path` starts with
    /// `/devstoreaccount1`; header names must be lowercase.
    pub fn raw(&self, method: &str, path: &str, headers: &[(&'static str, &str)], body: &[u8]) -> Response {
        signed_request(self.port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// All blob names in `container` under `prefix` (List Blobs; enough for test-sized
    /// containers: one page of up to 5000).
    pub fn list_blobs(&self, container: &str, prefix: &str) -> Vec<String> {
        let r = self.raw(
            "GET",
            &format!("/{ACCOUNT}/{container}?restype=container&comp=list&prefix={prefix}"),
            &[],
            b"",
        );
        assert_eq!(r.status, 200, "list {container}: {}", r.text());
        r.text()
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
            .map(str::to_string)
            .collect()
    }

    /// An `abs://` URL for `container/path` on this server, in Litestream's form
    /// (`abs://ACCOUNT@CONTAINER/PATH`) with the endpoint as a parameter.
    pub fn url(&self, container: &str, path: &str) -> String {
        format!("abs://{ACCOUNT}@{container}/{path}?endpoint={}", self.endpoint)
    }
}

/// One request to the server on `port`, Shared Key signed for the dev account.
fn signed_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&'static str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    let mut req = HttpRequest::new(HttpRequestBody::from(body.to_vec()));
    *req.method_mut() = method.parse().expect("HTTP method");
    *req.uri_mut() = format!("http://127.0.0.1:{port}{path}").parse().expect("URI");
    for (k, v) in headers {
        req.headers_mut()
            .insert(*k, HeaderValue::from_str(v).expect("header value"));
    }
    if !body.is_empty() {
        // Part of the string to sign; the raw client sends its own Content-Length.
        req.headers_mut()
            .insert("content-length", HeaderValue::from(body.len()));
    }
    let key = AzureCredential::AccessKey(AzureAccessKey::try_new(ACCOUNT_KEY).expect("dev account key"));
    AzureAuthorizer::new(&key, ACCOUNT).authorize(&mut req);
    let signed: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "content-length")
        .map(|(k, v)| (k.to_string(), v.to_str().expect("ascii header").to_string()))
        .collect();
    let refs: Vec<(&str, &str)> = signed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    request(port, method, path, &refs, body)
}
