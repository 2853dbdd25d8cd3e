//! One client connection: each request is read whole, given its fault or none by the plan
//! ([`decide`]), then failed, forwarded, or answered by the proxy itself, and recorded.

use super::wire::{
    describe, forward, header_value, peek_head, read_request, status_of, with_connection_close, with_keep_alive,
    Request,
};
use super::{Conditional, Exchange, Fault, Shared, MAX_RECORDED};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(super) fn handle(client: TcpStream, upstream_port: u16, shared: &Mutex<Shared>) -> std::io::Result<()> {
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
