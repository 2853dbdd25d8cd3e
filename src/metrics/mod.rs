//! Prometheus metrics for every database the process has open: `litestream_metrics()`
//! answers them in SQL, and `metrics_addr` / `LITESTREAM_METRICS_ADDR` serves the same
//! text at `/metrics` (`listener.rs`).
//!
//! Nothing here keeps state of its own: each scrape reads what the primaries and read
//! replicas report (their `litestream_status()` JSON, through their registries) and the
//! store operation counters, so the figures are the ones SQL users see.

mod families;
mod from_status;
mod listener;

pub use families::CONTENT_TYPE;
pub use listener::{parse_addr, serve};

/// The text exposition (Prometheus format 0.0.4) of everything the process replicates
/// or reads as a replica, and of every store operation it made.
pub fn render() -> String {
    let mut f = families::Families::default();
    f.gauge(
        "litestream_vfs_build_info",
        "The litestream-vfs extension serving these metrics",
        &[("version", crate::VERSION)],
        1.0,
    );
    for status in crate::primary::registry::statuses() {
        from_status::primary(&mut f, &status);
    }
    for status in crate::replica::registry::statuses() {
        from_status::replica(&mut f, &status);
    }
    for op in crate::storage::operation_stats() {
        from_status::store(&mut f, &op);
    }
    f.encode()
}
