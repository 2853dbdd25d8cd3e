//! SQL functions, in safe Rust. `vfs::functions` registers them on every connection
//! and converts values at the FFI boundary.

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

/// One SQL function: name, number of arguments (-1 = any), and the implementation.
pub struct SqlFunction {
    pub name: &'static str,
    pub n_args: i32,
    pub deterministic: bool,
    pub call: fn(&[SqlValue]) -> SqlResult,
}

/// Every function the extension adds to a connection.
pub const FUNCTIONS: &[SqlFunction] = &[SqlFunction {
    name: "litestream_version",
    n_args: 0,
    deterministic: true,
    call: version,
}];

fn version(_args: &[SqlValue]) -> SqlResult {
    Ok(SqlValue::Text(crate::VERSION.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_function_returns_the_crate_version() {
        let f = FUNCTIONS.iter().find(|f| f.name == "litestream_version").unwrap();
        assert_eq!((f.call)(&[]), Ok(SqlValue::Text(env!("CARGO_PKG_VERSION").into())));
    }

    #[test]
    fn function_names_are_unique_and_prefixed() {
        let mut names: Vec<_> = FUNCTIONS.iter().map(|f| f.name).collect();
        assert!(names.iter().all(|n| n.starts_with("litestream_")));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), FUNCTIONS.len());
    }
}
