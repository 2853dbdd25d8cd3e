#!/usr/bin/env bash
# `make demo`: a primary replicates to a local file:// replica through the extension,
# a read replica serves queries from that replica, and the real Litestream 0.5.17
# restores it to the same database.
set -euo pipefail
cd "$(dirname "$0")/.."
ext="$PWD/target/release/liblitestream_vfs"
litestream="$PWD/.venv/bin/litestream"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "== primary: sqlite3 shell, database opened through the litestream VFS"
sqlite3 -batch -cmd ".load $ext" -header -column :memory: <<SQL
.open file:app.db?vfs=litestream&replica=file://$work/replica&sync_interval=200ms
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total REAL);
INSERT INTO orders(customer, total)
  SELECT printf('customer-%03d', value % 50), round(value * 1.37, 2) FROM generate_series(1, 1000);
SELECT litestream_sync() AS first_sync_txid;    -- TXID 1: the first snapshot
UPDATE orders SET total = total * 2 WHERE customer = 'customer-007';
INSERT INTO orders(customer, total) VALUES ('customer-new', 99.5);
SELECT litestream_sync() AS synced_txid;        -- each commit is a TXID
SELECT litestream_status() ->> '\$.uploaded_txid' AS uploaded_txid,
       litestream_status() ->> '\$.uploads' AS uploads;
SQL
echo
echo "== the replica (Litestream's layout)"
find replica -type f | sort
echo
echo "== a read replica: opened from the replica directory alone, pages fetched on demand"
sqlite3 -batch -cmd ".load $ext" -header -column :memory: <<SQL
.open file:replica-view.db?vfs=litestream&role=replica&replica=file://$work/replica
SELECT litestream_txid() AS replica_txid;
SELECT customer, total FROM orders WHERE customer = 'customer-new';
SELECT litestream_status() ->> '\$.pages_fetched' AS pages_fetched,
       litestream_status() ->> '\$.requests' AS requests;
SQL
echo
echo "== litestream 0.5.17 restores it"
env -u AWS_CA_BUNDLE "$litestream" restore -o restored.db "file://$work/replica"
sqlite3 -header -column restored.db \
  "SELECT customer, count(*) AS orders, round(sum(total), 2) AS spent FROM orders GROUP BY customer ORDER BY spent DESC LIMIT 3;"
if [ "$(sqlite3 app.db .dump | md5sum)" = "$(sqlite3 restored.db .dump | md5sum)" ]; then
  echo "restored database == primary database"
else
  echo "MISMATCH between the restored and the primary database" >&2
  exit 1
fi
