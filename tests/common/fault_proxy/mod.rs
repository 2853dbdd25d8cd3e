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
//!
//! The parts: `plan` (which requests fail, and how), `stats` (what the proxy saw: counts
//! and the exchange log), `relay` (one client connection: decide, then answer or fail each
//! request) and `wire` (HTTP/1.1 read and written verbatim). This file holds the proxy.

mod plan;
mod relay;
mod stats;
mod wire;

// The API as it was in one file. Each test binary uses part of it, and a re-export one
// leaves unused would warn where `#![allow(dead_code)]` silences the rest.
#[allow(unused_imports)]
pub use plan::{Conditional, Fault, FaultPlan};
#[allow(unused_imports)]
pub use stats::{describe_log, longest_chain, Exchange, FaultStats};

use relay::handle;
use std::collections::HashSet;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
