"""A litestream_sync() that waits while staging fails and the backlog is dropped for a
snapshot: it must return once that snapshot is stored. The dropped commits keep the TXIDs
litestream_txid() gave them: the snapshot's is above every one (none names two states).

Run by tests/bad_input/staging.rs with staging on a full tmpfs (`--filler` fills it);
prints one JSON line: the waiting sync's answer, the TXIDs, litestream_snapshot(0)'s.
"""

import argparse
import json
import os
import sqlite3
import subprocess
import threading
import time

ap = argparse.ArgumentParser()
ap.add_argument("--ext", required=True)
ap.add_argument("--db", required=True)
ap.add_argument("--replica", required=True)
ap.add_argument("--staging", required=True)
ap.add_argument("--filler", required=True)
args = ap.parse_args()

loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(args.ext)
uri = f"file:{args.db}?vfs=litestream&replica={args.replica}&staging={args.staging}&sync_interval=100ms&max_queue=1MiB"


def connect():
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)


def sync(conn, ms):
    try:
        return ["ok", conn.execute("SELECT litestream_sync(?)", (ms,)).fetchone()[0]]
    except sqlite3.Error as e:
        return ["err", str(e)]


a = connect()
a.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
assert sync(a, 10000)[0] == "ok"
with open(args.filler, "wb") as f:
    try:
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    except OSError:
        pass
for _ in range(5):
    a.execute("INSERT INTO t(v) VALUES ('x')")
b = connect()
txid_before = a.execute("SELECT litestream_txid()").fetchone()[0]
waiting = []
thread = threading.Thread(target=lambda: waiting.append(sync(b, 30000)))
thread.start()
time.sleep(0.3)
# Over max_queue: the failing stage drops them, a snapshot is due.
for _ in range(30):
    a.execute("INSERT INTO t(v) VALUES (randomblob(100000))")
# The drop comes at the worker's next stage attempt, whose backoff after failures grows
# to seconds: waited for (up to 20 s), not assumed after a fixed sleep, which a loaded
# machine outran.
txid_dropped = a.execute("SELECT litestream_txid()").fetchone()[0]
deadline = time.monotonic() + 20
while True:
    status = json.loads(a.execute("SELECT litestream_status()").fetchone()[0])
    if status["snapshot_pending"] is not None or time.monotonic() > deadline:
        break
    time.sleep(0.1)
os.remove(args.filler)
subprocess.run(["mount", "-o", "remount,size=64m", args.staging], check=True)
# Wakes the worker at once (the waiting sync does not after a failure).
after = sync(a, 20000)
thread.join()
a.execute("INSERT INTO t(v) VALUES ('after')")
txid_next = a.execute("SELECT litestream_txid()").fetchone()[0]
try:
    a.execute("SELECT litestream_snapshot(0)").fetchone()
    snapshot0 = "returned"
except sqlite3.Error as e:
    snapshot0 = str(e)
print(json.dumps({
    "txid_before": txid_before,
    "txid_dropped": txid_dropped,
    "txid_next": txid_next,
    "snapshot_pending": status["snapshot_pending"],
    "waiting": waiting[0],
    "after": after,
    "snapshot0": snapshot0,
}))
a.close()
b.close()
