/*
** Makes SQLite's testfixture run every database through the litestream VFS.
**
** Linked into testfixture and called at the end of sqlite3_initialize() (built with
** -DSQLITE_EXTRA_INIT=litestream_fixture_init). It loads our extension with dlopen
** ($LITESTREAM_EXT), registers its entry point with sqlite3_auto_extension (so it gets
** SQLite's API table the way a loadable extension does), opens one in-memory database to
** run it (which registers the "litestream" VFS), then registers a thin VFS in front of it
** as the default.
**
** Why the thin VFS: a primary needs a replica URL, and SQLite's tests open many databases
** (test.db, test2.db, ...), sometimes at once, deleting and re-creating them. One shared
** URL would make them all writers of one replica, which the VFS refuses (invariant 4);
** one URL per path would make the VFS restore a database the test just deleted from its
** replica (a primary whose file is missing restores it). So each open of a main database
** without a `replica` parameter gets a fresh file:// replica,
** $LITESTREAM_FIXTURE_REPLICAS/<path with / replaced>.<pid>.<n>, added as a URI parameter
** through sqlite3_create_filename() (connections of one process share the first one's
** primary anyway), with a staging directory $LITESTREAM_FIXTURE_REPLICAS/<path>.staging
** instead of <path>-litestream; everything else goes to the litestream VFS untouched.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sqlite3.h"

typedef int (*entry_fn)(sqlite3 *, char **, const sqlite3_api_routines *);

static sqlite3_vfs fixture_vfs;
static sqlite3_vfs *litestream_vfs;

/* Opens a main database with a replica URL of its own; the created filename is leaked on
** purpose: SQLite and the VFS may look at it for as long as the file is open. */
static int fixture_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *file, int flags, int *out_flags) {
  const char *dir = getenv("LITESTREAM_FIXTURE_REPLICAS");
  (void)vfs;
  if (name == 0 || !(flags & SQLITE_OPEN_MAIN_DB) || dir == 0 || sqlite3_uri_parameter(name, "replica")) {
    return litestream_vfs->xOpen(litestream_vfs, name, file, flags, out_flags);
  }
  static int opens = 0;
  char url[4096], staging[4096];
  int n = snprintf(url, sizeof url, "file://%s/", dir);
  for (const char *p = name; *p && n < (int)sizeof url - 32; p++) url[n++] = *p == '/' ? '_' : *p;
  url[n] = 0;
  /* One staging directory per database path (as <db>-litestream would be, so processes
  ** sharing a database still find each other), but outside the test's directory: tests
  ** glob and copy test.db* and raced the VFS writing into test.db-litestream. */
  snprintf(staging, sizeof staging, "%s.staging", url + strlen("file://"));
  snprintf(url + n, sizeof url - n, ".%d.%d", (int)getpid(), ++opens);
  const char *params[64];
  int nparam = 0;
  for (int i = 0; nparam < 58; i++) {
    const char *key = sqlite3_uri_key(name, i);
    if (key == 0) break;
    params[nparam++] = key;
    params[nparam++] = sqlite3_uri_parameter(name, key);
  }
  params[nparam++] = "replica";
  params[nparam++] = url;
  if (!sqlite3_uri_parameter(name, "staging")) {
    params[nparam++] = "staging";
    params[nparam++] = staging;
  }
  char journal[4200], wal[4200];
  snprintf(journal, sizeof journal, "%s-journal", name);
  snprintf(wal, sizeof wal, "%s-wal", name);
  sqlite3_filename with_replica = sqlite3_create_filename(name, journal, wal, nparam / 2, params);
  if (with_replica == 0) return SQLITE_NOMEM;
  return litestream_vfs->xOpen(litestream_vfs, with_replica, file, flags, out_flags);
}

#define FORWARD(ret, method, params, args) \
  static ret fixture_##method params { (void)vfs; return litestream_vfs->method args; }
FORWARD(int, xDelete, (sqlite3_vfs * vfs, const char *n, int s), (litestream_vfs, n, s))
FORWARD(int, xAccess, (sqlite3_vfs * vfs, const char *n, int f, int *o), (litestream_vfs, n, f, o))
FORWARD(int, xFullPathname, (sqlite3_vfs * vfs, const char *n, int l, char *o), (litestream_vfs, n, l, o))
FORWARD(void *, xDlOpen, (sqlite3_vfs * vfs, const char *n), (litestream_vfs, n))
FORWARD(void, xDlError, (sqlite3_vfs * vfs, int l, char *o), (litestream_vfs, l, o))
typedef void (*sym_fn)(void);
FORWARD(sym_fn, xDlSym, (sqlite3_vfs * vfs, void *h, const char *s), (litestream_vfs, h, s))
FORWARD(void, xDlClose, (sqlite3_vfs * vfs, void *h), (litestream_vfs, h))
FORWARD(int, xRandomness, (sqlite3_vfs * vfs, int n, char *o), (litestream_vfs, n, o))
FORWARD(int, xSleep, (sqlite3_vfs * vfs, int us), (litestream_vfs, us))
FORWARD(int, xCurrentTime, (sqlite3_vfs * vfs, double *t), (litestream_vfs, t))
FORWARD(int, xGetLastError, (sqlite3_vfs * vfs, int l, char *o), (litestream_vfs, l, o))
FORWARD(int, xCurrentTimeInt64, (sqlite3_vfs * vfs, sqlite3_int64 *t), (litestream_vfs, t))
FORWARD(int, xSetSystemCall, (sqlite3_vfs * vfs, const char *n, sqlite3_syscall_ptr f), (litestream_vfs, n, f))
FORWARD(sqlite3_syscall_ptr, xGetSystemCall, (sqlite3_vfs * vfs, const char *n), (litestream_vfs, n))
FORWARD(const char *, xNextSystemCall, (sqlite3_vfs * vfs, const char *n), (litestream_vfs, n))

int litestream_fixture_init(const char *unused) {
  (void)unused;
  /* Re-initialised after a sqlite3_shutdown() (tester.tcl and many tests do that): the
  ** unix VFS made itself the default again in sqlite3_os_init(). */
  if (sqlite3_vfs_find("litestream-fixture")) return sqlite3_vfs_register(&fixture_vfs, 1);
  const char *path = getenv("LITESTREAM_EXT");
  if (path == 0) return SQLITE_OK; /* plain testfixture */
  void *handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  entry_fn entry = handle ? (entry_fn)dlsym(handle, "sqlite3_litestreamvfs_init") : 0;
  if (entry == 0) {
    fprintf(stderr, "litestream_fixture_init: cannot load %s: %s\n", path, dlerror());
    return SQLITE_ERROR;
  }
  sqlite3_auto_extension((void (*)(void))entry);
  sqlite3 *db = 0;
  int rc = sqlite3_open(":memory:", &db);
  sqlite3_close(db);
  litestream_vfs = sqlite3_vfs_find("litestream");
  if (rc != SQLITE_OK || litestream_vfs == 0) {
    fprintf(stderr, "litestream_fixture_init: the extension registered no litestream VFS\n");
    return SQLITE_ERROR;
  }
  fixture_vfs = *litestream_vfs;
  fixture_vfs.zName = "litestream-fixture";
  fixture_vfs.pNext = 0;
  fixture_vfs.xOpen = fixture_open;
  fixture_vfs.xDelete = fixture_xDelete;
  fixture_vfs.xAccess = fixture_xAccess;
  fixture_vfs.xFullPathname = fixture_xFullPathname;
  fixture_vfs.xDlOpen = fixture_xDlOpen;
  fixture_vfs.xDlError = fixture_xDlError;
  fixture_vfs.xDlSym = fixture_xDlSym;
  fixture_vfs.xDlClose = fixture_xDlClose;
  fixture_vfs.xRandomness = fixture_xRandomness;
  fixture_vfs.xSleep = fixture_xSleep;
  fixture_vfs.xCurrentTime = fixture_xCurrentTime;
  fixture_vfs.xGetLastError = fixture_xGetLastError;
  fixture_vfs.xCurrentTimeInt64 = litestream_vfs->iVersion >= 2 ? fixture_xCurrentTimeInt64 : 0;
  /* Version 3: system call overrides (test_syscall), where the VFS below has them. */
  if (litestream_vfs->iVersion >= 3) {
    fixture_vfs.xSetSystemCall = litestream_vfs->xSetSystemCall ? fixture_xSetSystemCall : 0;
    fixture_vfs.xGetSystemCall = litestream_vfs->xGetSystemCall ? fixture_xGetSystemCall : 0;
    fixture_vfs.xNextSystemCall = litestream_vfs->xNextSystemCall ? fixture_xNextSystemCall : 0;
  }
  return sqlite3_vfs_register(&fixture_vfs, 1);
}
