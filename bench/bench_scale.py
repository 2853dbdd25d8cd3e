#!/usr/bin/python3
"""Scale benchmark: many databases replicated from one process.

N primaries in this one process (default 1,000) on file:// (or, with --s3, on a loopback
moto S3 server): open all, one commit each, litestream_sync() all, idle (60 s unless --idle
says otherwise), close all. Prints peak threads, peak descriptors, RSS per database,
seconds per phase, store requests (total, while idle, peak per second, from the engine's
own counters) and what the idle phase cost: store writes (files created or changed in the
replicas), system calls and CPU.

Side by side (unless --no-litestream): `litestream replicate` 0.5.17 replicating the same
number of databases (a config with one `dbs:` entry each) while plain SQLite commits to
them: its threads, descriptors, RSS, CPU, and whether every database reached its replica.

Must run under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Writes bench/results-scale.json. See bench/README.md.
"""

import argparse
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import stock_moto

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
LITESTREAM = os.path.join(ROOT, ".venv", "bin", "litestream")
RESULTS = os.path.join(HERE, "results-scale.json")
S3_BUCKET = "scale"
# Every connection this run opened: closed before the scratch directory is removed, even
# when a run fails half way (removing live databases under them makes a storm of errors).
OPEN = []


class Requests:
    """Samples the engine's store request counters (litestream_status()'s engine.stores)
    every 250 ms on a connection of its own: total so far and the peak over any 1 s."""

    def __init__(self):
        self.conn = sqlite3.connect(":memory:", check_same_thread=False)
        self.samples = []
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def total(self):
        engine = json.loads(self.conn.execute("SELECT litestream_status()").fetchone()[0]).get("engine", {})
        return sum(s.get("requests", 0) for s in engine.get("stores", []))

    def _run(self):
        while not self.stop.is_set():
            if not self.paused.is_set():
                self.samples.append((time.monotonic(), self.total()))
            time.sleep(0.25)

    def done(self):
        self.stop.set()
        self.thread.join()
        peak = 0
        for i, (t0, n0) in enumerate(self.samples):
            for t1, n1 in self.samples[i + 1:]:
                if t1 - t0 >= 1.0:
                    peak = max(peak, (n1 - n0) / (t1 - t0))
                    break
        return round(peak, 1)


def proc_counts(pid="self", fds=True):
    """(threads, descriptors, RSS KiB) of a process, from /proc (descriptors 0 unless
    `fds`)."""
    threads = len(os.listdir(f"/proc/{pid}/task"))
    fds = len(os.listdir(f"/proc/{pid}/fd")) if fds else 0
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return threads, fds, rss


def proc_io(pid="self"):
    """System calls made by a process so far: (reads, writes)."""
    out = {}
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            k, v = line.split(":")
            out[k] = int(v)
    return out["syscr"], out["syscw"]


def proc_cpu(pid):
    """User+system CPU seconds of a process (all its threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Peak:
    """Samples a process's threads/descriptors/RSS every 20 ms in the background."""

    def __init__(self, pid="self"):
        self.pid, self.threads, self.fds, self.rss = pid, 0, 0, 0
        self.stop = threading.Event()
        # Set while an idle phase is measured: listing /proc/self/fd (4 entries per
        # database) fifty times a second would be most of the idle CPU counted.
        self.paused = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self, fds=True):
        try:
            t, f, r = proc_counts(self.pid, fds)
        except (FileNotFoundError, ProcessLookupError):
            return
        self.threads, self.fds, self.rss = max(self.threads, t), max(self.fds, f), max(self.rss, r)

    def _run(self):
        n = 0
        while not self.stop.is_set():
            if not self.paused.is_set():
                # Descriptors every 0.5 s only: listing /proc/PID/fd costs as much as it
                # holds (18,000 entries at 4,500 databases), fifty times a second it
                # slowed this process's own opens several times over.
                self.sample(fds=n % 25 == 0)
                n += 1
            time.sleep(0.02)

    def done(self):
        self.stop.set()
        self.thread.join()
        self.sample()


def tree_state(root):
    """{path: (size, mtime_ns)} of every file under root: what the replicas hold."""
    out = {}
    for d, _, files in os.walk(root):
        for name in files:
            p = os.path.join(d, name)
            try:
                st = os.stat(p)
            except FileNotFoundError:
                continue
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def changed(before, after):
    return sum(1 for p, v in after.items() if before.get(p) != v) + sum(1 for p in before if p not in after)


def run_ours(n, idle, work, sync_interval, s3=None):
    dbs = os.path.join(work, "ours", "db")
    reps = os.path.join(work, "ours", "replicas")
    os.makedirs(dbs)
    os.makedirs(reps)
    base_threads, base_fds, base_rss = proc_counts()
    peak = Peak()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(EXT)
    loader.close()
    requests = Requests()
    phases = {}
    t0 = time.monotonic()
    conns = []
    for i in range(n):
        if s3:
            replica = f"s3://{S3_BUCKET}/{i}&endpoint={s3}&region=us-east-1&force-path-style=true"
        else:
            replica = f"file://{reps}/{i}"
        uri = f"file:{dbs}/{i}.db?vfs=litestream&replica={replica}&sync_interval={sync_interval}"
        c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
        OPEN.append(c)
        c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
        conns.append(c)
    phases["open"] = time.monotonic() - t0
    after_open = proc_counts()
    t0 = time.monotonic()
    for c in conns:
        c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
    phases["commit"] = time.monotonic() - t0
    t0 = time.monotonic()
    for c in conns:
        c.execute("SELECT litestream_sync(120000)").fetchone()
    phases["sync"] = time.monotonic() - t0
    after_sync = proc_counts()
    # Idle: nothing commits. What does replication still do?
    time.sleep(min(2.0, idle))  # let the last interval's bookkeeping settle
    io0, cpu0, tree0, local0 = proc_io(), proc_cpu(os.getpid()), tree_state(reps), tree_state(dbs)
    uploads0 = sum(json.loads(c.execute("SELECT litestream_status()").fetchone()[0]).get("uploads", 0) for c in conns)
    requests0 = requests.total()
    # The samplers rest while idle CPU is counted; requests per 10 s are read here.
    peak.paused.set()
    requests.paused.set()
    t0 = time.monotonic()
    requests_by_10s, cpu_by_10s = [], []
    while time.monotonic() - t0 < idle:
        time.sleep(min(10.0, idle - (time.monotonic() - t0)))
        requests_by_10s.append(requests.total())
        cpu_by_10s.append(proc_cpu(os.getpid()))
    phases["idle"] = time.monotonic() - t0
    peak.paused.clear()
    requests.paused.clear()
    io1, cpu1, tree1, local1 = proc_io(), proc_cpu(os.getpid()), tree_state(reps), tree_state(dbs)
    uploads1 = sum(json.loads(c.execute("SELECT litestream_status()").fetchone()[0]).get("uploads", 0) for c in conns)
    requests1 = requests.total()
    idle_threads, idle_fds, idle_rss = proc_counts()
    t0 = time.monotonic()
    for c in conns:
        c.close()
    phases["close"] = time.monotonic() - t0
    peak.done()
    requests_total = requests.total()
    peak_requests = requests.done()
    after_close = proc_counts()
    return {
        "databases": n,
        "store": "s3 (moto, loopback)" if s3 else "file://",
        "sync_interval": sync_interval,
        "app_threads": base_threads + 1,  # + the sampler
        "peak_threads": peak.threads,
        "peak_fds": peak.fds,
        "threads_after_open": after_open[0],
        "fds_after_open": after_open[1],
        "threads_idle": idle_threads,
        "fds_idle": idle_fds,
        "rss_kib_base": base_rss,
        "rss_kib_after_sync": after_sync[2],
        "rss_kib_idle": idle_rss,
        "rss_kib_per_db": round((idle_rss - base_rss) / n, 1),
        "threads_after_close": after_close[0],
        "fds_after_close": after_close[1],
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "idle_uploads": uploads1 - uploads0,
        "requests_total": requests_total,
        "requests_idle": requests1 - requests0,
        # The idle phase starts right after every database's one commit: compaction of
        # it into level 1 falls in the first window; after that, nothing.
        "requests_idle_per_10s": [b - a for a, b in zip([requests0] + requests_by_10s, requests_by_10s)],
        "requests_peak_per_s": peak_requests,
        "idle_replica_files_changed": changed(tree0, tree1),
        "idle_local_files_changed": changed(local0, local1),
        "idle_syscalls_read": io1[0] - io0[0],
        "idle_syscalls_write": io1[1] - io0[1],
        "idle_cpu_s": round(cpu1 - cpu0, 2),
        # The first window holds the ladder's work on the commit; the last ones show
        # what an idle database costs once settled.
        "idle_cpu_s_per_10s": [round(b - a, 2) for a, b in zip([cpu0] + cpu_by_10s, cpu_by_10s)],
        "base_fds": base_fds,
    }


def level0_count(replica):
    try:
        return len([x for x in os.listdir(os.path.join(replica, "ltx", "0")) if x.endswith(".ltx")])
    except FileNotFoundError:
        return 0


def wait_all(reps, n, minimum, limit):
    """Seconds until every replica holds at least `minimum` level-0 files, None past limit."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if all(level0_count(os.path.join(reps, str(i))) >= minimum for i in range(n)):
            return time.monotonic() - t0
        time.sleep(0.2)
    return None


def run_litestream(n, idle, work):
    dbs = os.path.join(work, "ls", "db")
    reps = os.path.join(work, "ls", "replicas")
    os.makedirs(dbs)
    os.makedirs(reps)
    for i in range(n):
        c = sqlite3.connect(f"{dbs}/{i}.db", isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        c.close()
    cfg = os.path.join(work, "ls", "litestream.yml")
    with open(cfg, "w") as f:
        f.write("dbs:\n")
        for i in range(n):
            f.write(f"  - path: {dbs}/{i}.db\n    replica:\n      url: file://{reps}/{i}\n")
    log = open(os.path.join(work, "ls", "litestream.log"), "w")
    t0 = time.monotonic()
    proc = subprocess.Popen([LITESTREAM, "replicate", "-config", cfg], stdout=log, stderr=subprocess.STDOUT)
    peak = Peak(proc.pid)
    phases = {}
    try:
        started = wait_all(reps, n, 1, 300)
        phases["start"] = time.monotonic() - t0
        conns = [sqlite3.connect(f"{dbs}/{i}.db", isolation_level=None, timeout=30) for i in range(n)]
        t0 = time.monotonic()
        for c in conns:
            c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
        phases["commit"] = time.monotonic() - t0
        t0 = time.monotonic()
        synced = wait_all(reps, n, 2, 120)
        phases["replicated"] = time.monotonic() - t0
        time.sleep(min(2.0, idle))
        cpu0, io0, tree0 = proc_cpu(proc.pid), proc_io(proc.pid), tree_state(reps)
        t0 = time.monotonic()
        time.sleep(idle)
        phases["idle"] = time.monotonic() - t0
        cpu1, io1, tree1 = proc_cpu(proc.pid), proc_io(proc.pid), tree_state(reps)
        threads, fds, rss = proc_counts(proc.pid)
        total_cpu = proc_cpu(proc.pid)
        for c in conns:
            c.close()
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        peak.done()
    return {
        "databases": n,
        "copes": started is not None and synced is not None,
        "peak_threads": peak.threads,
        "peak_fds": peak.fds,
        "threads_idle": threads,
        "fds_idle": fds,
        "rss_kib_idle": rss,
        "rss_kib_per_db": round(rss / n, 1),
        "cpu_s_total": round(total_cpu, 2),
        "idle_cpu_s": round(cpu1 - cpu0, 2),
        "idle_replica_files_changed": changed(tree0, tree1),
        "idle_syscalls_read": io1[0] - io0[0],
        "idle_syscalls_write": io1[1] - io0[1],
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
    }


def show(name, r):
    print(f"\n== {name}: {r['databases']} databases ==")
    for k, v in r.items():
        print(f"  {k:22} {v}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("databases", nargs="?", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=60.0, help="idle seconds (default 60)")
    ap.add_argument("--sync-interval", default="1s")
    ap.add_argument("--no-litestream", action="store_true", help="skip litestream replicate")
    ap.add_argument("--only-litestream", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--s3", action="store_true", help="replicate to a loopback moto S3 server")
    ap.add_argument("--results", default=RESULTS, help=f"where to write the JSON (default {RESULTS})")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Plain SQLite needs 3 descriptors per WAL database, we 4: 10,000 databases need more
    # than most default hard limits; root may raise it.
    want = max(hard, 5 * args.databases + 1024)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        hard = want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if 4 * args.databases + 100 > hard:
        sys.exit(f"{args.databases} databases need about {4 * args.databases + 100} descriptors (4 each: "
                 f"SQLite's 3 in WAL mode and our lock file); this process may have {hard} and cannot raise it")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    results = {"uptime_load": load, "nofile": hard}
    work = tempfile.mkdtemp(prefix="bench-scale-")
    moto = None
    try:
        s3 = None
        if args.s3:
            moto, s3 = stock_moto.start(S3_BUCKET, os.path.join(work, "moto.log"))
            os.environ.pop("AWS_CA_BUNDLE", None)
            os.environ["LITESTREAM_ACCESS_KEY_ID"] = "test"
            os.environ["LITESTREAM_SECRET_ACCESS_KEY"] = "test"
        if not args.only_litestream:
            results["ours"] = run_ours(args.databases, args.idle, work, args.sync_interval, s3)
            show("litestream-vfs (this process)", results["ours"])
        if not args.no_litestream:
            results["litestream"] = run_litestream(args.databases, args.idle, work)
            show("litestream replicate 0.5.17 (sidecar)", results["litestream"])
    finally:
        for c in OPEN:
            c.close()
        if moto:
            moto.terminate()
            moto.wait()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}", file=sys.stderr)
    print(f"\nload average at start: {' '.join(load)}")
    with open(args.results, "w") as f:
        json.dump(results, f, indent=2)
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
