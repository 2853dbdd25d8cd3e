//! Several connections of one process to one replicated database share one replication
//! (a web framework's connection pool): what each further open may say.
//!
//! | open, while a connection replicates `app.db` to R1 | expected |
//! |---|---|
//! | `replica=R2` (or another key) | refused, the reason in `failed_opens` (before: accepted, its syncs succeeding for commits stored in R1) |
//! | `replica=R1/` with other `sync=` | opens (the first open's settings apply, a warning says so) |
//! | no `replica=`, nothing in the environment | opens with what the database has (before: "no replica URL") |
//! | `replica=` empty, for another database | refused (before: plain SQLite, unreplicated, while another database was open) |

mod harness;

use harness::*;
use std::process::Command;

#[test]
fn further_connections_share_the_replication_and_may_not_name_another_replica() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let (r1, r2) = (dir.path().join("r1"), dir.path().join("r2"));
    let mut cmd = Command::new(python());
    for (key, _) in std::env::vars() {
        if key.starts_with("LITESTREAM_") {
            cmd.env_remove(key);
        }
    }
    let out = check(
        "connections_of_one_database.py",
        cmd.arg(repo_root().join("tests/scripts/connections_of_one_database.py"))
            .arg(extension())
            .arg(&db)
            .arg(&r1)
            .arg(&r2)
            .output()
            .unwrap(),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "first: True", "{out}");
    assert_eq!(lines[1], "another replica: refused", "{out}");
    assert!(
        lines[2].contains("already open in this process replicating to"),
        "{out}"
    );
    assert_eq!(lines[3], "same replica, other settings: opened", "{out}");
    assert_eq!(lines[4], "no replica=: opened", "{out}");
    assert_eq!(lines[5], "its sync: True", "{out}");
    assert_eq!(lines[6], "empty replica=: refused", "{out}");
    assert!(!r2.exists(), "nothing was written to the other replica");
}
