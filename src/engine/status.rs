//! The process-level part of `litestream_status()` (its `engine` key): the engine's
//! threads and jobs, store round trips handed off, and per store endpoint the request
//! budget, requests per second and the backlog of databases waiting to upload, and the
//! requests abandoned because a store went silent.

use super::io;
use super::scheduler::Scheduler;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

pub(super) fn json(scheduler: &Scheduler, backlog: &[(String, u64, u64)]) -> Value {
    let (jobs, ready, running, threads) = scheduler.counts();
    let mut stores: BTreeMap<String, Value> = BTreeMap::new();
    for budget in crate::storage::budgets_json() {
        let endpoint = budget["endpoint"].as_str().unwrap_or_default().to_string();
        stores.insert(endpoint, budget);
    }
    for (endpoint, txids, bytes) in backlog {
        let store = stores
            .entry(endpoint.clone())
            .or_insert_with(|| json!({ "endpoint": endpoint }));
        let add = |v: &mut Value, key: &str, by: u64| v[key] = json!(v[key].as_u64().unwrap_or(0) + by);
        add(store, "databases", 1);
        add(store, "databases_waiting", u64::from(*txids > 0));
        add(store, "txids_pending", *txids);
        add(store, "bytes_pending", *bytes);
    }
    json!({
        // Kept from the first engine: threads, jobs, queued_jobs, running_jobs, turns.
        "threads": threads,
        "jobs": jobs,
        "queued_jobs": ready,
        "running_jobs": running,
        "turns": scheduler.turns.load(Ordering::Relaxed),
        "background_threads": scheduler.background_threads(),
        "round_trips_in_flight": io::in_flight(),
        "round_trips_handed_off": io::HANDED_OFF.load(Ordering::Relaxed),
        "requests_per_second": crate::storage::requests_per_second(),
        "silent_requests": crate::storage::silent_requests(),
        "stores": stores.into_values().collect::<Vec<_>>(),
    })
}
