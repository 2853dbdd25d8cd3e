#!/usr/bin/python3
"""Prints the POSIX locks this process holds on a database file (from /proc/locks) while
it opens more connections to it, the way an application or a connection pool does.

Output, one line per checkpoint: "<label> <1 if the process holds its shared lock on
the database file, else 0>".
Labels: "first" (one connection, after a read), "connections=2", "=10", "=100" (that
many open at once), then "pool" lines while a pool of threads opens, queries and closes
connections for --pool-seconds, and "after-pool" at the end. SQLite keeps a shared lock
on a WAL database for as long as a connection has it open, so every line must say the
say 1, as "first" does.
"""
import argparse
import os
import sqlite3
import sys
import threading
import time


# SQLite's SHARED lock: a read lock on bytes PENDING+2 .. PENDING+511 (os_unix.c), which
# a WAL connection keeps for as long as it is open. /proc/locks gives inclusive ranges.
SHARED_FIRST = 0x40000000 + 2
SHARED_LAST = SHARED_FIRST + 510 - 1


def locks_on(path):
    """1 if one of this process's POSIX locks on `path` covers the SHARED range."""
    inode = os.stat(path).st_ino
    pid = str(os.getpid())
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            # "1: POSIX  ADVISORY  READ 1234 08:01:5678 1073741826 1073742335"
            if "->" in fields:
                continue  # a waiter, not a held lock
            if len(fields) >= 8 and fields[1] == "POSIX" and fields[4] == pid:
                if fields[5].rsplit(":", 1)[-1] != str(inode):
                    continue
                end = fields[7]
                if int(fields[6]) <= SHARED_FIRST and (end == "EOF" or int(end) >= SHARED_LAST):
                    return 1
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", required=True)
    p.add_argument("--uri", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--pool-seconds", type=float, default=10)
    args = p.parse_args()

    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)

    def connect():
        c = sqlite3.connect(args.uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
        c.execute("SELECT count(*) FROM t").fetchone()
        return c

    first = connect()
    first.execute("INSERT INTO t(v) VALUES ('first')")
    print("first", locks_on(args.db), flush=True)
    conns = [first]
    for n in range(2, 101):
        conns.append(connect())
        if n in (2, 10, 100):
            print(f"connections={n}", locks_on(args.db), flush=True)
    for c in conns[1:]:
        c.close()
    print("closed-99", locks_on(args.db), flush=True)

    stop = time.monotonic() + args.pool_seconds
    failures = []

    def pool_worker(i):
        k = 0
        while time.monotonic() < stop:
            try:
                c = connect()
                if k % 3 == 0:
                    c.execute("INSERT INTO t(v) VALUES (?)", (f"pool{i}-{k}",))
                c.close()
            except sqlite3.Error as e:
                failures.append(str(e))
            k += 1

    threads = [threading.Thread(target=pool_worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        print("pool", locks_on(args.db), flush=True)
        time.sleep(0.25)
    for t in threads:
        t.join()
    print("after-pool", locks_on(args.db), flush=True)
    for f in failures[:5]:
        print("error", f.replace(" ", "_"), flush=True)
    first.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
