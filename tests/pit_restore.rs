//! Point-in-time restore over a compacted history, in simulated time: the default ladder
//! (levels of 30 s, 3 min, 15 min, 1 h and 6 h, a daily snapshot, a day of retention,
//! 5 minutes of level 0) with every interval divided by the same factor, so a simulated
//! day passes in seconds and the ladder keeps its ratios. A writer commits every few
//! milliseconds and syncs every few more; then restores to random times of the retention
//! window are each compared with the primary's state at that point, by us and by the real
//! `litestream restore` 0.5.17, and the files each restore read are counted.
//!
//! `make bench-pitr` runs the ignored `pitr_ladders_side_by_side`: today's default ladder
//! beside Litestream's three levels (30 s, 5 min, 1 h), on a hot set and on uniform
//! churn, with files per restore, bytes stored and restore times.

mod harness;

use harness::history::{self, table_hash, Point};
use harness::*;
use litestream_vfs::restore::{self, Listing, RestoreOptions, Target};
use litestream_vfs::storage::open_store;
use std::collections::HashMap;
use std::sync::Arc;

/// A ladder in real seconds: level intervals, then snapshot interval; retention is a day
/// and level 0 stays 5 minutes, as by default.
struct Ladder {
    name: &'static str,
    levels: &'static [f64],
    snapshot: f64,
}

const DEFAULT_LADDER: Ladder = Ladder {
    name: "default (30s,3m,15m,1h,6h)",
    levels: &[30.0, 180.0, 900.0, 3600.0, 6.0 * 3600.0],
    snapshot: 86400.0,
};

const LITESTREAM_LADDER: Ladder = Ladder {
    name: "Litestream's (30s,5m,1h)",
    levels: &[30.0, 300.0, 3600.0],
    snapshot: 86400.0,
};

const DAY: f64 = 86400.0;

/// The URI parameters of `ladder` with wall-clock time divided by `scale`.
fn scaled(ladder: &Ladder, scale: f64) -> String {
    let ms = |s: f64| format!("{:.3}ms", s * 1000.0 / scale);
    let levels: Vec<String> = ladder.levels.iter().map(|s| ms(*s)).collect();
    format!(
        "levels={}&snapshot_interval={}&retention={}&l0_retention={}&sync_interval=1h",
        levels.join(","),
        ms(ladder.snapshot),
        ms(DAY),
        ms(300.0)
    )
}

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

fn rfc3339(ms: i64) -> String {
    litestream_vfs::storage::format_rfc3339_nano(ms)
}

/// What one run measured.
struct Measured {
    listing: Listing,
    history: Vec<Point>,
    files: Vec<usize>,
    restore_ms: Vec<f64>,
    bytes_stored: u64,
    litestream_checked: usize,
    /// Restores that reached a TXID no sync acknowledged, so with no state to compare.
    unverified: usize,
}

impl Measured {
    fn mean_files(&self) -> f64 {
        self.files.iter().sum::<usize>() as f64 / self.files.len().max(1) as f64
    }

    fn summary(&self) -> String {
        let mut files = self.files.clone();
        files.sort_unstable();
        let p95 = files[(files.len() * 95 / 100).min(files.len() - 1)];
        let mut ms = self.restore_ms.clone();
        ms.sort_by(f64::total_cmp);
        let levels: Vec<String> = restore::LEVELS
            .iter()
            .rev()
            .filter(|l| !self.listing.level(**l).is_empty())
            .map(|l| format!("L{l} {}", self.listing.level(*l).len()))
            .collect();
        format!(
            "{} restores ({} not at a synced TXID): files mean {:.1}, p95 {p95}, max {}; restore median {:.1} ms; stored {} files, {:.1} KiB \
             ({} snapshots, {})",
            self.files.len(),
            self.unverified,
            self.mean_files(),
            files.last().unwrap_or(&0),
            ms[ms.len() / 2],
            self.listing.snapshots.len() + self.listing.incremental.iter().map(Vec::len).sum::<usize>(),
            self.bytes_stored as f64 / 1024.0,
            self.listing.snapshots.len(),
            levels.join(", ")
        )
    }
}

/// Writes `pattern` for `day_seconds` of wall clock (one simulated day at `scale`, plus
/// a quarter so the retention window is full), then restores to `restores` uniformly
/// random times of the retention window; every restore must give the primary's state at
/// the TXID it reached, and every `litestream_every`-th is also restored by Litestream
/// (by that TXID, and by a time right after it was synced).
fn measure(ladder: &Ladder, pattern: &str, scale: f64, restores: usize, litestream_every: usize) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let db = dir.path().join("app.db");
    let uri = format!(
        "file:{}?vfs=litestream&replica={url}&{}",
        db.display(),
        scaled(ladder, scale)
    );
    let day_s = DAY / scale;
    let seconds = day_s * 1.25;
    // Syncs about 20 times per level-1 window (by default one a second, 30 per window),
    // but no more often than every 4 ms, which is what the writer keeps up with.
    let l1_ms = ladder.levels[0] * 1000.0 / scale;
    let sync_ms = (l1_ms / 20.0).max(4.0);
    let hour_s = 3600.0 / scale;
    let mut cmd = history::record_command(&uri, &format!("{seconds:.3}"), 7);
    cmd.args([
        pattern.to_string(),
        format!("{sync_ms:.3}"),
        format!("{:.3}", sync_ms * 2.0),
        format!("{hour_s:.3}"),
    ]);
    let history = history::record(&mut cmd);
    assert!(history.len() > 200, "only {} sync points recorded", history.len());
    let by_txid: HashMap<u64, &Point> = history.iter().map(|p| (p.txid, p)).collect();
    let end_ms = history.last().unwrap().ms;

    let store = open_store(&url, &Default::default()).unwrap();
    let listing = litestream_vfs::runtime::block_on(Listing::fetch(store.as_ref())).unwrap();
    let bytes_stored = listing
        .snapshots
        .iter()
        .chain(listing.incremental.iter().flatten())
        .map(|f| f.size)
        .sum();

    let mut rng = Rng(0x9e3779b97f4a7c15);
    let window_ms = (day_s * 1000.0) as u64;
    let mut measured = Measured {
        listing,
        history: Vec::new(),
        files: Vec::new(),
        restore_ms: Vec::new(),
        bytes_stored,
        litestream_checked: 0,
        unverified: 0,
    };
    let strict = litestream_every > 0;
    for i in 0..restores {
        let at = end_ms - window_ms as i64 + rng.below(window_ms) as i64;
        let out = dir.path().join(format!("restore-{i}.db"));
        let restored = restore::restore(
            Arc::clone(&store),
            &out,
            Target::Timestamp(at),
            &RestoreOptions::default(),
        )
        .unwrap_or_else(|e| panic!("{pattern}: restore {i} to {} ({at}): {e}", rfc3339(at)));
        let txid = restored.position.txid;
        let Some(point) = by_txid.get(&txid) else {
            // A file can end where no sync did (a snapshot the primary took on its own, or
            // the uploads of the writer's close): the benchmark counts it, the test fails.
            assert!(
                strict,
                "{pattern}: restore {i} reached TXID {txid}, which no sync acknowledged"
            );
            measured.unverified += 1;
            measured.files.push(restored.plan.len());
            measured.restore_ms.push(restored.elapsed.as_secs_f64() * 1000.0);
            std::fs::remove_file(&out).unwrap();
            continue;
        };
        let ours = table_hash(&out);
        assert_eq!(
            ours, point.hash,
            "{pattern}: restore {i} to {at} (TXID {txid}): contents differ"
        );
        measured.files.push(restored.plan.len());
        measured.restore_ms.push(restored.elapsed.as_secs_f64() * 1000.0);

        if litestream_every > 0 && i % litestream_every == 0 {
            for flags in [
                vec!["-txid".to_string(), format!("{txid:016x}")],
                // Right after the sync returned, before the next write: Litestream keeps
                // the files created strictly before this time.
                vec!["-timestamp".to_string(), rfc3339(point.ms + 1)],
            ] {
                let theirs = dir.path().join(format!("litestream-{i}.db"));
                let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
                litestream_restore(&url, &theirs, &flags).unwrap_or_else(|e| panic!("{flags:?}: {e}"));
                let hash = table_hash(&theirs);
                if hash != ours {
                    let reached = history.iter().find(|p| p.hash == hash).map(|p| (p.txid, p.ms));
                    panic!(
                        "litestream restore {flags:?} reached the state of (TXID, synced at ms) {reached:?}; ours \
                         TXID {txid}, synced at {}",
                        point.ms
                    );
                }
                std::fs::remove_file(&theirs).unwrap();
            }
            measured.litestream_checked += 1;
        }
        std::fs::remove_file(&out).unwrap();
    }
    measured.history = history;
    measured
}

#[test]
fn restores_to_random_times_of_a_compacted_day_match_the_primary_in_a_dozen_files() {
    // A simulated day in 36 s: level 1 every 12.5 ms, the snapshot every 36 s.
    let m = measure(&DEFAULT_LADDER, "mixed", 2400.0, 40, 5);
    println!("default ladder, mixed writes, a day in 36 s: {}", m.summary());
    println!(
        "  {} also restored by litestream 0.5.17 (by TXID and by time)",
        m.litestream_checked
    );
    let listing = &m.listing;
    assert!(!listing.snapshots.is_empty(), "a level-9 snapshot was taken");
    for level in 1..=5 {
        assert!(!listing.level(level).is_empty(), "level {level} was compacted");
    }
    assert!(
        m.mean_files() <= 12.0,
        "a restore read {:.1} files on average",
        m.mean_files()
    );

    // Where retention ran, points older than the oldest kept snapshot are gone, with a
    // clear error (whether it ran depends on where the wall-clock aligned snapshot fell).
    let oldest_kept = listing.snapshots.iter().map(|s| s.max_txid).min().unwrap();
    let first_l1 = listing.level(1).first().unwrap().min_txid;
    if let Some(gone) = m
        .history
        .iter()
        .find(|p| p.txid < oldest_kept && p.txid < first_l1 && p.txid > 1)
    {
        let err = restore::plan(listing, Some(gone.txid)).unwrap_err();
        assert!(err.contains("cannot restore") || err.contains("no snapshot"), "{err}");
    }

    // A TXID inside a file is refused with the restorable TXIDs around it.
    // A TXID no file ends at (a file's first TXID can be another file's last, when
    // compaction wrote a file per window of a backlog).
    let files = || listing.incremental.iter().flatten();
    let inside = files()
        .filter(|f| f.min_txid > oldest_kept)
        .flat_map(|f| f.min_txid..f.max_txid)
        .find(|t| files().all(|g| g.max_txid != *t))
        .expect("a TXID inside a file that merges several");
    let err = restore::plan(listing, Some(inside)).unwrap_err();
    assert!(err.contains("nearest restorable"), "{err}");
}

/// `make bench-pitr`: both ladders on both write patterns, a simulated day each
/// (`PITR_SCALE`, default 1200: level 1 every 25 ms, a day in 72 s).
#[test]
#[ignore = "a benchmark: make bench-pitr"]
fn pitr_ladders_side_by_side() {
    let scale: f64 = std::env::var("PITR_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1200.0);
    let restores = 100;
    println!(
        "point-in-time restore, a simulated day in {:.0} s (scale {scale})",
        DAY / scale
    );
    for pattern in ["hot", "churn"] {
        let ours = measure(&DEFAULT_LADDER, pattern, scale, restores, 0);
        let theirs = measure(&LITESTREAM_LADDER, pattern, scale, restores, 0);
        println!("{pattern:>5} {:<28} {}", DEFAULT_LADDER.name, ours.summary());
        println!("{pattern:>5} {:<28} {}", LITESTREAM_LADDER.name, theirs.summary());
        println!(
            "{pattern:>5} ratio: files {:.2}x, bytes stored {:.2}x",
            ours.mean_files() / theirs.mean_files(),
            ours.bytes_stored as f64 / theirs.bytes_stored as f64
        );
    }
}

#[test]
fn restore_refuses_to_overwrite_unless_asked_and_sql_restores_too() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let db = dir.path().join("app.db");
    let uri = format!("file:{}?vfs=litestream&replica={url}", db.display());
    let txid: u64 = sqlite(&format!(
        ".open {uri}\nCREATE TABLE t(x);\nINSERT INTO t VALUES (1),(2),(3);\nSELECT litestream_sync();"
    ))
    .trim()
    .parse()
    .unwrap();
    let out = dir.path().join("out.db");
    // Through SQL on a plain connection.
    let restored = sqlite(&format!("SELECT litestream_restore('{url}', '{}');", out.display()));
    assert_eq!(restored.trim(), txid.to_string());
    assert_eq!(dump(&out), dump(&db));
    // Again: refused, the file untouched; with 'overwrite': done.
    let err = sqlite_result(&format!("SELECT litestream_restore('{url}', '{}');", out.display())).unwrap_err();
    assert!(err.contains("already exists"), "{err}");
    let again = sqlite(&format!(
        "SELECT litestream_restore('{url}', '{}', 'latest', 'overwrite');",
        out.display()
    ));
    assert_eq!(again.trim(), txid.to_string());
    // A TXID beyond the replica is an error that says what exists.
    let err = sqlite_result(&format!(
        "SELECT litestream_restore('{url}', '{}', {});",
        dir.path().join("x.db").display(),
        txid + 100
    ))
    .unwrap_err();
    assert!(err.contains(&format!("TXID {}", txid + 100)), "{err}");
}
