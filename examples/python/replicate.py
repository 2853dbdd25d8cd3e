#!/usr/bin/python3
"""A primary and a read replica through Python's standard sqlite3 module.

    /usr/bin/python3 examples/python/replicate.py [WORKDIR]

Opens a primary that replicates to a file:// replica in WORKDIR (a new temporary
directory by default), writes 503 rows, waits until they are in the replica
(litestream_sync), then opens a read replica on the replica alone and checks that it
holds exactly the primary's rows. Exits nonzero if anything differs.

Needs a Python whose sqlite3 can load extensions: Debian's /usr/bin/python3 can; pyenv
and python.org builds often lack enable_load_extension. LITESTREAM_VFS_EXT names the
extension (default: target/release/liblitestream_vfs).
"""

import os
import sqlite3
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXT = os.environ.get("LITESTREAM_VFS_EXT", os.path.join(REPO, "target/release/liblitestream_vfs"))


def load_extension():
    # The extension registers the "litestream" VFS for the whole process, so it is
    # loaded once, on a throwaway connection, before any database opens through it.
    conn = sqlite3.connect(":memory:")
    conn.enable_load_extension(True)
    conn.load_extension(EXT)
    conn.close()


def main(work):
    replica = f"file://{work}/replica"
    load_extension()

    # The primary: every commit is captured and uploaded in the background;
    # litestream_sync() returns once everything committed is in the replica.
    primary = sqlite3.connect(
        f"file:{work}/app.db?vfs=litestream&replica={replica}&sync_interval=100ms",
        uri=True,
        isolation_level=None,  # autocommit: each statement is its own transaction
    )
    primary.execute("CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)")
    primary.executemany("INSERT INTO notes(body) VALUES (?)", [("alpha",), ("beta",), ("gamma ü",)])
    primary.execute("BEGIN")  # one transaction for the bulk insert
    primary.executemany(
        "INSERT INTO notes(body) VALUES (?)",
        [(f"note {i} " + "x" * 200,) for i in range(1, 501)],
    )
    primary.execute("COMMIT")
    (txid,) = primary.execute("SELECT litestream_sync(30000)").fetchone()
    primary_rows = primary.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    primary.close()
    print(f"primary: {len(primary_rows)} rows, synced at TXID {txid}")

    # The read replica: another file name, fed only from the replica. litestream_wait
    # blocks until it has reached the primary's TXID; the next statement sees it.
    view = sqlite3.connect(
        f"file:{work}/view.db?vfs=litestream&role=replica&replica={replica}",
        uri=True,
        isolation_level=None,
    )
    view.execute("SELECT litestream_wait(?, 30000)", (txid,)).fetchone()
    (replica_txid,) = view.execute("SELECT litestream_txid()").fetchone()
    replica_rows = view.execute("SELECT id, body FROM notes ORDER BY id").fetchall()
    view.close()
    if replica_rows != primary_rows or replica_txid != txid:
        print(f"replica at TXID {replica_txid} differs from the primary at TXID {txid}", file=sys.stderr)
        return 1
    print(f"replica: {len(replica_rows)} rows at TXID {replica_txid}, same as the primary")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1:
        sys.exit(main(sys.argv[1]))
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(tmp))
