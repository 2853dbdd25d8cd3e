// Primary -> litestream_sync() -> read replica -> same rows, through the installed
// sqlite-litestream npm package (tests/packages.rs runs it in a fresh project).
//
//   node package_roundtrip.js better-sqlite3|node:sqlite WORKDIR
//
// Prints the path the package loads the extension from, then one line
// "<driver>: <rows> rows at TXID <txid>, replica agrees". Exits nonzero on any difference.
'use strict';
const litestream = require('sqlite-litestream');

const [driver, work] = process.argv.slice(2);
const replica = `file://${work}/replica`;
const primaryUri = `file:${work}/app.db?vfs=litestream&replica=${replica}&sync_interval=100ms`;
const replicaUri = `file:${work}/view.db?vfs=litestream&role=replica&replica=${replica}`;
console.log(litestream.getLoadablePath());

let connect;
if (driver === 'better-sqlite3') {
  // URI filenames carry ?vfs=litestream: better-sqlite3 accepts them only with this set
  // before it loads.
  process.env.SQLITE_USE_URI = '1';
  const Database = require('better-sqlite3');
  litestream.load(new Database(':memory:'));
  connect = (uri) => new Database(uri);
} else if (driver === 'node:sqlite') {
  const { DatabaseSync } = require('node:sqlite');
  litestream.load(new DatabaseSync(':memory:', { allowExtension: true }));
  connect = (uri) => new DatabaseSync(uri);
} else {
  throw new Error(`unknown driver ${driver}`);
}

const primary = connect(primaryUri);
primary.exec('CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
const insert = primary.prepare('INSERT INTO notes(body) VALUES (?)');
primary.exec('BEGIN');
for (let i = 1; i <= 300; i++) insert.run(`note ${i} from ${driver}`);
primary.exec('COMMIT');
// Both drivers bind JS numbers as REAL; litestream_* functions take whole REALs.
const txid = Number(primary.prepare('SELECT litestream_sync(30000) AS t').get().t);
const rows = primary.prepare('SELECT id, body FROM notes ORDER BY id').all();
primary.close();

const view = connect(replicaUri);
view.prepare('SELECT litestream_wait(?, 30000)').get(txid);
const seen = Number(view.prepare('SELECT litestream_txid() AS t').get().t);
const copied = view.prepare('SELECT id, body FROM notes ORDER BY id').all();
view.close();
if (JSON.stringify(copied) !== JSON.stringify(rows) || seen !== txid) {
  console.error(`${driver}: the replica at TXID ${seen} differs from the primary at TXID ${txid}`);
  process.exit(1);
}
console.log(`${driver}: ${rows.length} rows at TXID ${txid}, replica agrees`);
