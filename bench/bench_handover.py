#!/usr/bin/python3
"""Hand-over benchmark: how long does replication stop when the replicating process goes?

Three worker processes write one database through the VFS (a row every 20 ms each, the
default sync_interval of 1 s unless --sync-interval says otherwise), the way web-server
workers do. Again and again the replicating one (named by `leader.json`) is taken away
at a random moment -- SIGKILL (a crash, an OOM kill) or SIGTERM (a clean close of its
connection, as a recycled worker does) -- and the time is measured from its death to:

  role    another process names itself in leader.json (it holds the staging lock)
  upload  the replica (file://) holds a level-0 file past the TXID it had at the kill,
          i.e. the successor's first upload

The killed worker is started again before the next round. There is no anchor to run
side by side: Litestream's sidecar has no takeover -- when `litestream replicate` dies,
nothing replicates until something restarts it.

Must run under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Writes bench/results-handover.json and prints a table. See bench/README.md.
"""

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
RESULTS = os.path.join(HERE, "results-handover.json")
WORKERS = 3
# A round that sees no upload within this long counts as a failure (and is reported).
ROUND_LIMIT_S = 30.0


def worker_main(db, replica, interval):
    """Writes a row every 20 ms until killed; SIGTERM closes the connection cleanly."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(EXT)
    uri = f"file:{db}?vfs=litestream&replica={replica}&sync_interval={interval}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, pid INTEGER, v BLOB)")
    while not stop:
        try:
            conn.execute("INSERT INTO t(pid, v) VALUES (?, randomblob(100))", (os.getpid(),))
        except sqlite3.OperationalError as e:  # busy beyond 30 s: say so, keep going
            print(f"worker {os.getpid()}: {e}", file=sys.stderr)
        time.sleep(0.02)
    conn.close()


def replica_txid(replica_dir):
    """The highest TXID of a level-0 file in a file:// replica (0 if none)."""
    best = 0
    try:
        names = os.listdir(os.path.join(replica_dir, "ltx", "0"))
    except FileNotFoundError:
        return 0
    for name in names:
        if name.endswith(".ltx") and "-" in name:
            try:
                best = max(best, int(name[:-4].split("-")[1], 16))
            except ValueError:
                pass
    return best


def leader_pid(staging):
    try:
        with open(os.path.join(staging, "leader.json")) as f:
            return json.load(f).get("pid")
    except (OSError, ValueError):
        return None


def percentile(values, p):
    s = sorted(values)
    if not s:
        return None
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


class Rig:
    def __init__(self, root, interval):
        self.db = os.path.join(root, "app.db")
        self.staging = self.db + "-litestream"
        self.replica_dir = os.path.join(root, "replica")
        self.replica = "file://" + self.replica_dir
        self.interval = interval
        self.log = open(os.path.join(root, "workers.log"), "ab")
        self.procs = []

    def spawn(self):
        return subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--worker", self.db, self.replica, self.interval],
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )

    def start(self):
        for _ in range(WORKERS):
            self.procs.append(self.spawn())
            time.sleep(0.3)

    def replicator(self, limit=ROUND_LIMIT_S):
        """The worker that replicates now, waiting until one does and has uploaded."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            pid = leader_pid(self.staging)
            for i, p in enumerate(self.procs):
                if p.pid == pid and p.poll() is None and replica_txid(self.replica_dir) > 0:
                    return i
            time.sleep(0.01)
        raise RuntimeError("no worker replicates")

    def take_away(self, sig):
        """One round: returns (role_s, upload_s) for the replicator's successor."""
        victim = self.replicator()
        time.sleep(random.uniform(0.1, 1.5))  # a random point in its sync cycle
        proc = self.procs[victim]
        proc.send_signal(sig)
        proc.wait()
        dead = time.monotonic()
        # After the death: a clean close uploads what it had before it exits, and that
        # upload is not its successor's.
        before = replica_txid(self.replica_dir)
        role = upload = None
        while time.monotonic() - dead < ROUND_LIMIT_S and (role is None or upload is None):
            now = time.monotonic() - dead
            pid = leader_pid(self.staging)
            if role is None and pid not in (None, proc.pid):
                role = now
            if upload is None and replica_txid(self.replica_dir) > before:
                upload = now
            time.sleep(0.002)
        self.procs[victim] = self.spawn()
        return role, upload

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def summarise(name, rounds):
    uploads = [u for _, u in rounds if u is not None]
    roles = [r for r, _ in rounds if r is not None]
    row = {"kind": name, "rounds": len(rounds), "failed": len(rounds) - len(uploads)}
    for label, values in (("role", roles), ("upload", uploads)):
        for p in (50, 90, 99):
            v = percentile(values, p)
            row[f"{label}_p{p}_ms"] = None if v is None else round(v * 1000)
        row[f"{label}_max_ms"] = round(max(values) * 1000) if values else None
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", nargs=3, metavar=("DB", "REPLICA", "INTERVAL"), help=argparse.SUPPRESS)
    ap.add_argument("--kills", type=int, default=100, help="SIGKILL rounds (default 100)")
    ap.add_argument("--closes", type=int, default=20, help="clean-close rounds (default 20)")
    ap.add_argument("--sync-interval", default="1s", help="the workers' sync_interval (default 1s)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.worker:
        worker_main(*args.worker)
        return
    random.seed(args.seed)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-handover-") as root:
        rig = Rig(root, args.sync_interval)
        rig.start()
        try:
            results = []
            for name, sig, n in (("SIGKILL", signal.SIGKILL, args.kills), ("clean close", signal.SIGTERM, args.closes)):
                rounds = []
                for i in range(n):
                    rounds.append(rig.take_away(sig))
                    print(f"\r{name}: {i + 1}/{n}", end="", file=sys.stderr, flush=True)
                print(file=sys.stderr)
                results.append(summarise(name, rounds))
        finally:
            rig.stop()
    doc = {
        "sync_interval": args.sync_interval,
        "workers": WORKERS,
        "loadavg_before": load,
        "loadavg_after": os.getloadavg(),
        "cpus": os.cpu_count(),
        "results": results,
    }
    with open(RESULTS, "w") as f:
        json.dump(doc, f, indent=2)
    print(f"hand-over, {WORKERS} writers, sync_interval {args.sync_interval}; "
          f"load {load[0]:.2f} before, {doc['loadavg_after'][0]:.2f} after, {doc['cpus']} CPUs")
    print(f"{'':12} {'rounds':>6} {'failed':>6}   {'role p50/p90/p99/max ms':>26}   {'first upload p50/p90/p99/max ms':>32}")
    for r in results:
        role = "/".join(str(r[f"role_{k}"]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        up = "/".join(str(r[f"upload_{k}"]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms"))
        print(f"{r['kind']:12} {r['rounds']:>6} {r['failed']:>6}   {role:>26}   {up:>32}")
    if any(r["failed"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
