/*
 * A primary and a read replica from C, with the extension linked in statically.
 *
 *   cargo build --release
 *   cc -o replicate examples/c/replicate.c -I include \
 *      target/release/liblitestream_vfs.a -lsqlite3 -lm -ldl -lpthread
 *   ./replicate [WORKDIR]
 *
 * (`make -C examples/c` does the same; Debian's libsqlite3-dev provides sqlite3.h.)
 * Opens a primary that replicates to a file:// replica in WORKDIR (a new temporary
 * directory by default), writes 503 rows, waits until they are in the replica
 * (litestream_sync), then opens a read replica on the replica alone and checks that it
 * holds exactly the primary's rows. Exits nonzero if anything differs.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "litestream_vfs.h"

/* Strict opens: extended result codes make SQLite report any auto-extension failure. */
#define OPEN_FLAGS (SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI | SQLITE_OPEN_EXRESCODE)

static sqlite3 *open_db(const char *uri) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, OPEN_FLAGS, NULL) != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", uri, sqlite3_errmsg(db));
        exit(1);
    }
    return db;
}

static void exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, err);
        exit(1);
    }
}

/* The single integer `sql` returns (with `arg` bound to ?1 when it has one). */
static sqlite3_int64 query_int(sqlite3 *db, const char *sql, sqlite3_int64 arg) {
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
        exit(1);
    }
    if (sqlite3_bind_parameter_count(stmt) > 0) sqlite3_bind_int64(stmt, 1, arg);
    if (sqlite3_step(stmt) != SQLITE_ROW) {
        fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_int64 value = sqlite3_column_int64(stmt, 0);
    sqlite3_finalize(stmt);
    return value;
}

/* Every row of notes as "id|body\n", in id order, in one malloc'd string. */
static char *all_rows(sqlite3 *db, int *count) {
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, "SELECT id || '|' || body FROM notes ORDER BY id", -1, &stmt, NULL) != SQLITE_OK) {
        fprintf(stderr, "select: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    size_t len = 0;
    char *text = calloc(1, 1);
    int rc;
    *count = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *row = (const char *)sqlite3_column_text(stmt, 0);
        size_t n = strlen(row);
        text = realloc(text, len + n + 2);
        memcpy(text + len, row, n);
        text[len + n] = '\n';
        text[len + n + 1] = '\0';
        len += n + 1;
        (*count)++;
    }
    if (rc != SQLITE_DONE) {
        fprintf(stderr, "select: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_finalize(stmt);
    return text;
}

static int run(const char *work) {
    char replica[4096], uri[8192];
    snprintf(replica, sizeof replica, "file://%s/replica", work);

    /* The primary: every commit is captured and uploaded in the background;
     * litestream_sync() returns once everything committed is in the replica. */
    snprintf(uri, sizeof uri, "file:%s/app.db?vfs=litestream&replica=%s&sync_interval=100ms", work, replica);
    sqlite3 *primary = open_db(uri);
    exec(primary, "CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);"
                  "INSERT INTO notes(body) VALUES ('alpha'), ('beta'), ('gamma \xc3\xbc');"
                  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)"
                  "  INSERT INTO notes(body) SELECT 'note ' || i || ' ' || replace(hex(zeroblob(100)), '0', 'x') FROM n;");
    sqlite3_int64 txid = query_int(primary, "SELECT litestream_sync(30000)", 0);
    int primary_count;
    char *primary_rows = all_rows(primary, &primary_count);
    sqlite3_close(primary);
    printf("primary: %d rows, synced at TXID %lld\n", primary_count, (long long)txid);

    /* The read replica: another file name, fed only from the replica. litestream_wait
     * blocks until it has reached the primary's TXID; the next statement sees it. */
    snprintf(uri, sizeof uri, "file:%s/view.db?vfs=litestream&role=replica&replica=%s", work, replica);
    sqlite3 *view = open_db(uri);
    query_int(view, "SELECT litestream_wait(?1, 30000)", txid);
    sqlite3_int64 replica_txid = query_int(view, "SELECT litestream_txid()", 0);
    int replica_count;
    char *replica_rows = all_rows(view, &replica_count);
    sqlite3_close(view);

    int same = strcmp(primary_rows, replica_rows) == 0 && replica_txid == txid;
    free(primary_rows);
    free(replica_rows);
    if (!same) {
        fprintf(stderr, "replica at TXID %lld differs from the primary at TXID %lld\n", (long long)replica_txid,
                (long long)txid);
        return 1;
    }
    printf("replica: %d rows at TXID %lld, same as the primary\n", replica_count, (long long)replica_txid);
    return 0;
}

int main(int argc, char **argv) {
    /* Once, before opening databases: registers sqlite3_litestreamvfs_init as an
     * auto-extension (SQLite passes it its routine table) and runs it once, which
     * registers the "litestream" VFS. */
    if (litestream_vfs_auto_register() != SQLITE_OK) {
        fprintf(stderr, "litestream_vfs_auto_register failed\n");
        return 1;
    }
    if (argc > 1) return run(argv[1]);
    char work[] = "/tmp/litestream-c-XXXXXX";
    if (!mkdtemp(work)) {
        perror("mkdtemp");
        return 1;
    }
    int status = run(work);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", work);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", work);
    return status;
}
