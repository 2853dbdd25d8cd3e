#!/usr/bin/python3
"""Soak-test writer: mixed writes through the litestream VFS for SECONDS, with
litestream_sync() every 30-150 ms, on a table kept near a fixed size so that the
database (and so snapshots and compaction) stays the same size however long it runs.

Triggers keep a one-row `ledger` (row count, sum of qty, sum of name lengths) in step
with `items` inside every transaction. After each commit (a statement that changed nothing gets no TXID), one line
"TXID N QTY LEN" goes to LEDGER_PATH: the state of the table at that TXID, which is what
a replica that sees that TXID must show. Each `chk` column is a function of its row, so a
reader can check every row it scans.

stdout, one JSON line each: {"sync": txid, "ms": wall-clock ms} after each sync,
{"sync_timeout": message, "ms"} after a sync that gave up (60 s);
at the end {"final": txid, "commits", "syncs", "status": litestream_status()}.

usage: soak_writer.py EXT URI SECONDS SEED LEDGER_PATH
"""
import json
import random
import sqlite3
import sys
import time

# Rows kept in `items`: once above, the oldest go in one transaction.
MAX_ROWS = 20000

SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS items(id INTEGER PRIMARY KEY, name TEXT, qty INTEGER, chk INTEGER);
CREATE TABLE IF NOT EXISTS ledger(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER, q INTEGER, l INTEGER);
INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0);
CREATE TRIGGER IF NOT EXISTS items_ins AFTER INSERT ON items BEGIN
  UPDATE ledger SET n = n + 1, q = q + new.qty, l = l + length(new.name);
END;
CREATE TRIGGER IF NOT EXISTS items_del AFTER DELETE ON items BEGIN
  UPDATE ledger SET n = n - 1, q = q - old.qty, l = l - length(old.name);
END;
CREATE TRIGGER IF NOT EXISTS items_upd AFTER UPDATE ON items BEGIN
  UPDATE ledger SET q = q + new.qty - old.qty, l = l + length(new.name) - length(old.name);
END;
COMMIT;
"""


def chk(row_id, name):
    return row_id * 7 + len(name)


def main():
    ext, uri, seconds, seed, ledger_path = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    rng = random.Random(seed)
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    conn.execute("PRAGMA busy_timeout=30000")
    conn.executescript(SCHEMA)
    ledger = open(ledger_path, "w")
    last_txid = None
    commits = syncs = 0

    def committed():
        nonlocal last_txid, commits
        txid, n, q, l = conn.execute("SELECT litestream_txid(), n, q, l FROM ledger").fetchone()
        if txid != last_txid:
            commits += 1
            last_txid = txid
        # Every commit gets a line, the last one per TXID counts: commits made before the
        # first snapshot all report TXID 1, and the snapshot holds the last of them.
        ledger.write(f"{txid} {n} {q} {l}\n")

    committed()
    next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM items").fetchone()[0]
    end = time.time() + seconds
    next_sync = time.time() + rng.uniform(0.03, 0.15)
    while time.time() < end:
        op = rng.random()
        rows = conn.execute("SELECT n FROM ledger").fetchone()[0]
        if rows > MAX_ROWS:
            conn.execute("BEGIN")
            conn.execute("DELETE FROM items WHERE id IN (SELECT id FROM items ORDER BY id LIMIT 300)")
            conn.execute("COMMIT")
        elif op < 0.6 or next_id < 10:
            name = "x" * rng.randint(1, 200)
            conn.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (next_id, name, rng.randint(0, 9), chk(next_id, name)))
            next_id += 1
        elif op < 0.85:
            conn.execute("UPDATE items SET qty = qty + 1 WHERE id = ?", (rng.randrange(1, next_id),))
        elif op < 0.95:
            conn.execute("DELETE FROM items WHERE id = ?", (rng.randrange(1, next_id),))
        else:
            conn.execute("BEGIN")
            for _ in range(rng.randint(5, 50)):
                name = "y" * 100
                conn.execute("INSERT INTO items VALUES (?, ?, ?, ?)", (next_id, name, 1, chk(next_id, name)))
                next_id += 1
            conn.execute("COMMIT")
        committed()
        time.sleep(rng.uniform(0.001, 0.004))
        if time.time() >= next_sync:
            try:
                txid = conn.execute("SELECT litestream_sync(60000)").fetchone()[0]
                syncs += 1
                print(json.dumps({"sync": txid, "ms": int(time.time() * 1000)}), flush=True)
            except sqlite3.OperationalError as e:
                # An application goes on when the store is down for longer than it waits;
                # the test decides whether a timeout was allowed then.
                if "timed out" not in str(e):
                    raise
                print(json.dumps({"sync_timeout": str(e)[:300], "ms": int(time.time() * 1000)}), flush=True)
            next_sync = time.time() + rng.uniform(0.03, 0.15)
    ledger.close()
    txid = conn.execute("SELECT litestream_sync(120000)").fetchone()[0]
    status = json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])
    print(json.dumps({"final": txid, "commits": commits, "syncs": syncs, "status": status}), flush=True)
    conn.close()


if __name__ == "__main__":
    main()
