//! SQL functions, in safe Rust. `vfs::functions` registers them on every connection,
//! finds the connection's replication state, and converts values at the boundary.

use crate::primary::database::Database;
use crate::primary::Primary;
use crate::replica::ReplicaConn;
use crate::vfs::sys::fork::ProcessMutex;
use std::sync::Arc;
use std::time::Duration;

/// A SQLite value crossing the boundary in either direction.
#[derive(Clone, Debug, PartialEq)]
pub enum SqlValue {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// The value as SQL would write it (`NULL`, `42`, `1.5`, `'text'`, `X'00ff'`), for error
/// messages: they go to SQL users, who never wrote `Text("x")`.
impl std::fmt::Display for SqlValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SqlValue::Null => f.write_str("NULL"),
            SqlValue::Integer(n) => write!(f, "{n}"),
            // Debug keeps the ".0" of a whole double, as SQLite prints a REAL.
            SqlValue::Real(r) => write!(f, "{r:?}"),
            SqlValue::Text(t) => write!(f, "'{}'", t.replace('\'', "''")),
            // A long blob is cut: an error message is no place for a megabyte of hex.
            SqlValue::Blob(b) => {
                f.write_str("X'")?;
                for byte in b.iter().take(16) {
                    write!(f, "{byte:02x}")?;
                }
                match b.len() {
                    0..=16 => f.write_str("'"),
                    n => write!(f, "…' ({n} bytes)"),
                }
            }
        }
    }
}

/// An error a SQL function reports to the statement that called it.
pub type SqlResult = Result<SqlValue, String>;

/// What a function knows about the connection that called it.
#[derive(Default)]
pub struct Ctx {
    /// The primary behind the connection's main database, when it is one.
    pub primary: Option<Arc<Primary>>,
    /// The replica behind the connection's main database, when it is a read replica.
    pub replica: Option<ReplicaConn>,
    /// The database behind the connection when it is a primary's, whichever process
    /// replicates it (`primary` is set when this one does).
    pub database: Option<Arc<Database>>,
    /// The schema the function was asked about (`None`: `main`).
    pub schema: Option<String>,
    /// The connection has no database of that schema name.
    pub no_such_schema: bool,
    /// That database is in memory or temporary (no file name).
    pub in_memory: bool,
}

/// One SQL function: name, number of arguments (-1 = any), and the implementation.
pub struct SqlFunction {
    pub name: &'static str,
    pub n_args: i32,
    pub deterministic: bool,
    /// The argument that names the schema (an attached database) the function is about;
    /// `None`: the connection's main database.
    pub schema_arg: Option<usize>,
    pub call: fn(&Ctx, &[SqlValue]) -> SqlResult,
}

/// Every function the extension adds to a connection (one entry per arity).
pub const FUNCTIONS: &[SqlFunction] = &[
    SqlFunction {
        name: "litestream_version",
        n_args: 0,
        deterministic: true,
        schema_arg: None,
        call: version,
    },
    SqlFunction {
        name: "litestream_txid",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: txid,
    },
    SqlFunction {
        name: "litestream_txid",
        n_args: 1,
        deterministic: false,
        schema_arg: Some(0),
        call: txid,
    },
    SqlFunction {
        name: "litestream_sync",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: sync,
    },
    SqlFunction {
        name: "litestream_sync",
        n_args: 1,
        deterministic: false,
        schema_arg: None,
        call: sync,
    },
    SqlFunction {
        name: "litestream_sync",
        n_args: 2,
        deterministic: false,
        schema_arg: Some(1),
        call: sync,
    },
    SqlFunction {
        name: "litestream_snapshot",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: snapshot,
    },
    SqlFunction {
        name: "litestream_snapshot",
        n_args: 1,
        deterministic: false,
        schema_arg: None,
        call: snapshot,
    },
    SqlFunction {
        name: "litestream_snapshot",
        n_args: 2,
        deterministic: false,
        schema_arg: Some(1),
        call: snapshot,
    },
    SqlFunction {
        name: "litestream_status",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: status,
    },
    SqlFunction {
        name: "litestream_status",
        n_args: 1,
        deterministic: false,
        schema_arg: Some(0),
        call: status,
    },
    SqlFunction {
        name: "litestream_metrics",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: metrics,
    },
    SqlFunction {
        name: "litestream_lag",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: lag,
    },
    SqlFunction {
        name: "litestream_wait",
        n_args: 1,
        deterministic: false,
        schema_arg: None,
        call: wait,
    },
    SqlFunction {
        name: "litestream_wait",
        n_args: 2,
        deterministic: false,
        schema_arg: None,
        call: wait,
    },
    SqlFunction {
        name: "litestream_time",
        n_args: 0,
        deterministic: false,
        schema_arg: None,
        call: time,
    },
    SqlFunction {
        name: "litestream_set_time",
        n_args: 1,
        deterministic: false,
        schema_arg: None,
        call: set_time,
    },
    SqlFunction {
        name: "litestream_restore",
        n_args: 2,
        deterministic: false,
        schema_arg: None,
        call: restore,
    },
    SqlFunction {
        name: "litestream_restore",
        n_args: 3,
        deterministic: false,
        schema_arg: None,
        call: restore,
    },
    SqlFunction {
        name: "litestream_restore",
        n_args: 4,
        deterministic: false,
        schema_arg: None,
        call: restore,
    },
];

fn not_replicated(ctx: &Ctx) -> String {
    let schema = ctx.schema.as_deref().unwrap_or("main");
    if schema.eq_ignore_ascii_case("temp") {
        return "the temp database of a connection is never replicated".to_string();
    }
    if ctx.no_such_schema {
        return format!("this connection has no database named '{schema}' (main or an ATTACHed name)");
    }
    if ctx.in_memory {
        return format!(
            "the {schema} database of this connection is in memory or temporary: SQLite opens no file for it \
             through any VFS, so nothing replicates it (a replica= on its URI is ignored); open a database \
             file with ?vfs=litestream&replica=<url>"
        );
    }
    if ctx.replica.is_some() {
        return format!(
            "the {schema} database of this connection is a read replica: this function is for the primary \
             (litestream_wait(txid) waits for a TXID here)"
        );
    }
    format!(
        "the {schema} database of this connection is not replicated by the litestream VFS \
         (open it with ?vfs=litestream&replica=<url>)"
    )
}

fn version(_: &Ctx, _args: &[SqlValue]) -> SqlResult {
    Ok(SqlValue::Text(crate::VERSION.to_string()))
}

fn primary(ctx: &Ctx) -> Result<&Arc<Primary>, String> {
    ctx.primary.as_ref().ok_or_else(|| not_replicated(ctx))
}

const NOT_A_REPLICA: &str = "the main database of this connection is not a read replica \
                             (open it with ?vfs=litestream&role=replica&replica=<url>)";

fn replica(ctx: &Ctx) -> Result<&ReplicaConn, String> {
    ctx.replica.as_ref().ok_or_else(|| NOT_A_REPLICA.to_string())
}

fn txid(ctx: &Ctx, _args: &[SqlValue]) -> SqlResult {
    if let Some(r) = &ctx.replica {
        return Ok(SqlValue::Integer(r.txid as i64));
    }
    if let (None, Some(database)) = (&ctx.primary, &ctx.database) {
        // Another process replicates: the newest TXID it reports stored.
        return Ok(SqlValue::Integer(database.uploaded_txid().unwrap_or(0) as i64));
    }
    Ok(SqlValue::Integer(primary(ctx)?.txid() as i64))
}

/// `litestream_lag()`: whole seconds since the replica last caught up with the store;
/// -1 when it never has.
fn lag(ctx: &Ctx, _args: &[SqlValue]) -> SqlResult {
    let lag = replica(ctx)?.replica.lag();
    Ok(SqlValue::Integer(lag.map_or(-1, |d| d.as_secs() as i64)))
}

/// `litestream_wait(txid [, timeout_ms])`: blocks until the replica has reached `txid`
/// (default timeout 30 s); returns the TXID reached. The statement that calls it still
/// sees the TXID its transaction started with; the next transaction sees the new one.
fn wait(ctx: &Ctx, args: &[SqlValue]) -> SqlResult {
    let target = args.first().and_then(whole_number).ok_or_else(|| {
        let given = args.first().unwrap_or(&SqlValue::Null);
        format!("txid must be a non-negative integer, not {given}")
    })?;
    let timeout = match args.get(1) {
        None | Some(SqlValue::Null) => Duration::from_secs(30),
        Some(ms) => Duration::from_millis(
            whole_number(ms).ok_or_else(|| format!("timeout_ms must be a non-negative integer, not {ms}"))?,
        ),
    };
    let reached = replica(ctx)?.replica.wait(target, timeout)?;
    Ok(SqlValue::Integer(reached as i64))
}

/// A non-negative whole number: an INTEGER, or a REAL without a fraction, because
/// JavaScript bindings (better-sqlite3) bind every JS number as a double.
fn whole_number(value: &SqlValue) -> Option<u64> {
    match *value {
        SqlValue::Integer(n) => u64::try_from(n).ok(),
        // Below 2^53 every whole double is exact.
        SqlValue::Real(r) if r >= 0.0 && r.fract() == 0.0 && r < 9_007_199_254_740_992.0 => Some(r as u64),
        _ => None,
    }
}

/// `litestream_sync([timeout_ms [, schema]])`: everything committed so far is in object
/// storage when it returns; the result is the TXID reached. `schema` names an attached
/// database (see `SqlFunction::schema_arg`).
fn sync(ctx: &Ctx, args: &[SqlValue]) -> SqlResult {
    let timeout = timeout_ms(args, Duration::from_secs(30))?;
    let database = ctx.database.as_ref().ok_or_else(|| not_replicated(ctx))?;
    Ok(SqlValue::Integer(database.sync(timeout)? as i64))
}

/// `litestream_snapshot([timeout_ms [, schema]])`: a full snapshot of the database at
/// the next TXID, taken by whichever process replicates it, and stored; returns its
/// TXID. Restores from then on need nothing older. Five minutes by default: the whole
/// database goes up.
fn snapshot(ctx: &Ctx, args: &[SqlValue]) -> SqlResult {
    let timeout = timeout_ms(args, Duration::from_secs(300))?;
    let database = ctx.database.as_ref().ok_or_else(|| not_replicated(ctx))?;
    Ok(SqlValue::Integer(database.snapshot(timeout)? as i64))
}

/// The first argument as a timeout in milliseconds, `default` when absent or NULL.
fn timeout_ms(args: &[SqlValue], default: Duration) -> Result<Duration, String> {
    match args.first() {
        None | Some(SqlValue::Null) => Ok(default),
        Some(ms) => {
            Ok(Duration::from_millis(whole_number(ms).ok_or_else(|| {
                format!("timeout_ms must be a non-negative integer, not {ms}")
            })?))
        }
    }
}

/// `litestream_time()`: 'latest', or the time of the state a point-in-time view shows.
fn time(ctx: &Ctx, _args: &[SqlValue]) -> SqlResult {
    Ok(SqlValue::Text(crate::replica::time::current_time(replica(ctx)?)))
}

/// `litestream_set_time(ts)`: RFC 3339, relative ('5 minutes ago') or 'latest'. The
/// connection's next transaction sees the newest state at or before `ts`; returns its TXID.
fn set_time(ctx: &Ctx, args: &[SqlValue]) -> SqlResult {
    let text = match args.first() {
        Some(SqlValue::Text(t)) => t.as_str(),
        other => {
            let given = other.unwrap_or(&SqlValue::Null);
            return Err(format!("the time must be text, not {given}"));
        }
    };
    let txid = crate::replica::time::set_time(replica(ctx)?, text)?;
    Ok(SqlValue::Integer(txid as i64))
}

/// `litestream_restore(url, path [, target [, 'overwrite']])`: restores the replica at
/// `url` into the new file `path`; `target` is 'latest' (or NULL), a TXID (integer, or 16
/// hex digits as Litestream prints them), an RFC 3339 time or a relative one ('1 hour
/// ago'). Returns the TXID restored. Works on any connection, replicated or not.
fn restore(ctx: &Ctx, args: &[SqlValue]) -> SqlResult {
    let text = |i: usize, what: &str| match args.get(i) {
        Some(SqlValue::Text(t)) => Ok(t.clone()),
        other => Err(format!("{what} must be text, not {}", other.unwrap_or(&SqlValue::Null))),
    };
    let url = text(0, "the replica URL")?;
    let path = text(1, "the destination path")?;
    let target = match args.get(2) {
        None | Some(SqlValue::Null) => crate::restore::Target::Latest,
        Some(SqlValue::Text(t)) => crate::restore::Target::parse(t)?,
        Some(other) => match whole_number(other) {
            Some(txid) if txid > 0 => crate::restore::Target::Txid(txid),
            _ => return Err(format!("the target must be a TXID, a time or 'latest', not {other}")),
        },
    };
    let overwrite = match args.get(3) {
        None | Some(SqlValue::Null) => false,
        Some(SqlValue::Text(t)) if t.eq_ignore_ascii_case("overwrite") => true,
        Some(other) => return Err(format!("the fourth argument can only be 'overwrite', not {other}")),
    };
    let store = crate::storage::open_store(&url, &Default::default()).map_err(|e| e.to_string())?;
    // An encrypted replica opens with the connection's own key, else the environment's.
    let own_key = ctx
        .primary
        .as_ref()
        .and_then(|p| p.encryption_key())
        .or_else(|| ctx.replica.as_ref().and_then(|r| r.replica.encryption_key()));
    let key = match own_key {
        Some(k) => Some(k),
        None => crate::keys::key_from_env(&|k| std::env::var(k).ok())?,
    };
    let options = crate::restore::RestoreOptions {
        overwrite,
        key: key.map(Arc::new),
        ..Default::default()
    };
    let restored = crate::restore::restore(store, std::path::Path::new(&path), target, &options)?;
    Ok(SqlValue::Integer(restored.position.txid as i64))
}

/// `litestream_metrics()`: Prometheus text for every database the process has open
/// (primaries and read replicas) and its store operations, whatever the connection.
fn metrics(_: &Ctx, _args: &[SqlValue]) -> SqlResult {
    Ok(SqlValue::Text(crate::metrics::render()))
}

fn status(ctx: &Ctx, _args: &[SqlValue]) -> SqlResult {
    let value = match (&ctx.replica, &ctx.primary) {
        (Some(r), _) => {
            let mut status = r.replica.status(r.txid);
            status["time"] = serde_json::Value::String(crate::replica::time::current_time(r));
            if let Some(lost) = r.view.lost().filter(|_| status["error"].is_null()) {
                status["error"] = serde_json::Value::String(lost);
            }
            status
        }
        (None, Some(p)) => p.status(),
        (None, None) if ctx.database.is_some() => ctx.database.as_ref().expect("checked").follower_status(),
        (None, None) => serde_json::json!({ "role": "none", "error": not_replicated(ctx) }),
    };
    let mut value = value;
    value["engine"] = engine_status();
    let restores = crate::restore::progress_json();
    if restores.as_array().is_some_and(|r| !r.is_empty()) {
        value["restores"] = restores;
    }
    let failed_opens = crate::failed_opens::json();
    if failed_opens.as_array().is_some_and(|f| !f.is_empty()) {
        value["failed_opens"] = failed_opens;
    }
    Ok(SqlValue::Text(value.to_string()))
}

/// The process's replication engine, the same for every connection of the process. It
/// looks at every database the process replicates, so it is computed at most once per
/// [`ENGINE_STATUS_AGE`]: a monitor asking each of 4,500 databases for its status made
/// 4,500 × 4,500 backlog reads (40 s of CPU).
fn engine_status() -> serde_json::Value {
    // Per process: a child of fork() has an engine of its own to describe.
    static CACHE: ProcessMutex<Option<(std::time::Instant, serde_json::Value)>> = ProcessMutex::new();
    let mut cache = CACHE.lock();
    if let Some((at, value)) = cache.as_ref() {
        if at.elapsed() < ENGINE_STATUS_AGE {
            return value.clone();
        }
    }
    let value = crate::engine::engine().status(&crate::primary::registry::backlogs());
    *cache = Some((std::time::Instant::now(), value.clone()));
    value
}

/// How old the engine's part of `litestream_status()` may be.
const ENGINE_STATUS_AGE: std::time::Duration = std::time::Duration::from_millis(250);

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: &[SqlValue]) -> SqlResult {
        let f = FUNCTIONS
            .iter()
            .find(|f| f.name == name && f.n_args == args.len() as i32)
            .unwrap();
        (f.call)(&Ctx::default(), args)
    }

    #[test]
    fn version_function_returns_the_crate_version() {
        assert_eq!(
            call("litestream_version", &[]),
            Ok(SqlValue::Text(env!("CARGO_PKG_VERSION").into()))
        );
    }

    #[test]
    fn a_schema_the_connection_does_not_have_is_named_as_such() {
        let ctx = Ctx {
            schema: Some("nosuch".into()),
            no_such_schema: true,
            ..Ctx::default()
        };
        let f = FUNCTIONS
            .iter()
            .find(|f| f.name == "litestream_sync" && f.n_args == 2)
            .unwrap();
        let err = (f.call)(&ctx, &[SqlValue::Null, SqlValue::Text("nosuch".into())]).unwrap_err();
        assert!(err.contains("no database named 'nosuch'"), "{err}");
    }

    #[test]
    fn functions_on_an_unreplicated_connection_say_why_they_cannot_answer() {
        assert!(call("litestream_txid", &[]).unwrap_err().contains("not replicated"));
        assert!(call("litestream_sync", &[SqlValue::Integer(5)])
            .unwrap_err()
            .contains("not replicated"));
        assert!(call("litestream_sync", &[SqlValue::Text("x".into())])
            .unwrap_err()
            .contains("timeout_ms"));
        let SqlValue::Text(json) = call("litestream_status", &[]).unwrap() else {
            panic!()
        };
        assert!(json.contains("\"role\":\"none\""));
        assert!(call("litestream_lag", &[]).unwrap_err().contains("not a read replica"));
        assert!(call("litestream_wait", &[SqlValue::Integer(1)])
            .unwrap_err()
            .contains("not a read replica"));
        assert!(
            call("litestream_wait", &[SqlValue::Integer(1), SqlValue::Text("x".into())])
                .unwrap_err()
                .contains("timeout_ms")
        );
    }

    #[test]
    fn txids_and_timeouts_bound_as_whole_doubles_are_accepted() {
        assert_eq!(whole_number(&SqlValue::Real(30000.0)), Some(30000));
        assert_eq!(whole_number(&SqlValue::Integer(7)), Some(7));
        for rejected in [
            SqlValue::Real(1.5),
            SqlValue::Real(-1.0),
            SqlValue::Real(f64::NAN),
            SqlValue::Real(1e300),
            SqlValue::Integer(-1),
            SqlValue::Text("1".into()),
        ] {
            assert_eq!(whole_number(&rejected), None, "{rejected:?}");
        }
        // A JS number reaches the argument checks and then the "not a replica" error.
        assert!(call("litestream_wait", &[SqlValue::Real(3.0), SqlValue::Real(100.0)])
            .unwrap_err()
            .contains("not a read replica"));
        assert!(call("litestream_sync", &[SqlValue::Real(100.0)])
            .unwrap_err()
            .contains("not replicated"));
        let restore_to = |target: SqlValue| {
            let args = [
                SqlValue::Text("ftp://nowhere/x".into()),
                SqlValue::Text("/nonexistent/x.db".into()),
                target,
            ];
            call("litestream_restore", &args).unwrap_err()
        };
        assert!(restore_to(SqlValue::Real(1.5)).contains("target must be"));
        // A whole REAL is a TXID: the call gets as far as the unsupported URL.
        assert!(restore_to(SqlValue::Real(2.0)).contains("scheme"));
    }

    #[test]
    fn argument_errors_show_the_value_as_sql_writes_it() {
        assert_eq!(SqlValue::Null.to_string(), "NULL");
        assert_eq!(SqlValue::Integer(-3).to_string(), "-3");
        assert_eq!(SqlValue::Real(2.0).to_string(), "2.0");
        assert_eq!(SqlValue::Text("it's".into()).to_string(), "'it''s'");
        assert_eq!(SqlValue::Blob(vec![0, 0xab]).to_string(), "X'00ab'");
        assert_eq!(
            SqlValue::Blob(vec![0xff; 100]).to_string(),
            format!("X'{}…' (100 bytes)", "ff".repeat(16))
        );
        let restore = |fourth: SqlValue| {
            let args = [
                SqlValue::Text("file:///nowhere".into()),
                SqlValue::Text("/nonexistent/x.db".into()),
                SqlValue::Null,
                fourth,
            ];
            call("litestream_restore", &args).unwrap_err()
        };
        assert_eq!(
            restore(SqlValue::Text("overwrit".into())),
            "the fourth argument can only be 'overwrite', not 'overwrit'"
        );
        assert_eq!(
            restore(SqlValue::Integer(1)),
            "the fourth argument can only be 'overwrite', not 1"
        );
        let err = call("litestream_set_time", &[SqlValue::Integer(5)]).unwrap_err();
        assert_eq!(err, "the time must be text, not 5");
        let err = call("litestream_wait", &[SqlValue::Text("7".into())]).unwrap_err();
        assert_eq!(err, "txid must be a non-negative integer, not '7'");
        let err = call("litestream_sync", &[SqlValue::Real(1.5)]).unwrap_err();
        assert_eq!(err, "timeout_ms must be a non-negative integer, not 1.5");
        let args = [SqlValue::Blob(vec![1]), SqlValue::Text("x.db".into())];
        let err = call("litestream_restore", &args).unwrap_err();
        assert_eq!(err, "the replica URL must be text, not X'01'");
    }

    #[test]
    fn function_names_are_prefixed_and_arities_unique() {
        let mut keys: Vec<_> = FUNCTIONS.iter().map(|f| (f.name, f.n_args)).collect();
        assert!(keys.iter().all(|(n, _)| n.starts_with("litestream_")));
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), FUNCTIONS.len());
    }
}
