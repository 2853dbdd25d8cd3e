//! History on each store: point-in-time restores over a compacted history, and retention
//! deleting what it no longer needs (the server's own listing agrees with ours).

use std::path::Path;
use std::sync::Arc;

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
    // Litestream restores a time from the newest snapshot written before it: a point whose
    // state only a later-written snapshot holds (the oldest kept one, say) has none, and
    // `-timestamp` says "timestamp does not exist" (seen on CI). Such points are checked
    // with `-txid` instead; 1 s of slack for the store's clock.
    let snapshot_floor_ms = listing
        .snapshots
        .iter()
        .filter(|s| s.max_txid == oldest_kept)
        .filter_map(|s| s.last_modified)
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64 + 1000)
        .next()
        .unwrap_or(i64::MAX);
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
            // Litestream keeps files created strictly before the time, at a finer resolution
            // than milliseconds: one more millisecond is still before the next write.
            let flag = match by_time && point.ms > snapshot_floor_ms {
                true => ["-timestamp".to_string(), format_rfc3339_nano(point.ms + 1)],
                false => ["-txid".to_string(), format!("{:016x}", point.txid)],
            };
            let theirs = ctx.path(&format!("litestream-{i}.db"));
            match litestream_restore_result(&url, &theirs, &[&flag[0], &flag[1]]) {
                Ok(_) => {}
                // Litestream 0.5.17 now and then finds no snapshot before a time more than
                // a second after one was stored (about 1 run in 10 on moto, 2026-12-05;
                // once on SeaweedFS before): cause not found. What the store held then
                // goes to the log; the same point must still restore equal by TXID.
                Err(e) if by_time && e.contains("timestamp does not exist") => {
                    let now = block_on(Listing::fetch(store.as_ref())).unwrap();
                    for s in &now.snapshots {
                        let meta = block_on(store.timestamp(9, s.min_txid, s.max_txid));
                        eprintln!(
                            "{}: snapshot {}-{} last modified {:?}, timestamp {meta:?}",
                            s3.name(),
                            s.min_txid,
                            s.max_txid,
                            s.last_modified
                        );
                    }
                    eprintln!(
                        "{}: litestream restore {flag:?} (point TXID {} at {} ms, floor {snapshot_floor_ms}): \
                         {e}; checked by -txid instead",
                        s3.name(),
                        point.txid,
                        point.ms
                    );
                    let txid = format!("{:016x}", point.txid);
                    litestream_restore(&url, &theirs, &["-txid", &txid]);
                }
                Err(e) => panic!("{}: {flag:?}: {e}", s3.name()),
            }
            assert_eq!(
                table_hash(&theirs),
                point.hash,
                "{}: litestream restore {flag:?}",
                s3.name()
            );
        }
    }
}
