-- Loading the extension registers `litestream` without making it the default, and a
-- file opened through it reports the shim stack.
.open file:a.db?vfs=litestream&replica=memory://sqltests-list
CREATE TABLE t(x);
.vfsname
.open b.db
CREATE TABLE t(x);
.vfsname
