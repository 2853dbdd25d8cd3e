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

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

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
    /// What conditional creates do (in any case, faults or not).
    pub conditional: Conditional,
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
            conditional: Conditional::Honoured,
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

struct Shared {
    plan: FaultPlan,
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
struct Request {
    method: String,
    signature: String,
    head: Vec<u8>,
    body: Vec<u8>,
}

fn handle(client: TcpStream, upstream_port: u16, shared: &Mutex<Shared>) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(60)))?;
    // Look at the head without consuming it: a reset must leave the request unread, which
    // is what makes the kernel answer with RST instead of FIN.
    let Some(peeked) = peek_head(&client)? else {
        return Ok(());
    };
    let (method, signature) = describe(&peeked);
    let fault = decide(shared, &method, &signature);
    if std::env::var_os("FAULT_PROXY_LOG").is_some() {
        eprintln!("fault proxy: {signature} -> {fault:?}");
    }
    if fault == Some(Fault::Reset) {
        drop(client);
        return Ok(());
    }
    let mut reader = BufReader::new(client.try_clone()?);
    let request = read_request(&mut reader, method, signature)?;
    let mut client = client;
    let conditional = shared.lock().unwrap().plan.conditional;
    let Some(request) = apply_conditional(request, conditional, upstream_port, &mut client)? else {
        return Ok(()); // answered 412 itself
    };
    match fault {
        Some(Fault::Reset) => unreachable!("handled above"),
        Some(Fault::Stall) => {
            let stall = shared.lock().unwrap().plan.stall;
            std::thread::sleep(stall);
            client.shutdown(Shutdown::Both)?;
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
        }
        Some(Fault::LostResponse) => {
            forward(&request, upstream_port)?;
            client.shutdown(Shutdown::Both)?;
        }
        Some(Fault::Truncate) => {
            let (head, body) = forward(&request, upstream_port)?;
            client.write_all(&head)?;
            client.write_all(&body[..body.len() / 2])?;
            client.shutdown(Shutdown::Both)?;
        }
        Some(Fault::SlowBytes) => {
            let (head, body) = forward(&request, upstream_port)?;
            let (chunk, pause) = {
                let s = shared.lock().unwrap();
                (s.plan.slow_chunk.max(1), s.plan.slow_pause)
            };
            let all = [head, body].concat();
            for piece in all.chunks(chunk) {
                client.write_all(piece)?;
                client.flush()?;
                std::thread::sleep(pause);
            }
        }
        None => {
            let (head, body) = forward(&request, upstream_port)?;
            client.write_all(&head)?;
            client.write_all(&body)?;
        }
    }
    let _ = client.shutdown(Shutdown::Write);
    // Let the client read the close before the socket goes away.
    let _ = std::io::copy(&mut reader, &mut std::io::sink());
    Ok(())
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
    if s.faulted.remove(signature) {
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
    if !eligible || roll >= u64::from(s.plan.rate_percent) {
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
/// (head rewritten to `Connection: close`, body verbatim).
fn forward(request: &Request, upstream_port: u16) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    upstream.set_read_timeout(Some(Duration::from_secs(120)))?;
    upstream.write_all(&with_connection_close(&request.head))?;
    upstream.write_all(&request.body)?;
    let mut raw = Vec::new();
    upstream.read_to_end(&mut raw)?;
    let end = find(&raw, b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("store sent no response head to {}", request.method)))?;
    let head = with_connection_close(&raw[..end + 4]);
    Ok((head, raw[end + 4..].to_vec()))
}

/// `head` with any Connection/Keep-Alive header replaced by `Connection: close`.
fn with_connection_close(head: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    let mut out = String::with_capacity(text.len() + 20);
    for line in text.trim_end_matches("\r\n").split("\r\n") {
        let name = line.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("keep-alive") {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
