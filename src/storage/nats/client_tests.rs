//! The client against a scripted fake server on loopback: the handshake, answering the
//! server's PING, a reply split across two TCP writes, "no responders", and a fatal
//! `-ERR` that ends the connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::connect::ConnectOptions;
use super::*;

/// Reads until `needle` appears after `*from` in what the client sent; returns the line
/// that holds it and moves `*from` past it.
async fn expect(sock: &mut TcpStream, seen: &mut String, from: &mut usize, needle: &str) -> String {
    loop {
        if let Some(at) = seen[*from..].find(needle) {
            let start = *from + at;
            let end = start + seen[start..].find("\r\n").unwrap_or(seen.len() - start);
            *from = end;
            return seen[start..end].to_string();
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("the client never sent {needle:?}; it sent {seen:?}"))
            .unwrap();
        assert!(n > 0, "the client closed before sending {needle:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[tokio::test]
async fn handshake_ping_split_replies_no_responders_and_a_fatal_error_against_a_fake_server() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut sock, _) = listener.accept().await.unwrap();
        let (mut seen, mut from) = (String::new(), 0);
        sock.write_all(b"INFO {\"server_id\":\"fake\",\"headers\":true}\r\n")
            .await
            .unwrap();
        let connect = expect(&mut sock, &mut seen, &mut from, "CONNECT ").await;
        assert!(
            connect.contains("\"headers\":true") && connect.contains("\"no_responders\":true"),
            "{connect}"
        );
        expect(&mut sock, &mut seen, &mut from, "PING\r\n").await;
        sock.write_all(b"PONG\r\n").await.unwrap();
        expect(&mut sock, &mut seen, &mut from, "SUB _INBOX.").await;
        // The server checks on the client: it must answer. The first request may come
        // before the PONG, so look for it from here on a cursor of its own.
        sock.write_all(b"PING\r\n").await.unwrap();
        expect(&mut sock, &mut seen, &mut from.clone(), "PONG\r\n").await;
        let request = expect(&mut sock, &mut seen, &mut from, "PUB svc.a ").await;
        let reply = request.split(' ').nth(2).unwrap().to_string();
        sock.write_all(format!("MSG {reply} 1 11\r\nhello ").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        sock.write_all(b"world\r\n").await.unwrap();
        let request = expect(&mut sock, &mut seen, &mut from, "PUB svc.b ").await;
        let reply = request.split(' ').nth(2).unwrap().to_string();
        sock.write_all(format!("HMSG {reply} 1 16 16\r\nNATS/1.0 503\r\n\r\n\r\n").as_bytes())
            .await
            .unwrap();
        expect(&mut sock, &mut seen, &mut from, "PUB svc.c ").await;
        sock.write_all(b"-ERR 'Stale Connection'\r\n").await.unwrap();
    });

    let client = Client::connect(ConnectOptions::plain("127.0.0.1", port)).await.unwrap();
    assert!(client.is_connected());
    let m = client
        .request("svc.a", None, b"hi", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&m.payload[..], b"hello world");
    let e = client
        .request("svc.b", None, b"", Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(e, NatsError::NoResponders("svc.b".into()));
    // The fatal -ERR ends the connection: the request in flight fails at once, not at its
    // timeout, and the client says it is disconnected.
    let started = std::time::Instant::now();
    let e = client
        .request("svc.c", None, b"", Duration::from_secs(30))
        .await
        .unwrap_err();
    assert_eq!(e, NatsError::Disconnected);
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!(!client.is_connected());
    server.await.unwrap();
}

#[tokio::test]
async fn a_server_that_comes_back_refusing_our_credentials_is_named_while_reconnecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        // The first connection is let in, then dropped; every one after is refused.
        for attempt in 0..3 {
            let (mut sock, _) = listener.accept().await.unwrap();
            let (mut seen, mut from) = (String::new(), 0);
            sock.write_all(b"INFO {\"server_id\":\"fake\",\"headers\":true}\r\n")
                .await
                .unwrap();
            expect(&mut sock, &mut seen, &mut from, "CONNECT ").await;
            if attempt == 0 {
                expect(&mut sock, &mut seen, &mut from, "PING\r\n").await;
                sock.write_all(b"PONG\r\n").await.unwrap();
                expect(&mut sock, &mut seen, &mut from, "SUB _INBOX.").await;
                sock.write_all(b"-ERR 'Stale Connection'\r\n").await.unwrap();
            } else {
                sock.write_all(b"-ERR 'Authorization Violation'\r\n").await.unwrap();
            }
        }
    });

    let client = Client::connect(ConnectOptions::plain("127.0.0.1", port)).await.unwrap();
    let started = std::time::Instant::now();
    let why = loop {
        if let Some(why) = client.reconnect_error() {
            break why;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no reconnect attempt failed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(!client.is_connected());
    assert!(why.contains("Authorization Violation"), "{why}");
    server.await.unwrap();
}
