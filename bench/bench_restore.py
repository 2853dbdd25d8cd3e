#!/usr/bin/python3
"""Restore benchmark: `litestream-vfs restore` (ours) vs `litestream restore` 0.5.17, with
`cp` of the database file as the floor.

One >= 1 GiB database is written through our extension (role primary, a file:// replica)
in ~64 MiB transactions, then `litestream_sync()`: the replica is the snapshot our primary
took at the first open plus one level-0 file per upload. The same LTX files are copied
into a loopback moto S3 server (S3 key layout). Optionally (--litestream-replica) the real
`litestream replicate` 0.5.17 also replicates the finished database to moto, so both tools
restore a replica Litestream made too. Then, a fresh process per run, modes interleaved
and rotated between repetitions:

  ours        target/release/litestream-vfs restore -o OUT URL
  litestream  .venv/bin/litestream restore -o OUT URL   (AWS_CA_BUNDLE unset)
  cp          cp DB OUT             (the floor: no decoding, no checksums, no fsync)
  cp+fsync    cp DB OUT && sync OUT (the floor for a durable restore; both tools fsync)

Each restore's output is checked once: same rows as the source (count and sum), and
whether it is byte-identical to the source file. Everything runs with a warm page cache
(the replica and the database were just written; dropping caches needs root).

moto 5 reads a whole object for every ranged GET: the moto we start (bench_replica.py's)
serves ranged GETs from the object's buffer (--stock-moto turns that off). Litestream
GETs whole objects, which moto answers from memory.

Must run under Debian's /usr/bin/python3 (the build loads our extension into its
sqlite3 module). Writes bench/results-restore.json and prints a table. See bench/README.md.
"""

import argparse
import json
import os
import re
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_replica as br  # noqa: E402  (moto server, process handling, the table)
from bench_primary import proc_cpu_seconds  # noqa: E402

ROOT = br.ROOT
EXT = br.EXT
LITESTREAM = br.LITESTREAM
CLI = os.path.join(ROOT, "target", "release", "litestream-vfs")
RESULTS = os.path.join(HERE, "results-restore.json")
CHECK = "SELECT count(*), sum(amount) FROM orders"
TOOLS = ["ours", "litestream"]
FLOORS = ["cp", "cp+fsync"]


# ------------------------------------------------------------- build worker (fresh process)


def build_main(spec):
    """Writes the database through our extension, `step` rows per transaction, then
    checkpoints and waits until everything is in the replica. Prints the final TXID."""
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(EXT)  # registers VFS "litestream" process-wide
    loader.close()
    uri = f"file:{spec['db']}?vfs=litestream&replica={spec['replica']}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("BEGIN")

    def commit():
        conn.execute("COMMIT")
        conn.execute("BEGIN")

    br.fill_orders(conn, spec["rows"], step=spec["step"], each_batch=commit)
    conn.execute("COMMIT")
    conn.execute("SELECT litestream_sync(900000)").fetchone()
    # The source file of `cp` must hold every page: fold the WAL back into it.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    txid = conn.execute("SELECT litestream_sync(900000)").fetchone()[0]
    conn.close()
    print(json.dumps({"txid": txid}))


# ----------------------------------------------------------------------- orchestrator


def rows_check(path):
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.execute(CHECK).fetchone())
    finally:
        conn.close()


class RestoreBench(br.Bench):
    def __init__(self, args):
        super().__init__(args, prefix="bench-restore-")
        self.replica_dir = os.path.join(self.tmp, "replica")
        self.out = os.path.join(self.tmp, "restored.db")

    def s3_url(self, prefix):
        return f"s3://{br.BUCKET}/{prefix}?endpoint=http://127.0.0.1:{self.port}&region=us-east-1&forcePathStyle=true"

    # --- the database, written through our extension
    def build(self):
        rows = int(self.args.size_mib * 1024 * 1024) // 1024
        step = max(1, int(self.args.txn_mib * 1024))  # ~1 KiB a row
        spec = {"db": self.db, "replica": "file://" + self.replica_dir, "rows": rows, "step": step}
        t0 = time.time()
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--build", json.dumps(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=3600,
            env=self.env(),
        )
        if p.returncode != 0:
            raise RuntimeError(f"build failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        txid = json.loads(p.stdout.strip().splitlines()[-1])["txid"]
        self.rows = rows
        db_bytes = os.path.getsize(self.db)
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        page_size, pages = (conn.execute(f"PRAGMA {x}").fetchone()[0] for x in ("page_size", "page_count"))
        conn.close()
        files = self.replica_files()
        self.log(
            f"  wrote {db_bytes / 2**30:.3f} GiB through the extension in {time.time() - t0:.0f} s: {rows} rows, "
            f"{pages} pages, TXID {txid}; replica {len(files)} LTX files, "
            f"{sum(s for _, _, s in files) / 2**30:.3f} GiB"
        )
        if db_bytes < 2**30 and self.args.size_mib >= 1024:
            raise RuntimeError(f"database is only {db_bytes} bytes")
        return {
            "rows": rows,
            "bytes": db_bytes,
            "pages": pages,
            "page_size": page_size,
            "txid": txid,
            "rows_per_txn": step,
            "build_s": round(time.time() - t0, 1),
        }

    def replica_files(self):
        """[(level, name, size)] of the file:// replica."""
        out = []
        ltx = os.path.join(self.replica_dir, "ltx")
        for level in sorted(os.listdir(ltx), key=int):
            for name in sorted(os.listdir(os.path.join(ltx, level))):
                if name.endswith(".ltx"):
                    out.append((int(level), name, os.path.getsize(os.path.join(ltx, level, name))))
        return out

    def upload(self, prefix):
        """Copies the file:// replica into moto under `prefix`, in S3's key layout."""
        t0 = time.time()
        files = self.replica_files()
        for level, name, size in files:
            path = os.path.join(self.replica_dir, "ltx", str(level), name)
            with open(path, "rb") as f:
                req = urllib.request.Request(
                    f"http://127.0.0.1:{self.port}/{br.BUCKET}/{prefix}/{level:04x}/{name}",
                    data=f,
                    method="PUT",
                    # Without a content type urllib says form-urlencoded, which moto's
                    # server then waits to parse as a form.
                    headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"},
                )
                urllib.request.urlopen(req, timeout=600).read()
        self.log(f"  copied the replica to moto s3://{br.BUCKET}/{prefix} in {time.time() - t0:.0f} s")
        return [{"level": lv, "name": n, "size": s} for lv, n, s in files]

    # --- one measured command
    def run(self, argv, env):
        for suffix in ("", "-wal", "-shm", ".tmp", ".litestream-restore.tmp"):
            if os.path.exists(self.out + suffix):
                os.remove(self.out + suffix)
        log = os.path.join(self.tmp, "run.log")
        moto0 = proc_cpu_seconds(self.moto.pid) if self.port else None
        with open(log, "wb") as logf:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env)
            _, status, ru = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        moto1 = proc_cpu_seconds(self.moto.pid) if self.port else None
        text = open(log, errors="replace").read()
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{text[-3000:]}")
        return {
            "seconds": wall,
            "cpu_s": ru.ru_utime + ru.ru_stime,
            "user_s": ru.ru_utime,
            "sys_s": ru.ru_stime,
            "maxrss_mib": ru.ru_maxrss / 1024,
            "moto_cpu_s": (moto1 - moto0) if moto0 is not None and moto1 is not None else None,
            "output": text[-600:],
        }

    def command(self, tool, url):
        if tool == "ours":
            return [CLI, "restore", "-o", self.out] + self.args.ours_args.split() + [url]
        if tool == "litestream":
            return [LITESTREAM, "restore", "-o", self.out, url]
        if tool == "cp":
            return ["cp", self.db, self.out]
        return ["sh", "-c", 'cp "$0" "$1" && sync "$1"', self.db, self.out]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=float, default=1126, help="database size (default 1126 = 1.1 GiB)")
    ap.add_argument("--txn-mib", type=float, default=64, help="size of one write transaction while building")
    ap.add_argument("--reps", type=int, default=3, help="runs of each mode (median reported)")
    ap.add_argument("--stores", default="file,s3", help="where the replica made by ours is restored from")
    ap.add_argument("--litestream-replica", action="store_true", help="also restore a replica `litestream replicate` made (on moto)")
    ap.add_argument("--ours-args", default="", help="extra flags for `litestream-vfs restore` (e.g. '-parallelism 8')")
    br.add_common_args(ap, RESULTS)
    ap.add_argument("--build", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.build:
        build_main(json.loads(args.build))
        return
    for path, what in [(EXT, "make build"), (CLI, "make build"), (LITESTREAM, "make setup"), (br.VENV_PY, "make setup")]:
        if not os.path.exists(path):
            raise SystemExit(f"missing {path} (run {what})")
    probe = sqlite3.connect(":memory:")
    if not hasattr(probe, "enable_load_extension"):
        raise SystemExit(f"{sys.executable}: its sqlite3 module cannot load extensions; use /usr/bin/python3")
    probe.close()

    def term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, term)
    stores = [s for s in args.stores.split(",") if s]
    bench = RestoreBench(args)
    started = time.time()
    load_before = os.getloadavg()
    try:
        bench.log(f"bench-restore: stores {', '.join(stores)}; tmp {bench.tmp}; load {load_before[0]:.1f}")
        needs_s3 = "s3" in stores or args.litestream_replica
        if needs_s3:
            bench.start_moto()
            bench.log(f"  moto on 127.0.0.1:{bench.port}" + (" (stock ranged GETs)" if args.stock_moto else ""))
        db_info = bench.build()
        source_rows = rows_check(bench.db)
        source_sha = br.file_sha256(bench.db)
        replicas = {"file": ("file://" + bench.replica_dir, bench.replica_files())}
        if "s3" in stores:
            replicas["s3"] = (bench.s3_url("ours"), bench.upload("ours"))
        if args.litestream_replica:
            # bench_replica's replicate(): litestream 0.5.17 on the finished database until
            # its snapshot is stored (it switches the file to rollback-journal mode after).
            info = bench.replicate()
            replicas["s3-litestream"] = (bench.replica_url(), info["objects"])
        cases = [(tool, store) for store in replicas for tool in TOOLS] + [(f, None) for f in FLOORS]
        runs = {case: [] for case in cases}
        checks = {}
        for rep in range(args.reps):
            k = rep % len(cases)
            for tool, store in cases[k:] + cases[:k]:
                argv = bench.command(tool, replicas[store][0] if store else None)
                r = bench.run(argv, bench.env())
                if (tool, store) not in checks and store:
                    checks[(tool, store)] = {
                        "rows": rows_check(bench.out),
                        "rows_match": rows_check(bench.out) == source_rows,
                        "identical_to_source": br.file_sha256(bench.out) == source_sha,
                    }
                runs[(tool, store)].append(r)
                bench.log(
                    f"  {rep + 1}/{args.reps} {tool:<10} {store or '':<14} {r['seconds']:7.2f} s"
                    f"  cpu {r['cpu_s']:6.2f} s  rss {r['maxrss_mib']:7.1f} MiB"
                    + (f"  moto cpu {r['moto_cpu_s']:.2f} s" if store and store.startswith("s3") and r["moto_cpu_s"] is not None else "")
                )
        for case, c in checks.items():
            if not c["rows_match"]:
                raise RuntimeError(f"{case}: restored rows {c['rows']} != source {source_rows}")
        doc = report(args, db_info, replicas, runs, checks, load_before, time.time() - started)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    finally:
        bench.cleanup()
    return doc


def report(args, db_info, replicas, runs, checks, load_before, elapsed):
    def med(case, key="seconds"):
        vals = [r[key] for r in runs.get(case, []) if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    results, goals, summary = [], {}, {}

    def add(name, value, unit):
        if value is not None:
            results.append({"name": name, "value": round(value, 4), "unit": unit})

    cp, cp_sync = med(("cp", None)), med(("cp+fsync", None))
    for store in replicas:
        ours, ls = med(("ours", store)), med(("litestream", store))
        for tool in TOOLS:
            case = (tool, store)
            s = {k: med(case, k) for k in ("seconds", "cpu_s", "maxrss_mib", "moto_cpu_s")}
            s["min_seconds"] = min((r["seconds"] for r in runs[case]), default=None)
            s["mib_per_s"] = db_info["bytes"] / 2**20 / s["seconds"] if s["seconds"] else None
            s.update(checks.get(case, {}))
            summary[f"{tool} {store}"] = s
            add(f"{tool} restore from {store} seconds", s["seconds"], "s")
            add(f"{tool} restore from {store} CPU seconds", s["cpu_s"], "cpu s")
            add(f"{tool} restore from {store} max RSS", s["maxrss_mib"], "MiB")
        if ours and ls:
            x = ls / ours
            add(f"speed-up ours vs litestream ({store})", x, "x")
            goals[f"{store}: at least 2x faster than litestream restore"] = {"value": round(x, 2), "met": x >= 2}
        if ours and cp:
            x = ours / cp
            add(f"ours ({store}) / cp", x, "x")
            goals[f"{store}: within 2x of cp"] = {"value": round(x, 2), "met": x <= 2}
        if ours and cp_sync:
            add(f"ours ({store}) / cp+fsync", ours / cp_sync, "x")

    # Wall-clock times are the only results in "s" (bench/chart.py draws those), after the tools.
    add("cp seconds", cp, "s")
    add("cp+fsync seconds", cp_sync, "s")
    doc = {
        "benchmark": "restore",
        "database": db_info,
        "replicas": {k: {"url": re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", v[0]), "files": v[1]} for k, v in replicas.items()},
        "workload": {
            "reps": args.reps,
            "statistic": "median wall-clock seconds of fresh processes, modes interleaved and rotated",
            "page_cache": "warm",
            "ours_args": args.ours_args,
            "moto": "stock" if args.stock_moto else "ranged GETs served from the object buffer",
        },
        "binaries": {"ours": br.ext_info(CLI), "litestream": br.ext_info(LITESTREAM)},
        "cpus": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "unix_time": int(time.time()),
        "elapsed_s": round(elapsed, 1),
        "goals": goals,
        "results": results,
        "summary": summary,
        "runs": {f"{t} {s or ''}".strip(): rs for (t, s), rs in runs.items()},
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    def fmt(v, spec):
        return format(v, spec) if v is not None else "-"

    print()
    nfiles = {k: len(v[1]) for k, v in replicas.items()}
    print(
        f"database {db_info['bytes'] / 2**30:.3f} GiB, {db_info['pages']} pages, written through the extension "
        f"({db_info['rows_per_txn']} rows a transaction); replica files: "
        + ", ".join(f"{k} {n}" for k, n in nfiles.items())
    )
    print(f"{'store':<14} {'tool':<11} {'median s':>9} {'min s':>7} {'MiB/s':>7} {'cpu s':>7} {'rss MiB':>8}"
          f" {'moto cpu':>9} {'/cp':>6} {'/cp+fs':>7} {'ls/ours':>8}")
    for store in replicas:
        ours = summary[f"ours {store}"]["seconds"]
        for tool in TOOLS:
            s = summary[f"{tool} {store}"]
            sec = s["seconds"]
            print(
                f"{store:<14} {tool:<11} {fmt(sec, '.2f'):>9} {fmt(s['min_seconds'], '.2f'):>7} {fmt(s['mib_per_s'], '.0f'):>7}"
                f" {fmt(s['cpu_s'], '.2f'):>7} {fmt(s['maxrss_mib'], '.0f'):>8} {fmt(s['moto_cpu_s'], '.2f'):>9}"
                f" {fmt(sec / cp if sec and cp else None, '.2f'):>6} {fmt(sec / cp_sync if sec and cp_sync else None, '.2f'):>7}"
                f" {fmt(sec / ours if tool == 'litestream' and sec and ours else None, '.2f'):>8}"
            )
    for floor, v in (("cp", cp), ("cp+fsync", cp_sync)):
        print(f"{'-':<14} {floor:<11} {fmt(v, '.2f'):>9}")
    print("  median of fresh processes (warm page cache); cpu = user+sys of the restoring process;")
    print("  /cp, /cp+fs = time over cp of the database file (without / with fsync); ls/ours = litestream over ours.")
    same = [f"{t} from {st}" for (t, st), c in checks.items() if c["identical_to_source"]]
    print(f"  byte-identical to the database file: {', '.join(same) or 'none'}; every output has its rows")
    print(f"  load average {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after, {os.cpu_count()} CPUs")
    br.print_goals(goals, args.out, elapsed)
    return doc


if __name__ == "__main__":
    main()
