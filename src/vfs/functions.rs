//! Registers [`crate::sql::FUNCTIONS`] on a connection and converts values between
//! `sqlite3_value` and [`SqlValue`].

use super::file::WrappedFile;
use super::guard::guard;
use super::replica_file;
use crate::sql::{Ctx, SqlFunction, SqlValue};
use libsqlite3_sys as ffi;
use std::ffi::CString;
use std::os::raw::{c_int, c_void};
use std::slice;

/// Adds every SQL function of the extension to `db`.
///
/// # Safety
/// `db` must be a valid open connection.
pub(crate) unsafe fn register_functions(db: *mut ffi::sqlite3) -> Result<(), String> {
    for function in crate::sql::FUNCTIONS {
        let name = CString::new(function.name).expect("function names have no NUL");
        let mut flags = ffi::SQLITE_UTF8;
        if function.deterministic {
            flags |= ffi::SQLITE_DETERMINISTIC;
        }
        let rc = ffi::sqlite3_create_function_v2(
            db,
            name.as_ptr(),
            function.n_args,
            flags,
            function as *const SqlFunction as *mut c_void,
            Some(call_function),
            None,
            None,
            None,
        );
        if rc != ffi::SQLITE_OK {
            return Err(format!("cannot register {}(): code {rc}", function.name));
        }
    }
    Ok(())
}

unsafe extern "C" fn call_function(ctx: *mut ffi::sqlite3_context, argc: c_int, argv: *mut *mut ffi::sqlite3_value) {
    guard("SQL function", ffi::SQLITE_ERROR, || {
        let function = &*(ffi::sqlite3_user_data(ctx) as *const SqlFunction);
        let raw = if argc > 0 {
            slice::from_raw_parts(argv, argc as usize)
        } else {
            &[]
        };
        let args: Vec<SqlValue> = raw.iter().map(|v| read_value(*v)).collect();
        let schema = match function.schema_arg.map(|i| &args[i]) {
            None => None,
            Some(SqlValue::Text(name)) => Some(name.clone()),
            Some(other) => {
                set_error(ctx, &format!("{}: the schema must be text, not {other}", function.name));
                return ffi::SQLITE_OK;
            }
        };
        let context = connection_context(ffi::sqlite3_context_db_handle(ctx), schema);
        match (function.call)(&context, &args) {
            Ok(value) => set_result(ctx, value),
            Err(message) => set_error(ctx, &format!("{}: {message}", function.name)),
        }
        ffi::SQLITE_OK
    });
}

/// Finds the replication state behind the database file of `schema` (`main` if none).
unsafe fn connection_context(db: *mut ffi::sqlite3, schema: Option<String>) -> Ctx {
    let unknown = Ctx {
        schema: schema.clone(),
        ..Ctx::default()
    };
    let Ok(name) = CString::new(schema.as_deref().unwrap_or("main")) else {
        return unknown;
    };
    // An in-memory or temporary database has no file name: SQLite opened nothing for
    // it through any VFS, so a `replica=` on its URI was never seen.
    let filename = ffi::sqlite3_db_filename(db, name.as_ptr());
    let in_memory = filename.is_null() || *filename == 0;
    let unknown = Ctx { in_memory, ..unknown };
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    let rc = ffi::sqlite3_file_control(
        db,
        name.as_ptr(),
        ffi::SQLITE_FCNTL_FILE_POINTER,
        &mut file as *mut _ as *mut c_void,
    );
    if rc != ffi::SQLITE_OK {
        // SQLite answers SQLITE_ERROR for a schema name the connection does not have.
        return Ctx {
            no_such_schema: rc == ffi::SQLITE_ERROR,
            ..unknown
        };
    }
    let database = WrappedFile::database_of(file);
    Ctx {
        primary: database.as_ref().and_then(|d| d.leader()),
        database,
        replica: replica_file::replica_of(file),
        schema,
        no_such_schema: false,
        in_memory,
    }
}

unsafe fn read_value(value: *mut ffi::sqlite3_value) -> SqlValue {
    match ffi::sqlite3_value_type(value) {
        ffi::SQLITE_INTEGER => SqlValue::Integer(ffi::sqlite3_value_int64(value)),
        ffi::SQLITE_FLOAT => SqlValue::Real(ffi::sqlite3_value_double(value)),
        ffi::SQLITE_TEXT => {
            let ptr = ffi::sqlite3_value_text(value);
            let len = ffi::sqlite3_value_bytes(value) as usize;
            let bytes = if ptr.is_null() {
                &[][..]
            } else {
                slice::from_raw_parts(ptr, len)
            };
            SqlValue::Text(String::from_utf8_lossy(bytes).into_owned())
        }
        ffi::SQLITE_BLOB => {
            let ptr = ffi::sqlite3_value_blob(value) as *const u8;
            let len = ffi::sqlite3_value_bytes(value) as usize;
            let bytes = if ptr.is_null() {
                &[][..]
            } else {
                slice::from_raw_parts(ptr, len)
            };
            SqlValue::Blob(bytes.to_vec())
        }
        _ => SqlValue::Null,
    }
}

unsafe fn set_result(ctx: *mut ffi::sqlite3_context, value: SqlValue) {
    match value {
        SqlValue::Null => ffi::sqlite3_result_null(ctx),
        SqlValue::Integer(i) => ffi::sqlite3_result_int64(ctx, i),
        SqlValue::Real(f) => ffi::sqlite3_result_double(ctx, f),
        SqlValue::Text(text) => {
            // SQLITE_TRANSIENT: SQLite copies the bytes before we drop `text`.
            ffi::sqlite3_result_text(ctx, text.as_ptr().cast(), text.len() as c_int, ffi::SQLITE_TRANSIENT())
        }
        SqlValue::Blob(bytes) => ffi::sqlite3_result_blob(
            ctx,
            bytes.as_ptr().cast(),
            bytes.len() as c_int,
            ffi::SQLITE_TRANSIENT(),
        ),
    }
}

unsafe fn set_error(ctx: *mut ffi::sqlite3_context, message: &str) {
    ffi::sqlite3_result_error(ctx, message.as_ptr().cast(), message.len() as c_int);
}
