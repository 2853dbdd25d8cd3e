// litestream-vfs, the SQLite extension, for Node.js: the same two calls as sqlite-vec's
// package, for better-sqlite3 and for node:sqlite (Node >= 22.13).
'use strict';
const fs = require('fs');
const path = require('path');

/** The path of the extension's shared library inside this package. */
function getLoadablePath() {
  const file = path.join(__dirname, 'lib', 'liblitestream_vfs.so');
  if (!fs.existsSync(file)) {
    throw new Error(`the litestream-vfs extension is missing from the package: ${file}`);
  }
  return file;
}

/**
 * Loads the extension through `db`: a better-sqlite3 Database, or a node:sqlite
 * DatabaseSync opened with { allowExtension: true }. It registers the "litestream" VFS
 * and its SQL functions for the whole process, so load it once, before opening any
 * database with ?vfs=litestream.
 */
function load(db) {
  try {
    db.loadExtension(getLoadablePath());
  } catch (e) {
    // node:sqlite refuses unless the database was opened to allow it.
    if (e && e.code === 'ERR_INVALID_STATE') {
      throw new Error(`${e.message}: open the DatabaseSync with { allowExtension: true } to load litestream-vfs`);
    }
    throw e;
  }
}

exports.getLoadablePath = getLoadablePath;
exports.load = load;
