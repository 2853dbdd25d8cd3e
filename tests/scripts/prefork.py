"""A pre-fork server's life, for tests/fork.rs: the parent loads the extension, touches
the database (creates its tables), then forks workers that open it again and commit.

    prefork.py <extension> <dir> close|keep|replica|orphan [replica URL]

close:   the parent closes its connection before forking (gunicorn --preload done right).
keep:    the parent keeps its connection open (it replicates) and commits after the
         workers are gone; one worker also closes the connection it inherited.
replica: the parent opens a read replica, forks, and a worker opens it again while
         another process commits to the primary.
orphan:  a worker keeps using the connection it inherited (SQLite says not to) after the
         parent closed its own: nobody replicates, and the worker is told so.

Prints one JSON object per line: {"who": ..., ...}; a worker's failure is a line too.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
import urllib.parse

so, root, mode = sys.argv[1], sys.argv[2], sys.argv[3]
url = sys.argv[4] if len(sys.argv) > 4 else f"file://{root}/replica"
quoted = urllib.parse.quote(url, safe="")
PRIMARY = f"file:{root}/app.db?vfs=litestream&replica={quoted}&sync_interval=100ms"
REPLICA = f"file:{root}/view.db?vfs=litestream&role=replica&replica={quoted}&poll_interval=100ms"

loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(so)


def say(**fields):
    # One write of the whole line: two workers' print() calls (the text, then the
    # newline, unbuffered in CI) interleaved into one unparseable line.
    os.write(1, (json.dumps(fields) + "\n").encode())


def status(conn):
    return json.loads(conn.execute("SELECT litestream_status()").fetchone()[0])


def sync(conn):
    try:
        return conn.execute("SELECT litestream_sync(5000)").fetchone()[0]
    except sqlite3.Error as e:
        return f"error: {e}"


def open_primary():
    conn = sqlite3.connect(PRIMARY, uri=True, isolation_level=None, timeout=10)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def worker(n, inherited):
    if inherited is not None and n == 0:
        inherited.close()  # what a worker's clean-up of module globals does
    conn = open_primary()
    conn.execute("INSERT INTO t VALUES (?)", (f"worker {n}",))
    say(who=f"worker {n}", sync=sync(conn), role=status(conn).get("role"))


def fork_workers(count, inherited=None):
    pids = []
    for n in range(count):
        pid = os.fork()
        if pid == 0:
            try:
                worker(n, inherited)
            except BaseException as e:  # noqa: BLE001 - reported to the test
                say(who=f"worker {n}", error=repr(e))
            finally:
                os._exit(0)
        pids.append(pid)
        time.sleep(0.2)  # the first one has opened before the next
    for pid in pids:
        os.waitpid(pid, 0)


def another_process_commits(value):
    code = (
        "import sqlite3, sys\n"
        "c = sqlite3.connect(':memory:'); c.enable_load_extension(True); c.load_extension(sys.argv[1])\n"
        "p = sqlite3.connect(sys.argv[2], uri=True, isolation_level=None, timeout=10)\n"
        "p.execute('INSERT INTO t VALUES (?)', (sys.argv[3],))\n"
        "print(p.execute('SELECT litestream_sync(5000)').fetchone()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code, so, PRIMARY, value], capture_output=True, text=True)
    return out.stdout.strip() or out.stderr.strip()


parent = open_primary()
parent.execute("CREATE TABLE t(v)")
parent.execute("INSERT INTO t VALUES ('parent')")
say(who="parent", sync=sync(parent))

if mode == "close":
    parent.close()
    fork_workers(2)
elif mode == "keep":
    fork_workers(2, inherited=parent)
    parent.execute("INSERT INTO t VALUES ('parent after the workers')")
    say(who="parent", sync=sync(parent), role=status(parent).get("role"))
    say(who="another process", sync=another_process_commits("another process"))
elif mode == "orphan":
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(write_end)
            os.read(read_end, 1)  # the parent has closed the database
            parent.execute("INSERT INTO t VALUES ('worker 0')")
            began = time.time()
            result = sync(parent)
            say(who="worker 0", sync=result, seconds=time.time() - began, status=status(parent))
        except BaseException as e:  # noqa: BLE001
            say(who="worker 0", error=repr(e))
        finally:
            os._exit(0)
    os.close(read_end)
    parent.close()
    os.write(write_end, b"x")
    os.waitpid(pid, 0)
elif mode == "replica":
    parent.close()
    view = sqlite3.connect(REPLICA, uri=True)
    say(who="parent", rows=view.execute("SELECT count(*) FROM t").fetchone()[0])
    pid = os.fork()
    if pid == 0:
        try:
            own = sqlite3.connect(REPLICA, uri=True)
            deadline, rows = time.time() + 10, 0
            while time.time() < deadline:
                rows = own.execute("SELECT count(*) FROM t").fetchone()[0]
                if rows >= 2:
                    break
                time.sleep(0.05)
            say(who="worker 0", rows=rows)
        except BaseException as e:  # noqa: BLE001
            say(who="worker 0", error=repr(e))
        finally:
            os._exit(0)
    say(who="another process", sync=another_process_commits("another process"))
    os.waitpid(pid, 0)
