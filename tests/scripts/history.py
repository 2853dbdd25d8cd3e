#!/usr/bin/python3
"""A history of writes every few milliseconds, for point-in-time restore tests.

`record EXT URI SECONDS SEED [PATTERN SYNC_MIN_MS SYNC_MAX_MS HOUR_S]`: writes through
the litestream VFS for SECONDS, calling litestream_sync() at random moments (every
SYNC_MIN_MS to SYNC_MAX_MS, default 30-150 ms); after each sync it prints one JSON line
{"txid", "ms", "hash"}: the TXID synced, the wall-clock time (ms) right after the sync
returned, and a hash of the table at that TXID. Nothing is written between a sync and
its line, so the state at "txid" is exactly "hash", and it is the state of the database
at any time from "ms" until the next write.

PATTERN is what the writes touch:
- mixed (default): inserts, updates and deletes anywhere, some in batches;
- hot: the same 500 rows updated over and over (ratings of a menu: a hot set of pages);
- churn: every HOUR_S seconds (a simulated hour) a new range of 300 rows is written and
  rewritten, so each hour touches pages no other hour touches.

The hash is a sum of per-row hashes, kept up to date as rows change, so a sync every few
milliseconds costs no table scan.

`hash DB`: prints the same hash for a restored database.
"""
import hashlib
import json
import random
import sqlite3
import sys
import time


MASK = (1 << 64) - 1


def row_hash(row):
    return int.from_bytes(hashlib.blake2b(repr(tuple(row)).encode(), digest_size=8).digest(), "little")


def table_sum(conn):
    total = 0
    for row in conn.execute("SELECT id, name, qty FROM items"):
        total = (total + row_hash(row)) & MASK
    return total


def table_hash(conn):
    return f"{table_sum(conn):016x}"


class Table:
    """The items table and the running sum of its row hashes."""

    def __init__(self, conn):
        self.conn = conn
        self.sum = table_sum(conn)

    def row(self, id):
        return self.conn.execute("SELECT id, name, qty FROM items WHERE id = ?", (id,)).fetchone()

    def insert(self, id, name, qty):
        self.conn.execute("INSERT INTO items VALUES (?, ?, ?)", (id, name, qty))
        self.sum = (self.sum + row_hash((id, name, qty))) & MASK

    def upsert_bump(self, id, name):
        """Adds 1 to qty of row id, creating it with `name` if missing."""
        old = self.row(id)
        if old is None:
            self.insert(id, name, 0)
            return
        self.conn.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (id,))
        self.sum = (self.sum - row_hash(old) + row_hash((old[0], old[1], old[2] + 1))) & MASK

    def delete(self, id):
        old = self.row(id)
        if old is not None:
            self.conn.execute("DELETE FROM items WHERE id = ?", (id,))
            self.sum = (self.sum - row_hash(old)) & MASK

    def hash(self):
        return f"{self.sum:016x}"


def write_mixed(table, rng, state):
    op = rng.random()
    next_id = state["next_id"]
    if op < 0.6 or next_id < 10:
        table.insert(next_id, "x" * rng.randint(1, 200), rng.randint(0, 9))
        state["next_id"] += 1
    elif op < 0.85:
        old = table.row(rng.randrange(1, next_id))
        if old is not None:
            table.upsert_bump(old[0], old[1])
    elif op < 0.95:
        table.delete(rng.randrange(1, next_id))
    else:
        table.conn.execute("BEGIN")
        for _ in range(rng.randint(5, 50)):
            table.insert(state["next_id"], "y" * 100, 1)
            state["next_id"] += 1
        table.conn.execute("COMMIT")


def write_hot(table, rng, state):
    table.upsert_bump(rng.randrange(1, 501), "r" * 120)


def write_churn(table, rng, state):
    hour = int((time.time() - state["start"]) / state["hour_s"])
    table.upsert_bump(1 + hour * 300 + rng.randrange(300), "c" * 120)


PATTERNS = {"mixed": write_mixed, "hot": write_hot, "churn": write_churn}


def record(ext, uri, seconds, seed, pattern="mixed", sync_ms=(30, 150), hour_s=3600.0):
    rng = random.Random(seed)
    write = PATTERNS[pattern]
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.execute("CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER)")
    table = Table(conn)
    end = time.time() + seconds
    state = {
        "next_id": conn.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0],
        "start": time.time(),
        "hour_s": hour_s,
    }
    next_sync = time.time() + rng.uniform(*sync_ms) / 1000
    while time.time() < end:
        write(table, rng, state)
        time.sleep(rng.uniform(0.001, 0.004))
        if time.time() >= next_sync:
            txid = conn.execute("SELECT litestream_sync(60000)").fetchone()[0]
            ms = int(time.time() * 1000)
            print(json.dumps({"txid": txid, "ms": ms, "hash": table.hash()}), flush=True)
            time.sleep(0.002)
            next_sync = time.time() + rng.uniform(*sync_ms) / 1000
    conn.close()


def main():
    if sys.argv[1] == "record":
        ext, uri, seconds, seed = sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
        if len(sys.argv) > 6:
            pattern, lo, hi, hour_s = sys.argv[6], float(sys.argv[7]), float(sys.argv[8]), float(sys.argv[9])
            record(ext, uri, seconds, seed, pattern, (lo, hi), hour_s)
        else:
            record(ext, uri, seconds, seed)
    elif sys.argv[1] == "hash":
        conn = sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True)
        print(table_hash(conn))
    else:
        sys.exit(f"unknown command {sys.argv[1]}")


if __name__ == "__main__":
    main()
