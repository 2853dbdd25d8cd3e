//! What the S3 suites need from an S3 implementation on loopback, whichever it is: moto
//! (a Python mock), SeaweedFS (a distributed store, one process or a cluster), Ceph RGW.
//! Every one is set up with the same credentials, and the tests reach its buckets through
//! signed raw requests, without the code under test in the way.

use std::time::{SystemTime, UNIX_EPOCH};

use super::http::{request, Response};
use super::sigv4::{sign, uri_encode};

/// Credentials every test server is set up with (moto checks none). Used explicitly so the
/// tests never depend on the AWS_* variables of the machine they run on.
pub const ACCESS_KEY_ID: &str = "testing";
pub const SECRET_ACCESS_KEY: &str = "testing-secret";
pub const REGION: &str = "us-east-1";

/// The environment the extension, the CLI and `litestream` read those credentials from.
pub const CREDS: [(&str, &str); 2] = [
    ("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY_ID),
    ("LITESTREAM_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
];

/// One S3 implementation answering on a loopback port.
pub trait S3Server: Send + Sync {
    /// What messages and figures call it ("moto", "SeaweedFS", "Ceph RGW").
    fn name(&self) -> &str;

    /// The port its S3 API answers on.
    fn port(&self) -> u16;

    /// The end of its log(s), for failure messages.
    fn log_tail(&self) -> String;

    /// `http://127.0.0.1:PORT`
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// One signed request, path-style: `path` is `/bucket/key`, optionally with `?query`,
    /// both already percent-encoded as they are to be sent.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        let (only_path, query) = path.split_once('?').unwrap_or((path, ""));
        let pairs: Vec<(String, String)> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64;
        let host = format!("127.0.0.1:{}", self.port());
        let signed = sign(
            method,
            &host,
            only_path,
            &pairs,
            headers,
            body,
            (ACCESS_KEY_ID, SECRET_ACCESS_KEY, REGION),
            now,
        );
        let mut all = vec![
            ("Authorization", signed.authorization.as_str()),
            ("x-amz-date", signed.amz_date.as_str()),
            ("x-amz-content-sha256", signed.content_sha256.as_str()),
        ];
        all.extend_from_slice(headers);
        request(self.port(), method, path, &all, body)
            .unwrap_or_else(|e| panic!("{}: {method} {path}: {e}", self.name()))
    }

    /// Creates a bucket with a plain `PUT /bucket`.
    fn create_bucket(&self, bucket: &str) {
        let r = self.raw("PUT", &format!("/{bucket}"), &[], b"");
        assert!(
            r.status == 200,
            "{}: create bucket {bucket}: {} {}",
            self.name(),
            r.status,
            r.text()
        );
    }

    /// Every key in `bucket` under `prefix`, following ListObjectsV2's continuation tokens
    /// (a page holds at most 1,000 keys).
    fn list_keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!(
                "/{bucket}?list-type=2&max-keys=1000&prefix={}",
                uri_encode(prefix, true)
            );
            if let Some(t) = &token {
                path.push_str(&format!("&continuation-token={}", uri_encode(t, true)));
            }
            let r = self.raw("GET", &path, &[], b"");
            assert_eq!(r.status, 200, "{}: list {bucket}: {}", self.name(), r.text());
            let text = r.text();
            keys.extend(xml_values(&text, "Key").into_iter().map(|k| unescape_xml(&k)));
            token = xml_values(&text, "NextContinuationToken").into_iter().next();
            if token.is_none() || !text.contains("<IsTruncated>true</IsTruncated>") {
                return keys;
            }
        }
    }

    /// An `s3://` URL for `bucket/path` on this server, with Litestream's parameter names.
    fn url(&self, bucket: &str, path: &str) -> String {
        format!(
            "s3://{bucket}/{path}?endpoint={}&region={REGION}&forcePathStyle=true",
            self.endpoint()
        )
    }
}

/// The text of every `<tag>...</tag>` in `xml`, in order.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(open.as_str())
        .skip(1)
        .filter_map(|s| s.split(close.as_str()).next())
        .map(str::to_string)
        .collect()
}

fn unescape_xml(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
