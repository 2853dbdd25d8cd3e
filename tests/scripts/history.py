#!/usr/bin/python3
"""A history of writes every few milliseconds, for point-in-time restore tests.

`record`: writes through the litestream VFS for --seconds, calling litestream_sync() at
random moments (every 30-150 ms); after each sync it prints one JSON line
{"txid", "ms", "hash"}: the TXID synced, the wall-clock time (ms) right after the sync
returned, and a hash of the table at that TXID. Nothing is written between a sync and
its line, so the state at "txid" is exactly "hash", and it is the state of the database
at any time from "ms" until the next write.

`hash DB`: prints the same hash for a restored database.
"""
import hashlib
import json
import random
import sqlite3
import sys
import time


def table_hash(conn):
    h = hashlib.sha256()
    for row in conn.execute("SELECT id, name, qty FROM items ORDER BY id"):
        h.update(repr(row).encode())
    return h.hexdigest()


def record(ext, uri, seconds, seed):
    rng = random.Random(seed)
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    end = time.time() + seconds
    next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0]
    next_sync = time.time() + rng.uniform(0.03, 0.15)
    while time.time() < end:
        op = rng.random()
        if op < 0.6 or next_id < 10:
            conn.execute("INSERT INTO items VALUES (?, ?, ?)", (next_id, "x" * rng.randint(1, 200), rng.randint(0, 9)))
            next_id += 1
        elif op < 0.85:
            conn.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (rng.randrange(1, next_id),))
        elif op < 0.95:
            conn.execute("DELETE FROM items WHERE id = ?", (rng.randrange(1, next_id),))
        else:
            conn.execute("BEGIN")
            for _ in range(rng.randint(5, 50)):
                conn.execute("INSERT INTO items VALUES (?, ?, ?)", (next_id, "y" * 100, 1))
                next_id += 1
            conn.execute("COMMIT")
        time.sleep(rng.uniform(0.001, 0.004))
        if time.time() >= next_sync:
            txid = conn.execute("SELECT litestream_sync(60000)").fetchone()[0]
            ms = int(time.time() * 1000)
            print(json.dumps({"txid": txid, "ms": ms, "hash": table_hash(conn)}), flush=True)
            time.sleep(0.002)
            next_sync = time.time() + rng.uniform(0.03, 0.15)
    conn.close()


def main():
    if sys.argv[1] == "record":
        ext, uri, seconds, seed = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
        record(ext, uri, seconds, seed)
    elif sys.argv[1] == "hash":
        conn = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
        print(table_hash(conn))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
