#!/usr/bin/python3
"""Several threads, each with its own connection, writing to one database through the
litestream VFS; then a final litestream_sync(). Prints the TXID reached."""
import os
import sqlite3
import sys
import time
import threading

ext, db, replica, threads, rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tag = sys.argv[6] if len(sys.argv) > 6 else "t"
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(ext)
uri = f"file:{db}?vfs=litestream&replica={replica}&sync_interval=100ms"
setup = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
setup.execute("CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, writer TEXT, n INTEGER)")
# Tests that need this process to stay alive (say, as the leader) while another one
# runs: READY_FILE is created once the database is open, and the process waits for
# GO_FILE before its final sync.
if os.environ.get("READY_FILE"):
    open(os.environ["READY_FILE"], "w").close()


def work(i):
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60, check_same_thread=False)
    for n in range(rows):
        conn.execute("INSERT INTO log(writer, n) VALUES (?, ?)", (f"{tag}{i}", n))
        if n % 50 == 0:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    conn.close()


workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
for w in workers:
    w.start()
for w in workers:
    w.join()
# In a follower process (another process holds the staging lock) this waits for the
# leader to upload our commits, or takes replication over if the leader has exited.
if os.environ.get("GO_FILE"):
    deadline = time.time() + 120
    while not os.path.exists(os.environ["GO_FILE"]) and time.time() < deadline:
        time.sleep(0.02)
role = setup.execute("SELECT litestream_status() ->> '$.role'").fetchone()[0]
txid = setup.execute("SELECT litestream_sync(60000)").fetchone()[0]
print(role, txid)
setup.close()
