#!/usr/bin/env bash
# A primary and a read replica through the sqlite3 shell.
#
#   examples/shell/replicate.sh [WORKDIR]
#
# Opens a primary that replicates to a file:// replica in WORKDIR (a new temporary
# directory by default), writes 503 rows, waits until they are in the replica
# (litestream_sync), then opens a read replica on the replica alone and checks that
# it holds exactly the primary's rows. Exits nonzero if anything differs.
# LITESTREAM_VFS_EXT names the extension (default: target/release/liblitestream_vfs).
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
ext="${LITESTREAM_VFS_EXT:-$repo/target/release/liblitestream_vfs}"
if [ $# -ge 1 ]; then
  work="$1"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
replica="file://$work/replica"

# The primary: every commit is captured and uploaded in the background;
# litestream_sync() returns once everything committed is in the replica.
primary_out=$(sqlite3 -batch -bail -cmd ".load $ext" :memory: <<SQL
.open file:$work/app.db?vfs=litestream&replica=$replica&sync_interval=100ms
CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO notes(body) VALUES ('alpha'), ('beta'), ('gamma ü');
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
  INSERT INTO notes(body) SELECT 'note ' || i || ' ' || replace(hex(zeroblob(100)), '0', 'x') FROM n;
SELECT litestream_sync(30000);
SELECT id, body FROM notes ORDER BY id;
SQL
)
txid=$(head -n 1 <<<"$primary_out")
primary_rows=$(tail -n +2 <<<"$primary_out")
echo "primary: $(wc -l <<<"$primary_rows") rows, synced at TXID $txid"

# The read replica: another file name, fed only from the replica. litestream_wait
# blocks until it has reached the primary's TXID; the next statement sees it.
replica_out=$(sqlite3 -batch -bail -cmd ".load $ext" :memory: <<SQL
.open file:$work/view.db?vfs=litestream&role=replica&replica=$replica
SELECT litestream_wait($txid, 30000);
SELECT litestream_txid();
SELECT id, body FROM notes ORDER BY id;
SQL
)
replica_txid=$(sed -n 2p <<<"$replica_out")
replica_rows=$(tail -n +3 <<<"$replica_out")
if [ "$replica_rows" != "$primary_rows" ] || [ "$replica_txid" != "$txid" ]; then
  echo "replica at TXID $replica_txid differs from the primary at TXID $txid" >&2
  diff <(echo "$primary_rows") <(echo "$replica_rows") >&2 || true
  exit 1
fi
echo "replica: $(wc -l <<<"$replica_rows") rows at TXID $replica_txid, same as the primary"
