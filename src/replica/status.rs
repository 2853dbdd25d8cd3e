//! `litestream_status()` of a replica connection: what it sees, what it fetched and
//! cached, how its polling and hydration go.

use super::Replica;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

impl Replica {
    /// `litestream_status()` of a replica connection that sees `txid`.
    pub fn status(&self, txid: u64) -> serde_json::Value {
        let (current, lag, last_error, error, gap, store_txid) = {
            let g = self.lock();
            (
                Arc::clone(&g.current),
                g.lag(),
                g.last_error.clone(),
                g.error(&self.name),
                g.gap.as_ref().map(|gap| {
                    json!({
                        "after_txid": gap.reached,
                        "next_min_txid": gap.next.min_txid,
                        "newest_txid": gap.newest,
                    })
                }),
                g.store_txid,
            )
        };
        // Hydration that keeps failing is an error of the replica too, not only a
        // `last_error` deep in `hydration`: reads are then served from the store.
        let error = error.or_else(|| {
            let h = self.hydration.as_ref()?;
            h.last_error()
                .map(|e| format!("replica {}: hydration failing, reading from the store: {e}", self.name))
        });
        let s = self.stats();
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (cache_bytes, cache_pages) = self.cache.usage();
        json!({
            "role": "replica",
            "replica": self.name,
            "txid": txid,
            "latest_txid": current.txid,
            // What the store holds, reached or not: above `latest_txid` while polls fail.
            "store_txid": store_txid.max(current.txid),
            "page_size": current.page_size,
            "pages": current.commit,
            "timestamp_ms": current.timestamp_ms,
            "lag": lag.map_or(-1.0, |d| d.as_secs_f64()),
            "files_in_plan": current.files().len(),
            "cache": {
                "hits": get(&s.cache_hits),
                "misses": get(&s.cache_misses),
                "bytes": cache_bytes,
                "pages": cache_pages,
                "max_bytes": self.cache.max_bytes(),
            },
            "pages_fetched": get(&s.pages_fetched),
            "pages_carried": get(&s.pages_carried),
            "pages_read_at_open": get(&s.pages_read_at_open),
            "bytes_fetched": get(&s.bytes_fetched),
            "requests": get(&s.requests),
            "hedged_requests": get(&s.hedged_requests),
            "polls": get(&s.polls),
            "history_replacements": get(&s.history_replacements),
            "poll_errors": get(&s.poll_errors),
            "read_errors": get(&s.read_errors),
            "poll_interval_ms": self.poll_interval.as_millis() as u64,
            "uptime_s": self.opened.elapsed().as_secs_f64(),
            "last_error": last_error,
            // As on a primary: a gap that stops the replica short of the store's newest
            // file, else the failure of the last poll, null once one succeeds (a keyless
            // replica of a newly encrypted one said nothing here), else hydration's failure
            // until it next completes.
            "error": error,
            "gap": gap,
            "hydration": self.hydration.as_ref().map(|h| h.status(&current)),
            "encrypted_files_in_plan": current.files().iter().filter(|f| f.header.is_encrypted()).count(),
        })
    }
}
