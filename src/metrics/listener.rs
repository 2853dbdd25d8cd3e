//! The `/metrics` endpoint: one HTTP listener per process, started by the first
//! database opened with `metrics_addr` (or `LITESTREAM_METRICS_ADDR`), served by hyper on
//! the process's I/O runtime (no thread of its own). Off by default; an address without a
//! host (`:9090`, Litestream's spelling, or `9090`) listens on loopback only.

use super::families::CONTENT_TYPE;
use crate::vfs::sys::fork::ProcessMutex;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// The address the process's listener was asked for, once one was. A child of `fork()`
/// starts with none: its parent's listener is served by the parent's threads.
static LISTENING: ProcessMutex<Option<SocketAddr>> = ProcessMutex::new();

/// Parses `host:port`, `[v6]:port`, `:port` or `port`; the last two mean loopback.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    // No setting name here: the caller names what gave it (metrics_addr or
    // LITESTREAM_METRICS_ADDR).
    let bad = |why: &str| format!("'{text}' {why} (expected host:port, e.g. 127.0.0.1:9090, or :9090)");
    let port_only = text.strip_prefix(':').unwrap_or(text);
    if !port_only.is_empty() && port_only.bytes().all(|b| b.is_ascii_digit()) {
        let port: u16 = port_only.parse().map_err(|_| bad("has no valid port"))?;
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| bad(&format!("is not an address: {e}")))?;
    addrs.next().ok_or_else(|| bad("resolves to no address"))
}

/// Starts the listener on `text` unless the process already has one. A second address
/// is ignored with a warning (one listener per process); a port that cannot be bound is
/// logged as an error and does not stop the database from opening (several processes
/// of one application may all be given the same address).
pub fn serve(text: &str) -> Result<(), String> {
    let addr = parse_addr(text)?;
    let mut listening = LISTENING.lock();
    if let Some(running) = *listening {
        if running != addr {
            tracing::warn!(%running, ignored = %addr, "this process already serves /metrics; one listener per process");
        }
        return Ok(());
    }
    *listening = Some(addr);
    let runtime = crate::runtime::runtime();
    let _entered = runtime.enter();
    let bound = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .and_then(tokio::net::TcpListener::from_std);
    match bound {
        Ok(listener) => {
            tracing::info!(%addr, "serving Prometheus metrics at /metrics");
            runtime.spawn(accept(listener));
        }
        Err(e) => tracing::error!("cannot serve metrics on {addr}: {e}"),
    }
    Ok(())
}

async fn accept(listener: tokio::net::TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors and the like: wait instead of spinning.
                tracing::warn!("metrics listener: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service = service_fn(|request| async move { Ok::<_, Infallible>(respond(&request)) });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

fn respond(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, super::render()),
        (&Method::HEAD, "/metrics") => (StatusCode::OK, CONTENT_TYPE, String::new()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_string(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: the metrics are at /metrics\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_without_a_host_means_loopback() {
        assert_eq!(parse_addr(":9090").unwrap(), "127.0.0.1:9090".parse().unwrap());
        assert_eq!(parse_addr("9091").unwrap(), "127.0.0.1:9091".parse().unwrap());
        assert_eq!(parse_addr("0.0.0.0:9092").unwrap(), "0.0.0.0:9092".parse().unwrap());
        assert_eq!(parse_addr("[::1]:9093").unwrap(), "[::1]:9093".parse().unwrap());
        assert!(parse_addr("localhost:9094").unwrap().ip().is_loopback());
    }

    #[test]
    fn a_bad_address_is_an_error_that_shows_the_expected_form() {
        for bad in ["", ":", "127.0.0.1", ":99999", "host:port", "1.2.3.4:x"] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains("expected host:port"), "{bad}: {e}");
        }
    }
}
