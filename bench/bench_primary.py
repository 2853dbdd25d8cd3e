#!/usr/bin/python3
"""Primary-side benchmark: what does replicating through the litestream VFS cost a writer?

Runs the same workload -- small autocommit write transactions (one ~100-byte row
INSERT each, WAL mode, synchronous=NORMAL) -- side by side in one run:

  plain       plain SQLite, default VFS, extension not loaded
  vfs-file    our VFS, file:// replica, default sync_interval (1 s)
  litestream  plain SQLite while the real Litestream 0.5.17 replicates it (file://)
  vfs-s3      our VFS, s3:// replica on a local moto_server

Every run is a fresh worker process (so `plain` never has the extension loaded) on a
fresh database; the modes are interleaved and rotated across repetitions and the
median is reported. Then: replication lag (commit -> TXID uploaded) at sync_interval
1 s and 100 ms, and `sync=commit` throughput.

Must run under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Writes bench/results-primary.json and prints a table. See bench/README.md.
"""

import argparse
import glob
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

import stock_moto

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# BENCH_EXTENSION: another build of the extension, e.g. to compare before/after a change.
EXT = os.environ.get("BENCH_EXTENSION") or os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
LITESTREAM = os.path.join(ROOT, ".venv", "bin", "litestream")
MOTO = stock_moto.MOTO
RESULTS = os.path.join(HERE, "results-primary.json")
S3_BUCKET = "bench"
S3_ENV = {"LITESTREAM_ACCESS_KEY_ID": "test", "LITESTREAM_SECRET_ACCESS_KEY": "test"}
INSERT = "INSERT INTO t(v) VALUES (?)"


# --------------------------------------------------------------------------- worker
# One measurement in a fresh process. Spec and result are JSON (argv / last stdout line).


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


def open_db(spec):
    """Opens the benchmark database as the spec says; returns the connection."""
    if spec["vfs"]:
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(EXT)
        loader.close()
        params = {"vfs": "litestream", "replica": spec["replica"]}
        params.update(spec.get("params", {}))
        uri = "file:" + spec["db"] + "?" + "&".join(f"{k}={v}" for k, v in params.items())
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(spec["db"], isolation_level=None)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode.lower() != "wal":
        raise SystemExit(f"journal_mode is {mode}, not wal")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
    return conn


def payloads(n, seed):
    rnd = random.Random(seed)
    return ["%0100x" % rnd.getrandbits(400) for _ in range(n)]  # 100 ASCII bytes


def status(conn):
    return json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])


def worker_throughput(spec, conn):
    rows = payloads(spec["commits"], spec.get("seed", 1))
    cur = conn.cursor()
    lat = [0] * len(rows)
    deadline = spec.get("max_seconds")
    clock = time.perf_counter_ns
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    th0 = time.thread_time_ns()
    t0 = clock()
    done = 0
    for i, row in enumerate(rows):
        s = clock()
        cur.execute(INSERT, (row,))
        lat[i] = clock() - s
        done = i + 1
        if deadline is not None and (clock() - t0) > deadline * 1e9:
            break
    elapsed = clock() - t0
    th1 = time.thread_time_ns()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    lat = sorted(lat[:done])
    out = {
        "commits": done,
        "seconds": elapsed / 1e9,
        "commits_per_s": done / (elapsed / 1e9),
        "lat_p50_us": percentile(lat, 50) / 1e3,
        "lat_p90_us": percentile(lat, 90) / 1e3,
        "lat_p99_us": percentile(lat, 99) / 1e3,
        "lat_p999_us": percentile(lat, 99.9) / 1e3,
        "lat_max_us": lat[-1] / 1e3,
        # CPU of the committing thread only: what replication adds inline.
        "writer_cpu_us_per_commit": (th1 - th0) / 1e3 / done,
        # CPU of the whole process (incl. our background uploader thread).
        "process_cpu_us_per_commit": ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) * 1e6 / done,
        "ctx_switches_per_commit": ((ru1.ru_nvcsw - ru0.ru_nvcsw) + (ru1.ru_nivcsw - ru0.ru_nivcsw)) / done,
    }
    if spec["vfs"]:
        txid = conn.execute("SELECT litestream_txid()").fetchone()[0]
        before = status(conn)
        s = clock()
        synced = conn.execute("SELECT litestream_sync(60000)").fetchone()[0]
        out["final_sync_ms"] = (clock() - s) / 1e6
        out["final_sync_pending_commits"] = before.get("pending_commits")
        out["txid"] = txid
        out["synced_txid"] = synced
        after = status(conn)
        out["uploads"] = after.get("uploads")
        out["uploaded_bytes"] = after.get("uploaded_bytes")
        if synced < txid:
            raise SystemExit(f"litestream_sync returned {synced} < {txid}")
    return out


def worker_lag(spec, conn):
    """Commit one row, then poll litestream_status() every ~5 ms until it is uploaded."""
    rnd = random.Random(spec.get("seed", 7))
    cur = conn.cursor()
    clock = time.perf_counter_ns
    lags = []
    for i in range(spec["samples"]):
        # Irregular spacing over a whole sync_interval: starting right after the last
        # upload would phase-lock every sample to the uploader's timer.
        time.sleep(rnd.uniform(0.0, spec["max_gap"]))
        cur.execute(INSERT, ("%0100x" % rnd.getrandbits(400),))
        committed = clock()
        txid = conn.execute("SELECT litestream_txid()").fetchone()[0]
        give_up = committed + 30e9
        while True:
            if status(conn)["uploaded_txid"] >= txid:
                lags.append((clock() - committed) / 1e6)
                break
            if clock() > give_up:
                raise SystemExit(f"TXID {txid} not uploaded within 30 s: {status(conn)}")
            time.sleep(0.005)
    lags.sort()
    return {
        "samples": len(lags),
        "lag_p50_ms": percentile(lags, 50),
        "lag_p99_ms": percentile(lags, 99),
        "lag_max_ms": lags[-1],
        "lag_min_ms": lags[0],
    }


def worker_main(spec):
    conn = open_db(spec)
    cur = conn.cursor()
    for row in payloads(spec.get("warmup", 0), 99):
        cur.execute(INSERT, (row,))
    if spec["vfs"]:
        # The first open of a database through the VFS snapshots it: a one-time cost
        # that is not the steady state being measured.
        conn.execute("SELECT litestream_sync(60000)").fetchone()
    if spec["kind"] == "lag":
        out = worker_lag(spec, conn)
    else:
        out = worker_throughput(spec, conn)
    conn.close()
    print(json.dumps(out))


# ----------------------------------------------------------------------- orchestrator


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="bench-primary-", dir=args.dir)
        self.procs = []  # background processes we started: (Popen, name)
        self.moto_port = None
        self.counter = 0

    # --- helpers
    def fresh_dir(self, name):
        self.counter += 1
        d = os.path.join(self.tmp, f"{self.counter:03d}-{name}")
        os.makedirs(d)
        return d

    def run_worker(self, spec, env_extra=None, env_remove=()):
        env = dict(os.environ)
        for k in env_remove:
            env.pop(k, None)
        env.update(env_extra or {})
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
        if p.returncode != 0:
            raise RuntimeError(f"worker {spec.get('name')} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
        if p.stderr.strip() and self.args.verbose:
            sys.stderr.write(p.stderr)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def start(self, name, argv, log, env):
        logf = open(log, "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        self.procs.append((proc, name))
        return proc

    def stop(self, proc, sig=signal.SIGTERM, wait=10):
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(wait)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs = [(p, n) for p, n in self.procs if p is not proc]

    def cleanup(self):
        for proc, _ in list(self.procs):
            try:
                self.stop(proc, wait=5)
            except Exception:
                pass
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- moto
    def start_moto(self):
        proc, endpoint = stock_moto.start(S3_BUCKET, os.path.join(self.tmp, "moto.log"))
        self.procs.append((proc, "moto_server"))
        self.moto_port = int(endpoint.rsplit(":", 1)[1])

    def s3_spec(self, db, prefix):
        return {
            "replica": f"s3://{S3_BUCKET}/{prefix}",
            "params": {
                "endpoint": f"http://127.0.0.1:{self.moto_port}",
                "region": "us-east-1",
                "force-path-style": "true",
            },
        }

    # --- one run of each mode
    def run_mode(self, mode, rep, kind="throughput", extra=None):
        d = self.fresh_dir(mode)
        db = os.path.join(d, "app.db")
        spec = {
            "name": mode,
            "kind": kind,
            "db": db,
            "vfs": mode.startswith("vfs"),
            "commits": self.args.commits,
            "warmup": self.args.warmup,
            "seed": rep + 1,
        }
        env_extra, env_remove = {}, ()
        if mode.startswith("vfs-file"):
            spec["replica"] = "file://" + os.path.join(d, "replica")
        elif mode.startswith("vfs-s3"):
            spec.update(self.s3_spec(db, f"{os.path.basename(d)}"))
            env_extra, env_remove = S3_ENV, ("AWS_CA_BUNDLE",)
        spec.update(extra or {})
        if mode == "litestream":
            return self.run_with_litestream(spec, d)
        return self.run_worker(spec, env_extra, env_remove)

    def run_with_litestream(self, spec, d):
        db = spec["db"]
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v TEXT)")
        conn.commit()
        conn.close()
        replica = os.path.join(d, "replica")
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        log = os.path.join(d, "litestream.log")
        proc = self.start("litestream", [LITESTREAM, "replicate", db, "file://" + replica], log, env)
        try:
            # Started = its first snapshot (an LTX file) is in the replica.
            deadline = time.time() + 30
            while not glob.glob(os.path.join(replica, "ltx", "*", "*.ltx")):
                if proc.poll() is not None:
                    raise RuntimeError("litestream exited early:\n" + open(log).read()[-2000:])
                if time.time() > deadline:
                    raise RuntimeError("litestream did not start within 30 s:\n" + open(log).read()[-2000:])
                time.sleep(0.02)
            cpu0 = proc_cpu_seconds(proc.pid)
            out = self.run_worker(spec)
            # Litestream works on its own 1 s clock: give it one more sync_interval to
            # ship what the run wrote before reading its CPU time.
            time.sleep(1.5)
            cpu1 = proc_cpu_seconds(proc.pid)
            if cpu0 is not None and cpu1 is not None:
                out["litestream_cpu_us_per_commit"] = (cpu1 - cpu0) * 1e6 / out["commits"]
        finally:
            self.stop(proc, signal.SIGTERM)
        return out


def proc_cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def med(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=20000, help="commits per throughput run (default 20000)")
    ap.add_argument("--reps", type=int, default=7, help="repetitions per mode; the median is reported (default 7)")
    ap.add_argument("--warmup", type=int, default=500, help="commits before timing starts (default 500)")
    ap.add_argument("--lag-samples", type=int, default=30, help="commits timed to upload, per lag setting")
    ap.add_argument("--sync-commit-seconds", type=float, default=4.0, help="time budget of the sync=commit run")
    ap.add_argument("--modes", default="plain,vfs-file,litestream,vfs-s3", help="throughput modes to run")
    ap.add_argument("--no-lag", action="store_true", help="skip the lag and sync=commit measurements")
    ap.add_argument("--dir", default=None, help="where temp directories go (default $TMPDIR)")
    ap.add_argument("--out", default=RESULTS, help="JSON results path")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (for debugging)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(json.loads(args.worker))
        return

    for path, what in [(EXT, "make build"), (LITESTREAM, "make setup"), (MOTO, "make setup")]:
        if not os.path.exists(path):
            raise SystemExit(f"missing {path} (run {what})")
    probe = sqlite3.connect(":memory:")
    if not hasattr(probe, "enable_load_extension"):
        raise SystemExit(f"{sys.executable}: its sqlite3 module cannot load extensions; use /usr/bin/python3")
    probe.close()

    modes = [m for m in args.modes.split(",") if m]
    bench = Bench(args)
    started = time.time()
    runs = {m: [] for m in modes}
    extra = {}

    def term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, term)
    try:
        if "vfs-s3" in modes or not args.no_lag:
            bench.start_moto()
        print(
            f"bench-primary: {args.commits} commits x {args.reps} reps, modes {', '.join(modes)}; "
            f"SQLite {sqlite3.sqlite_version}; tmp {bench.tmp}",
            flush=True,
        )
        for rep in range(args.reps):
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]  # rotate: no fixed position
            for mode in order:
                r = bench.run_mode(mode, rep)
                runs[mode].append(r)
                print(
                    f"  rep {rep + 1}/{args.reps} {mode:<11} {r['commits_per_s']:>9.0f} commits/s"
                    f"  p50 {r['lat_p50_us']:6.1f} us  p99 {r['lat_p99_us']:7.1f} us"
                    f"  writer cpu {r['writer_cpu_us_per_commit']:5.1f} us/commit"
                    + (f"  final sync {r['final_sync_ms']:.1f} ms" if "final_sync_ms" in r else ""),
                    flush=True,
                )
        if not args.no_lag:
            lag_cfgs = [
                ("lag vfs-file sync_interval=1s", "vfs-file", {}, 1.0),
                ("lag vfs-file sync_interval=100ms", "vfs-file", {"sync_interval": "100ms"}, 0.1),
                ("lag vfs-s3 sync_interval=1s", "vfs-s3", {}, 1.0),
                ("lag vfs-s3 sync_interval=100ms", "vfs-s3", {"sync_interval": "100ms"}, 0.1),
            ]
            for label, mode, params, interval in lag_cfgs:
                spec = {"samples": args.lag_samples, "warmup": 50, "max_gap": interval}
                r = run_lag(bench, mode, params, spec)
                extra[label] = r
                print(
                    f"  {label:<33} p50 {r['lag_p50_ms']:7.1f} ms  p99 {r['lag_p99_ms']:7.1f} ms"
                    f"  (n={r['samples']}, min {r['lag_min_ms']:.1f}, max {r['lag_max_ms']:.1f})",
                    flush=True,
                )
            r = run_sync_commit(bench, args)
            extra["sync=commit vfs-file"] = r
            print(
                f"  sync=commit vfs-file                {r['commits_per_s']:7.0f} commits/s"
                f"  p50 {r['lat_p50_us'] / 1e3:.2f} ms  p99 {r['lat_p99_us'] / 1e3:.2f} ms (n={r['commits']})",
                flush=True,
            )
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    finally:
        bench.cleanup()

    report(args, runs, extra, time.time() - started)


def run_lag(bench, mode, params, spec_extra):
    d = bench.fresh_dir(mode + "-lag")
    db = os.path.join(d, "app.db")
    spec = {"name": "lag " + mode, "kind": "lag", "db": db, "vfs": True, "seed": 11}
    env_extra, env_remove = {}, ()
    if mode == "vfs-file":
        spec["replica"] = "file://" + os.path.join(d, "replica")
        spec["params"] = {}
    else:
        spec.update(bench.s3_spec(db, os.path.basename(d)))
        env_extra, env_remove = S3_ENV, ("AWS_CA_BUNDLE",)
    spec["params"].update(params)
    spec.update(spec_extra)
    return bench.run_worker(spec, env_extra, env_remove)


def run_sync_commit(bench, args):
    d = bench.fresh_dir("vfs-file-sync-commit")
    spec = {
        "name": "sync=commit",
        "kind": "throughput",
        "db": os.path.join(d, "app.db"),
        "vfs": True,
        "replica": "file://" + os.path.join(d, "replica"),
        "params": {"sync": "commit"},
        "commits": args.commits,
        "max_seconds": args.sync_commit_seconds,
        "warmup": 20,
        "seed": 5,
    }
    return bench.run_worker(spec)


def report(args, runs, extra, elapsed):
    results = []

    def add(name, value, unit):
        if value is not None:
            results.append({"name": name, "value": round(value, 3), "unit": unit})

    plain = med(runs.get("plain", []), "commits_per_s")
    plain_cpu = med(runs.get("plain", []), "process_cpu_us_per_commit")
    rows = []
    for mode, rs in runs.items():
        if not rs:
            continue
        cps = med(rs, "commits_per_s")
        ratio = cps / plain if plain else None
        # Paired ratio: each rep's run against the plain run of the same rep.
        paired = None
        if plain and mode != "plain" and len(runs.get("plain", [])) == len(rs):
            paired = statistics.median(r["commits_per_s"] / p["commits_per_s"] for r, p in zip(rs, runs["plain"]))
        row = {
            "mode": mode,
            "cps": cps,
            "ratio": ratio,
            "paired": paired,
            "p50": med(rs, "lat_p50_us"),
            "p99": med(rs, "lat_p99_us"),
            "wcpu": med(rs, "writer_cpu_us_per_commit"),
            "pcpu": med(rs, "process_cpu_us_per_commit"),
            "lscpu": med(rs, "litestream_cpu_us_per_commit"),
            "sync": med(rs, "final_sync_ms"),
        }
        # CPU efficiency: plain's CPU per commit over this mode's (all its threads, plus
        # the Litestream process for `litestream`). Steadier than wall-clock throughput
        # on a busy machine.
        total_cpu = (row["pcpu"] or 0) + (row["lscpu"] or 0)
        row["cpu_ratio"] = plain_cpu / total_cpu if plain_cpu and total_cpu else None
        rows.append(row)
        add(f"{mode} commits/s", cps, "commits/s")
        add(f"{mode} ratio to plain", ratio, "x")
        add(f"{mode} paired ratio to plain", paired, "x")
        add(f"{mode} commit latency p50", row["p50"], "us")
        add(f"{mode} commit latency p99", row["p99"], "us")
        add(f"{mode} commit latency p99.9", med(rs, "lat_p999_us"), "us")
        add(f"{mode} writer thread cpu per commit", row["wcpu"], "us")
        add(f"{mode} process cpu per commit", row["pcpu"], "us")
        add(f"{mode} litestream process cpu per commit", row["lscpu"], "us")
        add(f"{mode} final litestream_sync", row["sync"], "ms")
        add(f"{mode} cpu efficiency ratio to plain", row["cpu_ratio"], "x")
    for label, r in extra.items():
        if label.startswith("lag"):
            add(f"{label} p50", r["lag_p50_ms"], "ms")
            add(f"{label} p99", r["lag_p99_ms"], "ms")
            add(f"{label} max", r["lag_max_ms"], "ms")
        else:
            add(f"{label} commits/s", r["commits_per_s"], "commits/s")
            add(f"{label} commit latency p50", r["lat_p50_us"] / 1e3, "ms")
            add(f"{label} commit latency p99", r["lat_p99_us"] / 1e3, "ms")

    doc = {
        "benchmark": "primary",
        "workload": {
            "commits_per_run": args.commits,
            "repetitions": args.reps,
            "warmup_commits": args.warmup,
            "row_bytes": 100,
            "journal_mode": "wal",
            "synchronous": "NORMAL",
            "statistic": "median of repetitions",
        },
        "sqlite_version": sqlite3.sqlite_version,
        "python": sys.executable,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "unix_time": int(time.time()),
        "elapsed_s": round(elapsed, 1),
        "results": results,
        "runs": runs,
        "extra": extra,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"

    print()
    print(f"{'mode':<11} {'commits/s':>10} {'ratio':>6} {'paired':>6} {'p50 us':>7} {'p99 us':>8}"
          f" {'writer cpu':>10} {'proc cpu':>10} {'cpu ratio':>9} {'final sync':>10}")
    for r in rows:
        cpu_note = fmt(r["pcpu"], ".1f") + (f"+{r['lscpu']:.1f}" if r["lscpu"] is not None else "")
        print(
            f"{r['mode']:<11} {fmt(r['cps'], '.0f'):>10} {fmt(r['ratio'], '.3f'):>6} {fmt(r['paired'], '.3f'):>6}"
            f" {fmt(r['p50'], '.1f'):>7} {fmt(r['p99'], '.1f'):>8} {fmt(r['wcpu'], '.1f'):>10} {cpu_note:>10}"
            f" {fmt(r['cpu_ratio'], '.3f'):>9}"
            f" {(fmt(r['sync'], '.1f') + ' ms') if r['sync'] is not None else '-':>10}"
        )
    print("  ratio = median commits/s over plain's; paired = median of per-repetition ratios;")
    print("  cpu columns in us/commit (writer = committing thread; proc = whole process, '+' = the")
    print("  Litestream process); cpu ratio = plain proc cpu / this mode's. Goal for vfs-*: >= 0.97.")
    for label, r in extra.items():
        if label.startswith("lag"):
            print(f"{label:<33} p50 {r['lag_p50_ms']:7.1f} ms   p99 {r['lag_p99_ms']:7.1f} ms")
        else:
            print(f"{label:<33} {r['commits_per_s']:7.0f} commits/s  p50 {r['lat_p50_us'] / 1e3:.2f} ms"
                  f"  p99 {r['lat_p99_us'] / 1e3:.2f} ms")
    print(f"results: {os.path.relpath(args.out)}  ({elapsed:.0f} s)")


if __name__ == "__main__":
    main()
