-- The extension registers the `litestream` VFS and litestream_version(); a database
-- opened through the VFS reads and writes like any other, in WAL and rollback modes.
SELECT litestream_version() IS NOT NULL AS has_version;
.open file:wal.db?vfs=litestream&replica=memory://sqltests-wal
PRAGMA journal_mode=WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT);
INSERT INTO t(body) SELECT printf('row %d', value) FROM generate_series(1, 500);
BEGIN; DELETE FROM t WHERE id % 2 = 0; ROLLBACK;
SELECT count(*), sum(id) FROM t;
-- Wait for the first snapshot: its read transaction would make the checkpoint busy.
SELECT litestream_sync(10000) > 0;
PRAGMA wal_checkpoint(TRUNCATE);
SELECT litestream_version() IS NOT NULL AS functions_on_new_connection;
.open file:journal.db?vfs=litestream&replica=memory://sqltests-journal
PRAGMA journal_mode;
CREATE TABLE u(x);
INSERT INTO u VALUES (1), (2), (3);
SELECT sum(x) FROM u;
PRAGMA integrity_check;
-- The same file through the default VFS sees the same rows.
.open wal.db
SELECT count(*) FROM t;
