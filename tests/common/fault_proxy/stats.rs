//! What the proxy saw and did: counts by kind ([`FaultStats`]) and, when recording, one
//! [`Exchange`] a request, from which [`longest_chain`] counts the round trips in a row.

use super::Fault;
use std::time::Instant;

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
