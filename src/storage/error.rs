//! Storage errors: typed so callers can act on them, and scrubbed so they can be logged.
//!
//! Errors carry strings, not boxed sources: an `object_store` error chain can include request
//! URLs (Azure SAS tokens live in the query string), and a message that reaches
//! `litestream_status()` or a log must never contain a credential. Every message is built
//! through a [`Redactor`] that knows the secrets of the store it came from.

use std::error::Error as StdError;

/// Result of a storage operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong talking to a replica store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object does not exist.
    #[error("{store}: {key} not found")]
    NotFound { store: String, key: String },

    /// A conditional create found a different object already at this name: another writer
    /// (a second primary) got there first.
    #[error("{store}: {key} already exists (another writer created it first)")]
    AlreadyExists { store: String, key: String },

    /// Bad URL, unknown scheme or parameter, missing credentials. Never retried.
    #[error("replica configuration error: {0}")]
    Config(String),

    /// Network failure, timeout, throttling or a 5xx: worth retrying.
    #[error("{store}: {op} {key} failed (transient): {message}")]
    Transient {
        store: String,
        op: &'static str,
        key: String,
        message: String,
    },

    /// The store rejected our credentials or denied access.
    #[error("{store}: {op} {key}: access denied: {message}")]
    Denied {
        store: String,
        op: &'static str,
        key: String,
        message: String,
    },

    /// The store returned something other than what was asked for (short range, bad header).
    #[error("{store}: {op} {key}: invalid data: {message}")]
    InvalidData {
        store: String,
        op: &'static str,
        key: String,
        message: String,
    },

    /// Anything else.
    #[error("{store}: {op} {key}: {message}")]
    Other {
        store: String,
        op: &'static str,
        key: String,
        message: String,
    },
}

impl Error {
    /// True for failures that may succeed if the same request is sent again later.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Transient { .. })
    }

    /// True when the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when a conditional create lost to another writer.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, Error::AlreadyExists { .. })
    }

    pub(crate) fn config(message: impl Into<String>) -> Self {
        Error::Config(message.into())
    }
}

/// Removes known secrets from text before it goes into an [`Error`].
#[derive(Clone, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// Query parameters whose values are credentials or signatures, in any URL we might print.
const SECRET_PARAMS: &[&str] = &[
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "secret-access-key",
    "secretaccesskey",
    "secret_access_key",
    "account-key",
    "accountkey",
    "sas-token",
    "sastoken",
    "ssecustomerkey",
    "sse-customer-key",
    "token",
    "password",
    "nats_token",
    "nats-token",
    "nats_password",
    "nats-password",
];

impl Redactor {
    /// Registers a secret value; short values are ignored (they would redact random text and
    /// are not real credentials anyway).
    pub(crate) fn add(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.len() >= 4 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
        }
    }

    /// `text` with every registered secret and every signature-like query value replaced.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "<redacted>");
        }
        redact_query_values(&out)
    }
}

/// Replaces the values of [`SECRET_PARAMS`] (`name=value` up to `&`, whitespace or a quote)
/// wherever they occur in `text`, case-insensitively.
fn redact_query_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let hit = SECRET_PARAMS.iter().find_map(|p| {
            let at_boundary = i == 0 || matches!(lower.as_bytes()[i - 1], b'?' | b'&' | b' ' | b';');
            (at_boundary && lower[i..].starts_with(p) && lower[i + p.len()..].starts_with('=')).then_some(p.len() + 1)
        });
        match hit {
            Some(n) => {
                out.push_str(&text[i..i + n]);
                out.push_str("<redacted>");
                i += n;
                while i < text.len() && !matches!(text.as_bytes()[i], b'&' | b' ' | b'"' | b'\'' | b'\n' | b'>') {
                    i += 1;
                }
            }
            None => {
                let c = text[i..].chars().next().expect("i is on a char boundary");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// A user-supplied URL made safe to print: password in the userinfo and secret query
/// parameters replaced. In a `nats://` URL a user name without a password is a token
/// (`nats://TOKEN@host`), so it is replaced too.
pub fn redact_url(raw: &str) -> String {
    let cleaned = match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        Ok(mut u) if u.scheme().eq_ignore_ascii_case("nats") && !u.username().is_empty() => {
            let _ = u.set_username("<redacted>");
            u.to_string()
        }
        _ => raw.to_string(),
    };
    redact_query_values(&cleaned)
}

/// Converts an `object_store` error into ours. `op` and `key` say what we were doing.
pub(crate) fn from_object_store(
    err: object_store::Error,
    store: &str,
    op: &'static str,
    key: &str,
    redactor: &Redactor,
) -> Error {
    use object_store::Error as E;
    let store = store.to_string();
    let key = key.to_string();
    let message = condense_xml_error(&redactor.clean(&chain_text(&err)));
    match err {
        // A write cannot miss its object: a 404 to it means the bucket or container is gone
        // (deleted under a running primary), which must not read as "not found" of a file.
        // S3 and Azure also name a missing bucket or container in the body of any 404.
        E::NotFound { .. } if missing_bucket(op, &message) => Error::Other {
            message: format!("the bucket or container does not exist ({message})"),
            store,
            op,
            key,
        },
        E::NotFound { .. } => Error::NotFound { store, key },
        // S3 answers 409 ConditionalRequestConflict while a competing conditional write is in
        // flight (object_store maps every 409 to AlreadyExists); the outcome is not known yet.
        E::AlreadyExists { .. } | E::Precondition { .. } if message.contains("ConditionalRequestConflict") => {
            Error::Transient {
                store,
                op,
                key,
                message,
            }
        }
        // Only our conditional creates can legitimately conflict; object_store also maps any
        // other 409 (e.g. S3 OperationAborted) to AlreadyExists, which is not what it means there.
        E::AlreadyExists { .. } | E::Precondition { .. } | E::NotModified { .. } if op == "PUT" => {
            Error::AlreadyExists { store, key }
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => Error::Denied {
            store,
            op,
            key,
            message,
        },
        _ if is_transient_chain(&err) => Error::Transient {
            store,
            op,
            key,
            message,
        },
        _ => Error::Other {
            store,
            op,
            key,
            message,
        },
    }
}

/// Whether a 404 to `op` says the bucket or container is missing. A multipart upload's
/// part can also miss its upload (`NoSuchUpload`: aborted or expired), which is not that.
fn missing_bucket(op: &str, message: &str) -> bool {
    message.contains("NoSuchBucket")
        || message.contains("ContainerNotFound")
        || (op == "PUT" && !message.contains("NoSuchUpload"))
}

/// S3 and Azure explain a failed request in an XML body that object_store passes on
/// whole (namespaces, request ids, host ids: several hundred bytes per retry in the log).
/// Each `<Error>` document is replaced by its code and message, which is what says why.
fn condense_xml_error(message: &str) -> String {
    let Some(start) = message.find("<?xml").or_else(|| message.find("<Error")) else {
        return message.to_string();
    };
    let end = message[start..]
        .find("</Error>")
        .map_or(message.len(), |at| start + at + "</Error>".len());
    let document = &message[start..end];
    let element = |name: &str| {
        let open = format!("<{name}>");
        let from = document.find(&open)? + open.len();
        let to = from + document[from..].find(&format!("</{name}>"))?;
        Some(document[from..to].trim().to_string())
    };
    let summary = match (element("Code"), element("Message")) {
        (Some(code), Some(text)) => format!("{code}: {text}"),
        (Some(code), None) => code,
        _ => return message.to_string(),
    };
    format!("{}{summary}{}", &message[..start], condense_xml_error(&message[end..]))
}

/// The error and all its sources, `: `-joined, with consecutive repeats dropped
/// (object_store errors often repeat their source in their own message).
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Network errors (connect, reset, timeout) and retryable HTTP statuses anywhere in the chain.
///
/// object_store does not expose the HTTP status of a failed request as a type outside the
/// crate, so the status is read from its message ("...status code: 503 ...").
fn is_transient_chain(err: &(dyn StdError + 'static)) -> bool {
    use object_store::client::{HttpError, HttpErrorKind};
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            if matches!(
                h.kind(),
                HttpErrorKind::Connect | HttpErrorKind::Request | HttpErrorKind::Timeout | HttpErrorKind::Interrupted
            ) {
                return true;
            }
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if matches!(
                io.kind(),
                K::TimedOut | K::Interrupted | K::ConnectionReset | K::ConnectionAborted | K::ConnectionRefused
            ) {
                return true;
            }
        }
        if let Some(status) = status_in_message(&e.to_string()) {
            if status >= 500 || status == 429 || status == 408 {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("SlowDown") || text.contains("InternalError") || text.contains("ServiceUnavailable") {
            return true;
        }
        // object_store's retry error shows its HttpError through a transparent wrapper, so
        // the downcast above never sees it: a connection dropped before the response (no
        // io::Error below it either) was "not transient", and a reopen during a flaky
        // spell refused to open. The wrapper keeps HttpError's message prefix; the cause
        // is in the sources below it.
        if text.starts_with("HTTP error: ") {
            let below = chain_text(e);
            if TRANSPORT_FAILURES.iter().any(|t| below.contains(t)) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// How hyper and the OS describe a connection that failed mid-request.
const TRANSPORT_FAILURES: &[&str] = &[
    "connection closed before message completed",
    "end of file before message length reached",
    "error reading a body from connection",
    "Connection reset by peer",
    "Broken pipe",
    "timed out",
];

/// The HTTP status object_store puts in its retry error message, if any.
fn status_in_message(text: &str) -> Option<u16> {
    let marker = "status code: ";
    let at = text.find(marker)? + marker.len();
    text.get(at..at + 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_registered_secrets_and_signatures() {
        let mut r = Redactor::default();
        r.add("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
        let text = "PUT https://x.blob.core.windows.net/c/b?sv=2022&sig=abc%2Fdef&se=1 failed: \
                    key wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY rejected";
        let clean = r.clean(text);
        assert!(!clean.contains("abc%2Fdef"), "{clean}");
        assert!(!clean.contains("wJalrXUtnFEMI"), "{clean}");
        assert!(clean.contains("sig=<redacted>&se=1"), "{clean}");
    }

    #[test]
    fn redact_url_hides_password_and_secret_params() {
        let u = redact_url("s3://AKID:supersecret@bucket/db?secret-access-key=s3cr3t&region=x");
        assert!(!u.contains("supersecret") && !u.contains("s3cr3t"), "{u}");
        assert!(u.contains("region=x"), "{u}");
        let u = redact_url("nats://s3cr3ttoken@127.0.0.1:4222/bucket?nats_password=pw-secret");
        assert!(!u.contains("s3cr3ttoken") && !u.contains("pw-secret"), "{u}");
        assert!(u.contains("127.0.0.1:4222/bucket"), "{u}");
        let u = redact_url("nats://alice:pw-secret@127.0.0.1/bucket");
        assert!(u.contains("alice") && !u.contains("pw-secret"), "{u}");
    }

    fn classify(err: object_store::Error, op: &'static str) -> Error {
        let mut r = Redactor::default();
        r.add("s3cr3t-value");
        from_object_store(err, "s3://b/p", op, "p/0000/x.ltx", &r)
    }

    fn boxed(msg: &str) -> Box<dyn StdError + Send + Sync> {
        msg.to_string().into()
    }

    #[test]
    fn classifies_object_store_errors() {
        use object_store::client::{HttpError, HttpErrorKind};
        use object_store::Error as E;
        let e = classify(
            E::NotFound {
                path: "x".into(),
                source: boxed("404"),
            },
            "GET",
        );
        assert!(e.is_not_found());
        let e = classify(
            E::Precondition {
                path: "x".into(),
                source: boxed("412"),
            },
            "PUT",
        );
        assert!(e.is_already_exists());
        let e = classify(
            E::AlreadyExists {
                path: "x".into(),
                source: boxed("409 OperationAborted"),
            },
            "DELETE",
        );
        assert!(matches!(e, Error::Other { .. }), "{e:?}");
        let e = classify(
            E::AlreadyExists {
                path: "x".into(),
                source: boxed("409 ConditionalRequestConflict"),
            },
            "PUT",
        );
        assert!(e.is_transient());
        let e = classify(
            E::Unauthenticated {
                path: "x".into(),
                source: boxed("401"),
            },
            "GET",
        );
        assert!(matches!(e, Error::Denied { .. }));
        let connect = HttpError::new(HttpErrorKind::Connect, std::io::Error::other("connection refused"));
        let e = classify(
            E::Generic {
                store: "S3",
                source: Box::new(connect),
            },
            "LIST",
        );
        assert!(e.is_transient(), "{e:?}");
        let e = classify(
            E::Generic {
                store: "S3",
                source: boxed("Server returned non-2xx status code: 503 Service Unavailable"),
            },
            "GET",
        );
        assert!(e.is_transient());
        let e = classify(
            E::Generic {
                store: "S3",
                source: boxed("Server returned non-2xx status code: 400 Bad Request: s3cr3t-value"),
            },
            "GET",
        );
        assert!(!e.is_transient());
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
        // What a LIST whose connection dropped unanswered looks like after object_store's
        // own retries (seen through the fault proxy): transient.
        let e = classify(
            E::Generic {
                store: "S3",
                source: boxed(
                    "HTTP error: error sending request: client error (SendRequest): connection closed \
                     before message completed",
                ),
            },
            "LIST",
        );
        assert!(e.is_transient(), "{e:?}");
        let e = classify(
            E::Generic {
                store: "S3",
                source: boxed("HTTP error: invalid peer certificate: UnknownIssuer"),
            },
            "LIST",
        );
        assert!(!e.is_transient(), "{e:?}");
    }

    #[test]
    fn a_404_to_a_write_or_naming_the_bucket_says_the_bucket_is_missing() {
        use object_store::Error as E;
        let not_found = |body: &str, op| {
            classify(
                E::NotFound {
                    path: "x".into(),
                    source: boxed(body),
                },
                op,
            )
        };
        let e = not_found("404 Not Found", "PUT");
        assert!(
            !e.is_not_found() && e.to_string().contains("bucket or container does not exist"),
            "{e}"
        );
        let e = not_found("404: <Error><Code>NoSuchBucket</Code></Error>", "GET");
        assert!(!e.is_not_found(), "{e}");
        // A read of a file that is gone, and a part of an aborted multipart upload, stay
        // what they are.
        assert!(not_found("404 Not Found", "GET").is_not_found());
        assert!(not_found("404: <Error><Code>NoSuchUpload</Code></Error>", "PUT").is_not_found());
    }

    #[test]
    fn an_xml_error_body_is_condensed_to_its_code_and_message() {
        let body = "Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\" \
                    encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message>\
                    <RequestId>4442587FB7D0A2F9</RequestId><HostId>abc==</HostId></Error>";
        assert_eq!(
            condense_xml_error(body),
            "Server returned non-2xx status code: 403 Forbidden: AccessDenied: Access Denied"
        );
        let azure = "404 The specified container does not exist.: \
                     <?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code>\
                     <Message>The specified container does not exist.\nRequestId:1</Message></Error> (retried)";
        assert_eq!(
            condense_xml_error(azure),
            "404 The specified container does not exist.: ContainerNotFound: The specified container \
             does not exist.\nRequestId:1 (retried)"
        );
        assert_eq!(condense_xml_error("no body here"), "no body here");
        assert_eq!(condense_xml_error("<Error>unclosed"), "<Error>unclosed");
    }

    #[test]
    fn reads_status_from_object_store_message() {
        assert_eq!(
            status_in_message("Server returned non-2xx status code: 503 Service Unavailable: "),
            Some(503)
        );
        assert_eq!(status_in_message("nothing here"), None);
    }
}
