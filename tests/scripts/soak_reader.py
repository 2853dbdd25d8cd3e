#!/usr/bin/python3
"""Soak-test reader: a read replica of soak_writer.py's database, queried continuously.

Each query is one statement (so one read transaction, one TXID) that reads the TXID, the
ledger row, and the aggregates and row checks of `items` the ledger must agree with.
stdout, one JSON line each:
- {"obs": [txid, n, q, l]} whenever what the replica shows changes: the test compares it
  with the writer's ledger at that TXID;
- {"wrong": "...", ...} for a state that cannot have existed (ledger and table disagree,
  a row fails its check, the TXID went back);
- {"error": "SQLITE_...", "message": "...", "t": ...} for a query that failed;
- {"slow": ms, "t", "fetched": {...}} for a query that took over SLOW_MS, with what the
  replica fetched meanwhile (requests, bytes, read errors; hydration's bytes apart);
- every second {"t", "rss_kb", "fds", "txid", "lag", "queries", "errors", "query_ms_max",
  "query_ms_sum", "slowest", "status"} (query times since the previous report; the
  slowest one's end, TXID and duration, for its staleness when it answered).

usage: soak_reader.py EXT URI SECONDS
"""
import json
import os
import sqlite3
import sys
import time

CHECK = """
SELECT litestream_txid(), n, q, l,
       (SELECT count(*) FROM items),
       (SELECT coalesce(sum(qty), 0) FROM items),
       (SELECT coalesce(sum(length(name)), 0) FROM items),
       (SELECT count(*) FROM items WHERE chk IS NOT id * 7 + length(name))
FROM ledger
"""

SAMPLE = "SELECT id, name, qty, chk FROM items WHERE id >= (SELECT max(id) FROM items) - abs(random() % 20000) LIMIT 5"


SLOW_MS = 5000
FETCH_COUNTERS = ("requests", "bytes_fetched", "pages_fetched", "read_errors")


def fetch_counters(conn):
    status = json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])
    counters = {k: status.get(k) or 0 for k in FETCH_COUNTERS}
    # The same fetcher serves hydration in the background: its share, to tell them apart.
    counters["hydration_bytes"] = (status.get("hydration") or {}).get("bytes_fetched") or 0
    return counters


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def emit(value):
    print(json.dumps(value), flush=True)


def main():
    ext, uri, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    end = time.time() + seconds
    conn = None
    ready = False  # the schema has reached the replica
    next_report = time.time()
    queries = errors = 0
    last_obs = None
    last_txid = 0
    query_ms = []  # durations of the queries since the last report
    slowest = None  # [end time, TXID it showed, ms] of the slowest of them
    while time.time() < end:
        try:
            if conn is None:
                conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            before = fetch_counters(conn)
            began = time.time()
            row = conn.execute(CHECK).fetchone()
            for r in conn.execute(SAMPLE).fetchall():
                if r[3] != r[0] * 7 + len(r[1]) or r[1] not in ("x" * len(r[1]), "y" * 100):
                    emit({"wrong": "sampled row fails its check", "row": list(r)})
            queries += 1
            query_ms.append((time.time() - began) * 1000)
            if slowest is None or query_ms[-1] > slowest[2]:
                slowest = [time.time(), row[0], query_ms[-1]]
            if query_ms[-1] > SLOW_MS:
                after = fetch_counters(conn)
                emit({"slow": round(query_ms[-1]), "t": began,
                      "fetched": {k: after[k] - before[k] for k in after}})
            ready = True
            txid, n, q, l, cn, cq, cl, bad = row
            if (n, q, l) != (cn, cq, cl) or bad:
                emit({"wrong": "ledger and table disagree", "row": list(row)})
            if txid < last_txid:
                emit({"wrong": "TXID went back", "from": last_txid, "to": txid})
            last_txid = txid
            if (txid, n, q, l) != last_obs:
                last_obs = (txid, n, q, l)
                emit({"obs": list(last_obs)})
        except sqlite3.Error as e:
            # Before the writer's schema reaches the replica there is no table to read.
            if ready or "no such table" not in str(e):
                errors += 1
                name = getattr(e, "sqlite_errorname", type(e).__name__)
                emit({"error": name, "message": str(e), "t": time.time()})
        if time.time() >= next_report and conn is not None:
            try:
                txid, lag, status = conn.execute(
                    "SELECT litestream_txid(), litestream_lag(), litestream_status()"
                ).fetchone()
                status = json.loads(status)
                emit({
                    "t": time.time(), "rss_kb": rss_kb(), "fds": len(os.listdir("/proc/self/fd")),
                    "txid": txid, "lag": lag, "queries": queries, "errors": errors,
                    "query_ms_max": max(query_ms, default=0), "query_ms_sum": sum(query_ms),
                    "slowest": slowest,
                    "status": {k: status.get(k) for k in (
                        "lag", "latest_txid", "requests", "polls", "poll_errors", "read_errors", "last_error",
                        "hydration")},
                })
                query_ms = []
                slowest = None
            except sqlite3.Error as e:
                emit({"error": getattr(e, "sqlite_errorname", "?"), "message": str(e), "t": time.time(), "report": True})
            next_report = time.time() + 1.0
        time.sleep(0.05)


if __name__ == "__main__":
    main()
