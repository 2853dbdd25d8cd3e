#!/usr/bin/python3
"""Idle memory after a burst: what an idle primary costs above plain SQLite.

N databases in one process (a fresh process per mode and count), each written with a
burst of about 1 MiB (--commits transactions of --rows 1,000-byte rows), then left idle:
for the VFS, `litestream_sync()` on each, then --idle seconds (a few `sync_interval`s, so
every database has had a turn with nothing to stage). Prints the process's RSS per database
above its RSS before the first open, before and after `malloc_trim(0)`, and glibc's arena
figures (mallinfo2). Plain SQLite does exactly the same writes with the default VFS.

RSS per database includes what does not grow with databases (the engine's threads and their
malloc arenas); with two or more counts the marginal figure (the slope between the smallest
and largest count) leaves that out.

    /usr/bin/python3 bench/bench_idle_memory.py                  # 100 and 200 databases
    /usr/bin/python3 bench/bench_idle_memory.py --counts 150 --idle 5
    BENCH_EXTENSION=/other/liblitestream_vfs.so /usr/bin/python3 bench/bench_idle_memory.py

Must run under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
"""

import argparse
import ctypes
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")


class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")
    ]


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def mallinfo():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    # arena: bytes of the main arena's heap (sbrk) plus every thread arena's; hblkhd: mmapped
    # blocks; uordblks: in use; fordblks: free inside the arenas.
    return {k: round(getattr(m, k) / 1024) for k in ("arena", "hblkhd", "uordblks", "fordblks")}


def worker(mode, n, commits, rows, idle, work):
    """One measured process: prints a JSON line."""
    if mode == "ours":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(EXT)
        loader.close()
    base = rss_kib()
    base_malloc = mallinfo()
    conns = []
    for i in range(n):
        path = os.path.join(work, f"{i}.db")
        if mode == "ours":
            uri = f"file:{path}?vfs=litestream&replica=file://{work}/replica-{i}&sync_interval=1s"
        else:
            uri = f"file:{path}"
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=NORMAL")
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        conns.append(c)
    t0 = time.monotonic()
    for c in conns:
        for _ in range(commits):
            c.execute(
                "WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < ?) "
                "INSERT INTO t(v) SELECT randomblob(1000) FROM r",
                (rows,),
            )
    burst = time.monotonic() - t0
    if mode == "ours":
        for c in conns:
            c.execute("SELECT litestream_sync(120000)").fetchone()
    busy = rss_kib()
    time.sleep(idle)
    idle_rss = rss_kib()
    idle_malloc = mallinfo()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    trimmed = rss_kib()
    for c in conns:
        c.close()
    print(json.dumps({
        "mode": mode,
        "databases": n,
        "burst_s": round(burst, 2),
        "rss_kib_base": base,
        "rss_kib_after_sync": busy,
        "rss_kib_idle": idle_rss,
        "rss_kib_trimmed": trimmed,
        "per_db_kib": round((idle_rss - base) / n, 1),
        "per_db_kib_trimmed": round((trimmed - base) / n, 1),
        "malloc_kib_base": base_malloc,
        "malloc_kib_idle": idle_malloc,
    }))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--counts", type=int, nargs="+", default=[100, 200], help="databases per run (default 100 200)")
    ap.add_argument("--commits", type=int, default=8, help="transactions per database (default 8)")
    ap.add_argument("--rows", type=int, default=128, help="1,000-byte rows per transaction (default 128)")
    ap.add_argument("--idle", type=float, default=4.0, help="idle seconds after the sync (default 4)")
    ap.add_argument("--reps", type=int, default=1, help="runs per mode and count; the median is shown")
    ap.add_argument("--modes", nargs="+", default=["plain", "ours"])
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.commits, args.rows, args.idle, os.getcwd())
        return
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    results = {}
    for n in args.counts:
        for rep in range(args.reps):
            for mode in args.modes:
                work = tempfile.mkdtemp(prefix="bench-idle-mem-")
                try:
                    out = subprocess.run(
                        [sys.executable, os.path.abspath(__file__), "--worker", mode, str(n), "--commits",
                         str(args.commits), "--rows", str(args.rows), "--idle", str(args.idle)],
                        cwd=work, capture_output=True, text=True, timeout=1800,
                    )
                    if out.returncode != 0:
                        sys.exit(f"{mode} with {n} databases failed:\n{out.stderr}")
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((mode, n), []).append(r)
                print(f"{mode:6} {n:5} dbs: {r['per_db_kib']:7.1f} KiB/db idle, {r['per_db_kib_trimmed']:7.1f} "
                      f"after malloc_trim; burst {r['burst_s']} s; malloc idle {r['malloc_kib_idle']}", flush=True)

    def median(mode, n, key):
        values = sorted(r[key] for r in results[(mode, n)])
        return values[len(values) // 2]

    print(f"\nload average at start: {load}; {args.commits} x {args.rows} x 1,000 B per database, idle {args.idle} s")
    for key in ("rss_kib_idle", "rss_kib_trimmed"):
        for n in args.counts:
            line = [f"{key:16} {n:5} dbs, KiB per db:"]
            per = {}
            for mode in args.modes:
                per[mode] = (median(mode, n, key) - median(mode, n, "rss_kib_base")) / n
                line.append(f"{mode} {per[mode]:.1f}")
            if "plain" in per and "ours" in per:
                line.append(f"ours above plain {per['ours'] - per['plain']:.1f}")
            print("  ".join(line))
        if len(args.counts) > 1:
            lo, hi = min(args.counts), max(args.counts)
            slope = {m: (median(m, hi, key) - median(m, lo, key)) / (hi - lo) for m in args.modes}
            line = [f"{key:16} marginal ({lo}->{hi}), KiB per db:"]
            line += [f"{m} {v:.1f}" for m, v in slope.items()]
            if "plain" in slope and "ours" in slope:
                line.append(f"ours above plain {slope['ours'] - slope['plain']:.1f}")
            print("  ".join(line))


if __name__ == "__main__":
    main()
