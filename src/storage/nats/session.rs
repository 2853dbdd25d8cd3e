//! The connection to NATS and the object store bucket's stream: connecting, creating the
//! bucket when it is missing, and the three ways we read messages (one by sequence, the
//! last or first on a subject, and every message on a subject through an ordered consumer).

use std::time::Duration;

use async_nats::jetstream::{self, consumer::push::OrderedConfig, consumer::DeliverPolicy, stream};
use async_nats::{Client, ConnectOptions, HeaderMap};
use bytes::Bytes;
use futures_util::StreamExt;

use super::super::error::{Error, Result};
use super::errors::Ctx;
use super::meta::Subjects;
use super::settings::{Auth, Settings};

/// How long a JetStream API request or a publish ack may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordered consumer may go without delivering the next message.
const IDLE_LIMIT: Duration = Duration::from_secs(15);

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
    pub js: jetstream::Context,
    stream: stream::Stream,
    /// The stream allows direct gets (`allow_direct`): single-message reads go to
    /// `$JS.API.DIRECT.GET` and return the raw payload, instead of the leader-only
    /// `STREAM.MSG.GET`, whose JSON answer carries the payload in base64.
    direct: bool,
    /// Whether the client is connected, as its connection events say.
    connected: tokio::sync::watch::Receiver<bool>,
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
        let (connected_tx, connected) = tokio::sync::watch::channel(true);
        let client = connect_options(settings, connected_tx, ctx)
            .await?
            .connect(settings.servers.as_str())
            .await
            .map_err(|e| {
                use async_nats::ConnectErrorKind as K;
                // An untrusted certificate (reported as an I/O error) or a bad TLS setup will
                // not get better by retrying.
                let certificate = e.kind() == K::Io && e.to_string().contains("certificate");
                match e.kind() {
                    K::Tls | K::ServerParse => {
                        Error::config(format!("{}: {}", ctx.store, ctx.redactor.clean(&e.to_string())))
                    }
                    _ if certificate => Error::config(format!("{}: {}", ctx.store, ctx.redactor.clean(&e.to_string()))),
                    K::Authentication | K::AuthorizationViolation => Error::Denied {
                        store: ctx.store.to_string(),
                        op: ctx.op,
                        key: ctx.key.to_string(),
                        message: ctx.redactor.clean(&e.to_string()),
                    },
                    _ => ctx.error(&e),
                }
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .build(client.clone());
        let stream = match js.get_stream(subjects.stream()).await {
            Ok(s) => s,
            Err(e) if is_stream_not_found(&e) => create_bucket(&js, settings, subjects, ctx).await?,
            Err(e) => return Err(ctx.error(&e)),
        };
        let config = &stream.cached_info().config;
        if !config.allow_rollup {
            return Err(Error::config(format!(
                "{}: stream {} exists but is not an object store bucket (rollups are not allowed)",
                ctx.store,
                subjects.stream()
            )));
        }
        let direct = config.allow_direct;
        tracing::debug!(store = %ctx.store, direct, "connected to NATS");
        Ok(Session {
            client,
            js,
            stream,
            direct,
            connected,
        })
    }

    /// Resolves when the connection is (or already was) lost. Requests in flight then only
    /// wait for their timeouts, so callers race their work against this.
    pub async fn lost(&self) {
        let mut rx = self.connected.clone();
        let _ = rx.wait_for(|up| !*up).await;
    }

    /// One message, or `None` when there is none there.
    pub async fn get(&self, which: Which<'_>, ctx: Ctx<'_>) -> Result<Option<Stored>> {
        let m = if self.direct {
            let b = self.stream.direct_get_builder();
            let b = match which {
                Which::Sequence(s) => b.sequence(s),
                Which::LastOn(subject) => b.last_by_subject(subject),
                Which::FirstOn(subject) => b.next_by_subject(subject),
            };
            match b.send().await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(ctx.error(&e)),
            }
        } else {
            let b = self.stream.raw_message_builder();
            let b = match which {
                Which::Sequence(s) => b.sequence(s),
                Which::LastOn(subject) => b.last_by_subject(subject),
                Which::FirstOn(subject) => b.next_by_subject(subject),
            };
            match b.send().await {
                Ok(m) => m,
                Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => return Ok(None),
                Err(e) => return Err(ctx.error(&e)),
            }
        };
        Ok(Some(Stored {
            subject: m.subject.to_string(),
            sequence: m.sequence,
            payload: m.payload,
        }))
    }

    /// Every message on `filter` (the last per subject if `last_per_subject`), in stream
    /// order, through an ordered push consumer: `each(sequence, message)` for each one.
    /// `headers_only` asks the server to leave payloads out (it adds `Nats-Msg-Size`).
    pub async fn consume(
        &self,
        filter: String,
        last_per_subject: bool,
        headers_only: bool,
        ctx: Ctx<'_>,
        mut each: impl FnMut(u64, async_nats::Message) -> Result<()>,
    ) -> Result<()> {
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                deliver_subject: self.client.new_inbox(),
                filter_subject: filter,
                deliver_policy: if last_per_subject {
                    DeliverPolicy::LastPerSubject
                } else {
                    DeliverPolicy::All
                },
                headers_only,
                ..Default::default()
            })
            .await
            .map_err(|e| ctx.error(&e))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(());
        }
        let mut messages = consumer.messages().await.map_err(|e| ctx.error(&e))?;
        loop {
            let next = tokio::time::timeout(IDLE_LIMIT, messages.next())
                .await
                .map_err(|_| ctx.timed_out(IDLE_LIMIT))?;
            let m = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(ctx.error(&e)),
                None => return Err(ctx.transient("the consumer ended before the last message")),
            };
            let (sequence, pending) = {
                let info = m.info().map_err(|e| ctx.classify(&format!("bad delivery: {e}")))?;
                (info.stream_sequence, info.pending)
            };
            each(sequence, m.message)?;
            if pending == 0 {
                return Ok(());
            }
        }
    }

    /// Publishes one message and waits for the stream to store it; the stream sequence.
    pub async fn publish(&self, subject: String, headers: Option<HeaderMap>, payload: Bytes) -> PublishResult {
        let sent = match headers {
            Some(h) => self.js.publish_with_headers(subject, h, payload).await,
            None => self.js.publish(subject, payload).await,
        };
        match sent {
            Ok(ack) => ack.await.map(|a| a.sequence),
            Err(e) => Err(e),
        }
    }

    /// Removes every message on `subject` (the chunks of one object version).
    pub async fn purge(&self, subject: &str, ctx: Ctx<'_>) -> Result<()> {
        self.stream
            .purge()
            .filter(subject)
            .await
            .map(|_| ())
            .map_err(|e| ctx.error(&e))
    }
}

pub(crate) type PublishResult = std::result::Result<u64, jetstream::context::PublishError>;

fn is_stream_not_found(e: &jetstream::context::GetStreamError) -> bool {
    matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

/// Creates the bucket as the NATS clients create object stores (file storage, one replica,
/// rollups and direct gets allowed). Losing a creation race to another client is fine.
async fn create_bucket(
    js: &jetstream::Context,
    settings: &Settings,
    subjects: &Subjects,
    ctx: Ctx<'_>,
) -> Result<stream::Stream> {
    let config = stream::Config {
        name: subjects.stream(),
        description: Some(format!(
            "object store bucket {} (created by litestream-vfs)",
            settings.bucket
        )),
        subjects: vec![subjects.all_chunks(), subjects.all_meta()],
        storage: stream::StorageType::File,
        num_replicas: 1,
        discard: stream::DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..Default::default()
    };
    match js.create_stream(config).await {
        Ok(s) => {
            tracing::info!(store = %ctx.store, bucket = %settings.bucket, "created the NATS object store bucket");
            Ok(s)
        }
        Err(e) => match js.get_stream(subjects.stream()).await {
            Ok(s) => Ok(s),
            Err(_) => Err(ctx.error(&e)),
        },
    }
}

/// Client options from the settings: authentication, TLS, and reconnecting forever (the
/// uploader retries; the connection must come back whenever the server does).
async fn connect_options(
    settings: &Settings,
    connected: tokio::sync::watch::Sender<bool>,
    ctx: Ctx<'_>,
) -> Result<ConnectOptions> {
    let file_error = |what: &str, e: std::io::Error| Error::config(format!("{}: {what}: {e}", ctx.store));
    let mut o = match &settings.auth {
        Auth::None => ConnectOptions::new(),
        Auth::CredsFile(p) => ConnectOptions::with_credentials_file(p.clone())
            .await
            .map_err(|e| file_error("reading the NATS credentials file", e))?,
        Auth::NkeyFile(p) => {
            let seed = std::fs::read_to_string(p).map_err(|e| file_error("reading the nkey seed file", e))?;
            ConnectOptions::with_nkey(seed.trim().to_string())
        }
        Auth::UserPassword(u, p) => ConnectOptions::with_user_and_password(u.clone(), p.clone()),
        Auth::Token(t) => ConnectOptions::with_token(t.clone()),
    };
    if settings.tls.required {
        o = o.require_tls(true);
    }
    if let Some(ca) = &settings.tls.ca {
        o = o.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &settings.tls.client_cert {
        o = o.add_client_certificate(cert.clone(), key.clone());
    }
    let store = ctx.store.to_string();
    let connected = std::sync::Arc::new(connected);
    Ok(o.name("litestream-vfs")
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .max_reconnects(None)
        .event_callback(move |event| {
            let store = store.clone();
            let connected = std::sync::Arc::clone(&connected);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.send_replace(true);
                        tracing::info!(store = %store, "NATS connected")
                    }
                    async_nats::Event::Disconnected => {
                        connected.send_replace(false);
                        tracing::warn!(store = %store, "NATS disconnected")
                    }
                    other => tracing::debug!(store = %store, event = %other, "NATS event"),
                }
            }
        }))
}
