#!/usr/bin/python3
"""Soak-test reader: a read replica queried continuously; every second prints one JSON
line with its own RSS (kB), open file descriptors, the TXID it sees and litestream_lag().

usage: soak_reader.py EXT URI SECONDS
"""
import json
import os
import sqlite3
import sys
import time


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ext, uri, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    end = time.time() + seconds
    conn = None
    next_report = time.time()
    queries = errors = 0
    while time.time() < end:
        try:
            if conn is None:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            conn.execute("SELECT count(*), sum(qty) FROM items").fetchone()
            conn.execute("SELECT * FROM items ORDER BY random() LIMIT 5").fetchall()
            queries += 1
        except sqlite3.Error as e:
            # The table may not exist yet on the very first TXIDs; count anything else.
            if "no such table" not in str(e):
                errors += 1
                print(json.dumps({"error": str(e)}), file=sys.stderr, flush=True)
        if time.time() >= next_report and conn is not None:
            txid, lag = conn.execute("SELECT litestream_txid(), litestream_lag()").fetchone()
            print(json.dumps({
                "t": time.time(), "rss_kb": rss_kb(), "fds": len(os.listdir("/proc/self/fd")),
                "txid": txid, "lag": lag, "queries": queries, "errors": errors,
            }), flush=True)
            next_report += 1.0
        time.sleep(0.05)


if __name__ == "__main__":
    main()
