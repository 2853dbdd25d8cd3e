//! SQL functions, in safe Rust. `vfs::functions` registers them on every connection,
//! finds the connection's replication state, and converts values at the boundary.

use crate::primary::Primary;
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

/// An error a SQL function reports to the statement that called it.
pub type SqlResult = Result<SqlValue, String>;

/// What a function knows about the connection that called it.
#[derive(Default)]
pub struct Ctx {
    /// The primary behind the connection's main database, when it is one.
    pub primary: Option<Arc<Primary>>,
}

/// One SQL function: name, number of arguments (-1 = any), and the implementation.
pub struct SqlFunction {
    pub name: &'static str,
    pub n_args: i32,
    pub deterministic: bool,
    pub call: fn(&Ctx, &[SqlValue]) -> SqlResult,
}

/// Every function the extension adds to a connection (one entry per arity).
pub const FUNCTIONS: &[SqlFunction] = &[
    SqlFunction {
        name: "litestream_version",
        n_args: 0,
        deterministic: true,
        call: version,
    },
    SqlFunction {
        name: "litestream_txid",
        n_args: 0,
        deterministic: false,
        call: txid,
    },
    SqlFunction {
        name: "litestream_sync",
        n_args: 0,
        deterministic: false,
        call: sync,
    },
    SqlFunction {
        name: "litestream_sync",
        n_args: 1,
        deterministic: false,
        call: sync,
    },
    SqlFunction {
        name: "litestream_status",
        n_args: 0,
        deterministic: false,
        call: status,
    },
];

const NOT_REPLICATED: &str = "the main database of this connection is not replicated by the litestream VFS \
                              (open it with ?vfs=litestream&replica=<url>)";

fn version(_: &Ctx, _args: &[SqlValue]) -> SqlResult {
    Ok(SqlValue::Text(crate::VERSION.to_string()))
}

fn primary(ctx: &Ctx) -> Result<&Arc<Primary>, String> {
    ctx.primary.as_ref().ok_or_else(|| NOT_REPLICATED.to_string())
}

fn txid(ctx: &Ctx, _args: &[SqlValue]) -> SqlResult {
    Ok(SqlValue::Integer(primary(ctx)?.txid() as i64))
}

/// `litestream_sync([timeout_ms])`: everything committed so far is in object storage
/// when it returns; the result is the TXID reached.
fn sync(ctx: &Ctx, args: &[SqlValue]) -> SqlResult {
    let timeout = match args.first() {
        None | Some(SqlValue::Null) => Duration::from_secs(30),
        Some(SqlValue::Integer(ms)) if *ms >= 0 => Duration::from_millis(*ms as u64),
        Some(other) => return Err(format!("timeout_ms must be a non-negative integer, not {other:?}")),
    };
    let txid = primary(ctx)?.sync_all(timeout)?;
    Ok(SqlValue::Integer(txid as i64))
}

fn status(ctx: &Ctx, _args: &[SqlValue]) -> SqlResult {
    let value = match &ctx.primary {
        Some(p) => p.status(),
        None => serde_json::json!({ "role": "none", "error": NOT_REPLICATED }),
    };
    Ok(SqlValue::Text(value.to_string()))
}

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
