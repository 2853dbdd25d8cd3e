/* Several application threads committing small transactions (bench/bench_threads.py).
 *
 *   threads_writer EXTENSION|- DIR THREADS COMMITS LAYOUT URI_SUFFIX
 *
 * EXTENSION "-" runs plain SQLite (the extension is not loaded); otherwise the extension is
 * loaded once and every database is opened with URI_SUFFIX, where %d stands for the database's
 * number (e.g. "vfs=litestream&replica=file:///tmp/rep%d": a replica location per database).
 * LAYOUT "separate": thread i writes DIR/db<i>.db; "shared": every thread writes DIR/db0.db
 * through its own connection. Each thread makes COMMITS autocommit INSERTs of a 100-byte row
 * (WAL, synchronous=NORMAL), the same statement as bench_primary.py's. Prints one JSON line:
 * wall seconds, commits, process CPU seconds. C, not Python: the GIL would serialise the
 * threads and hide what they contend on inside SQLite and the VFS.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static const char *dir, *uri_suffix;
static int commits, shared, use_vfs;
static pthread_barrier_t start;

static void die(sqlite3 *db, const char *what) {
  fprintf(stderr, "%s: %s\n", what, db ? sqlite3_errmsg(db) : "out of memory");
  exit(1);
}

static void exec(sqlite3 *db, const char *sql) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "%s: %s\n", sql, err);
    exit(1);
  }
}

static sqlite3 *open_db(int index) {
  char uri[4096], params[2048];
  int number = shared ? 0 : index;
  snprintf(params, sizeof params, uri_suffix, number);
  snprintf(uri, sizeof uri, "file:%s/db%d.db%s%s", dir, number, use_vfs ? "?" : "", use_vfs ? params : "");
  sqlite3 *db = NULL;
  if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, NULL))
    die(db, uri);
  sqlite3_busy_timeout(db, 60000);
  exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
           "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)");
  return db;
}

static void *writer(void *arg) {
  int index = (int)(long)arg;
  sqlite3 *db = open_db(index);
  sqlite3_stmt *insert;
  if (sqlite3_prepare_v2(db, "INSERT INTO t(v) VALUES (?)", -1, &insert, NULL)) die(db, "prepare");
  char row[101];
  unsigned seed = 1u + (unsigned)index;
  pthread_barrier_wait(&start);
  for (int i = 0; i < commits; i++) {
    for (int j = 0; j < 100; j++) row[j] = "0123456789abcdef"[rand_r(&seed) & 15];
    row[100] = 0;
    sqlite3_bind_text(insert, 1, row, 100, SQLITE_STATIC);
    if (sqlite3_step(insert) != SQLITE_DONE) die(db, "insert");
    sqlite3_reset(insert);
  }
  pthread_barrier_wait(&start);
  sqlite3_finalize(insert);
  if (use_vfs) exec(db, "SELECT litestream_sync(60000)");
  sqlite3_close(db);
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

int main(int argc, char **argv) {
  if (argc != 7) {
    fprintf(stderr, "usage: %s EXTENSION|- DIR THREADS COMMITS separate|shared URI_SUFFIX\n", argv[0]);
    return 2;
  }
  use_vfs = strcmp(argv[1], "-") != 0;
  dir = argv[2];
  int threads = atoi(argv[3]);
  commits = atoi(argv[4]);
  shared = strcmp(argv[5], "shared") == 0;
  uri_suffix = argv[6];
  if (use_vfs) {
    sqlite3 *loader;
    char *err = NULL;
    sqlite3_open(":memory:", &loader);
    sqlite3_enable_load_extension(loader, 1);
    if (sqlite3_load_extension(loader, argv[1], NULL, &err)) {
      fprintf(stderr, "load %s: %s\n", argv[1], err);
      return 1;
    }
    sqlite3_close(loader);
  }
  /* Create (and snapshot) the databases before timing: the first open through the VFS
   * takes a snapshot, a one-time cost that is not the steady state being measured. */
  for (int i = 0; i < (shared ? 1 : threads); i++) {
    sqlite3 *db = open_db(i);
    if (use_vfs) exec(db, "SELECT litestream_sync(60000)");
    sqlite3_close(db);
  }
  pthread_t t[64];
  if (threads < 1 || threads > 64) return 2;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, writer, (void *)(long)i);
  pthread_barrier_wait(&start);
  double t0 = now(), c0 = cpu_seconds();
  pthread_barrier_wait(&start);
  double wall = now() - t0, cpu = cpu_seconds() - c0;
  for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
  printf("{\"seconds\": %.6f, \"commits\": %d, \"cpu_seconds\": %.6f}\n", wall, threads * commits, cpu);
  return 0;
}
