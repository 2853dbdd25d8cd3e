//! HTTP/1.1 as the proxy handles it: requests read whole and verbatim (chunked or not),
//! forwarded on a fresh connection, and response heads rewritten for the connection's fate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A request as read from the client: its head (verbatim) and body (verbatim, chunked or not).
#[derive(Clone)]
pub(super) struct Request {
    pub(super) method: String,
    pub(super) signature: String,
    pub(super) head: Vec<u8>,
    pub(super) body: Vec<u8>,
}

/// The status code of a response head (0 if it has none).
pub(super) fn status_of(head: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(head);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Peeks until the request head is complete; `None` when the client closes first.
pub(super) fn peek_head(client: &TcpStream) -> std::io::Result<Option<Vec<u8>>> {
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
pub(super) fn describe(head: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or("");
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("");
    let range = header_value(&text, "range").unwrap_or_default();
    (method.clone(), format!("{method} {target} {range}"))
}

pub(super) fn header_value(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub(super) fn read_request(
    reader: &mut BufReader<TcpStream>,
    method: String,
    signature: String,
) -> std::io::Result<Request> {
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
pub(super) fn forward(request: &Request, upstream_port: u16) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
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
pub(super) fn with_keep_alive(head: &[u8], body_len: usize) -> Vec<u8> {
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
pub(super) fn with_connection_close(head: &[u8]) -> Vec<u8> {
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
