//! Point-in-time views of a replica: `litestream_set_time(ts)`, `litestream_time()`
//! and `PRAGMA litestream_time`. A connection that sets a time reads the newest state
//! whose files were all written at or before it, until it asks for 'latest' again.

use super::state::State;
use super::ReplicaConn;
use crate::storage::format_rfc3339_nano;
use crate::time_target::{parse_time, TimeTarget};
use std::sync::{Arc, Mutex};

/// A connection's pinned historic view.
#[derive(Debug)]
pub struct TimeView {
    pub target_ms: i64,
    pub state: Arc<State>,
}

/// Per-connection view setting, shared between the file handle and SQL functions.
#[derive(Debug, Default)]
pub struct ConnView {
    time: Mutex<Option<TimeView>>,
    /// Why the pinned state cannot be read any more (its files were removed): the
    /// connection's status says it under `error` until another time is set.
    lost: Mutex<Option<String>>,
}

impl ConnView {
    /// The historic state this connection is pinned to, if any.
    pub fn pinned(&self) -> Option<Arc<State>> {
        self.lock().as_ref().map(|v| Arc::clone(&v.state))
    }

    pub fn set(&self, view: Option<TimeView>) {
        *self.lock() = view;
        *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// A read of the pinned state failed with `why`.
    pub fn read_failed(&self, why: &str) {
        if self.lock().is_some() {
            *self.lost.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_string());
        }
    }

    /// Why the pinned state cannot be read, if a read of it failed.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn target_ms(&self) -> Option<i64> {
        self.lock().as_ref().map(|v| v.target_ms)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<TimeView>> {
        self.time.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `litestream_time()`: 'latest' when the connection follows the store, else the time
/// of the state it is pinned to (RFC 3339, the newest file's header timestamp).
pub fn current_time(conn: &ReplicaConn) -> String {
    match conn.view.pinned() {
        Some(state) => format_rfc3339_nano(state.timestamp_ms),
        None => "latest".to_string(),
    }
}

/// `litestream_set_time(ts)`: pins the connection to the newest state at or before `ts`
/// (or back to following with 'latest'). Takes effect at its next read transaction.
/// Returns the TXID it will see.
pub fn set_time(conn: &ReplicaConn, text: &str) -> Result<u64, String> {
    match parse_time(text)? {
        TimeTarget::Latest => {
            conn.view.set(None);
            Ok(conn.replica.current().txid)
        }
        TimeTarget::At(ms) => {
            let state = conn.replica.state_at(ms)?;
            let txid = state.txid;
            conn.view.set(Some(TimeView { target_ms: ms, state }));
            Ok(txid)
        }
    }
}

/// `PRAGMA litestream_time` (no value: read) and `PRAGMA litestream_time = ts` (set);
/// both answer with the time as [`current_time`] reports it.
pub fn pragma(conn: &ReplicaConn, value: Option<&str>) -> Result<String, String> {
    if let Some(v) = value {
        set_time(conn, v)?;
    }
    Ok(current_time(conn))
}
