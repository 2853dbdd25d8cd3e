-- A read replica in the same process as its primary (a memory:// store is shared
-- process-wide): it serves what was synced, refuses writes, and follows new commits.
.open file:app.db?vfs=litestream&replica=memory://sqltests-replica&sync_interval=50ms
CREATE TABLE t(id INTEGER PRIMARY KEY, x);
INSERT INTO t(x) VALUES (1), (2);
SELECT litestream_sync(10000) >= 1 AS synced;
.open file:view.db?vfs=litestream&role=replica&replica=memory://sqltests-replica&poll_interval=20ms
SELECT count(*), sum(x) FROM t;
PRAGMA journal_mode;
.vfsname
SELECT litestream_status() ->> '$.role', litestream_status() ->> '$.files_in_plan' >= 1;
SELECT litestream_lag() BETWEEN 0 AND 5 AS caught_up;
SELECT litestream_time();
PRAGMA litestream_time = 'latest';
SELECT litestream_set_time('next tuesday');
INSERT INTO t(x) VALUES (3);
SELECT litestream_wait(litestream_txid(), 1000) = litestream_txid() AS already_there;
SELECT litestream_wait('soon');
-- The primary, attached to the same connection, commits; the replica waits for it.
ATTACH 'file:app.db?vfs=litestream&replica=memory://sqltests-replica&sync_interval=50ms' AS p;
CREATE TEMP TABLE before AS SELECT litestream_txid() AS txid;
INSERT INTO p.t(x) VALUES (40);
SELECT litestream_wait((SELECT txid FROM before) + 1, 10000) = (SELECT txid FROM before) + 1 AS reached;
SELECT count(*), sum(x) FROM main.t;
SELECT litestream_txid() = (SELECT txid FROM before) + 1 AS sees_the_new_txid;
