#!/usr/bin/python3
"""Deterministic read queries against the `t(id, k, b)` table of the network fault tests.

Reads one command per line on stdin: `next` runs the next query of the seeded sequence,
`scan` runs a query that reads every row. Prints one JSON object per command:
{"ok": rows} or, when SQLite reports an error, {"error": "SQLITE_...", "message": "..."}.
Any other exception ends the script with a traceback: a replica must fail only the way
SQLite fails. The test drives the same commands against the primary file (plain SQLite)
and the replica VFS and compares the lines; stdin lets it change the network between them.
"""
import argparse
import json
import random
import sqlite3
import sys

SCAN = ("SELECT count(*), sum(length(b)), max(k), sum(id * length(b)) FROM t", ())


def next_query(rng, i):
    kind = i % 4
    if kind == 0:
        return ("SELECT id, k, length(b), hex(substr(b, 1 + id % 50, 16)) FROM t WHERE id = ?",
                (rng.randrange(1, 2001),))
    if kind == 1:
        lo = rng.randrange(1, 2001)
        return ("SELECT count(*), sum(length(b)), group_concat(hex(substr(b, 100, 4)), '') "
                "FROM t WHERE id BETWEEN ? AND ? + 20", (lo, lo))
    if kind == 2:
        return ("SELECT id, k FROM t WHERE k >= ? ORDER BY k LIMIT 5", ("%04X" % rng.randrange(0x10000),))
    return ("SELECT count(*), min(id), max(id) FROM t WHERE id > ?", (rng.randrange(1, 2001),))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--db", required=True, help="a path (plain SQLite) or a file: URI (with --ext)")
    p.add_argument("--ext")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    if args.ext:
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(args.ext)
        conn = sqlite3.connect(args.db, uri=True, isolation_level=None)
    else:
        conn = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True, isolation_level=None)
    # SQLite's own page cache as small as it goes, so reads keep reaching the VFS.
    conn.execute("PRAGMA cache_size = 10")
    rng = random.Random(args.seed)
    i = 0
    for command in sys.stdin:
        command = command.strip()
        if command == "scan":
            sql, params = SCAN
        else:
            sql, params = next_query(rng, i)
            i += 1
        try:
            out = {"ok": [list(r) for r in conn.execute(sql, params).fetchall()]}
        except sqlite3.Error as e:
            out = {"error": getattr(e, "sqlite_errorname", "unknown"), "message": str(e)}
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    sys.exit(main())
