//! Turns what primaries, read replicas and stores already report (`litestream_status()`
//! JSON, the store operation counters) into metric samples. Names are Litestream's where
//! the meaning is the same, so its dashboards keep working; what Litestream lacks gets
//! a name of its own under the same `litestream_` prefix.

use super::families::{Families, HistogramValue};
use crate::storage::{OperationStats, DURATION_BUCKETS};
use serde_json::Value;
use std::path::Path;

fn number(status: &Value, pointer: &str) -> Option<f64> {
    status.pointer(pointer).and_then(Value::as_f64)
}

fn flag(status: &Value, pointer: &str) -> f64 {
    match status.pointer(pointer) {
        Some(Value::Bool(true)) => 1.0,
        Some(Value::String(_)) => 1.0,
        _ => 0.0,
    }
}

/// 1 when `pointer` holds an object (a condition with its details), else 0.
fn flag_object(status: &Value, pointer: &str) -> f64 {
    if status.pointer(pointer).is_some_and(Value::is_object) {
        1.0
    } else {
        0.0
    }
}

/// Size of a file by `stat` (never an open descriptor: the files are SQLite's), 0 when
/// it does not exist.
fn file_size(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64)
}

/// Samples of one database, each labelled with its path.
struct Db<'a> {
    f: &'a mut Families,
    db: &'a str,
}

impl Db<'_> {
    fn gauge(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.f.gauge(name, help, &[("db", self.db)], v);
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: Option<f64>) {
        if let Some(v) = value {
            self.f.counter(name, help, &[("db", self.db)], v);
        }
    }
}

/// One database this process replicates, from its `Primary::status()`.
pub fn primary(f: &mut Families, status: &Value) {
    let Some(db) = status.get("database").and_then(Value::as_str) else {
        return;
    };
    let mut d = Db { f, db };
    d.gauge(
        "litestream_db_size",
        "The current size of the real DB",
        Some(file_size(Path::new(db))),
    );
    d.gauge(
        "litestream_wal_size",
        "The current size of the real WAL",
        Some(file_size(Path::new(&format!("{db}-wal")))),
    );
    d.gauge("litestream_txid", "The current transaction ID", number(status, "/txid"));
    d.gauge(
        "litestream_staged_txid",
        "The newest TXID written to a local LTX file",
        number(status, "/staged_txid"),
    );
    d.gauge(
        "litestream_uploaded_txid",
        "The newest TXID stored in the replica",
        number(status, "/uploaded_txid"),
    );
    d.gauge(
        "litestream_recovery_point_seconds",
        "Age of the oldest commit not yet stored in the replica (0 when everything is stored)",
        number(status, "/lag_seconds"),
    );
    d.gauge(
        "litestream_staged_bytes",
        "Bytes of LTX files staged locally and not yet stored",
        number(status, "/staged_bytes"),
    );
    d.gauge(
        "litestream_pending_bytes",
        "Bytes of captured commits in memory, not yet staged",
        number(status, "/pending_bytes"),
    );
    d.gauge(
        "litestream_replication_error",
        "1 while the last staging or upload attempt failed",
        Some(flag(status, "/error")),
    );
    d.gauge(
        "litestream_refusing_writes",
        "1 when another primary took the replica and writes are refused",
        Some(flag(status, "/refusing_writes")),
    );
    d.gauge(
        "litestream_staging_full",
        "1 while staging is over max_staging: history is dropped until uploads resume",
        Some(flag(status, "/staging_full")),
    );
    d.gauge(
        "litestream_snapshot_pending",
        "1 while a full snapshot is due",
        Some(flag(status, "/snapshot_pending")),
    );
    d.counter(
        "litestream_sync_count",
        "Number of sync operations performed",
        number(status, "/sync/count"),
    );
    d.counter(
        "litestream_sync_error_count",
        "Number of sync errors that have occurred",
        number(status, "/sync/errors"),
    );
    d.counter(
        "litestream_sync_seconds",
        "Time spent syncing, in seconds",
        number(status, "/sync/seconds"),
    );
    d.counter(
        "litestream_uploaded_bytes_total",
        "Bytes of level-0 LTX files stored",
        number(status, "/uploaded_bytes"),
    );
    d.counter(
        "litestream_snapshots_total",
        "Full snapshots taken",
        number(status, "/snapshots"),
    );
    if status.get("compaction").is_some_and(Value::is_object) {
        d.counter(
            "litestream_compactions_total",
            "Compactions written",
            Some(number(status, "/compaction/compactions").unwrap_or(0.0)),
        );
        d.counter(
            "litestream_compaction_errors_total",
            "Compaction and retention failures",
            Some(number(status, "/compaction/errors").unwrap_or(0.0)),
        );
        d.counter(
            "litestream_replica_gaps_total",
            "Times compaction found no restore reaching the newest TXID stored (a gap, files lost) and had a snapshot taken",
            Some(number(status, "/compaction/gaps").unwrap_or(0.0)),
        );
    }
}

/// One database open as a read replica, from `Replica::status()` plus its `database`.
pub fn replica(f: &mut Families, status: &Value) {
    let Some(db) = status.get("database").and_then(Value::as_str) else {
        return;
    };
    let mut d = Db { f, db };
    d.gauge(
        "litestream_read_replica_txid",
        "The newest TXID the read replica has found",
        number(status, "/latest_txid"),
    );
    // -1 in the JSON means "never caught up": behind for as long as it has been open, so
    // that a lag alert fires (the encoder would write an infinity as `inf`, which the
    // text format does not define).
    let lag = number(status, "/lag").map(|l| {
        if l < 0.0 {
            number(status, "/uptime_s").unwrap_or(0.0)
        } else {
            l
        }
    });
    d.gauge(
        "litestream_read_replica_lag_seconds",
        "Seconds since the read replica last caught up with the store (never: since it opened)",
        lag,
    );
    d.gauge(
        "litestream_read_replica_cache_bytes",
        "Bytes of pages in the read replica's cache",
        number(status, "/cache/bytes"),
    );
    if status.get("hydration").is_some_and(Value::is_object) {
        d.gauge(
            "litestream_read_replica_hydrated_pages",
            "Pages of the local copy that are filled in",
            number(status, "/hydration/pages_local"),
        );
        d.gauge(
            "litestream_read_replica_pages",
            "Pages of the database at the newest TXID",
            number(status, "/pages"),
        );
    }
    d.counter(
        "litestream_read_replica_cache_hits_total",
        "Page reads served from the cache",
        number(status, "/cache/hits"),
    );
    d.counter(
        "litestream_read_replica_cache_misses_total",
        "Page reads that had to be fetched",
        number(status, "/cache/misses"),
    );
    d.counter(
        "litestream_read_replica_fetched_bytes_total",
        "Bytes fetched from the store for page reads",
        number(status, "/bytes_fetched"),
    );
    d.counter(
        "litestream_read_replica_fetched_pages_total",
        "Pages fetched from the store",
        number(status, "/pages_fetched"),
    );
    d.counter(
        "litestream_read_replica_requests_total",
        "Requests made to the store for page reads",
        number(status, "/requests"),
    );
    d.counter(
        "litestream_read_replica_hedged_requests_total",
        "Second requests sent beside a read the store had not answered within the hedge delay (also in requests)",
        number(status, "/hedged_requests"),
    );
    d.counter(
        "litestream_read_replica_read_errors_total",
        "Page reads that failed",
        number(status, "/read_errors"),
    );
    d.counter(
        "litestream_read_replica_poll_errors_total",
        "Polls for new TXIDs that failed",
        number(status, "/poll_errors"),
    );
    d.gauge(
        "litestream_read_replica_gap",
        "1 while a gap in the store stops the read replica short of its newest file",
        Some(flag_object(status, "/gap")),
    );
}

/// One (replica type, operation) pair of every store of the process.
pub fn store(f: &mut Families, op: &OperationStats) {
    let labels = [("replica_type", op.replica_type), ("operation", op.operation)];
    f.counter(
        "litestream_replica_operation_total",
        "The number of replica operations performed",
        &labels,
        op.count as f64,
    );
    f.counter(
        "litestream_replica_operation_bytes",
        "The number of bytes used by replica operations",
        &labels,
        op.bytes as f64,
    );
    f.histogram(
        "litestream_replica_operation_duration_seconds",
        "Duration of replica operations by type and operation",
        &labels,
        HistogramValue {
            bounds: &DURATION_BUCKETS,
            cumulative: &op.cumulative_buckets,
            count: op.count,
            sum: op.duration_seconds,
        },
    );
    for (code, n) in &op.errors {
        f.counter(
            "litestream_replica_operation_errors_total",
            "Number of replica operation errors by type, operation, and error code",
            &[
                ("replica_type", op.replica_type),
                ("operation", op.operation),
                ("code", code),
            ],
            *n as f64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn lines(f: &Families) -> Vec<String> {
        f.encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    #[test]
    fn a_primary_status_becomes_litestreams_names_and_ours() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, vec![0u8; 8192]).unwrap();
        let db = db.display().to_string();
        let mut f = Families::default();
        primary(
            &mut f,
            &json!({
                "database": db, "txid": 12, "staged_txid": 11, "uploaded_txid": 9,
                "lag_seconds": 2.5, "staged_bytes": 4096, "pending_bytes": 100,
                "error": "uploading TXID 10-11: connection refused", "refusing_writes": false,
                "snapshot_pending": null, "uploaded_bytes": 777, "snapshots": 1,
                "staging_full": "staging is full (4096 bytes, limit 1024): commits wait in memory until uploads bring it under the limit",
                "compaction": {"compactions": 3, "errors": 2, "gaps": 1},
                "sync": {"count": 5, "errors": 4, "seconds": 0.5},
            }),
        );
        let l = lines(&f);
        let has = |sample: &str| assert!(l.iter().any(|x| x == sample), "{sample} missing from {l:#?}");
        has(&format!("litestream_db_size{{db=\"{db}\"}} 8192"));
        has(&format!("litestream_wal_size{{db=\"{db}\"}} 0"));
        has(&format!("litestream_txid{{db=\"{db}\"}} 12"));
        has(&format!("litestream_uploaded_txid{{db=\"{db}\"}} 9"));
        has(&format!("litestream_recovery_point_seconds{{db=\"{db}\"}} 2.5"));
        has(&format!("litestream_staged_bytes{{db=\"{db}\"}} 4096"));
        has(&format!("litestream_replication_error{{db=\"{db}\"}} 1"));
        has(&format!("litestream_refusing_writes{{db=\"{db}\"}} 0"));
        has(&format!("litestream_staging_full{{db=\"{db}\"}} 1"));
        has(&format!("litestream_snapshot_pending{{db=\"{db}\"}} 0"));
        has(&format!("litestream_replica_gaps_total{{db=\"{db}\"}} 1"));
        has(&format!("litestream_sync_count{{db=\"{db}\"}} 5"));
        has(&format!("litestream_sync_error_count{{db=\"{db}\"}} 4"));
        has(&format!("litestream_sync_seconds{{db=\"{db}\"}} 0.5"));
        has(&format!("litestream_compaction_errors_total{{db=\"{db}\"}} 2"));
    }

    #[test]
    fn a_replica_that_never_caught_up_lags_by_the_time_it_has_been_open() {
        let mut f = Families::default();
        replica(
            &mut f,
            &json!({
                "database": "/v/view.db", "latest_txid": 40, "lag": -1.0, "uptime_s": 12.5,
                "cache": {"hits": 7, "misses": 3, "bytes": 12288},
                "bytes_fetched": 9000, "pages_fetched": 3, "requests": 5, "hedged_requests": 2, "read_errors": 0,
                "poll_errors": 1, "hydration": null,
                "gap": {"after_txid": 40, "next_min_txid": 42, "newest_txid": 50},
            }),
        );
        let l = lines(&f);
        for sample in [
            "litestream_read_replica_txid{db=\"/v/view.db\"} 40",
            "litestream_read_replica_gap{db=\"/v/view.db\"} 1",
            "litestream_read_replica_lag_seconds{db=\"/v/view.db\"} 12.5",
            "litestream_read_replica_cache_hits_total{db=\"/v/view.db\"} 7",
            "litestream_read_replica_cache_misses_total{db=\"/v/view.db\"} 3",
            "litestream_read_replica_fetched_bytes_total{db=\"/v/view.db\"} 9000",
            "litestream_read_replica_hedged_requests_total{db=\"/v/view.db\"} 2",
        ] {
            assert!(l.iter().any(|x| x == sample), "{sample} missing from {l:#?}");
        }
        assert!(
            !l.iter().any(|x| x.contains("hydrated")),
            "no hydration, no hydration metric"
        );
    }

    #[test]
    fn store_operations_keep_litestreams_labels_and_buckets() {
        let mut f = Families::default();
        let mut cumulative = [0; DURATION_BUCKETS.len()];
        cumulative[1..].fill(2);
        store(
            &mut f,
            &OperationStats {
                replica_type: "s3",
                operation: "PUT",
                count: 3,
                bytes: 4096,
                errors: vec![("Transient", 1)],
                cumulative_buckets: cumulative,
                duration_seconds: 0.08,
            },
        );
        let l = lines(&f);
        for sample in [
            "litestream_replica_operation_total{replica_type=\"s3\",operation=\"PUT\"} 3",
            "litestream_replica_operation_bytes{replica_type=\"s3\",operation=\"PUT\"} 4096",
            "litestream_replica_operation_duration_seconds_bucket{replica_type=\"s3\",operation=\"PUT\",le=\"0.05\"} 2",
            "litestream_replica_operation_duration_seconds_bucket{replica_type=\"s3\",operation=\"PUT\",le=\"+Inf\"} 3",
            "litestream_replica_operation_errors_total{replica_type=\"s3\",operation=\"PUT\",code=\"Transient\"} 1",
        ] {
            assert!(l.iter().any(|x| x == sample), "{sample} missing from {l:#?}");
        }
    }
}
