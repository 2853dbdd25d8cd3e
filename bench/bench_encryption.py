#!/usr/bin/python3
"""Encryption at rest (LTX v4): the same database replicated plaintext and encrypted,
then read both ways, side by side.

One database of --size-mib (default 1024 = 1 GiB; rows of text and random blobs, 4 KiB
pages) is built with plain SQLite and copied twice; each copy is replicated through our
extension to its own file:// replica, one plaintext, one with encryption_key=. Then,
modes interleaved, a fresh process per run:

  restore      target/release/litestream-vfs restore -o OUT URL [-key KEY]
               (wall time and CPU time of the process; output checked once)
  point query  a new process opens a read replica of URL and reads one row by id:
               open time, query time, pages fetched and store requests (median of
               --query-runs random ids)

Then the same restores from a loopback moto S3 server (bench_replica.py's, ranged GETs
served from the object's buffer), both replicas copied there: the realistic case, where
the server is most of the time (--s3-reps, 0 to skip; moto's CPU is reported too).

Everything lives in --dir, by default /dev/shm (tmpfs) when it exists, so that the disk
does not decide the figure; the headline figure in README is that one.

Prints `uptime` before and after (the machine is shared: compare the two columns of one
run, not runs of different days) and writes bench/results-encryption.json.
Must run under Debian's /usr/bin/python3 (its sqlite3 module loads extensions).
"""

import argparse
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXT = os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
CLI = os.path.join(ROOT, "target", "release", "litestream-vfs")
# A key for the benchmark only (RFC 9180 A.2's recipient key).
KEY = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb"


def uptime():
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def build(db, size_mib):
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT, note TEXT, payload BLOB)")
    batch = 20000
    n = 0
    while os.path.getsize(db) + os.path.getsize(db + "-wal") < size_mib * 2**20:
        conn.execute(
            "WITH RECURSIVE s(value) AS (SELECT ? UNION ALL SELECT value + 1 FROM s WHERE value < ?) "
            "INSERT INTO items(name, note, payload) SELECT 'customer ' || (value % 9973), "
            "printf('order %d paid %d times, ships to city %d', value, value % 7, value % 113), "
            "randomblob(120) FROM s",
            (n + 1, n + batch),
        )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        n += batch
    conn.close()
    return n


def replicate(db, url, key):
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(EXT)
    uri = f"file:{db}?vfs=litestream&replica={url}&compaction=off" + (f"&encryption_key={key}" if key else "")
    conn = sqlite3.connect(uri, uri=True)
    txid = conn.execute("SELECT litestream_sync(3600000)").fetchone()[0]
    conn.close()
    return txid


def remove_db(path):
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.exists(p):
            os.remove(p)


def restore(url, out, key, extra_env=None):
    remove_db(out)
    args = [CLI, "restore", "-o", out, url] + (["-key", key] if key else [])
    env = {k: v for k, v in os.environ.items() if not k.startswith("LITESTREAM_")}
    env.update(extra_env or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.monotonic()
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{r.stderr}")
    wall = time.monotonic() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


QUERY = r"""
import sqlite3, sys, time, json
ext, view, url, key, row = sys.argv[1:6]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
t0, c0 = time.monotonic(), time.process_time()
uri = f"file:{view}?vfs=litestream&role=replica&replica={url}&poll_interval=60s" + (f"&encryption_key={key}" if key else "")
conn = sqlite3.connect(uri, uri=True)
before = json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])
t1, c1 = time.monotonic(), time.process_time()
got = conn.execute("SELECT length(payload), name FROM items WHERE id = ?", (int(row),)).fetchone()
t2, c2 = time.monotonic(), time.process_time()
after = json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])
print(json.dumps({"open_s": t1 - t0, "query_s": t2 - t1, "open_cpu_s": c1 - c0, "query_cpu_s": c2 - c1, "row": got,
                  "pages": after["pages_fetched"] - before["pages_fetched"],
                  "requests": after["requests"] - before["requests"]}))
"""


def point_query(url, key, row, tmp):
    view = os.path.join(tmp, f"view-{random.randrange(10**9)}.db")
    out = subprocess.run(
        [sys.executable, "-c", QUERY, EXT, view, url, key or "", str(row)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out)


def s3_restores(tmp, replica_dirs, modes, out, reps):
    """Copies each file:// replica into a loopback moto and restores it from there,
    modes interleaved: {mode: {"restore_wall_s": [...], "restore_cpu_s": [...],
    "moto_cpu_s": [...]}}."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import bench_replica as br
    from bench_primary import proc_cpu_seconds

    bench = br.Bench(argparse.Namespace(dir=tmp, keep=False, stock_moto=False), prefix="moto-")
    try:
        bench.start_moto()
        urls = {}
        for mode in modes:
            t = time.monotonic()
            ltx = os.path.join(replica_dirs[mode], "ltx")
            for level in sorted(os.listdir(ltx), key=int):
                for name in sorted(os.listdir(os.path.join(ltx, level))):
                    path = os.path.join(ltx, level, name)
                    with open(path, "rb") as f:
                        req = urllib.request.Request(
                            f"http://127.0.0.1:{bench.port}/{br.BUCKET}/{mode}/{int(level):04x}/{name}",
                            data=f,
                            method="PUT",
                            headers={"Content-Length": str(os.path.getsize(path)), "Content-Type": "application/octet-stream"},
                        )
                        urllib.request.urlopen(req, timeout=600).read()
            urls[mode] = f"s3://{br.BUCKET}/{mode}?endpoint=http://127.0.0.1:{bench.port}&region=us-east-1&forcePathStyle=true"
            print(f"copied the {mode} replica to moto in {time.monotonic() - t:.1f} s", flush=True)
        results = {m: {"restore_wall_s": [], "restore_cpu_s": [], "moto_cpu_s": []} for m in modes}
        for rep in range(reps):
            for mode in list(modes) if rep % 2 == 0 else list(reversed(list(modes))):
                moto0 = proc_cpu_seconds(bench.moto.pid)
                wall, cpu = restore(urls[mode], out, modes[mode], br.CREDS)
                moto1 = proc_cpu_seconds(bench.moto.pid)
                results[mode]["moto_cpu_s"].append(moto1 - moto0 if None not in (moto0, moto1) else float("nan"))
                results[mode]["restore_wall_s"].append(wall)
                results[mode]["restore_cpu_s"].append(cpu)
                if rep == 0:
                    conn = sqlite3.connect(out)
                    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok", mode
                    conn.close()
                remove_db(out)
        return results
    finally:
        bench.cleanup()


def default_dir():
    """tmpfs when there is one with room for the database, its copies and replicas."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 8 * 2**30 and os.access("/dev/shm", os.W_OK):
            return "/dev/shm"
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=float, default=1024)
    ap.add_argument("--reps", type=int, default=3, help="restores of each mode (median)")
    ap.add_argument("--query-runs", type=int, default=15, help="cold point queries of each mode (median)")
    ap.add_argument("--s3-reps", type=int, default=3, help="restores of each mode from moto (median; 0: none)")
    ap.add_argument("--dir", default=default_dir(), help="where the temp directory goes (default /dev/shm if there is room)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results-encryption.json"))
    args = ap.parse_args()
    before = uptime()
    print("before:", before, flush=True)
    tmp = tempfile.mkdtemp(prefix="bench-encryption-", dir=args.dir)
    try:
        src = os.path.join(tmp, "src.db")
        rows = build(src, args.size_mib)
        size = os.path.getsize(src)
        print(f"database: {size / 2**20:.0f} MiB, {rows} rows", flush=True)
        modes = {"plaintext": None, "encrypted": KEY}
        urls = {}
        for mode, key in modes.items():
            db = os.path.join(tmp, f"{mode}.db")
            shutil.copy(src, db)
            urls[mode] = "file://" + os.path.join(tmp, f"replica-{mode}")
            t = time.monotonic()
            replicate(db, urls[mode], key)
            print(f"replicated {mode} in {time.monotonic() - t:.1f} s", flush=True)
        results = {
            m: {k: [] for k in ("restore_wall_s", "restore_cpu_s", "open_s", "open_cpu_s", "query_s", "query_cpu_s", "pages", "requests")}
            for m in modes
        }
        out = os.path.join(tmp, "restored.db")
        for rep in range(args.reps):
            order = list(modes) if rep % 2 == 0 else list(reversed(list(modes)))
            for mode in order:
                wall, cpu = restore(urls[mode], out, modes[mode])
                results[mode]["restore_wall_s"].append(wall)
                results[mode]["restore_cpu_s"].append(cpu)
                if rep == 0:
                    conn = sqlite3.connect(out)
                    check = conn.execute("SELECT count(*), sum(length(payload)) FROM items").fetchone()
                    conn.close()
                    assert check[0] == rows, (mode, check)
                remove_db(out)
        after_restores = uptime()
        print("after the file:// restores:", after_restores, flush=True)
        if args.s3_reps > 0:
            dirs = {m: u[len("file://"):] for m, u in urls.items()}
            for mode, r in s3_restores(tmp, dirs, modes, out, args.s3_reps).items():
                results[mode].update({"s3_" + k: v for k, v in r.items()})
        rng = random.Random(7)
        for run in range(args.query_runs):
            row = rng.randrange(1, rows + 1)
            for mode in (modes if run % 2 == 0 else reversed(list(modes))):
                r = point_query(urls[mode], modes[mode], row, tmp)
                assert r["row"] is not None, (mode, row)
                for k in ("open_s", "open_cpu_s", "query_s", "query_cpu_s", "pages", "requests"):
                    results[mode][k].append(r[k])
        summary = {
            mode: {k: statistics.median(v) for k, v in r.items()} for mode, r in results.items()
        }
        minimum = {mode: {k: min(v) for k, v in r.items()} for mode, r in results.items()}
        for k in results["plaintext"]:
            summary.setdefault("ratio", {})[k] = summary["encrypted"][k] / max(summary["plaintext"][k], 1e-9)
        # Wall times on a shared machine jump by milliseconds when another process holds
        # the core: the minimum and the CPU time say more than the median there.
        print(f"\n{'':26} {'plaintext':>21} {'encrypted':>21} {'ratio':>7}")
        print(f"{'':26} {'median':>10} {'min':>10} {'median':>10} {'min':>10}")
        for k, label in [
            ("restore_wall_s", "restore wall (s)"),
            ("restore_cpu_s", "restore CPU (s)"),
            ("open_s", "replica open (s)"),
            ("open_cpu_s", "replica open CPU (s)"),
            ("query_s", "cold point query (s)"),
            ("query_cpu_s", "cold point query CPU (s)"),
            ("pages", "pages fetched"),
            ("requests", "requests"),
            ("s3_restore_wall_s", "S3 (moto) restore wall (s)"),
            ("s3_restore_cpu_s", "S3 restore CPU (s)"),
            ("s3_moto_cpu_s", "S3 moto's CPU (s)"),
        ]:
            if k not in summary["plaintext"]:
                continue
            p, e = summary["plaintext"][k], summary["encrypted"][k]
            ratio = f"{e / p:7.2f}" if p else ""
            print(f"{label:26} {p:10.4f} {minimum['plaintext'][k]:10.4f} {e:10.4f} {minimum['encrypted'][k]:10.4f} {ratio}")
        after = uptime()
        print("after:", after)
        doc = {
            "database_bytes": size,
            "rows": rows,
            "uptime_before": before,
            "uptime_after_restores": after_restores,
            "uptime_after": after,
            "median": summary,
            "min": minimum,
            "runs": results,
        }
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=2)
        print(f"wrote {args.out}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
