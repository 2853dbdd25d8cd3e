//! Tests of `follower.rs`.

use super::*;

fn here() -> Destination {
    Destination {
        replica: "file:///r".into(),
        recipients: vec![],
        staging: None,
    }
}

fn destination(pairs: &[(&str, &str)]) -> Destination {
    let params: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Destination::of(&Config::from_params(Path::new("app.db"), &params, &|_| None).unwrap())
}

fn leader_at(destination: Destination) -> Leader {
    Leader {
        pid: 42,
        node_id: 1,
        since_ms: 0,
        destination: Some(destination),
    }
}

const KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";

#[test]
fn one_replica_spelled_two_ways_is_one_destination() {
    assert_eq!(
        destination(&[("replica", "file:///backups/app")]),
        destination(&[("replica", "file:///backups/app/")])
    );
}

#[test]
fn a_replica_directory_spelled_with_doubled_slashes_or_through_a_symlink_is_the_leaders() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    std::fs::create_dir_all(root.join("rep")).unwrap();
    std::os::unix::fs::symlink(&root, root.join("alias")).unwrap();
    let r = root.display();
    let leader = leader_at(destination(&[("replica", &format!("file://{r}/rep"))]));
    for spelling in [format!("file://{r}//rep"), format!("file://{r}/alias/rep")] {
        let ours = destination(&[("replica", &spelling)]);
        assert_eq!(
            destination_differs(Path::new("app.db"), &leader, &ours),
            None,
            "{spelling}"
        );
    }
    let elsewhere = destination(&[("replica", &format!("file://{r}/other"))]);
    assert!(destination_differs(Path::new("app.db"), &leader, &elsewhere).is_some());
}

#[test]
fn a_follower_is_told_when_its_commits_go_to_another_replica_or_encrypted_otherwise() {
    let db = Path::new("app.db");
    let plain_a = destination(&[("replica", "file:///a")]);
    let plain_b = destination(&[("replica", "file:///b")]);
    let keyed_a = destination(&[("replica", "file:///a"), ("encryption_key", KEY)]);
    let other_a = destination(&[("replica", "file:///a"), ("encryption_key", OTHER_KEY)]);
    assert_eq!(destination_differs(db, &leader_at(plain_a.clone()), &plain_a), None);
    let cases = [
        (
            &plain_a,
            &plain_b,
            "in another replica: file:///a (unencrypted), not file:///b (unencrypted)",
        ),
        (&plain_a, &keyed_a, "in the same replica, unencrypted"),
        (
            &keyed_a,
            &plain_a,
            "in the same replica, encrypted: file:///a (encrypted to 1 key: public ",
        ),
        (&keyed_a, &other_a, "in the same replica, encrypted to other keys"),
    ];
    // Keys that differ read differently: each side names its public key.
    let why = destination_differs(db, &leader_at(keyed_a.clone()), &other_a).unwrap();
    assert!(
        why.contains(&keyed_a.recipients[0][..16]) && why.contains(&other_a.recipients[0][..16]),
        "{why}"
    );
    assert!(!why.contains(KEY) && !why.contains(OTHER_KEY), "{why}");
    for (theirs, ours, expected) in cases {
        let why = destination_differs(db, &leader_at(theirs.clone()), ours).expect("differs");
        assert!(why.contains(expected), "{why}");
        assert!(
            why.contains("(pid 42)") && why.contains("litestream_sync() fails"),
            "{why}"
        );
    }
    // A leader of a version that did not say is trusted, as before.
    let silent = Leader {
        destination: None,
        ..leader_at(plain_a)
    };
    assert_eq!(destination_differs(db, &silent, &plain_b), None);
}

#[test]
fn a_destination_holds_no_credentials() {
    let d = destination(&[("replica", "nats://user:hunter2@127.0.0.1:4222/bucket")]);
    assert!(!d.replica.contains("hunter2"), "{}", d.replica);
    let d = destination(&[("replica", "file:///a"), ("encryption_key", KEY)]);
    assert!(!format!("{d:?}").contains(KEY), "only the public key: {d:?}");
}

#[test]
fn a_follower_sync_fails_at_once_when_its_commits_go_to_another_replica_or_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let lock_dir = shared_staging::lock_dir(&db);
    fs::create_dir(&lock_dir).unwrap();
    let other_staging = dir.path().join("elsewhere-staging");
    fs::create_dir(&other_staging).unwrap();
    let leaders_staging = StagingDir::of(&lock_dir);
    let elsewhere = Destination {
        replica: "file:///elsewhere".into(),
        ..here()
    };
    let staged_elsewhere = Destination {
        staging: StagingDir::of(&other_staging),
        ..here()
    };
    let leader = Destination {
        staging: leaders_staging,
        ..here()
    };
    for (ours, expected) in [(elsewhere, "another replica"), (staged_elsewhere, "same staging=")] {
        announce_leader(&lock_dir, FileModes::NewDatabase, 1, leader.clone());
        let started = Instant::now();
        let err = ask(
            &db,
            &other_staging,
            FileModes::NewDatabase,
            Duration::from_secs(10),
            &ours,
            &|| None,
            Ask::Sync,
        )
        .unwrap_err();
        assert!(err.contains(expected), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5), "failed at once");
        assert!(
            fs::read_dir(sync_dir(&other_staging)).unwrap().next().is_none(),
            "no request left behind"
        );
    }
}

#[test]
fn progress_and_leader_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_uploaded(dir.path()), None);
    let up = Uploaded { txid: 9, node_id: 3 };
    publish_uploaded(dir.path(), FileModes::NewDatabase, up);
    assert_eq!(read_uploaded(dir.path()), Some(up));
    announce_leader(dir.path(), FileModes::NewDatabase, 3, here());
    assert_eq!(read_leader(dir.path()).unwrap().pid, std::process::id());
}

#[test]
fn a_request_is_answered_then_stored() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().to_path_buf();
    let answerer = {
        let staging = staging.clone();
        std::thread::spawn(move || loop {
            let pending = pending_requests(&staging, &QuietDir::default());
            if let Some(request) = pending.first() {
                answer(request, FileModes::NewDatabase, 7, 1);
                std::thread::sleep(Duration::from_millis(50));
                publish_uploaded(&staging, FileModes::NewDatabase, Uploaded { txid: 8, node_id: 1 });
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        })
    };
    // A stale progress file of another node does not count.
    publish_uploaded(&staging, FileModes::NewDatabase, Uploaded { txid: 100, node_id: 2 });
    let got = ask(
        Path::new("db"),
        &staging,
        FileModes::NewDatabase,
        Duration::from_secs(10),
        &here(),
        &|| None,
        Ask::Sync,
    )
    .unwrap();
    answerer.join().unwrap();
    assert_eq!(got, 8);
    assert!(
        fs::read_dir(sync_dir(&staging)).unwrap().next().is_none(),
        "request and answer removed"
    );
}

#[test]
fn messages_between_processes_are_no_more_open_than_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().to_path_buf();
    let modes = FileModes::bits(0o640);
    let mode = |p: &Path| crate::file_modes::permission_bits(p).unwrap();
    let answerer = {
        let staging = staging.clone();
        std::thread::spawn(move || loop {
            if let Some(request) = pending_requests(&staging, &QuietDir::default()).first() {
                let seen = (mode(&sync_dir(&staging)), mode(request));
                answer(request, modes, 1, 1);
                publish_uploaded(&staging, modes, Uploaded { txid: 1, node_id: 1 });
                return seen;
            }
            std::thread::sleep(Duration::from_millis(5));
        })
    };
    ask(
        Path::new("db"),
        &staging,
        modes,
        Duration::from_secs(10),
        &here(),
        &|| None,
        Ask::Sync,
    )
    .unwrap();
    assert_eq!(
        answerer.join().unwrap(),
        (0o750, 0o640),
        "the sync directory and a request"
    );
    announce_leader(&staging, modes, 1, here());
    for name in ["uploaded.json", "leader.json"] {
        assert_eq!(mode(&staging.join(name)), 0o640, "{name}");
    }
}

#[test]
fn an_unanswered_request_times_out_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let err = ask(
        Path::new("db"),
        dir.path(),
        FileModes::NewDatabase,
        Duration::from_millis(50),
        &here(),
        &|| None,
        Ask::Sync,
    )
    .unwrap_err();
    assert!(err.contains("no process replicates it"), "{err}");
}

#[test]
fn commits_waiting_while_nobody_replicates_are_the_status_error() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let staging = dir.path().join("app.db-litestream");
    std::fs::create_dir(&staging).unwrap();
    let waited = |secs: i64| move |_: Option<i64>| Some(now_ms() - secs * 1000);
    let interval = Duration::from_secs(1);
    let fresh = status(&db, &staging, false, &waited(2), &here(), interval);
    assert!(fresh["error"].is_null(), "{fresh}");
    let stuck = status(&db, &staging, false, &waited(30), &here(), interval);
    let error = stuck["error"].as_str().unwrap_or_default();
    assert!(error.contains("no process replicates the database"), "{stuck}");
}
