//! NATS client and JetStream errors → our typed, redacted [`Error`].
//!
//! The conditions that matter to one call site (not found, wrong last sequence) are matched
//! there by JetStream error code. Everything else is classified here from the error text,
//! because the same condition (the server went away) surfaces in many ways: request
//! timeouts, publish-ack timeouts, "no responders" while JetStream restarts, broken pipes,
//! and JetStream API errors whose descriptions are the server's.

use std::error::Error as StdError;

use super::super::error::{Error, Redactor};

/// What a failed call was doing, for the message.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub store: &'a str,
    pub op: &'static str,
    pub key: &'a str,
    pub redactor: &'a Redactor,
}

impl Ctx<'_> {
    /// Converts any error of the client (or one with sources).
    pub fn error(&self, err: &(dyn StdError + 'static)) -> Error {
        self.classify(&chain_text(err))
    }

    /// Builds an error from a message (ours or a server's), classified by its text.
    pub fn classify(&self, text: &str) -> Error {
        let message = self.redactor.clean(text);
        let lower = message.to_ascii_lowercase();
        let (store, op, key) = (self.store.to_string(), self.op, self.key.to_string());
        if DENIED.iter().any(|w| lower.contains(w)) {
            Error::Denied {
                store,
                op,
                key,
                message,
            }
        } else if TRANSIENT.iter().any(|w| lower.contains(w)) {
            Error::Transient {
                store,
                op,
                key,
                message,
            }
        } else {
            Error::Other {
                store,
                op,
                key,
                message,
            }
        }
    }

    /// A condition of ours that asking again later can fix.
    pub fn transient(&self, message: &str) -> Error {
        Error::Transient {
            store: self.store.to_string(),
            op: self.op,
            key: self.key.to_string(),
            message: self.redactor.clean(message),
        }
    }

    /// An operation that took longer than its limit: the server is unreachable or stalled.
    pub fn timed_out(&self, limit: std::time::Duration) -> Error {
        Error::Transient {
            store: self.store.to_string(),
            op: self.op,
            key: self.key.to_string(),
            message: format!("no answer from the NATS server within {limit:?}"),
        }
    }

    pub fn invalid(&self, message: String) -> Error {
        Error::InvalidData {
            store: self.store.to_string(),
            op: self.op,
            key: self.key.to_string(),
            message: self.redactor.clean(&message),
        }
    }

    pub fn not_found(&self) -> Error {
        Error::NotFound {
            store: self.store.to_string(),
            key: self.key.to_string(),
        }
    }
}

/// Texts of failures that retrying will not fix: the server refused who we are.
const DENIED: &[&str] = &[
    "authorization violation",
    "permissions violation",
    "authentication",
    "user authentication expired",
    "account authentication expired",
];

/// Texts of failures worth retrying: the connection, the server or JetStream is not there
/// right now, or the storage is momentarily full.
const TRANSIENT: &[&str] = &[
    "timed out",
    "timeout",
    "no responders",
    "does not exist",
    "broken pipe",
    "connection",
    "disconnected",
    "io error",
    "missed idle heartbeat",
    "heartbeat",
    "jetstream not enabled",
    "jetstream unavailable",
    "temporarily unavailable",
    "insufficient resources",
    "max reconnects",
];

/// The error and its sources, `: `-joined, with repeats dropped.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(r: &Redactor) -> Ctx<'_> {
        Ctx {
            store: "nats://h:4222/b",
            op: "GET",
            key: "ltx/0/x.ltx",
            redactor: r,
        }
    }

    #[test]
    fn classifies_by_text_and_redacts() {
        let mut r = Redactor::default();
        r.add("tok-s3cr3t");
        let c = ctx(&r);
        assert!(c.classify("timed out: didn't receive ack in time").is_transient());
        assert!(c.classify("requested JetStream resource does not exist").is_transient());
        assert!(c.classify("IO error: Connection refused (os error 111)").is_transient());
        let e = c.classify("authorization violation for token tok-s3cr3t");
        assert!(matches!(e, Error::Denied { .. }), "{e:?}");
        assert!(!e.to_string().contains("tok-s3cr3t"), "{e}");
        assert!(matches!(c.classify("invalid JSON"), Error::Other { .. }));
    }
}
