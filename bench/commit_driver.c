/* The commit loop of bench_primary.py's throughput worker, in C, for instruction
 * counting under callgrind (bench/callgrind_primary.sh): no Python in the way, and
 * the counters cover only the timed commits.
 *
 *   commit_driver plain DIR COMMITS WARMUP
 *   commit_driver plain-thread DIR COMMITS WARMUP
 *   commit_driver plain-thread-unshared DIR COMMITS WARMUP
 *   commit_driver vfs   DIR COMMITS WARMUP EXTENSION [EXTRA_URI_PARAMS]
 *
 * Opens DIR/app.db (plain SQLite, or the litestream VFS with a file:// replica in
 * DIR/replica), WAL, synchronous=NORMAL; WARMUP one-row commits (then, for the VFS,
 * litestream_sync() so the first-open snapshot is behind us); then zeroes callgrind's
 * counters, runs COMMITS autocommit INSERTs of a 100-byte row and dumps the counters
 * under the name "commits". Outside valgrind the client requests do nothing.
 * Prints the loop's wall and committing-thread CPU time per commit (in ns). */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <sqlite3.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <valgrind/callgrind.h>

/* plain-thread: plain SQLite in a process that also has one idle thread, which is
 * what any background thread (ours: the uploader) costs a commit by itself: libc and
 * the kernel take their multi-threaded paths (shared file table: fdget takes a
 * reference in every pwrite/fcntl; pthread cancellation points; atomic mutexes).
 * plain-thread-unshared: the same thread after unshare(CLONE_FILES), which leaves the
 * committing thread the only user of its file table (separates the kernel's share). */
static void *idle(void *arg) {
    if (arg)
        unshare(CLONE_FILES); /* plain-thread-unshared: a file table of its own */
    for (;;)
        pause();
    return NULL;
}

static void die(sqlite3 *db, const char *what) {
    fprintf(stderr, "commit_driver: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static void exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "commit_driver: %s: %s\n", sql, err ? err : "?");
        exit(1);
    }
}

/* 100 hex digits from a fixed-seed generator: rows neither compress nor repeat. */
static void payload(char *out, unsigned long long *state) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 100; i++) {
        *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
        out[i] = hex[(*state >> 59) & 15];
    }
}

static long long ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void commits(sqlite3 *db, sqlite3_stmt *insert, long n, unsigned long long *seed) {
    char row[100];
    for (long i = 0; i < n; i++) {
        payload(row, seed);
        sqlite3_bind_text(insert, 1, row, sizeof row, SQLITE_STATIC);
        if (sqlite3_step(insert) != SQLITE_DONE)
            die(db, "INSERT");
        sqlite3_reset(insert);
    }
}

int main(int argc, char **argv) {
    if (argc < 5 || (strcmp(argv[1], "vfs") == 0 && argc < 6)) {
        fprintf(stderr, "usage: %s plain|vfs DIR COMMITS WARMUP [EXTENSION [PARAMS]]\n", argv[0]);
        return 2;
    }
    int vfs = strcmp(argv[1], "vfs") == 0;
    if (strncmp(argv[1], "plain-thread", 12) == 0) {
        pthread_t thread;
        pthread_create(&thread, NULL, idle, strstr(argv[1], "unshared") ? argv[1] : NULL);
    }
    const char *dir = argv[2];
    long n = atol(argv[3]), warmup = atol(argv[4]);
    char path[4096];
    sqlite3 *db = NULL;

    if (vfs) {
        sqlite3 *loader;
        char *err = NULL;
        if (sqlite3_open(":memory:", &loader) != SQLITE_OK)
            die(loader, "open :memory:");
        sqlite3_enable_load_extension(loader, 1);
        if (sqlite3_load_extension(loader, argv[5], "sqlite3_litestreamvfs_init", &err) != SQLITE_OK) {
            fprintf(stderr, "commit_driver: loading %s: %s\n", argv[5], err ? err : "?");
            return 1;
        }
        sqlite3_close(loader);
        snprintf(path, sizeof path, "file:%s/app.db?vfs=litestream&replica=file://%s/replica%s%s", dir, dir,
                 argc > 6 ? "&" : "", argc > 6 ? argv[6] : "");
    } else {
        snprintf(path, sizeof path, "file:%s/app.db", dir);
    }
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL) != SQLITE_OK)
        die(db, path);
    exec(db, "PRAGMA journal_mode=WAL");
    exec(db, "PRAGMA synchronous=NORMAL");
    exec(db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)");

    sqlite3_stmt *insert;
    if (sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &insert, NULL) != SQLITE_OK)
        die(db, "prepare");
    unsigned long long seed = 1;
    commits(db, insert, warmup, &seed);
    if (vfs)
        exec(db, "SELECT litestream_sync(60000)");

    long long wall0 = ns(CLOCK_MONOTONIC), cpu0 = ns(CLOCK_THREAD_CPUTIME_ID);
    CALLGRIND_ZERO_STATS;
    commits(db, insert, n, &seed);
    CALLGRIND_DUMP_STATS_AT("commits");
    long long wall = ns(CLOCK_MONOTONIC) - wall0, cpu = ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    printf("%s wall_ns_per_commit %lld thread_cpu_ns_per_commit %lld\n", argv[1], wall / n, cpu / n);

    if (vfs)
        exec(db, "SELECT litestream_sync(60000)");
    sqlite3_finalize(insert);
    if (sqlite3_close(db) != SQLITE_OK)
        die(db, "close");
    return 0;
}
