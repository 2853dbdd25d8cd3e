"""Primary -> litestream_sync() -> read replica -> same rows, through the installed
sqlite-litestream wheel (tests/packages.rs runs it in fresh venvs).

    python package_roundtrip.py sqlite3|apsw WORKDIR

Prints the path the package loads the extension from, then one line
"<driver>: <rows> rows at TXID <txid>, replica agrees". Exits nonzero on any difference.
"""

import sys

import sqlite_litestream

driver, work = sys.argv[1], sys.argv[2]
replica = f"file://{work}/replica"
primary_uri = f"file:{work}/app.db?vfs=litestream&replica={replica}&sync_interval=100ms"
replica_uri = f"file:{work}/view.db?vfs=litestream&role=replica&replica={replica}"
print(sqlite_litestream.loadable_path())

if driver == "sqlite3":
    import sqlite3

    sqlite_litestream.load(sqlite3.connect(":memory:"))

    def connect(uri):
        return sqlite3.connect(uri, uri=True, isolation_level=None)

elif driver == "apsw":
    import apsw

    sqlite_litestream.load(apsw.Connection(":memory:"))
    flags = apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE | apsw.SQLITE_OPEN_URI

    def connect(uri):
        return apsw.Connection(uri, flags=flags)

else:
    sys.exit(f"unknown driver {driver}")

primary = connect(primary_uri)
primary.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
primary.execute("BEGIN")
for i in range(1, 301):
    primary.execute("INSERT INTO notes(body) VALUES (?)", (f"note {i} from {driver}",))
primary.execute("COMMIT")
(txid,) = primary.execute("SELECT litestream_sync(30000)").fetchone()
rows = primary.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
primary.close()

view = connect(replica_uri)
view.execute("SELECT litestream_wait(?, 30000)", (txid,)).fetchone()
(seen,) = view.execute("SELECT litestream_txid()").fetchone()
copied = view.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
view.close()
if [tuple(r) for r in copied] != [tuple(r) for r in rows] or seen != txid:
    sys.exit(f"{driver}: the replica at TXID {seen} differs from the primary at TXID {txid}")
print(f"{driver}: {len(rows)} rows at TXID {txid}, replica agrees")
