#!/usr/bin/python3
"""A web-server-like process that opens a connection per request: for --seconds it
opens the database through the litestream VFS, inserts a row, now and then waits for
litestream_sync(), reads litestream_status() and closes, with a short pause between
requests. Two or three of these on one database hand replication over at nearly every
close (no connection is kept open), the pattern tests/takeover.rs checks.

Prints one line at the end: "requests R led L snapshots S", where L counts the
requests during which this process replicated and S the snapshots those reported
(taken or pending). Every error is written to stderr as "error: <message>".
"""
import argparse
import json
import random
import sqlite3
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--replica", required=True)
    p.add_argument("--params", default="sync_interval=100ms")
    p.add_argument("--tag", required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pause", type=float, default=0.05, help="longest pause between requests, seconds")
    args = p.parse_args()

    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    uri = f"file:{args.db}?vfs=litestream&replica={args.replica}&{args.params}"
    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.seconds
    requests = led = snapshots = 0
    while time.monotonic() < deadline:
        try:
            c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10)
            c.execute("INSERT INTO t(who, seq) VALUES (?, ?)", (args.tag, requests))
            if rng.random() < 0.1:
                c.execute("SELECT litestream_sync(15000)").fetchone()
            status = json.loads(c.execute("SELECT litestream_status()").fetchone()[0])
            if status.get("role") == "primary":
                led += 1
                snapshots += status.get("snapshots", 0) + (status.get("snapshot_pending") is not None)
            c.close()
            requests += 1
        except Exception as e:  # noqa: BLE001 - every error is reported, the test fails on any
            print(f"error: {e}", file=sys.stderr, flush=True)
        time.sleep(rng.uniform(0, args.pause))
    print(f"requests {requests} led {led} snapshots {snapshots}", flush=True)


if __name__ == "__main__":
    main()
