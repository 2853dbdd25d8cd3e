//! Pre-fork servers (gunicorn `--preload`, uWSGI, Puma or Unicorn with `preload_app`,
//! Python's `multiprocessing`): the parent loads the extension and touches the database,
//! then forks workers (`tests/scripts/prefork.py`). A child has none of its parent's
//! threads: before, a worker's commits were captured by an engine that no longer ran,
//! its `litestream_sync()` timed out, its status showed no error, and nothing it
//! committed reached the replica until another process happened to take over.

mod common;
mod harness;

use common::s3::{S3Server, CREDS};
use common::seaweedfs::SeaweedFs;
use harness::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs the scenario on a `file://` replica; returns what each participant reported, in
/// order.
fn prefork(dir: &Path, mode: &str) -> Vec<Value> {
    prefork_to(dir, mode, &file_url(dir))
}

fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.join("replica").display())
}

/// [`prefork`] replicating to `url` (the store's credentials in the environment).
fn prefork_to(dir: &Path, mode: &str, url: &str) -> Vec<Value> {
    // A child stuck on its parent's threads would otherwise hang the test.
    let out = Command::new("timeout")
        .arg("120")
        .arg(python())
        .arg(repo_root().join("tests/scripts/prefork.py"))
        .arg(extension())
        .arg(dir)
        .arg(mode)
        .arg(url)
        .envs(CREDS)
        .output()
        .expect("python3 runs");
    check(&format!("prefork.py {mode}"), out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn said<'a>(lines: &'a [Value], who: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["who"] == who).collect()
}

/// Every worker's sync acknowledged its commit, and the replica restores to the database.
fn assert_workers_replicated(dir: &Path, lines: &[Value]) {
    assert_workers_replicated_to(dir, lines, &file_url(dir));
}

fn assert_workers_replicated_to(dir: &Path, lines: &[Value], url: &str) {
    for who in ["worker 0", "worker 1"] {
        let line = said(lines, who);
        assert_eq!(line.len(), 1, "{who} reported once: {lines:?}");
        assert!(
            line[0]["sync"].is_u64(),
            "{who}'s commit was not acknowledged: {lines:?}"
        );
    }
    let ours = dir.join("restored.db");
    sql_restore(url, &ours, &CREDS);
    let db = dir.join("app.db");
    assert_eq!(dump(&ours), dump(&db));
    let count = plain_sqlite(&db, "SELECT count(*) FROM t WHERE v LIKE 'worker%'");
    assert_eq!(count.trim(), "2");
}

#[test]
fn workers_forked_after_the_parent_closed_the_database_replicate() {
    let dir = tempfile::tempdir().unwrap();
    let lines = prefork(dir.path(), "close");
    assert_workers_replicated(dir.path(), &lines);
}

/// The same on S3, whose HTTP connections are kept alive: a worker must not reuse the
/// connections its parent's uploads left in the pool (their sockets are the parent's,
/// and the runtime that drove them has no thread in the child). Before, the first
/// worker's open waited 10 s for an answer on one, and the second worker's sync timed
/// out waiting for the first.
#[test]
fn workers_forked_after_the_parent_used_s3_replicate_on_connections_of_their_own() {
    let store = SeaweedFs::shared();
    store.create_bucket("prefork");
    let url = store.url("prefork", "app");
    let dir = tempfile::tempdir().unwrap();
    let lines = prefork_to(dir.path(), "close", &url);
    assert_workers_replicated_to(dir.path(), &lines, &url);
}

/// The parent keeps replicating through its workers' lives: they follow it, and one
/// closing the connection it inherited neither releases the parent's lock nor closes
/// anything of the parent's.
#[test]
fn workers_of_a_parent_that_keeps_the_database_open_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let lines = prefork(dir.path(), "keep");
    for who in ["worker 0", "worker 1"] {
        assert_eq!(said(&lines, who)[0]["role"], "follower", "{lines:?}");
    }
    let parent = said(&lines, "parent");
    assert_eq!(parent.len(), 2, "{lines:?}");
    assert_eq!(parent[1]["role"], "primary", "the parent still replicates: {lines:?}");
    assert!(parent[1]["sync"].is_u64(), "{lines:?}");
    let other = said(&lines, "another process");
    assert!(
        other[0]["sync"].as_str().is_some_and(|s| s.parse::<u64>().is_ok()),
        "another process's commit: {lines:?}"
    );
    assert_workers_replicated(dir.path(), &lines);
}

/// A worker opening the read replica its parent had open sees new commits (its own
/// poller, not the parent's, which has no thread in the child).
#[test]
fn a_worker_reading_a_replica_its_parent_opened_sees_new_commits() {
    let dir = tempfile::tempdir().unwrap();
    let lines = prefork(dir.path(), "replica");
    assert_eq!(said(&lines, "parent")[1]["rows"], 1, "{lines:?}");
    assert_eq!(said(&lines, "worker 0")[0]["rows"], 2, "{lines:?}");
}

/// A worker that keeps using the connection it inherited (gunicorn `--preload` with a
/// module-level connection) after its parent closed the database: connections inherited
/// across `fork()` never take replication over, so nobody replicates. The worker is told
/// so at once, by its sync and its status. Before, its status named the parent as the
/// replicating process with no error, and its sync waited out its timeout saying the
/// parent "has not answered" (a workers tester, 3 of 3).
#[test]
fn a_worker_on_an_inherited_connection_is_told_that_nobody_replicates_once_its_parent_closed() {
    let dir = tempfile::tempdir().unwrap();
    let lines = prefork(dir.path(), "orphan");
    let worker = said(&lines, "worker 0");
    assert_eq!(worker.len(), 1, "{lines:?}");
    let sync = worker[0]["sync"].as_str().unwrap_or_default();
    assert!(
        sync.contains("no process replicates") && sync.contains("before fork()"),
        "{lines:?}"
    );
    assert!(
        worker[0]["seconds"].as_f64().unwrap() < 2.0,
        "waited out its timeout: {lines:?}"
    );
    let status = &worker[0]["status"];
    assert_eq!(status["inherited_across_fork"], true, "{status}");
    assert!(status["replicated_by"].is_null(), "{status}");
    assert!(
        status["error"].as_str().is_some_and(|e| e.contains("Pre-fork servers")),
        "{status}"
    );
}
