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

/// Query parameters whose values are credentials or signatures, in any URL we might print,
/// besides those whose names [`SECRET_ENDINGS`] catch.
const SECRET_PARAMS: &[&str] = &["sig", "x-amz-signature", "x-amz-credential"];

/// Endings of parameter names (compared in lower case, so `sseCustomerKey` too) whose values
/// are secrets. By ending, not by a list of names, because an unknown parameter is echoed
/// in its error too: `encryption_key=HEX` put in the replica URL by mistake was printed in
/// full there (a security tester), and so would be any `key=`, `api_key=` or `client_secret=`
/// someone tries. `key` also catches nats_tls_key and nats_nkey, which hold file paths: a
/// path hidden costs less than a key shown. Names ending otherwise name a key without being
/// one and stay readable: access-key-id, sse-kms-key-id, and sse-customer-key-md5, a digest
/// S3 is sent beside the key.
const SECRET_ENDINGS: &[&str] = &["key", "secret", "token", "password", "passwd"];

/// What a redacted value reads as: ours, and the `url` crate's percent-encoding of it.
const REDACTED: [&str; 2] = ["<redacted>", "%3Credacted%3E"];

/// Whether `name=value` holds a secret in its value.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str()) || SECRET_ENDINGS.iter().any(|e| name.ends_with(e))
}

impl Redactor {
    /// Registers a secret value; short values are ignored (they would redact random text and
    /// are not real credentials anyway).
    pub(crate) fn add(&mut self, secret: &str) {
        let secret = secret.trim();
        if secret.len() >= 4 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_string());
        }
    }

    /// Registers the password of `url` (an endpoint such as `http://user:password@proxy`),
    /// as written and percent-decoded, so that an error quoting it in either form is cleaned.
    pub(crate) fn add_url_password(&mut self, url: &str) {
        if let Some(password) = url::Url::parse(url.trim())
            .ok()
            .and_then(|u| u.password().map(str::to_string))
        {
            if let Some(decoded) = super::target::percent_decode(&password) {
                self.add(&decoded);
            }
            self.add(&password);
        }
    }

    /// `text` with every registered secret, every signature-like query value and every
    /// password in a URL's user info replaced.
    pub(crate) fn clean(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), "<redacted>");
        }
        redact_userinfo(&redact_query_values(&out))
    }
}

/// Replaces the values of secret parameters ([`is_secret_param`]: `name=value` up to `&`,
/// whitespace or a quote) wherever they occur in `text`. A value already redacted is kept
/// as it is, so that cleaning twice changes nothing.
fn redact_query_values(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let at_boundary = i == 0 || matches!(bytes[i - 1], b'?' | b'&' | b' ' | b';' | b'\n' | b'\t' | b'"' | b'(');
        let name_len = match at_boundary {
            true => bytes[i..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
                .count(),
            false => 0,
        };
        if name_len > 0 && bytes.get(i + name_len) == Some(&b'=') && is_secret_param(&text[i..i + name_len]) {
            let n = name_len + 1;
            out.push_str(&text[i..i + n]);
            out.push_str("<redacted>");
            i += n;
            if let Some(done) = REDACTED.iter().find(|r| text[i..].starts_with(*r)) {
                i += done.len();
                continue;
            }
            while i < text.len() && !matches!(bytes[i], b'&' | b' ' | b'"' | b'\'' | b'\n' | b'>') {
                i += 1;
            }
            continue;
        }
        let c = text[i..].chars().next().expect("i is on a char boundary");
        out.push(c);
        i += c.len_utf8();
    }
    out
}

/// `text` with the password of every `scheme://user:password@host` in it replaced, the
/// user name kept (as for a replica URL). An S3 or Azure `endpoint=` may be a proxy taking
/// basic auth (`http://user:password@proxy`), and it was printed whole in
/// `litestream_status()`'s endpoints, store errors, `leader-error.json`, the CLI and the
/// restored file's attribute (a security tester). The user info runs from `://` to the
/// last `@` before the first `/`, `?`, `#`, whitespace, `"`, `<` or `>`, none of which a
/// parsed URL's user info holds unencoded; a URL that does not parse is [`redact_url`]'s.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '"' | '<' | '>') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        let userinfo = authority.rfind('@').map(|at| authority.split_at(at));
        match userinfo.and_then(|(info, host)| info.split_once(':').map(|(user, pw)| (user, pw, host))) {
            Some((user, password, host)) if !password.is_empty() && !REDACTED.contains(&password) => {
                out.push_str(user);
                out.push_str(":<redacted>");
                out.push_str(host);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Where the user info of a replica URL the parser did not take as one ends: `raw` with
/// an `@` after `://` that does not parse (a password holding `/`, `#` or `?` ends the host
/// early: `s3://AKID:Secret/x@bucket` reads as host `AKID`, port `Secret`, an invalid port),
/// or that parses with a port, no user info and an `@` after its host (`s3://AKID:/x@bucket`
/// and `nats://u:1234?x@host` parse, the password's start as a port). The byte offset of
/// the last `@`, which ends the user info whatever the password holds. A URL with a port
/// and an `@` in its path or query (`nats://host:4222/b?nats_user=a@b`) is shown redacted
/// too: hiding a host costs less than showing part of a password.
pub(crate) fn misread_userinfo(raw: &str) -> Option<usize> {
    let start = raw.find("://")? + 3;
    let at = start + raw[start..].rfind('@')?;
    let misread = match url::Url::parse(raw.trim()) {
        Err(_) => true,
        Ok(u) if u.password().is_some() || !u.username().is_empty() => false,
        Ok(_) => {
            let authority_end = raw[start..].find(['/', '?', '#']).map_or(raw.len(), |e| start + e);
            raw[start..authority_end].contains(':') && at > authority_end
        }
    };
    misread.then_some(at)
}

/// A user-supplied URL made safe to print: password in the userinfo and secret query
/// parameters replaced, and so is the password of a URL in its query (an `endpoint=`).
/// In a `nats://` URL a user name without a password is a token (`nats://TOKEN@host`), so
/// it is replaced too. A URL whose user info the parser did not take as one
/// ([`misread_userinfo`]) has all of it replaced: `s3://<redacted>@bucket/app`; it was
/// printed whole, password and all, in the error saying it is not a valid URL (a security
/// tester).
pub fn redact_url(raw: &str) -> String {
    if let Some(at) = misread_userinfo(raw) {
        let start = raw.find("://").map_or(0, |s| s + 3);
        return redact_userinfo(&redact_query_values(&format!(
            "{}<redacted>{}",
            &raw[..start],
            &raw[at..]
        )));
    }
    let parsed = url::Url::parse(raw);
    let cleaned = match parsed.clone() {
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
    // A URL in the query (endpoint=) may be percent-encoded there, out of the text
    // scrub's sight: its password, decoded, is looked for as a registered secret.
    let mut nested = Redactor::default();
    for (_, value) in parsed.iter().flat_map(|u| u.query_pairs()) {
        nested.add_url_password(&value);
    }
    nested.clean(&cleaned)
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

    #[test]
    fn a_url_that_does_not_parse_is_shown_without_its_password() {
        for (raw, kept) in [
            (
                "s3://AKID:CanarySecret/withslash@bucket/app",
                "s3://<redacted>@bucket/app",
            ),
            (
                "abs://acct:CanaryKey/ab+cd==@container/app",
                "abs://<redacted>@container/app",
            ),
            ("gs://u:Canary#Gs@bkt/p", "gs://<redacted>@bkt/p"),
            ("s3://AKID:Canary?Q=1@sec/p5", "s3://<redacted>@sec/p5"),
            (
                "nats://u:CanaryPw/x@127.0.0.1:4222/bkt",
                "nats://<redacted>@127.0.0.1:4222/bkt",
            ),
            // No special character: the port is what does not parse.
            (
                "nats://u:CanaryPw@127.0.0.1:99999/b",
                "nats://<redacted>@127.0.0.1:99999/b",
            ),
            ("file://u:CanaryPw@/tmp/r", "file://<redacted>@/tmp/r"),
            // A password starting with digits parses, as a port, the rest as a path.
            ("s3://AKID:12/Canary@bucket/app", "s3://<redacted>@bucket/app"),
            ("s3://AKID:/Canary@bucket/app", "s3://<redacted>@bucket/app"),
            ("nats://u:4222?Canary@host/b", "nats://<redacted>@host/b"),
        ] {
            let shown = redact_url(raw);
            assert_eq!(shown, kept, "{raw}");
        }
        // The same after the last '@', whatever sits there: a query's secrets too.
        let shown = redact_url("s3://AKID:Canary/x@bucket/app?sse-customer-key=CanarySse");
        assert_eq!(shown, "s3://<redacted>@bucket/app?sse-customer-key=<redacted>");
        // URLs that parse as they were meant are shown as before.
        assert_eq!(redact_url("nats://127.0.0.1:4222/bkt"), "nats://127.0.0.1:4222/bkt");
        assert_eq!(redact_url("s3://bucket/a@b"), "s3://bucket/a@b");
        assert_eq!(redact_url("abs://acct@container/p"), "abs://acct@container/p");
    }

    #[test]
    fn an_endpoint_password_is_redacted_wherever_it_is_printed() {
        // In the replica URL's query, as typed and percent-encoded.
        let shown = redact_url("s3://b/p?endpoint=http://proxyuser:CanaryEndpointPw@127.0.0.1:1&region=x");
        assert_eq!(
            shown,
            "s3://b/p?endpoint=http://proxyuser:<redacted>@127.0.0.1:1&region=x"
        );
        let shown = redact_url("s3://b/p?endpoint=http%3A%2F%2Fproxyuser%3ACanaryEndpointPw%40127.0.0.1%3A1");
        assert!(!shown.contains("CanaryEndpointPw"), "{shown}");
        // The endpoint alone.
        let shown = redact_url("http://proxyuser:CanaryEndpointPw@127.0.0.1:1");
        assert!(
            shown.starts_with("http://proxyuser:%3Credacted%3E@127.0.0.1:1"),
            "{shown}"
        );
        // In an error's text, known to the store's redactor or not.
        let text = "error sending request for url (http://proxyuser:CanaryEndpointPw@127.0.0.1:1/b?list-type=2)";
        let clean = Redactor::default().clean(text);
        assert_eq!(
            clean,
            "error sending request for url (http://proxyuser:<redacted>@127.0.0.1:1/b?list-type=2)"
        );
        let mut r = Redactor::default();
        r.add_url_password("http://proxyuser:Canary%2FEndpoint@127.0.0.1:1");
        let clean = r.clean("auth Canary/Endpoint refused; Canary%2FEndpoint");
        assert_eq!(clean, "auth <redacted> refused; <redacted>");
    }

    #[test]
    fn key_secret_and_token_parameters_are_redacted_by_the_ending_of_their_names() {
        let key = "c96e91ea09c8ac8316a728ada796e7d579b28c2cc3c06ea8c350238b04c4203b";
        for name in [
            "encryption_key",
            "encryption-key",
            "encryptionKey",
            "key",
            "api_key",
            "sseCustomerKey",
            "client_secret",
            "nats_token",
            "nats_password",
        ] {
            let shown = redact_url(&format!("file:///tmp/rep?{name}={key}&region=x"));
            assert_eq!(shown, format!("file:///tmp/rep?{name}=<redacted>&region=x"));
            let said = Redactor::default().clean(&format!("unknown parameter in \"s3://b/p?{name}={key}\""));
            assert!(!said.contains(key), "{said}");
        }
        // Names of keys that are not keys stay readable.
        let shown = redact_url("s3://b/p?access-key-id=AKID&sse-kms-key-id=arn:k&sse-customer-key-md5=abc");
        assert_eq!(
            shown,
            "s3://b/p?access-key-id=AKID&sse-kms-key-id=arn:k&sse-customer-key-md5=abc"
        );
    }

    #[test]
    fn redacting_twice_changes_nothing() {
        for raw in [
            "s3://AKID:supersecret@bucket/db?secret-access-key=s3cr3t&region=x",
            "nats://s3cr3ttoken@127.0.0.1:4222/bucket?nats_password=pw-secret",
            "s3://b/p?endpoint=http://u:CanaryPw@127.0.0.1:1",
            "s3://AKID:Canary/x@bucket/app",
        ] {
            let once = redact_url(raw);
            assert_eq!(redact_url(&once), once);
            assert_eq!(Redactor::default().clean(&once), once);
        }
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
