#!/usr/bin/python3
"""Randomized write workload through the litestream VFS, for tests.

Runs in Debian's python3 (its sqlite3 module can load extensions). Each operation is
one of: insert batch, update, delete, rolled-back transaction, large transaction with
blobs, VACUUM, checkpoint, reopen. Every `--sync-every` operations it calls
litestream_sync() and appends "<txid> <max acknowledged id>" to --ack-file, so a crash
test can check that nothing acknowledged was lost.
"""
import argparse
import random
import sqlite3
import sys


def connect(args):
    uri = f"file:{args.db}?vfs=litestream&replica={args.replica}"
    for extra in args.param:
        uri += "&" + extra
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, blob BLOB)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS items_name ON items(name)")
    return conn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--replica", required=True)
    p.add_argument("--param", action="append", default=[])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ops", type=int, default=200, help="0 = run until killed")
    p.add_argument("--sync-every", type=int, default=25)
    p.add_argument("--ack-file")
    p.add_argument("--no-vacuum", action="store_true")
    args = p.parse_args()

    rng = random.Random(args.seed)
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    conn = connect(args)
    op = 0
    while args.ops == 0 or op < args.ops:
        op += 1
        kind = rng.random()
        if kind < 0.45:
            rows = [(f"item-{rng.randrange(10**6)}", rng.randrange(1000), None) for _ in range(rng.randrange(1, 20))]
            conn.execute("BEGIN")
            conn.executemany("INSERT INTO items(name, qty, blob) VALUES (?, ?, ?)", rows)
            conn.execute("COMMIT")
        elif kind < 0.6:
            conn.execute("UPDATE items SET qty = qty + 1 WHERE id % ? = 0", (rng.randrange(2, 9),))
        elif kind < 0.7:
            conn.execute("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT ?)", (rng.randrange(1, 10),))
        elif kind < 0.78:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM items WHERE id % 2 = 0")
            conn.execute("INSERT INTO items(name, qty) VALUES ('rolled back', -1)")
            conn.execute("ROLLBACK")
        elif kind < 0.84:
            conn.execute("BEGIN")
            for _ in range(rng.randrange(1, 4)):
                conn.execute("INSERT INTO items(name, qty, blob) VALUES ('big', 0, ?)", (rng.randbytes(rng.randrange(10_000, 300_000)),))
            conn.execute("COMMIT")
        elif kind < 0.86 and not args.no_vacuum:
            conn.execute("DELETE FROM items WHERE blob IS NOT NULL AND id % 3 = 0")
            conn.execute("VACUUM")
        elif kind < 0.92:
            conn.execute(f"PRAGMA wal_checkpoint({rng.choice(['PASSIVE', 'FULL', 'RESTART', 'TRUNCATE'])})").fetchall()
        elif kind < 0.95:
            conn.close()
            conn = connect(args)
        else:
            conn.execute("UPDATE items SET name = upper(name) WHERE id IN (SELECT id FROM items ORDER BY random() LIMIT 50)")
        if op % args.sync_every == 0:
            txid = conn.execute("SELECT litestream_sync(60000)").fetchone()[0]
            if args.ack_file:
                max_id = conn.execute("SELECT coalesce(max(id), 0) FROM items").fetchone()[0]
                with open(args.ack_file, "a") as f:
                    f.write(f"{txid} {max_id}\n")
                    f.flush()
    txid = conn.execute("SELECT litestream_sync(60000)").fetchone()[0]
    print(txid)
    conn.close()


if __name__ == "__main__":
    sys.exit(main())
