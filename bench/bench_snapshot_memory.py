#!/usr/bin/python3
"""Peak memory of the snapshots of a large database (issue 15).

One process builds a database of --mib MiB of random (incompressible) 1,000-byte rows with
plain SQLite, loads the extension and opens it through the VFS with a file:// replica, then
measures three phases, each with its own high-water mark (VmHWM reset through
/proc/self/clear_refs) and a thread sampling RssAnon and RssFile every 5 ms:

  open     the connect (a database over 16 MiB is snapshotted by the worker, not here)
  upload   `litestream_sync()`: the snapshot (TXID 1) encoded into its staging file and
           uploaded as a level-0 file
  level9   the compaction job's level-9 snapshot (snapshot_interval=10s), merged from the
           level cache and stored at level 9
  reseed   after the connection closed and the database was rebuilt with 1024-byte pages
           outside the VFS (`VACUUM`, not measured): the reopen, one insert and
           `litestream_sync()`: the reseed snapshot staged and uploaded, and stored again
           as a level-9 snapshot from TXID 1 (`src/primary/reseed.rs`)

RssAnon is heap and other anonymous memory; RssFile is pages of mapped files (page cache the
kernel can drop and read again). Prints one JSON line.

    /usr/bin/python3 bench/bench_snapshot_memory.py --mib 512
    BENCH_EXTENSION=/other/liblitestream_vfs.so /usr/bin/python3 bench/bench_snapshot_memory.py

Needs Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
"""

import argparse
import glob
import json
import os
import shutil
import sqlite3
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")


def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0])
    return out


class Sampler(threading.Thread):
    """Peak RssAnon and RssFile (KiB) per phase, sampled every 5 ms."""

    def __init__(self, hump_kib):
        super().__init__(daemon=True)
        self.phase = None
        self.peaks = {}
        self.stop = False
        # A hump: RssAnon more than hump_kib above the phase's start, from rising over it
        # to falling under it (the upload phase has one for staging the snapshot and,
        # before issue 15, one for reading it back to upload).
        self.hump_kib = hump_kib
        self.base = 0

    def run(self):
        while not self.stop:
            s = status()
            if self.phase:
                p = self.peaks.setdefault(self.phase, {"RssAnon": 0, "RssFile": 0, "humps": []})
                p["RssAnon"] = max(p["RssAnon"], s["RssAnon"])
                p["RssFile"] = max(p["RssFile"], s["RssFile"])
                high = s["RssAnon"] > self.base + self.hump_kib
                if high and not getattr(self, "in_hump", False):
                    p["humps"].append(0)
                if high:
                    p["humps"][-1] = max(p["humps"][-1], s["RssAnon"])
                self.in_hump = high
            time.sleep(0.005)


def start(sampler, phase, results):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    results[phase] = {"before": status()}
    sampler.base = results[phase]["before"]["RssAnon"]
    sampler.in_hump = False
    sampler.phase = phase


def end(sampler, phase, results, t0):
    results[phase]["seconds"] = round(time.monotonic() - t0, 1)
    results[phase]["VmHWM"] = status()["VmHWM"]
    time.sleep(0.02)
    results[phase]["peak"] = sampler.peaks.get(phase)


def reseed(sampler, results, db, uri, replica):
    plain = sqlite3.connect(db, isolation_level=None)
    plain.execute("PRAGMA journal_mode=DELETE")
    plain.execute("PRAGMA page_size=1024")
    plain.execute("VACUUM")
    plain.close()
    before = set(glob.glob(os.path.join(replica, "ltx", "9", "*.ltx")))
    t0 = time.monotonic()
    start(sampler, "reseed", results)
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
    conn.execute("INSERT INTO t(v) VALUES (x'00')")
    conn.execute("SELECT litestream_sync(600000)").fetchone()
    end(sampler, "reseed", results, t0)
    conn.close()
    added = set(glob.glob(os.path.join(replica, "ltx", "9", "*.ltx"))) - before
    results["reseed_level9_mib"] = [round(os.path.getsize(p) / 2**20) for p in sorted(added)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=512)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--no-reseed", action="store_true", help="skip the page-size-change phase")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="bench-snapmem-", dir=os.environ.get("BENCH_DIR"))
    db = os.path.join(work, "app.db")
    replica = os.path.join(work, "replica")
    try:
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        rows = args.mib * 1024 * 1024 // 1050
        for _ in range(0, rows, 50_000):
            c.execute(
                "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 50000) "
                "INSERT INTO t(v) SELECT randomblob(1000) FROM r")
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        c.close()
        db_mib = round(os.path.getsize(db) / 2**20)

        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(EXT)
        loader.close()
        sampler = Sampler(os.path.getsize(db) // 4096)
        sampler.start()
        results = {"db_mib": db_mib}
        # A level-1 window that does not come during the run: the level-9 snapshot alone.
        uri = (f"file:{db}?vfs=litestream&replica=file://{replica}&levels=24h"
               f"&snapshot_interval=10s&retention=24h")
        t0 = time.monotonic()
        start(sampler, "open", results)
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        end(sampler, "open", results, t0)
        t0 = time.monotonic()
        start(sampler, "upload", results)
        conn.execute("SELECT litestream_sync(600000)").fetchone()
        end(sampler, "upload", results, t0)
        t0 = time.monotonic()
        start(sampler, "level9", results)
        while not glob.glob(os.path.join(replica, "ltx", "9", "*.ltx")):
            if time.monotonic() - t0 > 300:
                raise SystemExit("no level-9 snapshot after 300 s")
            time.sleep(0.05)
        end(sampler, "level9", results, t0)
        results["level9_mib"] = round(os.path.getsize(glob.glob(os.path.join(replica, "ltx", "9", "*.ltx"))[0]) / 2**20)
        conn.close()
        if not args.no_reseed:
            reseed(sampler, results, db, uri, replica)
        results["tmp_files_left"] = [os.path.relpath(p, work)
                                     for p in glob.glob(os.path.join(work, "**", "*.tmp"), recursive=True)]
        sampler.stop = True
        with open("/proc/loadavg") as f:
            results["load"] = " ".join(f.read().split()[:3])
        print(json.dumps(results))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
