#!/usr/bin/python3
"""One web-server-like worker process writing a shared database through the litestream
VFS: it inserts rows (mostly one statement each, sometimes in an explicit transaction,
large ones spilling pages before their commit, some rolled back), now and then
checkpoints (PASSIVE, RESTART or TRUNCATE) and now and then opens and closes a second
connection, then exits normally (closing everything) after --lifetime seconds. The
multi-process churn tests (tests/multi_process.rs) start several of these over and over.

Every error SQLite reports is written to stderr as one line "error: <message>"; the
process still exits 0, so that the test sees every error of a run.

With --ack-file, every --sync-every operations it calls litestream_sync() and appends
"<txid> <highest id this worker inserted>" once it returns: what the replica then must
hold, for the crash loops (tests/multi_process_crash.rs) that SIGKILL workers at random.
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
    p.add_argument("--ack-file")
    p.add_argument("--sync-every", type=int, default=10)
    p.add_argument("--params", default="sync_interval=100ms")
    args = p.parse_args()

    rng = random.Random(args.seed)
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    if args.plain:
        uri = f"file:{args.db}"
    else:
        uri = f"file:{args.db}?vfs=litestream&replica={args.replica}&{args.params}"

    def connect():
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        conn.execute("PRAGMA busy_timeout=30000")
        if args.plain:
            conn.execute("PRAGMA journal_mode=WAL")
        return conn

    errors = 0

    def transaction(conn):
        """One explicit transaction of several rows; a third of them large, written with a
        small page cache so that SQLite spills pages into the WAL before the commit (a
        process killed there leaves uncommitted frames, and a takeover may come in the
        middle); a quarter rolled back (their rows never count as acknowledged)."""
        nonlocal highest
        big = rng.random() < 0.3
        count = rng.randrange(30, 150) if big else rng.randrange(2, 20)
        rows = [(args.tag, n, rng.randbytes(rng.randrange(500, 3000) if big else rng.randrange(10, 300)))
                for _ in range(count)]
        keep = rng.random() >= 0.25
        conn.execute(f"PRAGMA cache_size={8 if big else -2000}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            top = 0
            for row in rows:
                top = max(top, conn.execute("INSERT INTO churn(writer, n, pad) VALUES (?, ?, ?)", row).lastrowid)
            conn.execute("COMMIT" if keep else "ROLLBACK")
            if keep:
                highest = max(highest, top)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA cache_size=-2000")

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
    # lifetime 0: until killed
    deadline = time.monotonic() + args.lifetime if args.lifetime > 0 else float("inf")
    n = 0
    highest = 0
    ack = open(args.ack_file, "a") if args.ack_file else None
    while time.monotonic() < deadline:
        n += 1
        kind = rng.random()
        if ack and n % args.sync_every == 0:
            txid = attempt("sync", lambda: conn.execute("SELECT litestream_sync(60000)").fetchone()[0])
            if txid is not None and highest:
                ack.write(f"{txid} {highest}\n")
                ack.flush()
        if kind < 0.74:
            rows = [(args.tag, n, rng.randbytes(rng.randrange(10, 300))) for _ in range(rng.randrange(1, 8))]

            def insert():
                nonlocal highest
                for row in rows:
                    highest = max(highest, conn.execute(
                        "INSERT INTO churn(writer, n, pad) VALUES (?, ?, ?)", row).lastrowid)
            attempt("insert", insert)
        elif kind < 0.80:
            attempt("transaction", lambda: transaction(conn))
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
