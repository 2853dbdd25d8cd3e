/*
 * litestream_vfs.h: linking the litestream-vfs SQLite extension into a C program.
 *
 * The extension is usually loaded at run time (`.load liblitestream_vfs`,
 * sqlite3_load_extension, Python's enable_load_extension, ...). A program can instead
 * link it in: `cargo build --release` also builds target/release/liblitestream_vfs.a.
 *
 *   cc app.c -I include target/release/liblitestream_vfs.a -lsqlite3 -lm -ldl -lpthread
 *
 * (the archive holds Rust's standard library and the crate's dependencies; the -l flags
 * are what they need from the system, plus SQLite itself, which the archive does not
 * contain: it calls whichever SQLite the program links, through the routine table SQLite
 * passes to the entry point). examples/c/replicate.c is a complete program.
 *
 * Call litestream_vfs_auto_register() (below) once, before opening databases. It
 * registers the entry point with sqlite3_auto_extension, so every connection gets the
 * litestream_* SQL functions, and opens and closes one in-memory connection: SQLite runs
 * auto-extensions only after it has looked up the VFS a filename names, so the
 * "litestream" VFS has to be registered by an earlier connection. Then open databases
 * with a URI filename (pass SQLITE_OPEN_URI to sqlite3_open_v2):
 *
 *   file:app.db?vfs=litestream&replica=s3://bucket/app                   primary
 *   file:view.db?vfs=litestream&role=replica&replica=s3://bucket/app     read replica
 *
 * URI parameters, environment variables and SQL functions are described in the
 * project's README; docs/languages.md covers this header and the other bindings.
 *
 * Symbols: the archive defines exactly one sqlite3_* symbol, sqlite3_litestreamvfs_init;
 * it never defines SQLite's own functions, so it cannot clash with the SQLite the program
 * links. It does export the zstd library's ZSTD_*, HUF_*, FSE_* symbols (statically
 * built in): a program that also links a different libzstd gets whichever the linker
 * sees first.
 *
 * SQLite requirements: 3.14 or newer (the API table the bindings were built against),
 * built with extension support: a SQLite compiled with SQLITE_OMIT_LOAD_EXTENSION passes
 * no routine table and the entry point fails with SQLITE_ERROR.
 *
 * Threads: the entry point may run on any thread and runs again for every new connection
 * (that is what an auto-extension is); registering the VFS happens once per process. The
 * extension starts its own background threads (uploads, polling, hydration) on first use.
 * Each connection follows SQLite's own threading mode: with the default serialized mode a
 * connection may be shared between threads; several connections to one primary database
 * in one process share one replicator. Do not fork() a process after it has opened a
 * database through the VFS: the child has none of the background threads.
 *
 * The library keeps itself loaded for the rest of the process once initialised; there is
 * no function to unload it.
 */
#ifndef LITESTREAM_VFS_H
#define LITESTREAM_VFS_H

#include <sqlite3.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The extension's entry point (the name SQLite derives from liblitestream_vfs.so).
 *
 * db:     the connection being opened; the SQL functions are registered on it.
 * pzErrMsg: receives an error message allocated with sqlite3_malloc on failure.
 * pApi:   SQLite's routine table; every SQLite call of the extension goes through it.
 *
 * Returns SQLITE_OK, or SQLITE_ERROR with *pzErrMsg set. As an auto-extension SQLite
 * supplies all three arguments; do not call it directly with a null pApi.
 */
int sqlite3_litestreamvfs_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

/*
 * Registers the extension for every connection of the process and makes the
 * "litestream" VFS available now. Returns SQLITE_OK, or the error of
 * sqlite3_auto_extension or of the in-memory connection that ran the entry point.
 * Calling it again is harmless.
 */
static inline int litestream_vfs_auto_register(void) {
    sqlite3 *db = NULL;
    int rc = sqlite3_auto_extension((void (*)(void))sqlite3_litestreamvfs_init);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_open(":memory:", &db);
    sqlite3_close(db);
    return rc;
}

#ifdef __cplusplus
}
#endif

#endif /* LITESTREAM_VFS_H */
