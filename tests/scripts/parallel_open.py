#!/usr/bin/python3
"""Two primaries opened at once in one process: `a.db` replicates to a store that stalls
(STALLED_URL), `b.db` to a local directory. Prints one JSON line: how long b.db took to
open, commit and sync, and whether a.db was still opening meanwhile.

usage: parallel_open.py EXT DIR STALLED_URL
"""

import json
import os
import sqlite3
import sys
import threading
import time
import urllib.parse


def main():
    ext, root, stalled_url = sys.argv[1], sys.argv[2], sys.argv[3]
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(ext)
    loader.close()
    stalled = {}

    def open_stalled():
        started = time.monotonic()
        try:
            replica = urllib.parse.quote(stalled_url, safe="")
            c = sqlite3.connect(f"file:{root}/a.db?vfs=litestream&replica={replica}", uri=True)
            c.close()
            stalled["outcome"] = "opened"
        except sqlite3.Error as e:
            stalled["outcome"] = str(e)
        stalled["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=open_stalled, daemon=True)
    thread.start()
    time.sleep(0.5)  # a.db's open is in its first LIST by now
    started = time.monotonic()
    c = sqlite3.connect(f"file:{root}/b.db?vfs=litestream&replica=file://{root}/replica-b",
                        uri=True, isolation_level=None, timeout=30)
    c.execute("CREATE TABLE t(x)")
    c.execute("INSERT INTO t VALUES (1)")
    txid = c.execute("SELECT litestream_sync(30000)").fetchone()[0]
    other_seconds = time.monotonic() - started
    print(json.dumps({
        "other_seconds": other_seconds,
        "other_txid": txid,
        "stalled_still_opening": thread.is_alive(),
        "stalled": stalled,
    }), flush=True)
    # a.db's open may hang on for a while yet: the answer is in.
    os._exit(0)


if __name__ == "__main__":
    main()
