#!/usr/bin/env bash
# `make demo`: load the extension in the sqlite3 shell and use a database through it.
set -euo pipefail
cd "$(dirname "$0")/.."
ext="$PWD/target/release/liblitestream_vfs"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "== sqlite3 shell, extension loaded, database opened through the litestream VFS"
sqlite3 -batch -cmd ".load $ext" -header -column :memory: <<'SQL'
SELECT litestream_version() AS version;
.open file:app.db?vfs=litestream
PRAGMA journal_mode=WAL;
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer TEXT, total REAL);
INSERT INTO orders(customer, total)
  SELECT printf('customer-%03d', value % 50), round(value * 1.37, 2) FROM generate_series(1, 1000);
SELECT customer, count(*) AS orders, round(sum(total), 2) AS spent
  FROM orders GROUP BY customer ORDER BY spent DESC LIMIT 3;
.vfsname
SQL
