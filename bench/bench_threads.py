#!/usr/bin/python3
"""Several application threads committing at once: plain SQLite vs our VFS (file:// replica).

Issue 15's multi-threaded figure. bench_primary.py measures one Python thread; here a small
C program (threads_writer.c, built on first use with Debian's libsqlite3) runs N threads of
autocommit 100-byte INSERTs (WAL, synchronous=NORMAL) in one process, in three layouts:

  1 thread     one database (the single-threaded baseline, without Python's overhead)
  separate     N threads, each writing its own database
  shared       N threads writing one database, each through its own connection

Each run is a fresh process on fresh databases; plain and VFS runs alternate and the median
of --reps is reported, with process CPU per commit (which counts our background work too).
Prints the machine's load: the ratios are what to compare.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
SOURCE = os.path.join(HERE, "threads_writer.c")
BINARY = os.path.join(ROOT, "target", "bench", "threads_writer")


def build():
    if os.path.exists(BINARY) and os.path.getmtime(BINARY) >= os.path.getmtime(SOURCE):
        return
    os.makedirs(os.path.dirname(BINARY), exist_ok=True)
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wno-format-nonliteral", "-o", BINARY, SOURCE, "-lsqlite3", "-lpthread"],
        check=True,
    )


def run(tmp, vfs, threads, commits, layout):
    d = tempfile.mkdtemp(dir=tmp)
    try:
        params = f"vfs=litestream&replica=file://{d}/replica%d" if vfs else ""
        out = subprocess.run(
            [BINARY, EXT if vfs else "-", d, str(threads), str(commits), layout, params],
            check=True,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if "WARN" in out.stderr or "ERROR" in out.stderr:
            print(out.stderr.strip())
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--commits", type=int, default=20000, help="commits per thread (default 20000)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--dir", default=None, help="where the databases go (default $TMPDIR)")
    args = ap.parse_args()
    if not os.path.exists(EXT):
        raise SystemExit(f"missing {EXT} (run make build)")
    build()
    load = open("/proc/loadavg").read().split()[:3]
    print(f"bench-threads: {args.commits} commits per thread, {args.reps} reps, load {' '.join(load)}, {os.cpu_count()} CPUs")
    tmp = tempfile.mkdtemp(prefix="bench-threads-", dir=args.dir)
    cases = [("1 thread", 1, "separate"), (f"{args.threads} threads, separate", args.threads, "separate"),
             (f"{args.threads} threads, shared", args.threads, "shared")]
    results = {}
    try:
        for label, threads, layout in cases:
            runs = {"plain": [], "vfs": []}
            for rep in range(args.reps):
                order = ["plain", "vfs"] if rep % 2 == 0 else ["vfs", "plain"]
                for mode in order:
                    runs[mode].append(run(tmp, mode == "vfs", threads, args.commits, layout))
            row = {}
            for mode, rs in runs.items():
                row[mode] = {
                    "commits_per_s": statistics.median(r["commits"] / r["seconds"] for r in rs),
                    "cpu_us_per_commit": statistics.median(r["cpu_seconds"] * 1e6 / r["commits"] for r in rs),
                }
            ratio = row["vfs"]["commits_per_s"] / row["plain"]["commits_per_s"]
            cpu = row["vfs"]["cpu_us_per_commit"] / row["plain"]["cpu_us_per_commit"]
            results[label] = dict(row, ratio=ratio, cpu_ratio=cpu)
            print(
                f"  {label:<22} plain {row['plain']['commits_per_s']:>8.0f}/s  vfs {row['vfs']['commits_per_s']:>8.0f}/s"
                f"  ratio {ratio:.3f}   cpu/commit plain {row['plain']['cpu_us_per_commit']:.1f} us"
                f"  vfs {row['vfs']['cpu_us_per_commit']:.1f} us ({cpu:.2f}x)",
                flush=True,
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load = open("/proc/loadavg").read().split()[:3]
    print(f"  load after: {' '.join(load)}")
    with open(os.path.join(HERE, "results-threads.json"), "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
