#!/usr/bin/python3
"""Read-replica benchmark: our VFS (role=replica) vs the real Litestream VFS 0.5.17.

One >= 1 GiB database is replicated once, with the real `litestream replicate` 0.5.17,
to a loopback moto S3 server. Then, on that same replica:

  ours            our extension, `role=replica`, s3:// on moto
  litestream-vfs  the `litestream-vfs` 0.5.17 extension (PyPI), same replica
  plain           plain SQLite on the local database that was replicated (warm baseline)

are measured for:

  cold   open -> first row of a point query by primary key, a fresh process per run
         (median of --cold-runs), with the requests and bytes each made to S3
  warm   point-query latency on one connection: 1000 random ids after a warm-up pass
         of the same ids (p50/p99)
  scan   SELECT count(*), sum(amount) FROM orders (bounded by --scan-seconds over S3;
         an unfinished scan is reported with its rate and a projection)

Requests and bytes are counted inside moto by a WSGI wrapper (both VFSes go through
it); ours also reports its own (`litestream_status()`). moto 5 reads a whole object
for every ranged GET, which on a 1 GiB snapshot costs ~1 s and ~2 GiB of memory per
request and would make the server, not the VFS, the thing measured: the moto we start
serves a ranged GET from the object's buffer instead (--stock-moto turns that off).

Must run under Debian's /usr/bin/python3 (its sqlite3 module can load extensions).
Writes bench/results-replica.json and prints a table. See bench/README.md.
"""

import argparse
import glob
import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EXT = os.path.join(ROOT, "target", "release", "liblitestream_vfs.so")
VENV = os.path.join(ROOT, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
LITESTREAM = os.path.join(VENV, "bin", "litestream")
RESULTS = os.path.join(HERE, "results-replica.json")
BUCKET = "bench"
PREFIX = "big"
CREDS = {"LITESTREAM_ACCESS_KEY_ID": "test", "LITESTREAM_SECRET_ACCESS_KEY": "test"}
POINT = "SELECT id, customer, amount, note FROM orders WHERE id = ?"
SCAN = "SELECT count(*), sum(amount) FROM orders"
MODES = ["ours", "litestream-vfs", "plain"]
COUNTERS = "/__bench__/counters"


def lsvfs_path():
    """The litestream-vfs 0.5.17 loadable extension inside the venv's wheel."""
    hits = sorted(glob.glob(os.path.join(VENV, "lib", "python3*", "site-packages", "litestream_vfs", "litestream-vfs.so")))
    return hits[0] if hits else None


def percentile(sorted_values, p):
    if not sorted_values:
        return None
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


# ----------------------------------------------------------------- moto (venv python)
# `bench_replica.py --moto-server PORT [--stock-moto]` runs under .venv/bin/python: moto's
# own server app, wrapped to count requests and response bytes, and (unless
# --stock-moto) with ranged GETs served from the object's buffer.


def moto_server_main(port, stock):
    import threading

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    if not stock:
        from moto.s3 import models, responses

        local = threading.local()

        class RangeView:
            """Stands in for FakeKey.value while a ranged GET is answered: moto only takes
            its len() and one slice of it, and that slice is read from the buffer."""

            def __init__(self, key):
                self.key = key

            def __len__(self):
                return self.key.size

            def __bool__(self):
                return self.key.size > 0

            def __getitem__(self, s):
                start, stop, _ = s.indices(self.key.size)
                with self.key.lock:
                    self.key._value_buffer.seek(start)
                    return self.key._value_buffer.read(max(0, stop - start))

            def whole(self):
                return self[0 : self.key.size]

        value = models.FakeKey.value

        def value_get(key):
            if getattr(local, "ranged", False):
                return RangeView(key)
            return value.fget(key)

        models.FakeKey.value = property(value_get, value.fset)
        key_response = responses.S3Response.key_response

        def ranged_key_response(self, request, full_url, headers):
            rng = request.headers.get("range", "") or ""
            local.ranged = request.method == "GET" and rng.startswith("bytes=") and "," not in rng
            try:
                status, hdrs, body = key_response(self, request, full_url, headers)
            finally:
                local.ranged = False
            if isinstance(body, RangeView):  # a range moto answered with the whole object
                body = body.whole()
            return status, hdrs, body

        responses.S3Response.key_response = ranged_key_response

    class Counting:
        """Counts what clients ask of S3: requests by kind, object bytes sent; keeps a
        short log. GET /__bench__/counters[?reset=1] answers JSON (not counted)."""

        def __init__(self, app):
            self.app = app
            self.lock = threading.Lock()
            self.reset()

        def reset(self):
            self.counts = {"list": 0, "get": 0, "head": 0, "put": 0, "other": 0}
            self.get_bytes = 0
            self.resp_bytes = 0
            self.log = []
            self.t0 = time.perf_counter()

        def snapshot(self, with_log):
            out = {
                "requests": sum(self.counts.values()),
                "by_kind": dict(self.counts),
                "get_bytes": self.get_bytes,
                "resp_bytes": self.resp_bytes,
            }
            if with_log:
                out["log"] = list(self.log)
            return out

        def __call__(self, environ, start_response):
            path = environ.get("PATH_INFO", "")
            qs = environ.get("QUERY_STRING", "")
            if path == COUNTERS:
                with self.lock:
                    body = json.dumps(self.snapshot("log=1" in qs)).encode()
                    if "reset=1" in qs:
                        self.reset()
                start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
                return [body]
            method = environ.get("REQUEST_METHOD", "")
            parts = [p for p in path.split("/") if p]
            if method == "GET" and len(parts) <= 1:
                kind = "list"
            elif method == "GET":
                kind = "get"
            elif method == "HEAD":
                kind = "head"
            elif method in ("PUT", "POST"):
                kind = "put"
            else:
                kind = "other"
            status = []

            def sr(st, headers, exc_info=None):
                status.append(st)
                return start_response(st, headers, exc_info)

            t_in = time.perf_counter()
            result = self.app(environ, sr)
            try:
                body = b"".join(result)  # moto has built it already; answers are small ranges
            finally:
                if hasattr(result, "close"):
                    result.close()
            # Counted before the client can have the answer, so a client reading the
            # counters right after its last request always sees that request.
            with self.lock:
                self.counts[kind] += 1
                self.resp_bytes += len(body)
                if kind == "get":
                    self.get_bytes += len(body)
                if len(self.log) < 20000:
                    self.log.append([
                        round((t_in - self.t0) * 1e3, 2),  # arrival, ms since reset
                        round((time.perf_counter() - t_in) * 1e3, 2),  # moto's time, ms
                        method,
                        "/".join(parts[1:])[-60:] if kind != "list" else qs[-60:],
                        environ.get("HTTP_RANGE", ""),
                        (status or ["?"])[0][:3],
                        len(body),
                    ])
            return [body]

    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    run_simple("127.0.0.1", port, Counting(app), threaded=True, request_handler=MotoRequestHandler)


def counters(port, reset=False, log=False):
    q = "&".join(x for x, on in (("reset=1", reset), ("log=1", log)) if on)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{COUNTERS}?{q}", timeout=30) as r:
        return json.loads(r.read())


# ------------------------------------------------------------ the database (shared)


def fill_orders(conn, rows, step=100000, each_batch=None):
    """Creates and fills the benchmark table: `rows` orders of ~1 KiB each (960 hex chars
    of random bytes: 4 rows a 4 KiB page), inserted `step` at a time, then an index on
    customer. `each_batch()` runs after every batch (the restore benchmark commits there).
    Shared by the replica and restore benchmarks (bench_restore.py)."""
    conn.execute("CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, amount REAL, note TEXT)")
    for lo in range(1, rows + 1, step):
        hi = min(rows, lo + step - 1)
        conn.execute(
            """WITH RECURSIVE n(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM n WHERE i < ?)
               INSERT INTO orders(id, customer, amount, note)
               SELECT i, 'customer-' || (abs(random()) % 50000), (abs(random()) % 10000000) / 100.0,
                      hex(randomblob(480)) FROM n""",
            (lo, hi),
        )
        if each_batch:
            each_batch()
    conn.execute("CREATE INDEX orders_customer ON orders(customer)")


# ------------------------------------------------------------- worker (/usr/bin/python3)
# One measurement in a fresh process: spec and result are JSON (argv / last stdout line).


def connect(spec):
    """Loads the mode's extension and opens the database; returns (conn, load_s, t_open)."""
    mode = spec["mode"]
    t0 = time.perf_counter()
    if mode == "ours":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(EXT)  # registers VFS "litestream" process-wide
        loader.close()
    elif mode == "litestream-vfs":
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        # Entry point sqlite3_litestreamvfs_init, from the file name; it reads
        # LITESTREAM_REPLICA_URL and registers VFS "litestream" process-wide.
        loader.load_extension(os.path.splitext(spec["lsvfs"])[0])
        loader.close()
    t1 = time.perf_counter()
    if mode == "ours":
        params = {
            "vfs": "litestream",
            "role": "replica",
            "replica": f"s3://{BUCKET}/{PREFIX}",
            "endpoint": f"http://127.0.0.1:{spec['port']}",
            "region": "us-east-1",
            "force-path-style": "true",
        }
        uri = "file:" + spec["db"] + "?" + "&".join(f"{k}={v}" for k, v in params.items())
    elif mode == "litestream-vfs":
        uri = "file:" + spec["db"] + "?vfs=litestream"
    else:
        uri = "file:" + spec["db"]
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    return conn, t1 - t0, t1


def row_digest(row):
    return hashlib.sha1(repr(row).encode()).hexdigest()[:16] if row is not None else None


def our_status(conn):
    return json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])


def worker_cold(spec):
    if spec.get("port"):
        counters(spec["port"], reset=True)
    t_start = time.perf_counter()
    conn, load_s, t_open = connect(spec)
    row = conn.execute(POINT, (spec["id"],)).fetchone()
    t_row = time.perf_counter()
    out = {
        "open_to_row_ms": (t_row - t_open) * 1e3,
        "load_to_row_ms": (t_row - t_start) * 1e3,
        "load_ms": load_s * 1e3,
        "id": spec["id"],
        "row": row_digest(row),
    }
    if spec.get("port"):
        c = counters(spec["port"], log=True)
        out["s3"] = {k: c[k] for k in ("requests", "by_kind", "get_bytes", "resp_bytes")}
        out["s3_log"] = c["log"][:50]
    if spec["mode"] == "ours":
        st = our_status(conn)
        out["own"] = {k: st.get(k) for k in ("requests", "bytes_fetched", "pages_fetched", "files_in_plan", "pages")}
    conn.close()
    return out


def worker_warm(spec):
    conn, _, _ = connect(spec)
    cur = conn.cursor()
    clock = time.perf_counter_ns
    ids = spec["ids"]
    port = spec.get("port")

    def one_pass():
        lat = []
        for i in ids:
            s = clock()
            row = cur.execute(POINT, (i,)).fetchone()
            lat.append(clock() - s)
            if row is None:
                raise SystemExit(f"id {i}: no row")
        return lat

    cur.execute(POINT, (ids[0],)).fetchone()  # open + first query: the cold part
    s3_0 = counters(port) if port else None
    own_0 = our_status(conn) if spec["mode"] == "ours" else None
    first = sorted(one_pass())  # first touch of each id: pages come from S3 for the VFSes
    s3_1 = counters(port) if port else None
    own_1 = our_status(conn) if spec["mode"] == "ours" else None
    timed = []
    for _ in range(spec["passes"]):
        timed.extend(one_pass())
    timed.sort()
    s3_2 = counters(port) if port else None
    own_2 = our_status(conn) if spec["mode"] == "ours" else None
    out = {
        "queries": len(timed),
        "p50_us": percentile(timed, 50) / 1e3,
        "p90_us": percentile(timed, 90) / 1e3,
        "p99_us": percentile(timed, 99) / 1e3,
        "mean_us": sum(timed) / len(timed) / 1e3,
        "max_us": timed[-1] / 1e3,
        "first_touch_p50_ms": percentile(first, 50) / 1e6,
        "first_touch_p99_ms": percentile(first, 99) / 1e6,
        "first_touch_mean_ms": sum(first) / len(first) / 1e6,
    }
    if port:
        out["first_touch_s3_requests"] = s3_1["requests"] - s3_0["requests"]
        out["first_touch_s3_get_bytes"] = s3_1["get_bytes"] - s3_0["get_bytes"]
        out["timed_s3_requests"] = s3_2["requests"] - s3_1["requests"]
        out["timed_s3_gets"] = s3_2["by_kind"]["get"] - s3_1["by_kind"]["get"]
    if own_0:
        out["first_touch_own_requests"] = own_1["requests"] - own_0["requests"]
        out["first_touch_pages_fetched"] = own_1["pages_fetched"] - own_0["pages_fetched"]
        out["timed_own_requests"] = own_2["requests"] - own_1["requests"]
        out["timed_pages_fetched"] = own_2["pages_fetched"] - own_1["pages_fetched"]
        out["cache"] = own_2.get("cache")
    conn.close()
    return out


def worker_scan(spec):
    conn, _, _ = connect(spec)
    conn.execute(POINT, (1,)).fetchone()  # opened (cold open is measured elsewhere)
    port = spec.get("port")
    if port:
        counters(port, reset=True)
        s3_0 = {"requests": 0, "by_kind": {"get": 0}, "get_bytes": 0}
    own_0 = our_status(conn) if spec["mode"] == "ours" else None
    deadline = time.perf_counter() + spec["max_seconds"]
    conn.set_progress_handler(lambda: 1 if time.perf_counter() > deadline else 0, 1000)
    t0 = time.perf_counter()
    try:
        result = list(conn.execute(SCAN).fetchone())
        finished = True
    except sqlite3.OperationalError as e:
        if "interrupt" not in str(e):
            raise
        result, finished = None, False
    elapsed = time.perf_counter() - t0
    conn.set_progress_handler(None, 0)
    out = {"finished": finished, "seconds": elapsed, "result": result}
    if port:
        s3_1 = counters(port, log=True)
        out["s3_requests"] = s3_1["requests"] - s3_0["requests"]
        out["s3_gets"] = s3_1["by_kind"]["get"] - s3_0["by_kind"]["get"]
        out["s3_get_bytes"] = s3_1["get_bytes"] - s3_0["get_bytes"]
        # How sequential the scan's GETs are: each that starts at the byte after the
        # previous one's range (same object) could have been part of one larger GET.
        gets = [e for e in s3_1["log"] if e[2] == "GET" and e[4].startswith("bytes=")]
        spans = []
        for e in gets:
            a, _, b = e[4][6:].partition("-")
            spans.append((e[3], int(a), int(b) if b else None))
        follow = sum(1 for p, q in zip(spans, spans[1:]) if p[0] == q[0] and p[2] is not None and q[1] == p[2] + 1)
        out["gets_logged"] = len(spans)
        out["gets_contiguous_with_previous"] = follow
        out["s3_ms_per_get"] = elapsed * 1e3 / max(1, out["s3_gets"])
        out["first_gets"] = [e[4] for e in gets[:12]]
    if own_0:
        own_1 = our_status(conn)
        out["own_requests"] = own_1["requests"] - own_0["requests"]
        out["pages_fetched"] = own_1["pages_fetched"] - own_0["pages_fetched"]
        out["bytes_fetched"] = own_1["bytes_fetched"] - own_0["bytes_fetched"]
    conn.close()
    return out


def worker_main(spec):
    kind = spec["kind"]
    out = {"cold": worker_cold, "warm": worker_warm, "scan": worker_scan}[kind](spec)
    print(json.dumps(out))


# ----------------------------------------------------------------------- orchestrator


class Bench:
    def __init__(self, args, prefix="bench-replica-"):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix=prefix, dir=args.dir)
        self.procs = []
        self.port = None
        self.lsvfs = lsvfs_path()
        self.db = os.path.join(self.tmp, "big.db")
        self.counter = 0

    def log(self, msg):
        print(msg, flush=True)

    def start(self, name, argv, log, env):
        logf = open(log, "wb")
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        self.procs.append((proc, name))
        return proc

    def stop(self, proc, sig=signal.SIGTERM, wait=30):
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
                self.stop(proc, wait=10)
            except Exception:
                pass
        if not self.args.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self, mode=None):
        env = dict(os.environ)
        # Go's S3 client (and ours) would try to use it against plain-http moto.
        env.pop("AWS_CA_BUNDLE", None)
        env.update(CREDS)
        if mode == "litestream-vfs":
            env["LITESTREAM_REPLICA_URL"] = self.replica_url()
        if mode == "ours":
            env["LITESTREAM_LOG_LEVEL"] = "info"  # its "opened read replica ... ms=N" line
        return env

    def replica_url(self):
        return (
            f"s3://{BUCKET}/{PREFIX}?endpoint=http://127.0.0.1:{self.port}&region=us-east-1&forcePathStyle=true"
        )

    # --- moto
    def start_moto(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        argv = [VENV_PY, os.path.abspath(__file__), "--moto-server", str(port)]
        if self.args.stock_moto:
            argv.append("--stock-moto")
        log = os.path.join(self.tmp, "moto.log")
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)
        env["TMPDIR"] = self.tmp  # where moto spools objects larger than a few MiB
        proc = self.start("moto", argv, log, env)
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError("moto exited early:\n" + open(log).read()[-3000:])
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{COUNTERS}", timeout=2).read()
                break
            except Exception:
                if time.time() > deadline:
                    raise RuntimeError("moto did not answer within 60 s")
                time.sleep(0.1)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/{BUCKET}", method="PUT", data=b"")
        urllib.request.urlopen(req, timeout=10).read()
        self.port = port
        self.moto = proc

    def list_objects(self):
        """Every object under the replica prefix: [(key, size)]."""
        import xml.etree.ElementTree as ET

        out, token = [], None
        while True:
            q = f"list-type=2&prefix={PREFIX}/"
            if token:
                q += "&continuation-token=" + urllib.request.quote(token)
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/{BUCKET}?{q}", timeout=60) as r:
                root = ET.fromstring(r.read())
            ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
            for c in root.findall(f"{ns}Contents"):
                out.append((c.find(f"{ns}Key").text, int(c.find(f"{ns}Size").text)))
            if (root.findtext(f"{ns}IsTruncated") or "false") != "true":
                return out
            token = root.findtext(f"{ns}NextContinuationToken")

    # --- the database and its replica
    def build_db(self):
        target = int(self.args.size_mib * 1024 * 1024)
        rows = target // 1024  # ~1 KiB a row (960 hex chars of random bytes): 4 rows a page
        t0 = time.time()
        conn = sqlite3.connect(self.db, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        fill_orders(conn, rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.close()
        self.rows = rows
        self.db_bytes = os.path.getsize(self.db)
        self.log(
            f"  built {self.db_bytes / 2**30:.3f} GiB database: {rows} rows, {pages} pages of {page_size} B "
            f"({time.time() - t0:.0f} s)"
        )
        if self.db_bytes < 2**30 and self.args.size_mib >= 1024:
            raise RuntimeError(f"database is only {self.db_bytes} bytes")
        return {"rows": rows, "bytes": self.db_bytes, "pages": pages, "page_size": page_size, "build_s": time.time() - t0}

    def replicate(self):
        """`litestream replicate` until its first LTX file is stored, then SIGTERM."""
        t0 = time.time()
        log = os.path.join(self.tmp, "litestream.log")
        proc = self.start("litestream", [LITESTREAM, "replicate", self.db, self.replica_url()], log, self.env())
        deadline = time.time() + 600
        objs = []
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError("litestream exited early:\n" + open(log).read()[-3000:])
                objs = [o for o in self.list_objects() if o[0].endswith(".ltx")]
                # Litestream 0.5.17 stores the first TXID at level 0, compacts it to level 1
                # and writes a snapshot (level 9) within seconds: wait for the snapshot, as a
                # replica that has run for a while would have one (level 0 alone after 120 s).
                if any(k.startswith(f"{PREFIX}/0009/") for k, _ in objs):
                    break
                if objs and time.time() > t0 + 120:
                    break
                if time.time() > deadline:
                    raise RuntimeError("no LTX file in the replica after 600 s:\n" + open(log).read()[-3000:])
                time.sleep(0.5)
            time.sleep(1.5)  # let it finish what it does right after
        finally:
            self.stop(proc, signal.SIGTERM, wait=60)
        objs = self.list_objects()
        # The plain baseline reads this file: settle it into rollback-journal mode, which
        # is what both VFSes present to SQLite (same pages, no WAL index to consult).
        conn = sqlite3.connect(self.db, isolation_level=None)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.close()
        self.log(
            f"  replicated with litestream 0.5.17 in {time.time() - t0:.0f} s: "
            + ", ".join(f"{k[len(PREFIX) + 1:]} ({s / 2**20:.1f} MiB)" for k, s in objs)
        )
        return {"seconds": time.time() - t0, "objects": [{"key": k, "size": s} for k, s in objs]}

    # --- workers
    def run_worker(self, spec, timeout=600):
        self.counter += 1
        d = os.path.join(self.tmp, f"w{self.counter:03d}-{spec['mode']}")
        os.makedirs(d)
        full = dict(spec)
        full["lsvfs"] = self.lsvfs
        if spec["mode"] == "plain":
            full["db"] = self.db
            full["port"] = None
        else:
            full["db"] = os.path.join(d, "replica.db")  # never created by either VFS
            full["port"] = self.port
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(full)],
            env=self.env(spec["mode"]),
            cwd=d,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout,
        )
        if p.returncode != 0:
            raise RuntimeError(f"worker {spec['kind']} {spec['mode']} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
        if self.args.verbose and p.stderr.strip():
            sys.stderr.write(p.stderr[-3000:])
        out = json.loads(p.stdout.strip().splitlines()[-1])
        for line in p.stderr.splitlines():
            line = re.sub(r"\x1b\[[0-9;]*m", "", line)
            m = re.search(r"opened read replica.* ms=(\d+)", line)
            if m:  # ours: LIST + page indexes + building the page map, as it measures it
                out["replica_open_ms"] = int(m.group(1))
        return out


def add_common_args(ap, results):
    """The options every benchmark that runs moto takes (bench_restore.py too)."""
    ap.add_argument("--stock-moto", action="store_true", help="leave moto's whole-object ranged GETs as they are")
    ap.add_argument("--dir", default=None, help="where the temp directory goes (default $TMPDIR)")
    ap.add_argument("--out", default=results, help="JSON results path")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (database, replicas, logs)")
    ap.add_argument("--verbose", action="store_true")


def print_goals(goals, out, elapsed):
    for g, v in goals.items():
        print(f"  goal: {g}: {v['value']} -> {'MET' if v['met'] else 'NOT MET'}")
    print(f"results: {os.path.relpath(out)}  ({elapsed:.0f} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=float, default=1126, help="database size to build (default 1126 = 1.1 GiB)")
    ap.add_argument("--cold-runs", type=int, default=5, help="fresh processes per mode for the cold figure (median)")
    ap.add_argument("--warm-queries", type=int, default=1000, help="random ids of the warm measurement")
    ap.add_argument("--warm-passes", type=int, default=3, help="timed passes over the warm ids (after one warm-up)")
    ap.add_argument("--scan-seconds", type=float, default=40, help="time limit of a full scan over S3")
    ap.add_argument("--modes", default=",".join(MODES), help="modes to measure")
    add_common_args(ap, RESULTS)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--moto-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.moto_server:
        moto_server_main(args.moto_server, args.stock_moto)
        return
    if args.worker:
        worker_main(json.loads(args.worker))
        return

    modes = [m for m in args.modes.split(",") if m]
    for path, what in [(EXT, "make build"), (LITESTREAM, "make setup"), (VENV_PY, "make setup")]:
        if not os.path.exists(path):
            raise SystemExit(f"missing {path} (run {what})")
    if "litestream-vfs" in modes and not lsvfs_path():
        raise SystemExit("missing litestream-vfs.so in .venv (make setup installs litestream-vfs==0.5.17)")
    probe = sqlite3.connect(":memory:")
    if not hasattr(probe, "enable_load_extension"):
        raise SystemExit(f"{sys.executable}: its sqlite3 module cannot load extensions; use /usr/bin/python3")
    probe.close()

    bench = Bench(args)
    started = time.time()

    def term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, term)
    doc = {}
    try:
        bench.log(f"bench-replica: SQLite {sqlite3.sqlite_version}; modes {', '.join(modes)}; tmp {bench.tmp}")
        bench.start_moto()
        bench.log(f"  moto on 127.0.0.1:{bench.port}" + (" (stock ranged GETs)" if args.stock_moto else ""))
        db_info = bench.build_db()
        rep_info = bench.replicate()
        rnd = random.Random(args.seed)

        # cold: a fresh process per run, the modes interleaved, rotated each repetition
        cold = {m: [] for m in modes}
        for rep in range(args.cold_runs):
            pk = rnd.randint(1, bench.rows)
            order = modes[rep % len(modes):] + modes[: rep % len(modes)]
            for m in order:
                r = bench.run_worker({"kind": "cold", "mode": m, "id": pk})
                cold[m].append(r)
                s3 = r.get("s3")
                bench.log(
                    f"  cold {rep + 1}/{args.cold_runs} {m:<15} open->row {r['open_to_row_ms']:8.1f} ms"
                    f"  (load+open {r['load_to_row_ms']:8.1f} ms)"
                    + (f"  S3 {s3['requests']:3d} req {s3['get_bytes'] / 1024:9.1f} KiB" if s3 else "")
                )
        digests = {m: [r["row"] for r in rs] for m, rs in cold.items()}
        ref = digests.get("plain")
        for m, ds in digests.items():
            if ref and ds != ref:
                raise RuntimeError(f"{m} returned different rows than plain SQLite: {ds} vs {ref}")

        # warm
        ids = [rnd.randint(1, bench.rows) for _ in range(args.warm_queries)]
        warm = {}
        for m in modes:
            warm[m] = bench.run_worker({"kind": "warm", "mode": m, "ids": ids, "passes": args.warm_passes})
            w = warm[m]
            bench.log(
                f"  warm {m:<15} p50 {w['p50_us']:7.1f} us  p99 {w['p99_us']:7.1f} us"
                f"  (first touch p50 {w['first_touch_p50_ms']:.2f} ms"
                + (f", {w['first_touch_s3_requests']} S3 requests" if "first_touch_s3_requests" in w else "")
                + (f"; timed passes: {w['timed_s3_requests']} S3 requests" if "timed_s3_requests" in w else "")
                + ")"
            )

        # full scan
        scan = {}
        for m in modes:
            limit = args.scan_seconds if m != "plain" else 600
            scan[m] = s = bench.run_worker({"kind": "scan", "mode": m, "max_seconds": limit}, timeout=limit + 300)
            pages = s.get("pages_fetched", s.get("s3_gets"))
            if s["finished"]:
                s["projected_s"] = s["seconds"]
            elif pages:
                s["projected_s"] = s["seconds"] * db_info["pages"] / pages
            bench.log(
                f"  scan {m:<15} {'done' if s['finished'] else 'stopped'} after {s['seconds']:6.1f} s"
                + (f"  {s.get('s3_gets')} GETs, {s.get('s3_get_bytes', 0) / 2**20:.1f} MiB" if "s3_gets" in s else "")
                + (f"  -> full scan ~{s['projected_s']:.0f} s" if not s["finished"] and s.get("projected_s") else "")
            )
        if "plain" in scan and scan["plain"]["finished"]:
            for m, s in scan.items():
                if s["finished"] and s["result"] != scan["plain"]["result"]:
                    raise RuntimeError(f"{m} scan result {s['result']} != plain {scan['plain']['result']}")

        doc = report(args, bench, modes, db_info, rep_info, cold, warm, scan, time.time() - started)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130)
    finally:
        bench.cleanup()
    return doc


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ext_info(path):
    st = os.stat(path)
    return {"path": os.path.relpath(path, ROOT), "bytes": st.st_size, "mtime": int(st.st_mtime), "sha256": file_sha256(path)[:16]}


def report(args, bench, modes, db_info, rep_info, cold, warm, scan, elapsed):
    results = []

    def add(name, value, unit):
        if value is not None:
            results.append({"name": name, "value": round(value, 4), "unit": unit})

    def med(rs, f):
        vals = [f(r) for r in rs if f(r) is not None]
        return statistics.median(vals) if vals else None

    summary = {}
    for m in modes:
        rs = cold.get(m, [])
        s = {
            "cold_ms": med(rs, lambda r: r["open_to_row_ms"]),
            "cold_load_ms": med(rs, lambda r: r["load_to_row_ms"]),
            "cold_requests": med(rs, lambda r: r.get("s3", {}).get("requests")),
            "cold_bytes": med(rs, lambda r: r.get("s3", {}).get("get_bytes")),
            "cold_own_requests": med(rs, lambda r: r.get("own", {}).get("requests")),
            "cold_own_bytes": med(rs, lambda r: r.get("own", {}).get("bytes_fetched")),
            "cold_replica_open_ms": med(rs, lambda r: r.get("replica_open_ms")),
            "warm_p50_us": warm.get(m, {}).get("p50_us"),
            "warm_p99_us": warm.get(m, {}).get("p99_us"),
            "first_touch_p50_ms": warm.get(m, {}).get("first_touch_p50_ms"),
            "scan_s": scan.get(m, {}).get("seconds"),
            "scan_finished": scan.get(m, {}).get("finished"),
            "scan_projected_s": scan.get(m, {}).get("projected_s"),
        }
        summary[m] = s
        add(f"{m} cold open->first row", s["cold_ms"], "ms")
        add(f"{m} cold load+open->first row", s["cold_load_ms"], "ms")
        add(f"{m} cold S3 requests", s["cold_requests"], "requests")
        add(f"{m} cold S3 bytes (object GETs)", s["cold_bytes"], "bytes")
        if s["cold_bytes"] is not None:
            add(f"{m} cold S3 bytes / database bytes", 100.0 * s["cold_bytes"] / db_info["bytes"], "%")
        add(f"{m} cold requests (litestream_status)", s["cold_own_requests"], "requests")
        add(f"{m} cold bytes_fetched (litestream_status)", s["cold_own_bytes"], "bytes")
        add(f"{m} cold replica open (LIST + page indexes + page map, its log)", s["cold_replica_open_ms"], "ms")
        add(f"{m} warm point query p50", s["warm_p50_us"], "us")
        add(f"{m} warm point query p99", s["warm_p99_us"], "us")
        add(f"{m} first-touch point query p50", s["first_touch_p50_ms"], "ms")
        add(f"{m} full scan seconds (finished={s['scan_finished']})", s["scan_s"], "s")
        add(f"{m} full scan projected seconds", s["scan_projected_s"], "s")

    ours, ls, plain = summary.get("ours"), summary.get("litestream-vfs"), summary.get("plain")
    goals = {}
    if ours and ls and ours["cold_ms"] and ls["cold_ms"]:
        x = ls["cold_ms"] / ours["cold_ms"]
        goals["cold point query >= 3x faster than litestream-vfs"] = {"value": round(x, 2), "met": x >= 3}
        add("cold speed-up ours vs litestream-vfs", x, "x")
    if ours and ours["cold_bytes"] is not None:
        pct = 100.0 * ours["cold_bytes"] / db_info["bytes"]
        goals["cold bytes fetched < 1% of the database"] = {"value": round(pct, 3), "met": pct < 1.0}
    if ours and plain and ours["warm_p50_us"] and plain["warm_p50_us"]:
        x = ours["warm_p50_us"] / plain["warm_p50_us"]
        goals["warm point query p50 within 1.2x of plain SQLite"] = {"value": round(x, 3), "met": x <= 1.2}
        add("warm p50 ours / plain", x, "x")
        add("warm p99 ours / plain", ours["warm_p99_us"] / plain["warm_p99_us"], "x")

    doc = {
        "benchmark": "replica",
        "database": db_info,
        "replica": rep_info,
        "workload": {
            "point_query": POINT,
            "scan": SCAN,
            "cold_runs": args.cold_runs,
            "warm_queries": args.warm_queries,
            "warm_passes": args.warm_passes,
            "scan_limit_s": args.scan_seconds,
            "moto": "stock" if args.stock_moto else "ranged GETs served from the object buffer",
            "statistic": "cold: median of fresh processes; warm: percentiles over all timed queries",
        },
        "extensions": {
            "ours": ext_info(EXT),
            "litestream-vfs": ext_info(bench.lsvfs) if bench.lsvfs else None,
        },
        "sqlite_version": sqlite3.sqlite_version,
        "python": sys.executable,
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
        "unix_time": int(time.time()),
        "elapsed_s": round(elapsed, 1),
        "goals": goals,
        "results": results,
        "summary": summary,
        "runs": {"cold": cold, "warm": warm, "scan": scan},
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")

    def fmt(v, spec, suffix=""):
        return (format(v, spec) + suffix) if v is not None else "-"

    def ratio(a, b):
        return (a / b) if a is not None and b else None

    print()
    print(f"database {db_info['bytes'] / 2**30:.3f} GiB, {db_info['rows']} rows, {db_info['pages']} pages; "
          f"replica {len(rep_info['objects'])} LTX object(s) by litestream 0.5.17 on moto")
    hdr = (f"{'mode':<15} {'cold ms':>9} {'+load ms':>9} {'x ours':>7} {'S3 req':>7} {'S3 KiB':>9} {'% of db':>8}"
           f" {'warm p50 us':>11} {'/plain':>7} {'warm p99 us':>11} {'/plain':>7} {'scan s':>14}")
    print(hdr)
    for m in modes:
        s = summary[m]
        scan_txt = fmt(s["scan_s"], ".1f") if s["scan_finished"] else (
            f"~{s['scan_projected_s']:.0f} (proj)" if s["scan_projected_s"] else "-")
        print(
            f"{m:<15} {fmt(s['cold_ms'], '.1f'):>9} {fmt(s['cold_load_ms'], '.1f'):>9} {fmt(ratio(s['cold_ms'], ours and ours['cold_ms']), '.2f'):>7}"
            f" {fmt(s['cold_requests'], '.0f'):>7} {fmt(s['cold_bytes'] and s['cold_bytes'] / 1024, '.1f'):>9}"
            f" {fmt(s['cold_bytes'] is not None and 100.0 * s['cold_bytes'] / db_info['bytes'] or None, '.3f'):>8}"
            f" {fmt(s['warm_p50_us'], '.1f'):>11} {fmt(ratio(s['warm_p50_us'], plain and plain['warm_p50_us']), '.2f'):>7}"
            f" {fmt(s['warm_p99_us'], '.1f'):>11} {fmt(ratio(s['warm_p99_us'], plain and plain['warm_p99_us']), '.2f'):>7}"
            f" {scan_txt:>14}"
        )
    print("  cold = open -> first row of a point query, fresh process, median; +load = with loading the")
    print("  extension; 'x ours' = cold over ours;")
    print("  S3 req/KiB counted in moto (object GET bodies); warm = same connection, after a warm-up pass;")
    print(f"  scan over S3 stopped after {args.scan_seconds:.0f} s and projected from pages fetched.")
    print_goals(goals, args.out, elapsed)
    return doc


if __name__ == "__main__":
    main()
