-- A primary reports its TXID, syncs to the replica and describes itself in JSON.
SELECT litestream_status() ->> '$.role' AS role_without_replication;
.open file:app.db?vfs=litestream&replica=memory://sqltests-primary&sync_interval=50ms
PRAGMA journal_mode;
CREATE TABLE t(x);
INSERT INTO t VALUES (1), (2);
SELECT litestream_sync(10000) >= 1 AS synced;
INSERT INTO t VALUES (3);
SELECT litestream_sync(10000) = litestream_txid() AS sync_returns_the_txid;
SELECT litestream_status() ->> '$.role', litestream_status() ->> '$.uploaded_txid' = litestream_txid();
SELECT litestream_sync('soon');
