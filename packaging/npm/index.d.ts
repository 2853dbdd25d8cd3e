/** The path of the extension's shared library inside this package. */
export declare function getLoadablePath(): string;

/** Anything with SQLite's loadExtension: better-sqlite3's Database, node:sqlite's DatabaseSync. */
interface LoadsExtensions {
  loadExtension(path: string, ...rest: any[]): unknown;
}

/**
 * Loads the extension through `db` (better-sqlite3, or node:sqlite's DatabaseSync opened
 * with `{ allowExtension: true }`). Registers the "litestream" VFS for the whole process:
 * load it once, before opening databases with `?vfs=litestream`.
 */
export declare function load(db: LoadsExtensions): void;
