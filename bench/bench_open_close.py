#!/usr/bin/python3
"""Open -> one commit -> close, over and over: what a connection per request costs.

PHP-FPM without persistent connections, CGI, cron jobs and command-line tools open the
database, write one transaction and close it. Each cycle here does exactly that, in one
process, on one database:

  open    connect, PRAGMA journal_mode=WAL, CREATE TABLE IF NOT EXISTS
  write   one ~100-byte INSERT and its commit
  close   close the connection (the last one: SQLite checkpoints and deletes the WAL)

side by side for plain SQLite (default VFS) and our VFS with a file:// replica. Times are
per-cycle means in ms and move with the machine's load (`uptime` is printed with them);
then the same cycles under `strace -f -c` give syscall counts per cycle, which do not.

--s3 runs our VFS against a loopback moto server instead (an s3:// replica), beside the
file:// runs, and counts the store requests per cycle from litestream_metrics(): what a
connection per request costs in requests and round trips on S3.

Must run under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Usage: bench_open_close.py [CYCLES] [--s3] (default 50). BENCH_EXTENSION: another build of the
extension, e.g. to compare before/after a change (named liblitestream_vfs.so: SQLite
derives the entry point from the file name). See bench/README.md.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
PHASES = ("open", "write", "close")


def store_requests(conn):
    """Store requests this process made so far, from litestream_metrics()."""
    total = 0
    for line in conn.execute("SELECT litestream_metrics()").fetchone()[0].splitlines():
        if line.startswith("litestream_replica_operation_total{"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def worker(mode, directory, cycles):
    """One process: `cycles` open/commit/close cycles; prints per-phase means (ms) as JSON."""
    import sqlite3

    db = os.path.join(directory, "bench.db")
    meter = None
    if mode != "plain":
        meter = sqlite3.connect(":memory:")
        meter.enable_load_extension(True)
        meter.load_extension(EXT)
    if mode == "vfs":
        uri = "file:%s?vfs=litestream&replica=file://%s" % (db, os.path.join(directory, "replica"))
    elif mode.startswith("s3:"):
        # A cycle first, outside the figures: the process's first open probes the store's
        # fencing and checks the replica, which later opens do not repeat.
        endpoint = "http://127.0.0.1:%s" % mode.split(":", 1)[1]
        uri = "file:%s?vfs=litestream&replica=s3://bench/%s?endpoint=%s%%26region=us-east-1" % (
            db,
            os.path.basename(directory),
            endpoint,
        )
        c = sqlite3.connect(uri, uri=True)
        c.execute("CREATE TABLE IF NOT EXISTS t(x)")
        c.close()
    else:
        uri = "file:%s" % db
    requests_before = store_requests(meter) if meter else 0
    totals = dict.fromkeys(PHASES, 0.0)
    for _ in range(cycles):
        t0 = time.perf_counter()
        c = sqlite3.connect(uri, uri=True)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE IF NOT EXISTS t(x)")
        t1 = time.perf_counter()
        c.execute("INSERT INTO t VALUES(randomblob(100))")
        c.commit()
        t2 = time.perf_counter()
        c.close()
        t3 = time.perf_counter()
        totals["open"] += t1 - t0
        totals["write"] += t2 - t1
        totals["close"] += t3 - t2
    out = {k: v / cycles * 1000 for k, v in totals.items()}
    if meter:
        out["requests"] = (store_requests(meter) - requests_before) / cycles
    print(json.dumps(out))


def run(mode, cycles, strace=None):
    """Runs a fresh worker on a fresh directory; with `strace`, under `strace -f -c -o`."""
    directory = tempfile.mkdtemp(prefix="bench-owc-")
    try:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", mode, directory, str(cycles)]
        if strace:
            cmd = ["strace", "-f", "-c", "-o", strace] + cmd
        env = dict(os.environ, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench")
        env.pop("AWS_CA_BUNDLE", None)  # the loopback server is plain http
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit("%s worker failed:\n%s" % (mode, done.stderr))
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def strace_counts(path):
    """{syscall: (calls, errors)} from an `strace -c` summary."""
    counts = {}
    for line in open(path):
        parts = line.split()
        if len(parts) < 5 or not parts[3].isdigit() or parts[-1] == "total":
            continue
        errors = int(parts[4]) if len(parts) == 6 else 0
        counts[parts[-1]] = (int(parts[3]), errors)
    return counts


def syscalls_per_cycle(mode, cycles):
    """Syscalls per cycle: a run of `cycles` + 1 minus a run of one (start-up, the extension's
    load and the first cycle's set-up of the staging directory and the replica)."""
    with tempfile.TemporaryDirectory() as tmp:
        base, full = os.path.join(tmp, "base"), os.path.join(tmp, "full")
        run(mode, 1, strace=base)
        run(mode, cycles + 1, strace=full)
        b, f = strace_counts(base), strace_counts(full)
    per = {}
    for name, (calls, errors) in f.items():
        bc, be = b.get(name, (0, 0))
        n, e = (calls - bc) / cycles, (errors - be) / cycles
        if n >= 0.5:
            per[name] = (n, e)
    return per


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    args = [a for a in sys.argv[1:] if a != "--s3"]
    cycles = int(args[0]) if args else 50
    if not os.path.exists(EXT):
        sys.exit("build the extension first: cargo build --release (%s)" % EXT)
    print("uptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    moto = None
    times = {"plain": [], "vfs": []}
    if "--s3" in sys.argv[1:]:
        import stock_moto

        moto, endpoint = stock_moto.start("bench")
        times["s3:" + endpoint.rsplit(":", 1)[1]] = []
    # Interleaved, five rounds each, median per phase: load moves between runs.
    try:
        for _ in range(5):
            for mode in times:
                times[mode].append(run(mode, cycles))
    finally:
        if moto:
            moto.kill()
    print("\nopen -> one commit -> close, %d cycles, mean ms per cycle (median of 5 runs)" % cycles)
    print("%-8s %8s %8s %8s %8s %9s" % ("mode", "open", "write", "close", "cycle", "requests"))
    medians = {}
    for mode, runs in times.items():
        med = {p: sorted(r[p] for r in runs)[len(runs) // 2] for p in PHASES}
        medians[mode] = med
        requests = "%9.1f" % sorted(r["requests"] for r in runs)[len(runs) // 2] if "requests" in runs[0] else ""
        name = "vfs-s3" if mode.startswith("s3:") else mode
        print("%-8s %8.2f %8.2f %8.2f %8.2f %s" % ((name,) + tuple(med[p] for p in PHASES) + (sum(med.values()), requests)))
    if shutil.which("strace") is None:
        print("\nstrace not installed: no syscall counts")
        return
    counts = {mode: syscalls_per_cycle(mode, min(cycles, 20)) for mode in ("plain", "vfs")}
    names = sorted(set(counts["plain"]) | set(counts["vfs"]), key=lambda n: -counts["vfs"].get(n, (0, 0))[0])
    print("\nsyscalls per cycle (strace -f -c; failed calls in brackets)")
    print("%-18s %10s %10s" % ("syscall", "plain", "vfs"))

    def cell(mode, name):
        n, e = counts[mode].get(name, (0, 0))
        return "%.0f" % n + (" (%.0f)" % e if e >= 0.5 else "")

    for name in names:
        print("%-18s %10s %10s" % (name, cell("plain", name), cell("vfs", name)))
    total = {m: sum(n for n, _ in counts[m].values()) for m in counts}
    print("%-18s %10.0f %10.0f" % ("total", total["plain"], total["vfs"]))
    print("\nuptime:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
