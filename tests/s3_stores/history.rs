//! History on each store: point-in-time restores over a compacted history, and retention
//! deleting what it no longer needs (the server's own listing agrees with ours).

use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use litestream_vfs::restore::{self, Listing, RestoreOptions, Target};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::format_rfc3339_nano;

use crate::common::s3::S3Server;
use crate::harness::history::{self, record_command, table_hash, Point};
use crate::{litestream_restore, litestream_restore_result, with_creds, Ctx};

/// Compaction every 250 ms / 1 s / 2 s, a snapshot every 4 s, 8 s of retention: a history
/// of seconds goes through every level, several snapshots and retention passes. Level-0
/// files stay (an hour), so that every synced TXID is a point a restore can reach exactly.
const LADDER: &str = "l1_interval=250ms&l2_interval=1s&l3_interval=2s&snapshot_interval=4s&retention=8s\
                      &l0_retention=1h&sync_interval=1h";
const SECONDS: u32 = 16;
const RESTORES: usize = 12;

/// `history.py record` for `SECONDS`, with the test credentials.
fn record(ctx: &Ctx, db: &Path, url: &str) -> Vec<Point> {
    let uri = format!("file:{}?vfs=litestream&replica={url}&{LADDER}", db.display());
    let mut cmd = record_command(&uri, &SECONDS.to_string(), 7);
    let points = history::record(with_creds(&mut cmd));
    assert!(
        points.len() > 40,
        "{}: {} sync points\n{}",
        ctx.s3.name(),
        points.len(),
        ctx.log()
    );
    points
}

/// The times `litestream restore -timestamp` (0.5.17) accepts on this store, in ms: from
/// the oldest to the newest LastModified that LIST gives for any file of levels 9 to 0.
///
/// Before planning, 0.5.17 refuses a time outside them with "timestamp does not exist"
/// (`Replica.CalcRestoreTarget` and `TimeBounds` in its replica.go; the plan itself then
/// goes by the `litestream-timestamp` metadata). A store stamps LastModified when an upload
/// ends, after the commit, and moto and SeaweedFS list it in whole seconds, as S3 does: a
/// point in the last second of the uploads is after the bound although its state is stored
/// (4% of the points; 1 run in 10 picked one), and so is a point just before the oldest
/// file retention kept.
fn litestream_times(listing: &Listing) -> RangeInclusive<i64> {
    let ms = listing
        .snapshots
        .iter()
        .chain(listing.incremental.iter().flatten())
        .map(|f| f.last_modified.expect("S3 lists LastModified"))
        .map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64);
    let (oldest, newest) = ms.fold((i64::MAX, i64::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    oldest..=newest
}

/// `litestream restore -timestamp` to `point` into `out`, 1 ms after it (Litestream keeps
/// files created strictly before the time; one more millisecond is still before the next
/// write). Refused exactly when that time is outside `accepted` ([`litestream_times`]);
/// the point is then restored by `-txid` instead.
fn litestream_by_time(ctx: &Ctx, url: &str, point: &Point, accepted: &RangeInclusive<i64>, out: &Path) {
    let t = point.ms + 1;
    let flag = ["-timestamp", &format_rfc3339_nano(t)];
    let result = litestream_restore_result(url, out, &flag);
    if accepted.contains(&t) {
        result.unwrap_or_else(|e| panic!("{}: {flag:?} (point {point:?}): {e}", ctx.s3.name()));
        return;
    }
    match result {
        Err(e) if e.contains("timestamp does not exist") => {
            eprintln!(
                "{}: litestream restore {flag:?} refused, as expected: outside the listed \
                 LastModified {accepted:?} ms; TXID {} checked by -txid",
                ctx.s3.name(),
                point.txid
            );
            litestream_restore(url, out, &["-txid", &format!("{:016x}", point.txid)]);
        }
        other => panic!(
            "{}: {flag:?} is outside the listed LastModified {accepted:?} ms, yet: {other:?}",
            ctx.s3.name()
        ),
    }
}

/// Restores to random synced points (by TXID and by time, ours and `litestream restore`
/// 0.5.17's) match the primary at that point; retention deleted the oldest files, and
/// the server lists exactly the files our listing has.
pub fn point_in_time_restores_and_retention(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "history");
    let db = ctx.path("app.db");
    let url = ctx.url("app");
    let history = record(&ctx, &db, &url);

    let store = ctx.store("app");
    let listing = block_on(Listing::fetch(store.as_ref())).unwrap();
    let ours: usize = listing.snapshots.len() + listing.incremental.iter().map(Vec::len).sum::<usize>();
    let server = ctx.keys("app/").len();
    assert_eq!(ours, server, "{}: our listing and the server's disagree", s3.name());
    assert!(listing.snapshots.len() >= 2, "{}: {listing:?}", s3.name());
    let oldest_kept = listing.snapshots.iter().map(|s| s.max_txid).min().unwrap();
    let accepted = litestream_times(&listing);
    assert!(oldest_kept > 1, "{}: retention deleted the first snapshot", s3.name());
    let first_l1 = listing.level(1).first().map_or(0, |f| f.min_txid);
    assert!(
        first_l1 > 1,
        "{}: retention deleted the oldest level-1 files",
        s3.name()
    );

    let retained: Vec<&Point> = history.iter().filter(|p| p.txid >= oldest_kept).collect();
    assert!(
        retained.len() >= RESTORES,
        "{}: {} retained points",
        s3.name(),
        retained.len()
    );
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..RESTORES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let point = retained[(seed % retained.len() as u64) as usize];
        let by_time = i % 2 == 1;
        let target = if by_time {
            Target::Timestamp(point.ms)
        } else {
            Target::Txid(point.txid)
        };
        let out = ctx.path(&format!("restore-{i}.db"));
        let restored = restore::restore(Arc::clone(&store), &out, target, &RestoreOptions::default())
            .unwrap_or_else(|e| panic!("{}: restore to {target:?}: {e}", s3.name()));
        assert_eq!(restored.position.txid, point.txid, "{}: {target:?}", s3.name());
        assert_eq!(table_hash(&out), point.hash, "{}: restore to {target:?}", s3.name());
        if i % 3 == 0 {
            let theirs = ctx.path(&format!("litestream-{i}.db"));
            if by_time {
                litestream_by_time(&ctx, &url, point, &accepted, &theirs);
            } else {
                litestream_restore(&url, &theirs, &["-txid", &format!("{:016x}", point.txid)]);
            }
            assert_eq!(
                table_hash(&theirs),
                point.hash,
                "{}: litestream restore to {point:?}",
                s3.name()
            );
        }
    }

    // The last point is after the newest LastModified unless a file written after it was
    // stamped in a later second: each run checks whichever side of the bound it falls on.
    let last = history.last().unwrap();
    let theirs = ctx.path("litestream-last.db");
    litestream_by_time(&ctx, &url, last, &accepted, &theirs);
    assert_eq!(
        table_hash(&theirs),
        last.hash,
        "{}: litestream restore to {last:?}",
        s3.name()
    );
}
