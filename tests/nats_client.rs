//! Our NATS client (src/storage/nats/client.rs, connect.rs) against a real nats-server, for
//! what storage_nats does not reach: nkey authentication (the server checks the signature
//! of its nonce), and a server restart in the middle of a read.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{patterned, Nats};
use litestream_vfs::storage::{open_store_with_env, Error, ReplicaStore, StoreOptions};

fn open(url: &str) -> Arc<dyn ReplicaStore> {
    let env: HashMap<String, String> = HashMap::new();
    open_store_with_env(url, &StoreOptions::default(), &|k| env.get(k).cloned()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_file_authenticates_and_another_key_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let user = nkeys::KeyPair::new_user();
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .unwrap();
    let nats = Nats::start_with(&["-c", config.to_str().unwrap()]);
    let seed = dir.path().join("user.nk");
    std::fs::write(&seed, format!("{}\n", user.seed().unwrap())).unwrap();
    let store = open(&format!("{}?nats_nkey={}", nats.url("nk/db"), seed.display()));
    store.put_new(0, 1, 1, patterned(300_000, 1), 1).await.unwrap();
    assert_eq!(store.get(0, 1, 1).await.unwrap(), patterned(300_000, 1));

    let other = dir.path().join("other.nk");
    std::fs::write(&other, nkeys::KeyPair::new_user().seed().unwrap()).unwrap();
    let err = open(&format!("{}?nats_nkey={}", nats.url("nk/db"), other.display()))
        .list(0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err:?}");
    assert!(!err.to_string().contains(&user.seed().unwrap()), "{err}");
}

/// A loopback TCP relay in front of the server that passes the server's bytes on at about
/// `bytes_per_second`, so that a large read is still going when the server is killed. When
/// either side closes, so does the other.
fn throttled_relay(upstream: u16, bytes_per_second: usize) -> u16 {
    let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            };
            let pipe = |mut from: TcpStream, mut to: TcpStream, rate: Option<usize>| {
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match from.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                                if let Some(rate) = rate {
                                    std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                                }
                            }
                        }
                    }
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                });
            };
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), None);
            pipe(server, client, Some(bytes_per_second));
        }
    });
    port
}

/// The server dies while a 24 MiB object is being streamed to us: the read fails at once
/// with a transient error (it does not wait out its timeout), and once the server is back
/// the same store reconnects, resubscribes its inbox and reads the object whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_during_a_read_fails_it_fast_and_the_store_reads_again_after() {
    let mut nats = Nats::start();
    let relay = throttled_relay(nats.port, 8 << 20);
    let store = open(&format!("nats://127.0.0.1:{relay}/restart/db"));
    let data = patterned(24 << 20, 5);
    store.put_new(0, 1, 1, data.clone(), 1).await.unwrap();

    let reading = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.get(0, 1, 1).await })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!reading.is_finished(), "the read should take ~3 s through the relay");
    nats.stop();
    let stopped = Instant::now();
    let err = reading.await.unwrap().unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(stopped.elapsed() < Duration::from_secs(3), "{:?}", stopped.elapsed());

    nats.restart();
    let restarted = Instant::now();
    let got = loop {
        match store.get(0, 1, 1).await {
            Ok(b) => break b,
            Err(e) => {
                assert!(e.is_transient(), "{e:?}");
                assert!(restarted.elapsed() < Duration::from_secs(30), "no reconnect: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(got == data, "the object read after the restart differs");
    store.put_new(0, 2, 2, patterned(1000, 6), 2).await.unwrap();
    assert_eq!(store.list(0).await.unwrap().len(), 2);
}

/// A whole-object read moves the object once: the consumer's deliveries go to a subject of
/// their own (under the request inbox's wildcard they came twice, 2x the bytes), and flow
/// control paces a large object instead of the server dropping us as a slow consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_object_read_moves_its_bytes_once() {
    let nats = Nats::start();
    let store = open(&nats.url("once/db"));
    let data = patterned(40 << 20, 9);
    store.put_new(0, 1, 1, data.clone(), 1).await.unwrap();
    let before = nats.bytes_sent_to("litestream-vfs");
    assert!(store.get(0, 1, 1).await.unwrap() == data);
    let moved = nats.bytes_sent_to("litestream-vfs") - before;
    assert!(
        (data.len() as u64..data.len() as u64 * 21 / 20).contains(&moved),
        "a {}-byte object moved {moved} bytes",
        data.len()
    );
}
