//! The NATS client protocol's wire format: parsing what the server sends (`INFO`, `MSG`,
//! `HMSG`, `PING`, `PONG`, `+OK`, `-ERR`) from a buffer that may hold part of an operation,
//! and writing what we send (`PUB`/`HPUB`, `SUB`, `UNSUB`). Text protocol, `\r\n`-terminated
//! control lines; a message's payload (and, for `HMSG`, its `NATS/1.0` header block) follows
//! its control line, with byte counts given there.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// A control line longer than this is a protocol error (INFO, the longest, is a few KiB).
const MAX_CONTROL_LINE: usize = 64 * 1024;

/// Message headers, in the order received. Names compare case-insensitively: the servers
/// write `Nats-Msg-Size`, clients may write any case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Headers(Vec<(String, String)>);

impl Headers {
    pub fn new() -> Headers {
        Headers(Vec::new())
    }

    pub fn insert(&mut self, name: &str, value: &str) {
        self.0.push((name.to_string(), value.to_string()));
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A message delivered to one of our subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Msg {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    /// The status code of the header line (`NATS/1.0 503`): 503 no responders, 404 not
    /// found, 100 heartbeat or flow control.
    pub status: Option<u16>,
    pub headers: Headers,
    pub payload: Bytes,
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ServerOp {
    /// The JSON text of an `INFO`.
    Info(String),
    Msg(Msg),
    Ping,
    Pong,
    Ok,
    /// The text of an `-ERR`, without its quotes.
    Err(String),
}

/// Bytes the server sent that are not the protocol.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ProtocolError(pub String);

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NATS protocol error: {}", self.0)
    }
}

fn bad(what: impl Into<String>) -> ProtocolError {
    ProtocolError(what.into())
}

/// Takes the next whole operation off the front of `buf`; `Ok(None)` when `buf` holds only
/// part of one (read more and call again). Nothing is consumed until an operation is whole.
pub(crate) fn parse(buf: &mut BytesMut) -> Result<Option<ServerOp>, ProtocolError> {
    let Some(eol) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > MAX_CONTROL_LINE {
            return Err(bad("control line too long"));
        }
        return Ok(None);
    };
    let line = std::str::from_utf8(&buf[..eol]).map_err(|_| bad("control line is not UTF-8"))?;
    let (op, rest) = line.split_once([' ', '\t']).unwrap_or((line, ""));
    let rest = rest.trim();
    let simple = match op.to_ascii_uppercase().as_str() {
        "PING" => ServerOp::Ping,
        "PONG" => ServerOp::Pong,
        "+OK" => ServerOp::Ok,
        "-ERR" => ServerOp::Err(rest.trim_matches('\'').to_string()),
        "INFO" => ServerOp::Info(rest.to_string()),
        "MSG" => return parse_msg(buf, eol, false),
        "HMSG" => return parse_msg(buf, eol, true),
        _ => return Err(bad(format!("unknown operation {:?}", truncate(line)))),
    };
    buf.advance(eol + 2);
    Ok(Some(simple))
}

fn truncate(s: &str) -> &str {
    &s[..s.char_indices().nth(40).map_or(s.len(), |(i, _)| i)]
}

/// `MSG <subject> <sid> [reply] <size>` or `HMSG <subject> <sid> [reply] <hdr size> <size>`.
fn parse_msg(buf: &mut BytesMut, eol: usize, with_headers: bool) -> Result<Option<ServerOp>, ProtocolError> {
    let line = std::str::from_utf8(&buf[..eol]).expect("checked by parse");
    let args: Vec<&str> = line.split_ascii_whitespace().skip(1).collect();
    let counts = if with_headers { 2 } else { 1 };
    if args.len() != 2 + counts && args.len() != 3 + counts {
        return Err(bad(format!("bad message line {:?}", truncate(line))));
    }
    let number = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| bad(format!("bad number {s:?} in a message line")))
    };
    let sid = number(args[1])?;
    let reply = (args.len() == 3 + counts).then(|| args[2].to_string());
    let total = number(args[args.len() - 1])? as usize;
    let header_len = if with_headers {
        number(args[args.len() - 2])? as usize
    } else {
        0
    };
    if header_len > total {
        return Err(bad("header size exceeds message size"));
    }
    let subject = args[0].to_string();
    let start = eol + 2;
    if buf.len() < start + total + 2 {
        return Ok(None);
    }
    if &buf[start + total..start + total + 2] != b"\r\n" {
        return Err(bad("message payload not followed by CRLF"));
    }
    buf.advance(start);
    let mut body = buf.split_to(total).freeze();
    buf.advance(2);
    let (status, headers) = if with_headers {
        parse_headers(&body.split_to(header_len))?
    } else {
        (None, Headers::new())
    };
    Ok(Some(ServerOp::Msg(Msg {
        subject,
        sid,
        reply,
        status,
        headers,
        payload: body,
    })))
}

/// `NATS/1.0[ <status>[ <description>]]\r\n` then `Name: value\r\n` lines, then `\r\n`.
fn parse_headers(block: &[u8]) -> Result<(Option<u16>, Headers), ProtocolError> {
    let text = std::str::from_utf8(block).map_err(|_| bad("headers are not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default();
    let Some(after) = first.strip_prefix("NATS/1.0") else {
        return Err(bad(format!("bad header version line {:?}", truncate(first))));
    };
    let status = match after.split_ascii_whitespace().next() {
        Some(code) => Some(code.parse::<u16>().map_err(|_| bad(format!("bad status {code:?}")))?),
        None => None,
    };
    let mut headers = Headers::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| bad(format!("bad header line {:?}", truncate(line))))?;
        headers.insert(name.trim(), value.trim());
    }
    Ok((status, headers))
}

/// Appends `PUB` (or `HPUB` when there are headers) of `payload` to `out`.
pub(crate) fn publish(
    out: &mut BytesMut,
    subject: &str,
    reply: Option<&str>,
    headers: Option<&Headers>,
    payload: &[u8],
) {
    let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
    match headers {
        None => {
            out.put_slice(format!("PUB {subject}{reply} {}\r\n", payload.len()).as_bytes());
        }
        Some(h) => {
            let mut block = String::from("NATS/1.0\r\n");
            for (name, value) in &h.0 {
                block.push_str(&format!("{name}: {value}\r\n"));
            }
            block.push_str("\r\n");
            let total = block.len() + payload.len();
            out.put_slice(format!("HPUB {subject}{reply} {} {total}\r\n", block.len()).as_bytes());
            out.put_slice(block.as_bytes());
        }
    }
    out.put_slice(payload);
    out.put_slice(b"\r\n");
}

pub(crate) fn subscribe(out: &mut BytesMut, subject: &str, sid: u64) {
    out.put_slice(format!("SUB {subject} {sid}\r\n").as_bytes());
}

pub(crate) fn unsubscribe(out: &mut BytesMut, sid: u64) {
    out.put_slice(format!("UNSUB {sid}\r\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Vec<ServerOp> {
        let mut buf = BytesMut::from(input);
        let mut ops = Vec::new();
        while let Some(op) = parse(&mut buf).unwrap() {
            ops.push(op);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        ops
    }

    const STREAM: &[u8] = b"INFO {\"server_id\":\"x\",\"headers\":true}\r\nPING\r\n+OK\r\n\
        MSG a.b 7 12\r\nhello\r\nworld\r\n\
        MSG _INBOX.x.1 1 reply.to 0\r\n\r\n\
        HMSG $JS.API.x 3 43 46\r\nNATS/1.0\r\nNats-Msg-Size: 131072\r\nA: 1:2\r\n\r\nabc\r\n\
        HMSG _INBOX.x.2 1 26 26\r\nNATS/1.0 404 Not Found\r\n\r\n\r\n\
        PONG\r\n-ERR 'Authorization Violation'\r\n";

    fn expected() -> Vec<ServerOp> {
        let msg = |subject: &str, sid, reply: Option<&str>, status, headers: Headers, payload: &'static [u8]| {
            ServerOp::Msg(Msg {
                subject: subject.into(),
                sid,
                reply: reply.map(Into::into),
                status,
                headers,
                payload: Bytes::from_static(payload),
            })
        };
        let mut h = Headers::new();
        h.insert("Nats-Msg-Size", "131072");
        h.insert("A", "1:2");
        vec![
            ServerOp::Info("{\"server_id\":\"x\",\"headers\":true}".into()),
            ServerOp::Ping,
            ServerOp::Ok,
            msg("a.b", 7, None, None, Headers::new(), b"hello\r\nworld"),
            msg("_INBOX.x.1", 1, Some("reply.to"), None, Headers::new(), b""),
            msg("$JS.API.x", 3, None, None, h, b"abc"),
            msg("_INBOX.x.2", 1, None, Some(404), Headers::new(), b""),
            ServerOp::Pong,
            ServerOp::Err("Authorization Violation".into()),
        ]
    }

    #[test]
    fn parses_every_server_operation_with_headers_status_and_payloads_holding_crlf() {
        assert_eq!(all(STREAM), expected());
    }

    #[test]
    fn operations_split_across_reads_come_out_whole_and_the_same() {
        // Every split point, and byte-at-a-time: a partial operation is never consumed.
        for cut in 0..STREAM.len() {
            let mut buf = BytesMut::from(&STREAM[..cut]);
            let mut ops = Vec::new();
            while let Some(op) = parse(&mut buf).unwrap() {
                ops.push(op);
            }
            buf.extend_from_slice(&STREAM[cut..]);
            while let Some(op) = parse(&mut buf).unwrap() {
                ops.push(op);
            }
            assert_eq!(ops, expected(), "split at {cut}");
        }
        let mut buf = BytesMut::new();
        let mut ops = Vec::new();
        for b in STREAM {
            buf.put_u8(*b);
            while let Some(op) = parse(&mut buf).unwrap() {
                ops.push(op);
            }
        }
        assert_eq!(ops, expected());
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic_or_a_wait() {
        for input in [
            &b"BOGUS\r\n"[..],
            b"MSG a\r\n",
            b"MSG a x 3\r\nabc\r\n",
            b"MSG a 1 3\r\nabcd\r\n",
            b"HMSG a 1 9 3\r\nabc\r\n",
            b"HMSG a 1 5 5\r\nHTTP/\r\n",
            b"HMSG a 1 14 14\r\nNATS/1.0 x\r\n\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(input);
            assert!(parse(&mut buf).is_err(), "{:?}", String::from_utf8_lossy(input));
        }
        let mut long = BytesMut::from(&vec![b'x'; MAX_CONTROL_LINE + 1][..]);
        assert!(parse(&mut long).is_err());
    }

    #[test]
    fn written_publishes_parse_back_as_the_server_would_deliver_them() {
        let mut h = Headers::new();
        h.insert("Nats-Rollup", "sub");
        h.insert("Nats-Expected-Last-Subject-Sequence", "0");
        let mut out = BytesMut::new();
        publish(&mut out, "$O.b.M.x", Some("_INBOX.a.1"), Some(&h), b"{}");
        publish(&mut out, "$O.b.C.y", None, None, b"data");
        subscribe(&mut out, "_INBOX.a.*", 1);
        unsubscribe(&mut out, 1);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert_eq!(
            text,
            "HPUB $O.b.M.x _INBOX.a.1 70 72\r\nNATS/1.0\r\nNats-Rollup: sub\r\n\
             Nats-Expected-Last-Subject-Sequence: 0\r\n\r\n{}\r\n\
             PUB $O.b.C.y 4\r\ndata\r\nSUB _INBOX.a.* 1\r\nUNSUB 1\r\n"
        );
        // The same frame as the server relays it (HPUB -> HMSG with a sid).
        let delivered = text
            .lines()
            .next()
            .unwrap()
            .replace("HPUB $O.b.M.x _INBOX.a.1", "HMSG $O.b.M.x 9 _INBOX.a.1");
        let frame = format!("{delivered}\r\n{}", &text[text.find("NATS/1.0").unwrap()..]);
        let mut buf = BytesMut::from(frame.as_bytes());
        match parse(&mut buf).unwrap() {
            Some(ServerOp::Msg(m)) => {
                assert_eq!(m.headers, h);
                assert_eq!(&m.payload[..], b"{}");
                assert_eq!(m.reply.as_deref(), Some("_INBOX.a.1"));
            }
            other => panic!("{other:?}"),
        }
    }
}
