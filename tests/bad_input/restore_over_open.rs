//! A restore onto a database some connection has open, through the VFS or a plain
//! `sqlite3`: refused, naming who holds it.
//!
//! | case | input | expected |
//! |---|---|---|
//! | `restore_over_an_open_database` | `litestream_restore(…, 'overwrite')` and `restore -overwrite` onto a database open through the VFS, or in a plain `sqlite3` | refused, names who holds it; the database keeps its rows and later commits; allowed once closed |

use super::*;

/// Restoring over a database some connection has open replaced the file under it and
/// deleted its WAL: the connection's next commit went into a new WAL that the restored
/// file then took for its own (a database without its tables, measured). Refused now,
/// from SQL in the process holding it, from the CLI beside it, and beside a plain SQLite.
#[test]
fn restore_over_an_open_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = seeded_db(dir.path());
    let url = replicated(dir.path(), &db);
    let cli = |db: &Path| our_cli_restore(&url, db, &["-overwrite"]);
    let mut app = common::shell::Shell::start(
        &extension(),
        &dir.path().join("app.stderr"),
        &[],
        &format!(".open file:{}?vfs=litestream&replica={url}", db.display()),
    );
    app.run("INSERT INTO t(v) VALUES ('before');");
    app.run(&format!(
        "SELECT litestream_restore('{url}', '{}', 'latest', 'overwrite');",
        db.display()
    ));
    assert!(
        app.stderr().contains("is open: this process holds a lock"),
        "{}",
        app.stderr()
    );
    let beside = cli(&db);
    let why = String::from_utf8_lossy(&beside.stderr);
    assert!(!beside.status.success() && why.contains("is open: process"), "{why}");
    app.run("INSERT INTO t(v) VALUES ('after');");
    drop(app);
    assert_rows(&db, ROWS + 2);

    let mut plain = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = plain.stdin.take().unwrap();
    use std::io::{BufRead, Write};
    writeln!(stdin, "SELECT count(*) FROM t;").unwrap();
    let mut line = String::new();
    std::io::BufReader::new(plain.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), (ROWS + 2).to_string());
    let beside_plain = cli(&db);
    assert!(
        !beside_plain.status.success() && String::from_utf8_lossy(&beside_plain.stderr).contains("is open"),
        "{}",
        String::from_utf8_lossy(&beside_plain.stderr)
    );
    drop(stdin);
    plain.wait().unwrap();
    assert_rows(&db, ROWS + 2);

    let closed = cli(&db);
    assert!(closed.status.success(), "{}", String::from_utf8_lossy(&closed.stderr));
    assert_rows(&db, ROWS + 2);
}
