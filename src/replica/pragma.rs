//! PRAGMAs a read replica answers. The names and answers are those of Litestream's own
//! VFS, so that queries written for it keep working after a switch (docs/migration.md):
//! `litestream_txid` (16 hex digits), `litestream_lag` (whole seconds since the replica
//! last caught up, -1 before it ever has) and `litestream_time` (read, or set a
//! point-in-time view). The first two are read-only, as there.

use super::{time, ReplicaConn};

/// The answer to `PRAGMA name` (`value` is `None`) or `PRAGMA name = value`; `None` when
/// the PRAGMA is not one of ours, so SQLite handles it.
pub fn answer(conn: &ReplicaConn, name: &str, value: Option<&str>) -> Option<Result<String, String>> {
    let name = name.to_ascii_lowercase();
    let read_only = |text: String| match value {
        None => Ok(text),
        Some(_) => Err(format!("{name} is read-only")),
    };
    Some(match name.as_str() {
        "litestream_txid" => read_only(format!("{:016x}", conn.txid)),
        "litestream_lag" => read_only(conn.replica.lag().map_or(-1, |d| d.as_secs() as i64).to_string()),
        "litestream_time" => time::pragma(conn, value).map_err(|e| format!("litestream_time: {e}")),
        _ => return None,
    })
}
