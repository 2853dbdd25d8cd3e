"""litestream-vfs, the SQLite extension, for Python.

Continuous backup of a SQLite database to object storage and read replicas anywhere,
in Litestream's format. The same two calls as the ``litestream_vfs`` and ``sqlite_vec``
packages, so switching is one import line::

    import sqlite3
    import sqlite_litestream

    boot = sqlite3.connect(":memory:")
    sqlite_litestream.load(boot)          # registers the "litestream" VFS process-wide
    db = sqlite3.connect("file:app.db?vfs=litestream&replica=s3://bucket/app", uri=True)

Works with the standard library's ``sqlite3`` where it was built with extension
loading (Debian's and most Linux distributions' Pythons), and with APSW, whose bundled
SQLite always can (the answer for pyenv and macOS Pythons)::

    import apsw, sqlite_litestream
    sqlite_litestream.load(apsw.Connection(":memory:"))
"""

import os

__version__ = "@VERSION@"
__all__ = ["loadable_path", "load"]

_LIBRARY = "liblitestream_vfs.so"


def loadable_path():
    """The path of the extension's shared library inside this package."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), _LIBRARY)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"the litestream-vfs extension is missing from the package: {path}")
    return path


def load(conn):
    """Loads the extension through ``conn``, a ``sqlite3.Connection`` or an
    ``apsw.Connection``.

    The extension registers the ``litestream`` VFS and its SQL functions for the whole
    process (for the SQLite library ``conn`` uses), so it is loaded once, before any
    database is opened with ``?vfs=litestream``. Extension loading is switched on only
    for the call.
    """
    enable = getattr(conn, "enable_load_extension", None)
    if enable is None:
        raise RuntimeError(
            "this Python's sqlite3 module cannot load extensions (it was built without "
            "them, as pyenv and macOS Pythons often are): use APSW (pip install apsw) "
            "or a distribution's python3"
        )
    enable(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        enable(False)
