#!/usr/bin/python3
"""N primaries in one process: open all, one commit each, litestream_sync() all.

Prints one JSON line: the application's own threads (counted before the extension was
loaded), the peak threads and descriptors seen, and each database's TXID. The caller
(tests/scale.rs) restores a sample and checks the thread budget.

usage: many_primaries.py EXT DIR N NOFILE
"""

import json
import os
import resource
import sqlite3
import sys


def threads():
    return len(os.listdir("/proc/self/task"))


def fds():
    return len(os.listdir("/proc/self/fd"))


def main():
    ext, root, n, nofile = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    app_threads = threads()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    loader.close()
    peak_threads, peak_fds = 0, 0
    conns = []
    for i in range(n):
        uri = f"file:{root}/db/{i}.db?vfs=litestream&replica=file://{root}/replicas/{i}"
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, db INTEGER, v BLOB)")
        conns.append(c)
        if i % 100 == 0:
            peak_threads, peak_fds = max(peak_threads, threads()), max(peak_fds, fds())
    for i, c in enumerate(conns):
        c.execute("INSERT INTO t(db, v) VALUES (?, randomblob(200))", (i,))
    peak_threads, peak_fds = max(peak_threads, threads()), max(peak_fds, fds())
    txids = []
    for c in conns:
        txids.append(c.execute("SELECT litestream_sync(120000)").fetchone()[0])
    peak_threads, peak_fds = max(peak_threads, threads()), max(peak_fds, fds())
    engine = json.loads(conns[0].execute("SELECT litestream_status()").fetchone()[0])["engine"]
    for c in conns:
        c.close()
    print(json.dumps({
        "app_threads": app_threads,
        "peak_threads": peak_threads,
        "peak_fds": peak_fds,
        "engine": engine,
        "txids": txids,
    }))


if __name__ == "__main__":
    main()
