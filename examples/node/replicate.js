// A primary and a read replica through better-sqlite3 (Node.js).
//
//   (cd examples/node && npm install)     # builds better-sqlite3; make setup does this
//   node examples/node/replicate.js [WORKDIR]
//
// Opens a primary that replicates to a file:// replica in WORKDIR (a new temporary
// directory by default), writes 503 rows, waits until they are in the replica
// (litestream_sync), then opens a read replica on the replica alone and checks that it
// holds exactly the primary's rows. Exits nonzero if anything differs.
// LITESTREAM_VFS_EXT names the extension (default: target/release/liblitestream_vfs).
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');

// better-sqlite3 builds SQLite with URI filenames off (SQLITE_USE_URI=0) and turns them on
// when this variable is "1" as its native module loads. Our filenames are URIs: they
// carry ?vfs=litestream and the replica settings.
process.env.SQLITE_USE_URI = '1';
const Database = require('better-sqlite3');

const repo = path.resolve(__dirname, '..', '..');
const ext = process.env.LITESTREAM_VFS_EXT || path.join(repo, 'target/release/liblitestream_vfs');

function main(work) {
  const replica = `file://${work}/replica`;

  // The extension registers the "litestream" VFS for the whole process, so it is loaded
  // once, on a throwaway connection, before any database opens through it.
  const loader = new Database(':memory:');
  loader.loadExtension(ext);
  loader.close();

  // The primary: every commit is captured and uploaded in the background;
  // litestream_sync() returns once everything committed is in the replica. (JS numbers
  // bind as REAL; the litestream_* functions take a whole REAL wherever they take an
  // integer.)
  const primary = new Database(`file:${work}/app.db?vfs=litestream&replica=${replica}&sync_interval=100ms`);
  primary.exec('CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
  const insert = primary.prepare('INSERT INTO notes(body) VALUES (?)');
  for (const body of ['alpha', 'beta', 'gamma ü']) insert.run(body);
  primary.transaction(() => {
    for (let i = 1; i <= 500; i++) insert.run(`note ${i} ` + 'x'.repeat(200));
  })();
  const txid = primary.prepare('SELECT litestream_sync(?)').pluck().get(30000);
  const primaryRows = primary.prepare('SELECT id, body FROM notes ORDER BY id').all();
  primary.close();
  console.log(`primary: ${primaryRows.length} rows, synced at TXID ${txid}`);

  // The read replica: another file name, fed only from the replica. litestream_wait
  // blocks until it has reached the primary's TXID; the next statement sees it.
  const view = new Database(`file:${work}/view.db?vfs=litestream&role=replica&replica=${replica}`, { readonly: true });
  view.prepare('SELECT litestream_wait(?, ?)').get(txid, 30000);
  const replicaTxid = view.prepare('SELECT litestream_txid()').pluck().get();
  const replicaRows = view.prepare('SELECT id, body FROM notes ORDER BY id').all();
  view.close();
  if (JSON.stringify(replicaRows) !== JSON.stringify(primaryRows) || replicaTxid !== txid) {
    console.error(`replica at TXID ${replicaTxid} differs from the primary at TXID ${txid}`);
    return 1;
  }
  console.log(`replica: ${replicaRows.length} rows at TXID ${replicaTxid}, same as the primary`);
  return 0;
}

if (process.argv[2]) {
  process.exitCode = main(process.argv[2]);
} else {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'litestream-node-'));
  try {
    process.exitCode = main(work);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
