//! How a JetStream object store lays out one object (NATS ADR-20), which we speak directly.
//!
//! Bucket `B` is the stream `OBJ_B` with subjects `$O.B.C.>` and `$O.B.M.>`. An object named
//! `N` is:
//! - its data, cut into chunks, one message each on `$O.B.C.<nuid>` (a fresh nuid per
//!   version of the object), in order;
//! - its metadata, one JSON message on `$O.B.M.<base64url(N)>`, published after the chunks
//!   with `Nats-Rollup: sub` so that only the latest version's metadata is kept. A delete
//!   publishes metadata with `deleted: true` and purges the chunks.
//!
//! The JSON is the Go client's `ObjectInfo`; Litestream 0.5 keeps the LTX header timestamp
//! in its `headers` as `Litestream-Timestamp` (RFC 3339), which we write and read too.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE;
use base64::Engine;
use serde::{Deserialize, Serialize};

/// Header (in the object's metadata) with the LTX header timestamp: Litestream's
/// `nats.HeaderKeyTimestamp`.
pub const TIMESTAMP_HEADER: &str = "Litestream-Timestamp";

/// Object metadata as stored on the meta subject.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ObjectMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Other clients write `null` for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HashMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<MetaOptions>,
    pub bucket: String,
    #[serde(default)]
    pub nuid: String,
    #[serde(default)]
    pub size: u64,
    /// RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    #[serde(default)]
    pub chunks: u64,
    /// `SHA-256=<base64url of the digest>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MetaOptions {
    /// A link to another object: we never write links and refuse to follow them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chunk_size: Option<u64>,
}

impl ObjectMeta {
    /// The first value of header `name`, compared case-insensitively (the Go client keeps
    /// whatever case the writer used).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .flatten()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| v.first())
            .map(String::as_str)
    }

    pub fn is_link(&self) -> bool {
        self.options.as_ref().is_some_and(|o| o.link.is_some())
    }
}

/// Names of the subjects of one bucket.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    bucket: String,
}

impl Subjects {
    pub fn new(bucket: &str) -> Self {
        Subjects {
            bucket: bucket.to_string(),
        }
    }

    pub fn stream(&self) -> String {
        format!("OBJ_{}", self.bucket)
    }

    pub fn meta(&self, object_name: &str) -> String {
        format!("$O.{}.M.{}", self.bucket, URL_SAFE.encode(object_name))
    }

    pub fn all_meta(&self) -> String {
        format!("$O.{}.M.>", self.bucket)
    }

    pub fn chunks(&self, nuid: &str) -> String {
        format!("$O.{}.C.{nuid}", self.bucket)
    }

    pub fn all_chunks(&self) -> String {
        format!("$O.{}.C.>", self.bucket)
    }
}

/// The `digest` field for `data`, as the Go client computes and checks it.
pub(crate) fn digest(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    format!("SHA-256={}", URL_SAFE.encode(d.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_subject_is_base64url_of_the_name() {
        let s = Subjects::new("bkt");
        // base64url with padding, as nats.go's base64.URLEncoding.
        assert_eq!(s.meta("ltx/0/a"), "$O.bkt.M.bHR4LzAvYQ==");
        assert_eq!(s.chunks("NUID"), "$O.bkt.C.NUID");
        assert_eq!(s.stream(), "OBJ_bkt");
    }

    #[test]
    fn digest_matches_the_go_client_format() {
        // sha256("abc") = ba7816bf...; base64url of it with padding.
        assert_eq!(digest(b"abc"), "SHA-256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0=");
    }

    #[test]
    fn reads_go_client_metadata() {
        let json = r#"{"name":"ltx/0/0000000000000001-0000000000000001.ltx","description":"",
            "headers":{"Litestream-Timestamp":["2024-05-06T07:08:09.12Z"]},
            "options":{"max_chunk_size":131072},"bucket":"b","nuid":"N","size":4096,
            "mtime":"2024-05-06T07:08:09.123456789Z","chunks":1,"digest":"SHA-256=x"}"#;
        let m: ObjectMeta = serde_json::from_str(json).unwrap();
        assert_eq!(m.header("litestream-timestamp"), Some("2024-05-06T07:08:09.12Z"));
        assert_eq!((m.size, m.chunks, m.deleted, m.is_link()), (4096, 1, false, false));
        let deleted: ObjectMeta = serde_json::from_str(r#"{"name":"x","bucket":"b","deleted":true}"#).unwrap();
        assert!(deleted.deleted);
        // async-nats writes nulls for what it does not have.
        let nulls: ObjectMeta = serde_json::from_str(
            r#"{"name":"x","description":null,"metadata":{},"headers":null,
                "options":{"link":null,"max_chunk_size":3000},"bucket":"b","nuid":"N","size":1,"chunks":1,
                "mtime":"2024-05-06T07:08:09Z","digest":"SHA-256=x"}"#,
        )
        .unwrap();
        assert_eq!((nulls.header("a"), nulls.is_link()), (None, false));
        let link: ObjectMeta =
            serde_json::from_str(r#"{"name":"x","bucket":"b","options":{"link":{"bucket":"o","name":"y"}}}"#).unwrap();
        assert!(link.is_link());
    }
}
