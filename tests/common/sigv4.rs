//! AWS Signature Version 4 for the tests' own raw S3 requests: stores that check signatures
//! (SeaweedFS, Ceph RGW) answer unsigned requests with 403, and the tests must be able to
//! look at a bucket without the code under test in the way. HMAC and SHA-256 come from
//! `ring`; only the canonical request is assembled here.

use ring::{digest, hmac};

/// The values a signed request carries: its `Authorization`, `x-amz-date` and
/// `x-amz-content-sha256` headers.
pub struct Signed {
    pub authorization: String,
    pub amz_date: String,
    pub content_sha256: String,
}

/// Percent-encodes as SigV4 wants: everything but unreserved characters, and `/` only when
/// `slash` (query values encode it, paths do not).
pub fn uri_encode(s: &str, slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if !slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// Signs one request. `path` is already encoded as sent (`/bucket/key`); `query` holds
/// the encoded `k=v` pairs as sent; `headers` are the ones that will be sent besides
/// `host` and the three returned (all of them are signed).
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    host: &str,
    path: &str,
    query: &[(String, String)],
    headers: &[(&str, &str)],
    body: &[u8],
    (access_key, secret_key, region): (&str, &str, &str),
    unix_seconds: i64,
) -> Signed {
    let time = chrono::DateTime::from_timestamp(unix_seconds, 0).expect("a valid time");
    let amz_date = time.format("%Y%m%dT%H%M%SZ").to_string();
    let date = &amz_date[..8];
    let content_sha256 = hex(digest::digest(&digest::SHA256, body).as_ref());

    let mut query: Vec<(String, String)> = query.to_vec();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    all.push(("host".into(), host.into()));
    all.push(("x-amz-date".into(), amz_date.clone()));
    all.push(("x-amz-content-sha256".into(), content_sha256.clone()));
    all.sort();
    let canonical_headers: String = all.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request =
        format!("{method}\n{path}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{content_sha256}");

    let scope = format!("{date}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
    );
    let mut key = hmac_sha256(format!("AWS4{secret_key}").as_bytes(), date);
    for part in [region, "s3", "aws4_request"] {
        key = hmac_sha256(&key, part);
    }
    let signature = hex(&hmac_sha256(&key, &string_to_sign));
    Signed {
        authorization: format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed_headers}, Signature={signature}"
        ),
        amz_date,
        content_sha256,
    }
}
