//! A small NATS client: one connection (TCP, or TLS through rustls with ring), the CONNECT
//! handshake with the authentication we support, PING/PONG, publishing, subscriptions,
//! request/reply through one wildcard inbox subscription, and reconnecting for as long as
//! the client lives. JetStream is requests on top of this (`session.rs`).
//!
//! One task owns the socket: it writes the frames callers queue, reads and dispatches what
//! the server sends, and on a lost connection fails the requests in flight, then dials
//! again until a server answers, resubscribing what is still subscribed. The task ends
//! when the last handle (client or subscription) is dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::connect::{self, ConnectOptions};
use super::proto::{self, Headers, Msg, ServerOp};

/// How often an idle connection is checked with a PING, and how many may go unanswered.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const MAX_PINGS_OUT: u32 = 2;
/// Pauses between reconnect attempts: doubling from the first to the last.
const RECONNECT_FIRST: Duration = Duration::from_millis(50);
const RECONNECT_MAX: Duration = Duration::from_secs(2);
/// The sid of the inbox subscription that carries every request's reply.
const INBOX_SID: u64 = 1;

/// Why a call failed. The text is what `errors.rs` classifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NatsError {
    /// No answer within the limit.
    Timeout(String),
    /// Nobody subscribes to the subject (JetStream down or restarting).
    NoResponders(String),
    /// The connection dropped before the answer came.
    Disconnected,
    /// A JetStream API error: HTTP-like `code`, JetStream's `err_code`, description.
    Api {
        code: u16,
        err_code: u32,
        description: String,
    },
    /// Anything else (a bad answer, a protocol error).
    Other(String),
}

impl std::fmt::Display for NatsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsError::Timeout(s) => write!(f, "timed out waiting for an answer on {s}"),
            NatsError::NoResponders(s) => write!(f, "no responders on {s}"),
            NatsError::Disconnected => write!(f, "disconnected from the NATS server"),
            NatsError::Api {
                code,
                err_code,
                description,
            } => write!(f, "JetStream error {code} ({err_code}): {description}"),
            NatsError::Other(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for NatsError {}

/// State shared by the handles and the connection task.
struct Shared {
    inbox: String,
    next_sid: AtomicU64,
    next_token: AtomicU64,
    subs: Mutex<HashMap<u64, (String, mpsc::UnboundedSender<Msg>)>>,
    requests: Mutex<HashMap<u64, oneshot::Sender<Msg>>>,
    connected: watch::Sender<bool>,
    /// Why the last reconnect attempt failed, while the client is down: a server that
    /// came back refusing our credentials says so, not just "reconnecting".
    reconnect_error: Mutex<Option<String>>,
}

/// A connected client; clones share the connection.
#[derive(Clone)]
pub(crate) struct Client {
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Bytes>,
}

/// Messages on one subject until dropped (which unsubscribes).
pub(crate) struct Subscription {
    sid: u64,
    rx: mpsc::UnboundedReceiver<Msg>,
    shared: Arc<Shared>,
    out: mpsc::UnboundedSender<Bytes>,
}

impl Subscription {
    /// The next message; `None` once the connection is lost (messages in between are gone).
    pub async fn next(&mut self) -> Option<Msg> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.subs.lock().expect("subs lock").remove(&self.sid);
        let mut frame = BytesMut::new();
        proto::unsubscribe(&mut frame, self.sid);
        let _ = self.out.send(frame.freeze());
    }
}

/// A random NUID-like token: 22 base62 characters, as the NATS clients name inboxes and
/// object versions.
pub(crate) fn nuid() -> String {
    const DIGITS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut raw = [0u8; 22];
    getrandom::fill(&mut raw).expect("the operating system's random source");
    raw.iter().map(|b| DIGITS[(*b % 62) as usize] as char).collect()
}

impl Client {
    /// Connects to the first server that answers, then keeps the connection up in a task on
    /// the current runtime. A failure of this first connection is returned as it is.
    pub async fn connect(options: ConnectOptions) -> Result<Client, connect::ConnectError> {
        let (io, leftover, advertised) = connect::dial_any(&options).await?;
        let mut options = options;
        options.learn(&advertised);
        let shared = Arc::new(Shared {
            inbox: format!("_INBOX.{}", nuid()),
            next_sid: AtomicU64::new(INBOX_SID + 1),
            next_token: AtomicU64::new(1),
            subs: Mutex::new(HashMap::new()),
            requests: Mutex::new(HashMap::new()),
            connected: watch::channel(true).0,
            reconnect_error: Mutex::new(None),
        });
        let (out, rx) = mpsc::unbounded_channel();
        let task = Task {
            shared: Arc::clone(&shared),
            options,
            rx,
        };
        tokio::spawn(task.run(io, leftover));
        Ok(Client { shared, out })
    }

    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// While down: why the last attempt to connect again failed, if one has.
    pub fn reconnect_error(&self) -> Option<String> {
        self.shared
            .reconnect_error
            .lock()
            .expect("reconnect_error lock")
            .clone()
    }

    /// Follows the connection state (true while connected).
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// A fresh subject for a subscription's deliveries. Not under the request inbox: its
    /// wildcard subscription would match, and the server would send every message twice.
    pub fn new_inbox(&self) -> String {
        format!("_INBOX.{}", nuid())
    }

    fn send(&self, frame: BytesMut) -> Result<(), NatsError> {
        self.out.send(frame.freeze()).map_err(|_| NatsError::Disconnected)
    }

    pub fn subscribe(&self, subject: &str) -> Result<Subscription, NatsError> {
        let sid = self.shared.next_sid.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        self.shared
            .subs
            .lock()
            .expect("subs lock")
            .insert(sid, (subject.to_string(), tx));
        let mut frame = BytesMut::new();
        proto::subscribe(&mut frame, subject, sid);
        self.send(frame)?;
        Ok(Subscription {
            sid,
            rx,
            shared: Arc::clone(&self.shared),
            out: self.out.clone(),
        })
    }

    /// Publishes `payload` to `subject`, waiting for nothing.
    pub fn publish(&self, subject: &str, payload: &[u8]) -> Result<(), NatsError> {
        let mut frame = BytesMut::with_capacity(payload.len() + 64);
        proto::publish(&mut frame, subject, None, None, payload);
        self.send(frame)
    }

    /// Publishes `payload` to `subject` and waits up to `limit` for the one reply.
    pub async fn request(
        &self,
        subject: &str,
        headers: Option<&Headers>,
        payload: &[u8],
        limit: Duration,
    ) -> Result<Msg, NatsError> {
        if !self.is_connected() {
            return Err(NatsError::Disconnected);
        }
        let token = self.shared.next_token.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.requests.lock().expect("requests lock").insert(token, tx);
        let mut frame = BytesMut::with_capacity(payload.len() + 128);
        let reply = format!("{}.{token}", self.shared.inbox);
        proto::publish(&mut frame, subject, Some(&reply), headers, payload);
        if let Err(e) = self.send(frame) {
            self.shared.requests.lock().expect("requests lock").remove(&token);
            return Err(e);
        }
        let answer = tokio::time::timeout(limit, rx).await;
        self.shared.requests.lock().expect("requests lock").remove(&token);
        match answer {
            Err(_) => Err(NatsError::Timeout(subject.to_string())),
            Ok(Err(_)) => Err(NatsError::Disconnected),
            Ok(Ok(m)) if m.status == Some(503) => Err(NatsError::NoResponders(subject.to_string())),
            Ok(Ok(m)) => Ok(m),
        }
    }
}

/// Anything we can speak the protocol over: a TCP or a TLS stream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Task {
    shared: Arc<Shared>,
    options: ConnectOptions,
    rx: mpsc::UnboundedReceiver<Bytes>,
}

/// Why a connection's loop ended.
enum Ended {
    /// Every handle is gone: stop.
    Closed,
    Lost(String),
}

impl Task {
    async fn run(mut self, mut io: Box<dyn Io>, mut leftover: BytesMut) {
        loop {
            match self.serve(&mut io, leftover).await {
                Ended::Closed => return,
                Ended::Lost(why) => {
                    self.shared.connected.send_replace(false);
                    tracing::warn!(server = %self.options.describe(), error = %why, "NATS disconnected");
                    // Requests in flight get Disconnected; subscriptions are made again on the
                    // next connection (what was delivered meanwhile is lost: callers race
                    // their reads against the `connected` watch).
                    self.shared.requests.lock().expect("requests lock").clear();
                }
            }
            let mut pause = RECONNECT_FIRST;
            (io, leftover) = loop {
                tokio::time::sleep(pause).await;
                // Frames queued while down (requests already failed, UNSUBs of a dead
                // connection) are dropped; subscriptions are sent again below.
                loop {
                    match self.rx.try_recv() {
                        Ok(_) => {}
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => return,
                    }
                }
                match connect::dial_any(&self.options).await {
                    Ok((io, leftover, advertised)) => {
                        self.options.learn(&advertised);
                        break (io, leftover);
                    }
                    Err(e) => self.reconnect_failed(e.to_string()),
                }
                pause = (pause * 2).min(RECONNECT_MAX);
            };
            tracing::info!(server = %self.options.describe(), "NATS connected");
            *self.shared.reconnect_error.lock().expect("reconnect_error lock") = None;
            self.shared.connected.send_replace(true);
        }
    }

    /// Keeps why an attempt failed for the store's errors, and logs it when the reason
    /// changes (a refused login is a WARN an operator must see; the same refusal every
    /// 2 s is not logged again).
    fn reconnect_failed(&self, why: String) {
        let mut last = self.shared.reconnect_error.lock().expect("reconnect_error lock");
        if last.as_deref() != Some(why.as_str()) {
            tracing::warn!(server = %self.options.describe(), error = %why, "NATS reconnect attempt failed");
        } else {
            tracing::debug!(error = %why, "NATS reconnect attempt failed");
        }
        *last = Some(why);
    }

    /// Subscribes the inbox and every live subscription on a fresh connection.
    fn subscriptions(&self) -> BytesMut {
        let mut frame = BytesMut::new();
        proto::subscribe(&mut frame, &format!("{}.*", self.shared.inbox), INBOX_SID);
        for (sid, (subject, _)) in self.shared.subs.lock().expect("subs lock").iter() {
            proto::subscribe(&mut frame, subject, *sid);
        }
        frame
    }

    async fn serve(&mut self, io: &mut Box<dyn Io>, mut buf: BytesMut) -> Ended {
        let lost = |e: std::io::Error| Ended::Lost(e.to_string());
        if let Err(e) = io.write_all(&self.subscriptions()).await {
            return lost(e);
        }
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.tick().await;
        let mut pings_out = 0;
        let mut batch = BytesMut::new();
        loop {
            // What is already buffered first: the handshake may have read past its PONG.
            loop {
                match proto::parse(&mut buf) {
                    Ok(Some(op)) => match self.dispatch(op) {
                        Some(Reply::Pong) => {
                            if let Err(e) = io.write_all(b"PONG\r\n").await {
                                return lost(e);
                            }
                        }
                        Some(Reply::GotPong) => pings_out = 0,
                        Some(Reply::Fatal(text)) => return Ended::Lost(format!("server error: {text}")),
                        None => {}
                    },
                    Ok(None) => break,
                    Err(e) => return Ended::Lost(e.to_string()),
                }
            }
            // Room for a whole chunk message per read: `read_buf` on a full buffer would
            // grow it 64 bytes at a time.
            buf.reserve(256 * 1024);
            tokio::select! {
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) => return Ended::Lost("the server closed the connection".into()),
                    Ok(_) => {}
                    Err(e) => return lost(e),
                },
                frame = self.rx.recv() => {
                    let Some(frame) = frame else { return Ended::Closed };
                    batch.clear();
                    batch.extend_from_slice(&frame);
                    while batch.len() < 1 << 20 {
                        match self.rx.try_recv() {
                            Ok(f) => batch.extend_from_slice(&f),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = io.write_all(&batch).await {
                        return lost(e);
                    }
                }
                _ = ping.tick() => {
                    if pings_out >= MAX_PINGS_OUT {
                        return Ended::Lost("the server stopped answering PINGs".into());
                    }
                    pings_out += 1;
                    if let Err(e) = io.write_all(b"PING\r\n").await {
                        return lost(e);
                    }
                }
            }
            if let Err(e) = io.flush().await {
                return lost(e);
            }
        }
    }

    fn dispatch(&mut self, op: ServerOp) -> Option<Reply> {
        match op {
            ServerOp::Ping => Some(Reply::Pong),
            ServerOp::Pong => Some(Reply::GotPong),
            ServerOp::Ok => None,
            ServerOp::Info(json) => {
                self.options.learn(&connect::advertised(&json));
                None
            }
            ServerOp::Err(text) => {
                // Permission errors concern one subject; the server keeps the connection.
                if text.to_ascii_lowercase().contains("permissions violation") {
                    tracing::warn!(error = %text, "NATS server refused a subject");
                    None
                } else {
                    Some(Reply::Fatal(text))
                }
            }
            ServerOp::Msg(m) if m.sid == INBOX_SID => {
                let token = m.subject.rsplit('.').next().and_then(|t| t.parse::<u64>().ok());
                let waiter = token.and_then(|t| self.shared.requests.lock().expect("requests lock").remove(&t));
                if let Some(w) = waiter {
                    let _ = w.send(m);
                }
                None
            }
            ServerOp::Msg(m) => {
                if let Some((_, tx)) = self.shared.subs.lock().expect("subs lock").get(&m.sid) {
                    let _ = tx.send(m);
                }
                None
            }
        }
    }
}

enum Reply {
    Pong,
    GotPong,
    Fatal(String),
}

#[cfg(test)]
#[path = "client_tests.rs"]
mod tests;
