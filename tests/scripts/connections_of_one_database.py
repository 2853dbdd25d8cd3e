"""Several connections of one process to one replicated database (tests/connections_of_one_database.rs).

Prints one line per step: what the open or the statement did.
"""
import json
import sqlite3
import sys

so, db, r1, r2 = sys.argv[1:]
boot = sqlite3.connect(":memory:")
boot.enable_load_extension(True)
boot.load_extension(so)


def opens(uri):
    try:
        conn = sqlite3.connect(uri, uri=True)
        conn.execute("SELECT 1")
        return conn
    except sqlite3.OperationalError:
        return None


first = opens(f"file:{db}?vfs=litestream&replica=file://{r1}")
first.execute("CREATE TABLE t(x)")
first.commit()
print("first:", first.execute("SELECT litestream_sync(30000)").fetchone()[0] > 0)

other = opens(f"file:{db}?vfs=litestream&replica=file://{r2}")
print("another replica:", "opened" if other else "refused")
failed = json.loads(boot.execute("SELECT litestream_status()").fetchone()[0]).get("failed_opens", [])
print("reason:", failed[0]["error"] if failed else None)

same = opens(f"file:{db}?vfs=litestream&replica=file://{r1}/&sync=commit")
print("same replica, other settings:", "opened" if same else "refused")

bare = opens(f"file:{db}?vfs=litestream")
print("no replica=:", "opened" if bare else "refused")
if bare:
    bare.execute("INSERT INTO t VALUES (1)")
    bare.commit()
    print("its sync:", bare.execute("SELECT litestream_sync(30000)").fetchone()[0] > 0)

empty = opens(f"file:{db}-empty?vfs=litestream&replica=")
print("empty replica=:", "opened" if empty else "refused")
