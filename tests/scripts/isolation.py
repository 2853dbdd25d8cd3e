#!/usr/bin/python3
"""N steady primaries on file:// replicas and K on the replica URL given, `{i}` in it
replaced by 0..K-1 (one store the caller stalls and takes down), all in this one process. Driven one command a line on
stdin, one JSON line answered on stdout:

  run SECONDS   every database commits once per PERIOD_MS for SECONDS (round robin),
                while one more database on file:// commits 64 KiB every 5 ms (a busy
                one among quiet ones); answers the commits made
  sync MS       litestream_sync(MS) on each of the K, answers their TXIDs or the error
  status        the process-level `engine` part of litestream_status()
  watch SECONDS no commits: every 100 ms the process's count of requests to S3 stores
                (litestream_metrics()), answers [[seconds, count], ...]
  lags          closes every connection, then for every commit of the N the time from
                its commit to the ctime of the level-0 file that holds its TXID in the
                replica directory: answers the worst per database and per run, and
                commits missing

With R (optional, default 0), R read replicas of the K databases (replica j follows
database j % K, polling every 500 ms) stay open in the process too: their polls go to
the store that stalls.

usage: isolation.py EXT DIR N PERIOD_MS PARAMS K URL [R]
"""

import json
import os
import sqlite3
import sys
import threading
import time


def connect(uri):
    c = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30, check_same_thread=False)
    # WAL mode's usual setting: commits do not each fsync the WAL, which on a small
    # machine would measure the disk rather than the engine.
    c.execute("PRAGMA synchronous=NORMAL")
    c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)")
    return c


def level0(replica_dir):
    """(min, max, ctime) of each level-0 file. The change time, not the modification
    time: a local store sets the latter to the file's commit timestamp, and changes the
    former when it does so, at the end of the put (before its fsync)."""
    d = os.path.join(replica_dir, "ltx", "0")
    out = []
    for name in os.listdir(d) if os.path.isdir(d) else []:
        lo, hi = name.split(".")[0].split("-")
        out.append((int(lo, 16), int(hi, 16), os.stat(os.path.join(d, name)).st_ctime))
    return out


def main():
    ext, root, n, period_ms, params, k, url = sys.argv[1:8]
    r = int(sys.argv[8]) if len(sys.argv) > 8 else 0
    n, period = int(n), int(period_ms) / 1000.0
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    loader.close()
    os.makedirs(f"{root}/db", exist_ok=True)
    steady = [connect(f"file:{root}/db/{i}.db?vfs=litestream&replica=file://{root}/replicas/{i}&{params}")
              for i in range(n)]
    faulty = [connect(f"file:{root}/db/one{j}.db?vfs=litestream&replica={url.replace('{i}', str(j))}&{params}")
              for j in range(int(k))]
    for c in faulty:
        c.execute("SELECT litestream_sync(60000)").fetchone()
    # Read replicas of the faulty store, each read once so that it is open and polling.
    replicas = []
    for j in range(r):
        c = sqlite3.connect(f"file:{root}/replica{j}.db?vfs=litestream&role=replica"
                            f"&replica={url.replace('{i}', str(j % int(k)))}&poll_interval=500ms",
                            uri=True, isolation_level=None, check_same_thread=False)
        c.execute("SELECT count(*) FROM t").fetchone()
        replicas.append(c)
    busy = connect(f"file:{root}/db/busy.db?vfs=litestream&replica=file://{root}/replicas/busy&{params}")
    # (TXID, commit time) of every commit of the steady ones.
    commits = [[] for _ in range(n)]
    phase = -1
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "run":
            phase += 1
            end = time.time() + float(words[1])
            made = 0
            busy_commits = [0]

            def hammer():
                while time.time() < end:
                    busy.execute("INSERT INTO t(v) VALUES (randomblob(65536))")
                    busy_commits[0] += 1
                    # 12.8 MB/s: a thousand times a quiet one's bytes, without taking
                    # a whole core of a small machine for itself.
                    time.sleep(0.005)
            hammering = threading.Thread(target=hammer)
            hammering.start()
            tick = time.time()
            while time.time() < end:
                for i, c in enumerate(steady):
                    c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
                    commits[i].append((c.execute("SELECT litestream_txid()").fetchone()[0], time.time(), phase))
                for c in faulty:
                    c.execute("INSERT INTO t(v) VALUES (randomblob(100))")
                made += n + len(faulty)
                tick += period
                time.sleep(max(0.0, tick - time.time()))
            hammering.join()
            answer = {"commits": made, "busy_commits": busy_commits[0]}
        elif words[0] == "sync":
            try:
                rows = [c.execute(f"SELECT litestream_sync({int(words[1])}), litestream_txid()").fetchone()
                        for c in faulty]
                answer = {"synced": [r[0] for r in rows], "txid": [r[1] for r in rows]}
            except sqlite3.Error as e:
                answer = {"error": str(e)}
        elif words[0] == "watch":
            start, samples = time.time(), []
            while time.time() - start < float(words[1]):
                metrics = faulty[0].execute("SELECT litestream_metrics()").fetchone()[0]
                count = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                            if line.startswith("litestream_replica_operation_total{")
                            and 'replica_type="s3"' in line)
                samples.append([time.time() - start, count])
                time.sleep(0.1)
            answer = {"samples": samples}
        elif words[0] == "status":
            answer = json.loads(faulty[0].execute("SELECT litestream_status()").fetchone()[0])["engine"]
        elif words[0] == "lags":
            for c in steady:
                c.close()
            worst, missing, by_phase = [], 0, [0.0] * (phase + 1)
            for i in range(n):
                files = level0(f"{root}/replicas/{i}")
                lag = 0.0
                for txid, at, p in commits[i]:
                    up = [m for lo, hi, m in files if lo <= txid <= hi]
                    if not up:
                        missing += 1
                        continue
                    lag = max(lag, up[0] - at)
                    by_phase[p] = max(by_phase[p], up[0] - at)
                worst.append(round(lag * 1000))
            answer = {"worst_lag_ms": worst, "worst_by_phase_ms": [round(x * 1000) for x in by_phase],
                      "missing": missing, "commits": sum(len(c) for c in commits)}
        else:
            answer = {"error": f"unknown command {words[0]}"}
        print(json.dumps(answer), flush=True)
    for c in faulty + replicas:
        c.close()
    busy.close()


if __name__ == "__main__":
    main()
