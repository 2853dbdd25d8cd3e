#!/usr/bin/python3
"""One web-server-like worker process writing a shared database through the litestream
VFS: it inserts rows, now and then checkpoints (PASSIVE, RESTART or TRUNCATE) and now and
then opens and closes a second connection, then exits normally (closing everything)
after --lifetime seconds. The multi-process churn tests (tests/multi_process.rs) start
several of these over and over.

Every error SQLite reports is written to stderr as one line "error: <message>"; the
process still exits 0 unless --strict, so that the test sees every error of a run.
"""
import argparse
import random
import sqlite3
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--replica", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lifetime", type=float, default=1.0)
    p.add_argument("--plain", action="store_true", help="open without the VFS (the control run)")
    args = p.parse_args()

    rng = random.Random(args.seed)
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    if args.plain:
        uri = f"file:{args.db}"
    else:
        uri = f"file:{args.db}?vfs=litestream&replica={args.replica}&sync_interval=100ms"

    def connect():
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        if args.plain:
            conn.execute("PRAGMA journal_mode=WAL")
        return conn

    errors = 0

    def attempt(what, fn):
        nonlocal errors
        try:
            return fn()
        except sqlite3.Error as e:
            errors += 1
            print(f"error: {what}: {e}", file=sys.stderr, flush=True)
            return None

    conn = attempt("open", connect)
    if conn is None:
        return 0
    attempt("create", lambda: conn.execute(
        "CREATE TABLE IF NOT EXISTS churn(id INTEGER PRIMARY KEY, writer TEXT, n INTEGER, pad BLOB)"))
    deadline = time.monotonic() + args.lifetime
    n = 0
    while time.monotonic() < deadline:
        n += 1
        kind = rng.random()
        if kind < 0.80:
            rows = [(args.tag, n, rng.randbytes(rng.randrange(10, 300))) for _ in range(rng.randrange(1, 8))]
            attempt("insert", lambda: conn.executemany(
                "INSERT INTO churn(writer, n, pad) VALUES (?, ?, ?)", rows))
        elif kind < 0.90:
            mode = rng.choice(["PASSIVE", "RESTART", "TRUNCATE"])
            attempt(f"checkpoint {mode}", lambda: conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall())
        else:
            def second():
                extra = connect()
                extra.execute("SELECT count(*) FROM churn").fetchone()
                extra.close()
            attempt("second connection", second)
    attempt("close", conn.close)
    print(f"{args.tag} {n} {errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
