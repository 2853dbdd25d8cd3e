//! The bucket's JetStream stream, spoken as JSON requests over our client (`client.rs`):
//! connecting, creating the bucket when it is missing, publishing with a PubAck, purging,
//! and the two ways we read messages: one at a time (a direct get, or the leader's
//! `STREAM.MSG.GET` when the stream does not allow direct gets) and every message on a
//! subject, in order, through an ephemeral push consumer.
//!
//! Why a consumer rather than a loop of `next_by_subj` direct gets: it streams (one round
//! trip for the whole object instead of one per chunk), and can send headers only
//! (`Nats-Msg-Size`) and the last message per subject, which the chunk maps and listings
//! need; nats-server 2.9 has no batched direct get.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::super::error::{Error, Result};
use super::client::{Client, NatsError};
use super::connect::{ConnectKind, ConnectOptions};
use super::errors::Ctx;
use super::meta::Subjects;
use super::proto::{Headers, Msg};
use super::settings::Settings;

/// How long a JetStream API request or a publish ack may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a consumer may go without delivering the next message.
const IDLE_LIMIT: Duration = Duration::from_secs(15);
/// JetStream's error codes we act on.
const STREAM_NOT_FOUND: u32 = 10059;
const NO_MESSAGE_FOUND: u32 = 10037;
pub(crate) const WRONG_LAST_SEQUENCE: u32 = 10071;

/// One message read back from the bucket's stream.
pub(crate) struct Stored {
    pub subject: String,
    pub sequence: u64,
    pub payload: Bytes,
}

/// Where a single-message read starts.
pub(crate) enum Which<'a> {
    Sequence(u64),
    LastOn(&'a str),
    FirstOn(&'a str),
}

/// A live connection plus the bucket's stream.
pub(crate) struct Session {
    pub client: Client,
    stream: String,
    /// The stream allows direct gets (`allow_direct`): single-message reads go to
    /// `$JS.API.DIRECT.GET` and return the raw payload, instead of the leader-only
    /// `STREAM.MSG.GET`, whose JSON answer carries the payload in base64.
    direct: bool,
    /// Whether the client is connected.
    connected: tokio::sync::watch::Receiver<bool>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    err_code: u32,
    #[serde(default)]
    description: String,
}

/// A JetStream API answer: `T`, or `{"error": {...}}`.
fn parse_api<T: DeserializeOwned>(payload: &[u8]) -> std::result::Result<T, NatsError> {
    let bad = |e: serde_json::Error| NatsError::Other(format!("bad JetStream answer: {e}"));
    let v: serde_json::Value = serde_json::from_slice(payload).map_err(bad)?;
    if let Some(e) = v.get("error") {
        let e: ApiError = serde_json::from_value(e.clone()).map_err(bad)?;
        return Err(NatsError::Api {
            code: e.code,
            err_code: e.err_code,
            description: e.description,
        });
    }
    serde_json::from_value(v).map_err(bad)
}

fn is_api(e: &NatsError, code: u32) -> bool {
    matches!(e, NatsError::Api { err_code, .. } if *err_code == code)
}

#[derive(Deserialize)]
struct StreamInfo {
    config: StreamConfig,
}

#[derive(Deserialize)]
struct StreamConfig {
    #[serde(default)]
    allow_rollup_hdrs: bool,
    #[serde(default)]
    allow_direct: bool,
    /// Nanoseconds after which the server deletes a message; 0 keeps them.
    #[serde(default)]
    max_age: u64,
    /// "old" or "new": what the server does at a limit (JetStream's default is "old").
    #[serde(default)]
    discard: Option<String>,
    #[serde(default)]
    max_bytes: i64,
    #[serde(default)]
    max_msgs: i64,
}

impl StreamConfig {
    /// Why the server itself would delete replica files, if it would: an age limit (a
    /// bucket's TTL), or a size or count limit that drops the oldest messages. Either
    /// deletes the snapshot every restore starts from while the primary goes on
    /// acknowledging commits on top of it (a tester lost every restore to an 8 s TTL).
    /// Retention is ours to do (`retention=`), from what restores still need.
    fn deletes_files(&self) -> Option<String> {
        if self.max_age > 0 {
            return Some(format!(
                "expires messages after {:?} (the bucket's TTL, max_age)",
                std::time::Duration::from_nanos(self.max_age)
            ));
        }
        let discards_old = self.discard.as_deref().is_none_or(|d| d.eq_ignore_ascii_case("old"));
        if discards_old && (self.max_bytes > 0 || self.max_msgs > 0) {
            return Some(format!(
                "drops its oldest messages at its limit (discard old, max_bytes {}, max_msgs {})",
                self.max_bytes, self.max_msgs
            ));
        }
        None
    }
}

/// `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`,
/// or the newer form with a domain and account hash after `ACK` and a token at the end:
/// (stream sequence, consumer sequence, pending).
fn ack_info(reply: &str) -> Option<(u64, u64, u64)> {
    let t: Vec<&str> = reply.split('.').collect();
    let at = match t.len() {
        9 => 5,
        n if n >= 11 && t[0] == "$JS" && t[1] == "ACK" => 7,
        _ => return None,
    };
    if t[0] != "$JS" || t[1] != "ACK" {
        return None;
    }
    let n = |i: usize| t[i].parse::<u64>().ok();
    Some((n(at)?, n(at + 1)?, n(at + 3)?))
}

impl Session {
    /// Connects and opens (or creates) the bucket. Runs on the crate's I/O runtime, whatever
    /// runtime the caller is on: the client's connection task lives on the runtime that
    /// connected it, and must outlive any one caller's.
    pub async fn open(settings: &Settings, subjects: &Subjects, ctx: Ctx<'_>) -> Result<Session> {
        let settings = settings.clone();
        let subjects = subjects.clone();
        let (store, redactor) = (ctx.store.to_string(), ctx.redactor.clone());
        let joined = crate::runtime::runtime()
            .spawn(async move {
                let ctx = Ctx {
                    store: &store,
                    op: "CONNECT",
                    key: &settings.bucket,
                    redactor: &redactor,
                };
                Self::open_here(&settings, &subjects, ctx).await
            })
            .await;
        joined.unwrap_or_else(|e| Err(ctx.classify(&format!("connect task failed: {e}"))))
    }

    async fn open_here(settings: &Settings, subjects: &Subjects, ctx: Ctx<'_>) -> Result<Session> {
        let options = ConnectOptions::from_settings(settings)
            .map_err(|e| Error::config(format!("{}: {}", ctx.store, ctx.redactor.clean(&e))))?;
        let client = Client::connect(options).await.map_err(|e| {
            let message = ctx.redactor.clean(&e.message);
            match e.kind {
                // An untrusted certificate or a bad TLS setup will not get better by retrying.
                ConnectKind::Tls => Error::config(format!("{}: {message}", ctx.store)),
                ConnectKind::Auth => Error::Denied {
                    store: ctx.store.to_string(),
                    op: ctx.op,
                    key: ctx.key.to_string(),
                    message,
                },
                ConnectKind::Io | ConnectKind::Protocol => ctx.classify(&message),
            }
        })?;
        let mut session = Session {
            connected: client.watch_connected(),
            client,
            stream: subjects.stream(),
            direct: false,
        };
        let config = match session
            .api::<StreamInfo>(&format!("STREAM.INFO.{}", session.stream), None)
            .await
        {
            Ok(info) => info.config,
            Err(e) if is_api(&e, STREAM_NOT_FOUND) => session.create_bucket(settings, subjects, ctx).await?,
            Err(e) => return Err(ctx.error(&e)),
        };
        if !config.allow_rollup_hdrs {
            return Err(Error::config(format!(
                "{}: stream {} exists but is not an object store bucket (rollups are not allowed)",
                ctx.store, session.stream
            )));
        }
        if let Some(why) = config.deletes_files() {
            return Err(Error::config(format!(
                "{}: stream {} {why}: the server would delete the replica's oldest files, the \
                 snapshot restores start from among them; create the bucket without a TTL and \
                 with discard new (nats object add BUCKET without --ttl), and let retention= age files out",
                ctx.store, session.stream
            )));
        }
        session.direct = config.allow_direct;
        tracing::debug!(store = %ctx.store, direct = session.direct, "connected to NATS");
        Ok(session)
    }

    /// One JetStream API request (`$JS.API.<what>`) and its JSON answer.
    async fn api<T: DeserializeOwned>(
        &self,
        what: &str,
        body: Option<serde_json::Value>,
    ) -> std::result::Result<T, NatsError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let m = self
            .client
            .request(&format!("$JS.API.{what}"), None, body.as_bytes(), REQUEST_TIMEOUT)
            .await?;
        parse_api(&m.payload)
    }

    /// Creates the bucket as the NATS clients create object stores (file storage, one
    /// replica, rollups and direct gets allowed). Losing a creation race is fine.
    async fn create_bucket(&self, settings: &Settings, subjects: &Subjects, ctx: Ctx<'_>) -> Result<StreamConfig> {
        let config = json!({
            "name": self.stream,
            "description": format!("object store bucket {} (created by litestream-vfs)", settings.bucket),
            "subjects": [subjects.all_chunks(), subjects.all_meta()],
            "retention": "limits",
            "max_consumers": -1,
            "max_msgs": -1,
            "max_bytes": -1,
            "max_age": 0,
            "max_msgs_per_subject": -1,
            "max_msg_size": -1,
            "storage": "file",
            "discard": "new",
            "num_replicas": 1,
            "duplicate_window": 120_000_000_000u64,
            "allow_rollup_hdrs": true,
            "allow_direct": true,
        });
        match self
            .api::<StreamInfo>(&format!("STREAM.CREATE.{}", self.stream), Some(config))
            .await
        {
            Ok(info) => {
                tracing::info!(store = %ctx.store, bucket = %settings.bucket, "created the NATS object store bucket");
                Ok(info.config)
            }
            Err(e) => match self
                .api::<StreamInfo>(&format!("STREAM.INFO.{}", self.stream), None)
                .await
            {
                Ok(info) => Ok(info.config),
                Err(_) => Err(ctx.error(&e)),
            },
        }
    }

    /// Creates the bucket again if its stream is gone (deleted under us, or a server that
    /// restarted without its storage): true if it did. Publishes to a missing stream only
    /// ever get "no responders", so without this a running primary never stores again.
    pub async fn recreate_if_missing(&self, settings: &Settings, subjects: &Subjects, ctx: Ctx<'_>) -> Result<bool> {
        match self
            .api::<StreamInfo>(&format!("STREAM.INFO.{}", self.stream), None)
            .await
        {
            Err(e) if is_api(&e, STREAM_NOT_FOUND) => {
                self.create_bucket(settings, subjects, ctx).await?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Resolves when the connection is (or already was) lost. Requests in flight then only
    /// wait for their timeouts, so callers race their work against this.
    pub async fn lost(&self) {
        let mut rx = self.connected.clone();
        let _ = rx.wait_for(|up| !*up).await;
    }

    /// One message, or `None` when there is none there.
    pub async fn get(&self, which: Which<'_>, ctx: Ctx<'_>) -> Result<Option<Stored>> {
        let body = match which {
            Which::Sequence(s) => json!({ "seq": s }),
            Which::LastOn(subject) => json!({ "last_by_subj": subject }),
            Which::FirstOn(subject) => json!({ "next_by_subj": subject }),
        };
        if !self.direct {
            return self.get_from_leader(body, ctx).await;
        }
        let subject = format!("$JS.API.DIRECT.GET.{}", self.stream);
        let m = self
            .client
            .request(&subject, None, body.to_string().as_bytes(), REQUEST_TIMEOUT)
            .await
            .map_err(|e| ctx.error(&e))?;
        match m.status {
            None => {}
            Some(404) => return Ok(None),
            Some(code) => return Err(ctx.classify(&format!("direct get failed with status {code}"))),
        }
        let sequence = m.headers.get("Nats-Sequence").and_then(|s| s.parse::<u64>().ok());
        let (Some(sequence), Some(subject)) = (sequence, m.headers.get("Nats-Subject")) else {
            return Err(ctx.classify("a direct get answer without Nats-Sequence and Nats-Subject"));
        };
        Ok(Some(Stored {
            subject: subject.to_string(),
            sequence,
            payload: m.payload,
        }))
    }

    async fn get_from_leader(&self, body: serde_json::Value, ctx: Ctx<'_>) -> Result<Option<Stored>> {
        #[derive(Deserialize)]
        struct Answer {
            message: Stored64,
        }
        #[derive(Deserialize)]
        struct Stored64 {
            subject: String,
            seq: u64,
            #[serde(default)]
            data: String,
        }
        let a = match self
            .api::<Answer>(&format!("STREAM.MSG.GET.{}", self.stream), Some(body))
            .await
        {
            Ok(a) => a.message,
            Err(e) if is_api(&e, NO_MESSAGE_FOUND) => return Ok(None),
            Err(e) => return Err(ctx.error(&e)),
        };
        let payload = base64::engine::general_purpose::STANDARD
            .decode(a.data)
            .map_err(|e| ctx.classify(&format!("bad base64 in a stored message: {e}")))?;
        Ok(Some(Stored {
            subject: a.subject,
            sequence: a.seq,
            payload: payload.into(),
        }))
    }

    /// Every message on `filter` (the last per subject if `last_per_subject`), in stream
    /// order, through an ephemeral push consumer: `each(sequence, message)` for each one.
    /// `headers_only` asks the server to leave payloads out (it adds `Nats-Msg-Size`).
    pub async fn consume(
        &self,
        filter: String,
        last_per_subject: bool,
        headers_only: bool,
        ctx: Ctx<'_>,
        mut each: impl FnMut(u64, Msg) -> Result<()>,
    ) -> Result<()> {
        #[derive(Deserialize)]
        struct ConsumerInfo {
            num_pending: u64,
        }
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(&inbox).map_err(|e| ctx.error(&e))?;
        let request = json!({
            "stream_name": self.stream,
            "config": {
                "deliver_subject": inbox,
                "filter_subject": filter,
                "deliver_policy": if last_per_subject { "last_per_subject" } else { "all" },
                "ack_policy": "none",
                "replay_policy": "instant",
                "headers_only": headers_only,
                "mem_storage": true,
                // Flow control paces the server to what we take in: without it a large
                // object is pushed at once and the server may drop us as a slow consumer.
                "flow_control": true,
                "idle_heartbeat": 5_000_000_000u64,
            },
        });
        let info: ConsumerInfo = self
            .api(&format!("CONSUMER.CREATE.{}", self.stream), Some(request))
            .await
            .map_err(|e| ctx.error(&e))?;
        if info.num_pending == 0 {
            return Ok(());
        }
        let mut expected = 1;
        loop {
            let m = tokio::time::timeout(IDLE_LIMIT, sub.next())
                .await
                .map_err(|_| ctx.timed_out(IDLE_LIMIT))?
                .ok_or_else(|| ctx.transient("the connection was lost while reading"))?;
            if m.status.is_some() {
                // A heartbeat, or a flow control request, which wants an empty reply.
                if let Some(reply) = &m.reply {
                    self.client.publish(reply, b"").map_err(|e| ctx.error(&e))?;
                }
                continue;
            }
            let Some((sequence, consumer_sequence, pending)) = m.reply.as_deref().and_then(ack_info) else {
                return Err(ctx.classify("a consumer delivery without its $JS.ACK reply subject"));
            };
            if consumer_sequence != expected {
                return Err(ctx.transient(&format!(
                    "the consumer skipped from delivery {} to {consumer_sequence}; read again",
                    expected - 1
                )));
            }
            expected += 1;
            each(sequence, m)?;
            if pending == 0 {
                return Ok(());
            }
        }
    }

    /// Publishes one message and waits for the stream to store it; the stream sequence.
    pub async fn publish(
        &self,
        subject: String,
        headers: Option<Headers>,
        payload: Bytes,
    ) -> std::result::Result<u64, NatsError> {
        #[derive(Deserialize)]
        struct PubAck {
            seq: u64,
        }
        let m = self
            .client
            .request(&subject, headers.as_ref(), &payload, REQUEST_TIMEOUT)
            .await?;
        parse_api::<PubAck>(&m.payload).map(|a| a.seq)
    }

    /// Removes every message on `subject` (the chunks of one object version).
    pub async fn purge(&self, subject: &str, ctx: Ctx<'_>) -> Result<()> {
        #[derive(Deserialize)]
        struct Purged {
            #[allow(dead_code)]
            success: bool,
        }
        self.api::<Purged>(
            &format!("STREAM.PURGE.{}", self.stream),
            Some(json!({ "filter": subject })),
        )
        .await
        .map(|_| ())
        .map_err(|e| ctx.error(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_subjects_of_both_formats_give_sequences_and_pending() {
        assert_eq!(ack_info("$JS.ACK.OBJ_b.c1.1.42.3.1700000000.7"), Some((42, 3, 7)));
        assert_eq!(
            ack_info("$JS.ACK.dom.acchash.OBJ_b.c1.1.42.3.1700000000.7.rnd"),
            Some((42, 3, 7))
        );
        assert_eq!(ack_info("_INBOX.x.1"), None);
        assert_eq!(ack_info("$JS.ACK.OBJ_b.c1.1.x.3.1700000000.7"), None);
    }

    #[test]
    fn api_errors_carry_their_codes_and_answers_their_fields() {
        let e = parse_api::<serde_json::Value>(
            br#"{"type":"x","error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"}}"#,
        )
        .unwrap_err();
        assert!(is_api(&e, WRONG_LAST_SEQUENCE), "{e}");
        assert!(e.to_string().contains("wrong last sequence"), "{e}");
        #[derive(Deserialize)]
        struct PubAck {
            seq: u64,
        }
        assert_eq!(parse_api::<PubAck>(br#"{"stream":"OBJ_b","seq":9}"#).unwrap().seq, 9);
        assert!(parse_api::<PubAck>(b"not json").is_err());
    }
}
