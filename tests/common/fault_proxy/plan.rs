//! The fault plan: which requests fail and how ([`Fault`]), what conditional creates do
//! ([`Conditional`]), and the ready-made plans the tests start from.

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
