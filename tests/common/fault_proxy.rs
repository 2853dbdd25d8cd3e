//! A fault-injecting HTTP proxy on loopback, to put in front of a real object store (moto):
//! the code under test talks to the proxy's port as if it were the store, and the proxy
//! decides, request by request, whether to pass it through or to fail it in one of the ways
//! networks and stores fail. It can also make the store look like one that mishandles
//! conditional creates ([`Conditional`]); that edits requests, so it needs a store that
//! checks no signatures (moto).
//!
//! Std only: one thread per client connection, one request per connection (the proxy answers
//! with `Connection: close`, so the client never reuses a connection the proxy may have
//! wrecked). Each request is read whole before the decision, so a fault can be told apart
//! from a request that never arrived, and a retried request can be recognised.
//!
//! It can also stand for a distant store: [`FaultPlan::latency`] holds every request for a
//! round trip, [`FaultPlan::keep_alive`] keeps connections open as a real store does (a new
//! connection then pays one more round trip, its TCP handshake), and [`FaultProxy::record`]
//! logs when each request arrived and was answered, from which [`longest_chain`] tells how
//! many requests a client made one after another.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One way a request can go wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// The connection is reset (RST) as soon as the request arrives; the store never sees it.
    Reset,
    /// Nothing comes back for [`FaultPlan::stall`], then the connection closes; the store
    /// never sees the request.
    Stall,
    /// The store answers, but its response reaches the client a few bytes at a time.
    SlowBytes,
    /// The proxy answers 500 or 503 itself (alternately), with an S3-style XML error body.
    ServerError,
    /// The store applies the request (a PUT lands), then the connection drops before any of
    /// the response is sent: the client must retry something that already happened.
    LostResponse,
    /// The store answers, the client gets the headers and half of the body, then the
    /// connection closes: a short read.
    Truncate,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Reset,
        Fault::Stall,
        Fault::SlowBytes,
        Fault::ServerError,
        Fault::LostResponse,
        Fault::Truncate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Reset => "reset",
            Fault::Stall => "stall",
            Fault::SlowBytes => "slow-bytes",
            Fault::ServerError => "5xx",
            Fault::LostResponse => "lost-response",
            Fault::Truncate => "truncate",
        }
    }
}

/// What the store behind the proxy seems to do with a conditional create (a PUT with
/// `If-None-Match: *`), to stand for S3 implementations that get it wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conditional {
    /// Whatever the real store does (the request passes untouched).
    Honoured,
    /// The header is dropped: a second create overwrites (Garage 2.5).
    Ignored,
    /// The proxy checks whether the key exists (a HEAD) and answers 412 if so; otherwise
    /// it waits this long and writes without the header: one create after another is
    /// refused, simultaneous ones all win (OpenStack Swift's s3api, s3s-fs).
    CheckThenWrite(Duration),
}

/// Which requests fail, and how.
#[derive(Clone, Debug)]
pub struct FaultPlan {
    /// Percentage (0..=100) of eligible requests that get a fault.
    pub rate_percent: u32,
    /// The faults to choose from, uniformly.
    pub kinds: Vec<Fault>,
    /// Only requests with these methods are eligible (`None`: all).
    pub methods: Option<Vec<&'static str>>,
    /// How long a [`Fault::Stall`] holds the connection.
    pub stall: Duration,
    /// [`Fault::SlowBytes`]: bytes per write and the pause after each.
    pub slow_chunk: usize,
    pub slow_pause: Duration,
    /// Seed of the generator that picks which requests fail.
    pub seed: u64,
    /// Every request is held this long before it is forwarded: one round trip to a store
    /// that far away.
    pub latency: Duration,
    /// Serve many requests per client connection (HTTP/1.1 keep-alive). A connection's
    /// first request is then held one more `latency` (the TCP handshake's round trip; TLS is
    /// not modelled). A fault still closes its connection; a reset of a request after the
    /// first on a connection is a close after the request was read.
    pub keep_alive: bool,
    /// What conditional creates do (in any case, faults or not).
    pub conditional: Conditional,
    /// A request identical to one faulted before (a retry, a hedge) is never faulted: each
    /// distinct request fails at most once, so a client that asks again gets an answer.
    pub spare_repeats: bool,
}

impl FaultPlan {
    /// No faults: a transparent proxy.
    pub fn none() -> FaultPlan {
        FaultPlan {
            rate_percent: 0,
            kinds: Vec::new(),
            methods: None,
            stall: Duration::from_secs(2),
            slow_chunk: 256,
            slow_pause: Duration::from_millis(2),
            seed: 1,
            latency: Duration::ZERO,
            keep_alive: false,
            conditional: Conditional::Honoured,
            spare_repeats: false,
        }
    }

    /// No faults; every request held for `latency`, connections kept open: a store that
    /// far away.
    pub fn distant(latency: Duration) -> FaultPlan {
        FaultPlan {
            latency,
            keep_alive: true,
            ..FaultPlan::none()
        }
    }

    /// `rate_percent` of all requests fail with one of `kinds`.
    pub fn of(kinds: &[Fault], rate_percent: u32) -> FaultPlan {
        FaultPlan {
            rate_percent,
            kinds: kinds.to_vec(),
            ..FaultPlan::none()
        }
    }
}

/// What the proxy saw and did.
#[derive(Clone, Debug, Default)]
pub struct FaultStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests received (whole heads read).
    pub requests: u64,
    /// Requests passed to the store untouched.
    pub forwarded: u64,
    /// Faults injected, by kind.
    pub injected: std::collections::BTreeMap<Fault, u64>,
    /// Requests identical (method, target, Range) to one that failed earlier (any fault
    /// but slow bytes): the client's retries.
    pub retries: u64,
    /// Requests by method.
    pub by_method: std::collections::BTreeMap<String, u64>,
}

impl FaultStats {
    pub fn total_injected(&self) -> u64 {
        self.injected.values().sum()
    }

    /// One line for the figures a test prints.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self.injected.iter().map(|(k, n)| format!("{}={n}", k.name())).collect();
        format!(
            "requests={} forwarded={} faults=[{}] retries_seen={}",
            self.requests,
            self.forwarded,
            kinds.join(" "),
            self.retries
        )
    }
}

/// One request as the proxy saw it (see [`FaultProxy::record`]).
#[derive(Clone, Debug)]
pub struct Exchange {
    /// When its head had arrived.
    pub arrived: Instant,
    /// When the proxy had sent the whole answer (or failed it).
    pub done: Instant,
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// The Range header, if any.
    pub range: String,
    /// Response status; 0 when the proxy answered nothing (a fault).
    pub status: u16,
    /// Response body bytes sent.
    pub body_bytes: usize,
    /// The first request of its connection.
    pub new_connection: bool,
}

/// The longest run of requests each of which arrived after the one before it was answered:
/// how many round trips the client spent one after another, whatever it did in parallel.
/// (Greedy by earliest answer, which finds a longest such run.)
pub fn longest_chain(log: &[Exchange]) -> Vec<&Exchange> {
    let mut by_done: Vec<&Exchange> = log.iter().collect();
    by_done.sort_by_key(|e| e.done);
    let mut chain: Vec<&Exchange> = Vec::new();
    for e in by_done {
        if chain.last().is_none_or(|last| e.arrived >= last.done) {
            chain.push(e);
        }
    }
    chain
}

/// The log, one exchange a line in order of arrival (times in ms from the first
/// arrival), the members of [`longest_chain`] starred: what a failing count prints.
pub fn describe_log(log: &[Exchange]) -> String {
    let Some(t0) = log.iter().map(|e| e.arrived).min() else {
        return "  (no requests)".into();
    };
    let chain = longest_chain(log);
    let ms = |t: Instant| t.duration_since(t0).as_secs_f64() * 1e3;
    let mut sorted: Vec<&Exchange> = log.iter().collect();
    sorted.sort_by_key(|e| e.arrived);
    let lines: Vec<String> = sorted
        .iter()
        .map(|e| {
            format!(
                "  {} {:8.1}-{:8.1} ms {} {} {} -> {} {} B{}",
                if chain.iter().any(|c| std::ptr::eq(*c, *e)) {
                    "*"
                } else {
                    " "
                },
                ms(e.arrived),
                ms(e.done),
                e.method,
                e.target,
                e.range,
                e.status,
                e.body_bytes,
                if e.new_connection { " (new connection)" } else { "" }
            )
        })
        .collect();
    lines.join("\n")
}

/// Most exchanges [`FaultProxy::record`] keeps, so a long run cannot grow it without bound.
const MAX_RECORDED: usize = 100_000;

struct Shared {
    plan: FaultPlan,
    /// Exchanges recorded since [`FaultProxy::record`]; `None` when not recording.
    log: Option<Vec<Exchange>>,
    rng: u64,
    stats: FaultStats,
    /// Signatures of faulted requests not yet seen again.
    faulted: HashSet<String>,
    /// Server error alternation: 500, 503, 500, ...
    next_503: bool,
}

/// A running proxy; stops accepting when dropped (requests in flight finish on their own).
pub struct FaultProxy {
    pub port: u16,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16, plan: FaultPlan) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind proxy port");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Mutex::new(Shared {
            rng: plan.seed.max(1),
            plan,
            stats: FaultStats::default(),
            faulted: HashSet::new(),
            next_503: false,
            log: None,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let shared = Arc::clone(&shared);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    shared.lock().unwrap().stats.connections += 1;
                    let shared = Arc::clone(&shared);
                    std::thread::spawn(move || {
                        // An I/O error here is the client or the store hanging up: nothing
                        // to report, the client sees its own error.
                        let _ = handle(conn, upstream_port, &shared);
                    });
                }
            })
        };
        FaultProxy {
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
            shared,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Replaces the plan (faults on, off, or different) for requests that arrive from now on.
    pub fn set_plan(&self, plan: FaultPlan) {
        let mut s = self.shared.lock().unwrap();
        s.rng = plan.seed.max(1);
        s.plan = plan;
    }

    pub fn stats(&self) -> FaultStats {
        self.shared.lock().unwrap().stats.clone()
    }

    /// Starts recording every exchange (forgetting any recorded before).
    pub fn record(&self) {
        self.shared.lock().unwrap().log = Some(Vec::new());
    }

    /// The exchanges recorded since [`FaultProxy::record`], in the order they ended;
    /// recording goes on.
    pub fn recorded(&self) -> Vec<Exchange> {
        self.shared.lock().unwrap().log.clone().unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wake the acceptor
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// A request as read from the client: its head (verbatim) and body (verbatim, chunked or not).
#[derive(Clone)]
struct Request {
    method: String,
    signature: String,
    head: Vec<u8>,
    body: Vec<u8>,
}

fn handle(client: TcpStream, upstream_port: u16, shared: &Mutex<Shared>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    let (keep_alive, latency) = {
        let s = shared.lock().unwrap();
        (s.plan.keep_alive, s.plan.latency)
    };
    if keep_alive {
        return serve_keep_alive(client, upstream_port, shared, latency);
    }
    // Look at the head without consuming it: a reset must leave the request unread, which
    // is what makes the kernel answer with RST instead of FIN.
    let Some(peeked) = peek_head(&client)? else {
        return Ok(());
    };
    let arrived = Instant::now();
    let (method, signature) = describe(&peeked);
    let fault = decide(shared, &method, &signature);
    if std::env::var_os("FAULT_PROXY_LOG").is_some() {
        eprintln!("fault proxy: {signature} -> {fault:?}");
    }
    std::thread::sleep(latency);
    if fault == Some(Fault::Reset) {
        drop(client);
        record(shared, &peeked, arrived, true, None);
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let request = read_request(&mut reader, method, signature)?;
    let mut client = client;
    let answer = respond(&mut client, fault, &request, upstream_port, shared);
    record(
        shared,
        &request.head,
        arrived,
        true,
        answer.as_ref().ok().and_then(|a| a.as_ref()),
    );
    answer?;
    let _ = client.shutdown(Shutdown::Write);
    // Let the client read the close before the socket goes away.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    Ok(())
}

/// Many requests on one connection, each held for `latency` (the first one twice: the
/// connection's handshake), until the client closes or a fault closes it.
fn serve_keep_alive(
    client: TcpStream,
    upstream_port: u16,
    shared: &Mutex<Shared>,
    latency: Duration,
) -> std::io::Result<()> {
    // A head and a body written apart would otherwise wait out the client's delayed ACK
    // (40 ms) on a connection that stays open.
    client.set_nodelay(true)?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut client = client;
    let mut first = true;
    loop {
        if reader.fill_buf()?.is_empty() {
            return Ok(()); // the client closed its connection
        }
        let arrived = Instant::now();
        let mut request = read_request(&mut reader, String::new(), String::new())?;
        (request.method, request.signature) = describe(&request.head);
        let fault = decide(shared, &request.method, &request.signature);
        std::thread::sleep(if first { latency * 2 } else { latency });
        let answer = match fault {
            Some(Fault::Reset) => Ok(None),
            _ => respond(&mut client, fault, &request, upstream_port, shared),
        };
        let sent = answer.as_ref().ok().and_then(|a| a.as_ref());
        record(shared, &request.head, arrived, first, sent);
        first = false;
        if fault.is_some() || answer.is_err() {
            let _ = client.shutdown(Shutdown::Both);
            return answer.map(|_| ());
        }
    }
}

/// What the proxy sent back: status and body bytes.
struct Answer {
    status: u16,
    body_bytes: usize,
}

/// Answers one request read whole, with `fault` or by forwarding it. The answer keeps the
/// connection open only with keep-alive and no fault.
fn respond(
    client: &mut TcpStream,
    fault: Option<Fault>,
    request: &Request,
    upstream_port: u16,
    shared: &Mutex<Shared>,
) -> std::io::Result<Option<Answer>> {
    let answered = |head: &[u8], body_bytes: usize| Answer {
        status: status_of(head),
        body_bytes,
    };
    let conditional = shared.lock().unwrap().plan.conditional;
    let Some(edited) = apply_conditional(request.clone(), conditional, upstream_port, client)? else {
        return Ok(Some(Answer {
            status: 412,
            body_bytes: 0,
        })); // answered 412 itself
    };
    let request = &edited;
    Ok(match fault {
        Some(Fault::Reset) => unreachable!("a reset answers nothing"),
        Some(Fault::Stall) => {
            let stall = shared.lock().unwrap().plan.stall;
            std::thread::sleep(stall);
            client.shutdown(Shutdown::Both)?;
            None
        }
        Some(Fault::ServerError) => {
            let code = {
                let mut s = shared.lock().unwrap();
                s.next_503 = !s.next_503;
                if s.next_503 {
                    503
                } else {
                    500
                }
            };
            let (reason, s3_code) = match code {
                503 => ("Service Unavailable", "SlowDown"),
                _ => ("Internal Server Error", "InternalError"),
            };
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{s3_code}</Code>\
                 <Message>injected by the test proxy</Message></Error>"
            );
            let response = format!(
                "HTTP/1.1 {code} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes())?;
            Some(Answer {
                status: code,
                body_bytes: body.len(),
            })
        }
        Some(Fault::LostResponse) => {
            forward(request, upstream_port)?;
            client.shutdown(Shutdown::Both)?;
            None
        }
        Some(Fault::Truncate) => {
            let (head, body) = forward(request, upstream_port)?;
            client.write_all(&with_connection_close(&head))?;
            client.write_all(&body[..body.len() / 2])?;
            client.shutdown(Shutdown::Both)?;
            Some(answered(&head, body.len() / 2))
        }
        Some(Fault::SlowBytes) => {
            let (head, body) = forward(request, upstream_port)?;
            let (chunk, pause) = {
                let s = shared.lock().unwrap();
                (s.plan.slow_chunk.max(1), s.plan.slow_pause)
            };
            let all = [with_connection_close(&head), body.clone()].concat();
            for piece in all.chunks(chunk) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(pause);
            }
            Some(answered(&head, body.len()))
        }
        None => {
            let (head, body) = forward(request, upstream_port)?;
            let keep_alive = shared.lock().unwrap().plan.keep_alive;
            let sent = if keep_alive {
                with_keep_alive(&head, body.len())
            } else {
                with_connection_close(&head)
            };
            client.write_all(&sent)?;
            client.write_all(&body)?;
            Some(answered(&head, body.len()))
        }
    })
}

/// Adds one exchange to the log, if recording.
fn record(shared: &Mutex<Shared>, head: &[u8], arrived: Instant, new_connection: bool, answer: Option<&Answer>) {
    let mut s = shared.lock().unwrap();
    let Some(log) = s.log.as_mut().filter(|l| l.len() < MAX_RECORDED) else {
        return;
    };
    let text = String::from_utf8_lossy(head);
    let mut request_line = text.split("\r\n").next().unwrap_or("").split(' ');
    log.push(Exchange {
        arrived,
        done: Instant::now(),
        method: request_line.next().unwrap_or("").to_string(),
        target: request_line.next().unwrap_or("").to_string(),
        range: header_value(&text, "range").unwrap_or_default(),
        status: answer.map_or(0, |a| a.status),
        body_bytes: answer.map_or(0, |a| a.body_bytes),
        new_connection,
    });
}

/// The status code of a response head (0 if it has none).
fn status_of(head: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(head);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Carries out `mode` on a conditional create; `None` when the proxy answered it itself.
fn apply_conditional(
    request: Request,
    mode: Conditional,
    upstream_port: u16,
    client: &mut TcpStream,
) -> std::io::Result<Option<Request>> {
    let text = String::from_utf8_lossy(&request.head).into_owned();
    if mode == Conditional::Honoured || request.method != "PUT" || header_value(&text, "if-none-match").is_none() {
        return Ok(Some(request));
    }
    if let Conditional::CheckThenWrite(gap) = mode {
        let target = text.split(' ').nth(1).unwrap_or("/");
        let auth = header_value(&text, "authorization").unwrap_or_default();
        let head =
            format!("HEAD {target} HTTP/1.1\r\nHost: 127.0.0.1:{upstream_port}\r\nAuthorization: {auth}\r\n\r\n");
        let check = Request {
            method: "HEAD".into(),
            signature: String::new(),
            head: head.into_bytes(),
            body: Vec::new(),
        };
        let (answer, _) = forward(&check, upstream_port)?;
        if answer.starts_with(b"HTTP/1.1 200") {
            let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>PreconditionFailed</Code>\
                        <Message>At least one of the pre-conditions you specified did not hold</Message></Error>";
            let response = format!(
                "HTTP/1.1 412 Precondition Failed\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            client.write_all(response.as_bytes())?;
            return Ok(None);
        }
        std::thread::sleep(gap);
    }
    let head: String = text
        .split_inclusive("\r\n")
        .filter(|line| !line.to_ascii_lowercase().starts_with("if-none-match:"))
        .collect();
    Ok(Some(Request {
        head: head.into_bytes(),
        ..request
    }))
}

/// Peeks until the request head is complete; `None` when the client closes first.
fn peek_head(client: &TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = 0;
    loop {
        let n = client.peek(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(end) = find(&buf[..n], b"\r\n\r\n") {
            return Ok(Some(buf[..end + 4].to_vec()));
        }
        if n == buf.len() {
            return Err(std::io::Error::other("request head larger than 64 KiB"));
        }
        if n == last {
            std::thread::sleep(Duration::from_millis(1));
        }
        last = n;
    }
}

/// Method and the signature that identifies a retry of the same request.
fn describe(head: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let range = header_value(&text, "range").unwrap_or_default();
    (method.clone(), format!("{method} {target} {range}"))
}

fn header_value(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

fn decide(shared: &Mutex<Shared>, method: &str, signature: &str) -> Option<Fault> {
    let mut s = shared.lock().unwrap();
    s.stats.requests += 1;
    *s.stats.by_method.entry(method.to_string()).or_default() += 1;
    let repeat = s.faulted.remove(signature);
    if repeat {
        s.stats.retries += 1;
    }
    let eligible = !s.plan.kinds.is_empty()
        && s.plan
            .methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x.eq_ignore_ascii_case(method)));
    // xorshift64: reproducible for a given seed and request order.
    s.rng ^= s.rng << 13;
    s.rng ^= s.rng >> 7;
    s.rng ^= s.rng << 17;
    let roll = s.rng % 100;
    let pick = (s.rng >> 32) as usize;
    if !eligible || (repeat && s.plan.spare_repeats) || roll >= u64::from(s.plan.rate_percent) {
        s.stats.forwarded += 1;
        return None;
    }
    let fault = s.plan.kinds[pick % s.plan.kinds.len()];
    *s.stats.injected.entry(fault).or_default() += 1;
    if fault != Fault::SlowBytes {
        // A slow answer is still an answer: the same request again is not a retry.
        s.faulted.insert(signature.to_string());
    }
    Some(fault)
}

fn read_request(reader: &mut BufReader<TcpStream>, method: String, signature: String) -> std::io::Result<Request> {
    let mut head = Vec::new();
    loop {
        let n = reader.read_until(b'\n', &mut head)?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "client closed"));
        }
        if head.ends_with(b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let chunked = header_value(&text, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked {
        read_chunked(reader, &mut body)?;
    } else if let Some(len) = header_value(&text, "content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body)?;
    }
    Ok(Request {
        method,
        signature,
        head,
        body,
    })
}

/// Copies a chunked body verbatim (sizes, data, trailers) into `out`.
fn read_chunked(reader: &mut BufReader<TcpStream>, out: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let start = out.len();
        reader.read_until(b'\n', out)?;
        let line = String::from_utf8_lossy(&out[start..]).into_owned();
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let at = out.len();
                reader.read_until(b'\n', out)?;
                if &out[at..] == b"\r\n" || out.len() == at {
                    return Ok(());
                }
            }
        }
        let at = out.len();
        out.resize(at + size + 2, 0);
        reader.read_exact(&mut out[at..])?;
    }
}

/// Sends the request to the store on a fresh connection and reads the whole response:
/// (head, body), both verbatim.
fn forward(request: &Request, upstream_port: u16) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    upstream.write_all(&with_connection_close(&request.head))?;
    upstream.write_all(&request.body)?;
    let mut raw = Vec::new();
    upstream.read_to_end(&mut raw)?;
    let end = find(&raw, b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("store sent no response head to {}", request.method)))?;
    Ok((raw[..end + 4].to_vec(), raw[end + 4..].to_vec()))
}

/// `head` for a connection that stays open: no Connection/Keep-Alive header, and a
/// Content-Length when the store delimited the body by closing (we asked it to).
fn with_keep_alive(head: &[u8], body_len: usize) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let delimited =
        header_value(&text, "content-length").is_some() || header_value(&text, "transfer-encoding").is_some();
    let mut out = without_connection_headers(&text);
    if !delimited {
        out.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `head` with any Connection/Keep-Alive header replaced by `Connection: close`.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let mut out = without_connection_headers(&String::from_utf8_lossy(head));
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// The lines of a head but its Connection and Keep-Alive headers and its blank end line.
fn without_connection_headers(head: &str) -> String {
    let mut out = String::with_capacity(head.len() + 24);
    for line in head.trim_end_matches("\r\n").split("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
