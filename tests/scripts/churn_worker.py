#!/usr/bin/python3
"""One web-server-like worker process writing a shared database through the litestream
VFS: it inserts rows (mostly one statement each, sometimes in an explicit transaction,
large ones spilling pages before their commit, some rolled back), updates and deletes
rows of a second table (freeing and reusing pages), shrinks the file (incremental
vacuum; VACUUM while the database is small), now and then checkpoints (PASSIVE, RESTART or TRUNCATE) and opens and closes a
second connection, then exits normally (closing everything) after --lifetime seconds.
With --threads N, N connections do all that at once, one thread each, as a threaded web
server's workers do. The multi-process churn tests (tests/multi_process.rs) start several
of these over and over.

Every error SQLite reports is written to stderr as one line "error: <message>"; the
process still exits 0, so that the test sees every error of a run.

With --ack-file, every --sync-every operations it calls litestream_sync() and appends
"<txid> <highest id this worker inserted>" once it returns: what the replica then must
hold, for the crash loops (tests/multi_process_crash.rs) that SIGKILL workers at random.
"""
import argparse
import random
import sqlite3
import sys
import threading
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--replica", required=True)
    p.add_argument("--tag", required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--lifetime", type=float, default=1.0)
    p.add_argument("--plain", action="store_true", help="open without the VFS (the control run)")
    p.add_argument("--ack-file")
    p.add_argument("--sync-every", type=int, default=10)
    p.add_argument("--params", default="sync_interval=100ms")
    p.add_argument("--threads", type=int, default=1, help="connections writing at once, one thread each")
    p.add_argument("--outsider", type=float, default=0.0,
                   help="chance per step of a commit by plain SQLite (no VFS) beside the workers")
    args = p.parse_args()

    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    if args.plain:
        uri = f"file:{args.db}"
    else:
        uri = f"file:{args.db}?vfs=litestream&replica={args.replica}&{args.params}"
    ack = open(args.ack_file, "a") if args.ack_file else None
    ack_lock = threading.Lock()
    # lifetime 0: until killed
    deadline = time.monotonic() + args.lifetime if args.lifetime > 0 else float("inf")
    writers = [Writer(args, uri, random.Random(args.seed * 131 + i), ack, ack_lock, deadline)
               for i in range(args.threads)]
    threads = [threading.Thread(target=w.run) for w in writers[1:]]
    for t in threads:
        t.start()
    writers[0].run()
    for t in threads:
        t.join()
    print(f"{args.tag} {sum(w.n for w in writers)} {sum(w.errors for w in writers)}")
    return 0


class Writer:
    """One connection's loop (the main thread's, or one more thread's with --threads)."""

    def __init__(self, args, uri, rng, ack, ack_lock, deadline):
        self.args, self.uri, self.rng = args, uri, rng
        self.ack, self.ack_lock, self.deadline = ack, ack_lock, deadline
        self.errors = 0
        self.n = 0
        self.highest = 0

    def connect(self):
        conn = sqlite3.connect(self.uri, uri=True, isolation_level=None, timeout=30,
                               check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=30000")
        if self.args.plain:
            conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def attempt(self, what, fn):
        try:
            return fn()
        except sqlite3.Error as e:
            self.errors += 1
            print(f"error: {what}: {e}", file=sys.stderr, flush=True)
            return None

    def insert_rows(self, conn, rows):
        top = 0
        for row in rows:
            top = max(top, conn.execute("INSERT INTO churn(writer, n, pad) VALUES (?, ?, ?)", row).lastrowid)
        return top

    def transaction(self, conn):
        """One explicit transaction of several rows; a third of them large, written with a
        small page cache so that SQLite spills pages into the WAL before the commit (a
        process killed there leaves uncommitted frames, and a takeover may come in the
        middle); a quarter rolled back (their rows never count as acknowledged)."""
        rng = self.rng
        big = rng.random() < 0.3
        count = rng.randrange(30, 150) if big else rng.randrange(2, 20)
        rows = [(self.args.tag, self.n, rng.randbytes(rng.randrange(500, 3000) if big else rng.randrange(10, 300)))
                for _ in range(count)]
        keep = rng.random() >= 0.25
        conn.execute(f"PRAGMA cache_size={8 if big else -2000}")
        try:
            conn.execute("BEGIN IMMEDIATE")
            top = self.insert_rows(conn, rows)
            if rng.random() < 0.3:
                self.rewrite_scratch(conn)
            conn.execute("COMMIT" if keep else "ROLLBACK")
            if keep:
                self.highest = max(self.highest, top)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA cache_size=-2000")

    def rewrite_scratch(self, conn):
        """Rows that are updated and deleted, so that pages are freed, reused and the file
        shrinks (the churn table only grows): only compared whole at the end."""
        rng = self.rng
        what = rng.random()
        if what < 0.4:
            for _ in range(rng.randrange(1, 20)):
                conn.execute("INSERT INTO scratch(v) VALUES (?)", (rng.randbytes(rng.randrange(100, 4000)),))
        elif what < 0.7:
            conn.execute("UPDATE scratch SET v = ? WHERE id % 7 = ?",
                         (rng.randbytes(rng.randrange(10, 2000)), rng.randrange(7)))
        else:
            conn.execute("DELETE FROM scratch WHERE id % 5 = ?", (rng.randrange(5),))

    def vacuum(self, conn):
        """Mostly an incremental vacuum (the freed pages at the end of the file go, the file
        shrinks); rarely a whole VACUUM, and only while the database is small: it holds
        the write lock while it rewrites every page, and the replica cannot move meanwhile
        (the crash loop times how soon it moves after a kill)."""
        if self.rng.random() < 0.5 and conn.execute("PRAGMA page_count").fetchone()[0] < 2048:
            conn.execute("VACUUM")
        else:
            conn.execute("PRAGMA incremental_vacuum(64)").fetchall()

    def outsider(self, conn):
        """A tool without the extension (a migration, a script) beside the workers: plain
        SQLite commits a few rows, and half the time checkpoints them away with TRUNCATE,
        perhaps before the replicating process read them: its commits must reach the
        replica all the same (a snapshot), which the final comparison checks. Half the
        time the worker empties the WAL through the VFS first, so that the tool's
        generation is one begun on an empty WAL, which only the database file shows once
        it is checkpointed away (lost from the replica before 2026-12-06; here the many
        snapshots the churn forces healed it every time: tests/tools_beside_the_primary.rs
        checks that case one step at a time)."""
        rng = self.rng
        if rng.random() < 0.5:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        plain = sqlite3.connect(f"file:{self.args.db}", uri=True, isolation_level=None, timeout=30)
        try:
            plain.execute("PRAGMA busy_timeout=30000")
            rows = [("outsider", self.n, rng.randbytes(rng.randrange(10, 300))) for _ in range(rng.randrange(1, 5))]
            plain.execute("BEGIN IMMEDIATE")
            self.insert_rows(plain, rows)
            plain.execute("COMMIT")
            if rng.random() < 0.5:
                plain.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        finally:
            plain.close()

    def sync(self, conn):
        txid = self.attempt("sync", lambda: conn.execute("SELECT litestream_sync(60000)").fetchone()[0])
        if txid is not None and self.highest:
            with self.ack_lock:
                self.ack.write(f"{txid} {self.highest}\n")
                self.ack.flush()

    def run(self):
        conn = self.attempt("open", self.connect)
        if conn is None:
            return
        # auto_vacuum takes effect only before the first table: then the file shrinks at
        # every incremental_vacuum, not only at a VACUUM.
        self.attempt("create", lambda: conn.executescript(
            "PRAGMA auto_vacuum=INCREMENTAL;"
            "CREATE TABLE IF NOT EXISTS churn(id INTEGER PRIMARY KEY, writer TEXT, n INTEGER, pad BLOB);"
            "CREATE TABLE IF NOT EXISTS scratch(id INTEGER PRIMARY KEY, v BLOB);"))
        rng = self.rng
        while time.monotonic() < self.deadline:
            self.n += 1
            if self.args.outsider and rng.random() < self.args.outsider:
                self.attempt("outsider", lambda: self.outsider(conn))
            kind = rng.random()
            if self.ack and self.n % self.args.sync_every == 0:
                self.sync(conn)
            if kind < 0.70:
                rows = [(self.args.tag, self.n, rng.randbytes(rng.randrange(10, 300)))
                        for _ in range(rng.randrange(1, 8))]

                def insert():
                    self.highest = max(self.highest, self.insert_rows(conn, rows))
                self.attempt("insert", insert)
            elif kind < 0.76:
                self.attempt("transaction", lambda: self.transaction(conn))
            elif kind < 0.80:
                self.attempt("scratch", lambda: self.rewrite_scratch(conn))
            elif kind < 0.81:
                self.attempt("vacuum", lambda: self.vacuum(conn))
            elif kind < 0.90:
                mode = rng.choice(["PASSIVE", "RESTART", "TRUNCATE"])
                self.attempt(f"checkpoint {mode}", lambda: conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall())
            else:
                def second():
                    extra = self.connect()
                    extra.execute("SELECT count(*) FROM churn").fetchone()
                    extra.close()
                self.attempt("second connection", second)
        self.attempt("close", conn.close)


if __name__ == "__main__":
    sys.exit(main())
