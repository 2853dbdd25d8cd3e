//! The store's side: what our `ReplicaStore` and the real `litestream` see of each S3
//! implementation, and what the server itself answers to raw requests.

use bytes::Bytes;
use futures::StreamExt;
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{
    format_rfc3339_nano, probe_conditional_creates, ConditionalCreates, Error, S3_TIMESTAMP_METADATA,
};

use crate::common::litestream::{self, LitestreamTarget};
use crate::common::s3::S3Server;
use crate::{with_creds, Ctx};

fn ltx_blob(timestamp_ms: i64, fill: u8, len: usize) -> Bytes {
    let mut b = vec![fill; len.max(100)];
    b[..4].copy_from_slice(b"LTX1");
    b[32..40].copy_from_slice(&timestamp_ms.to_be_bytes());
    Bytes::from(b)
}

/// Listing, whole and ranged reads, the timestamp metadata, conditional creates (ours and
/// a raw `If-None-Match: *`), overwrite, delete, and foreign objects skipped.
pub fn operations_behave_as_replication_needs(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "operations");
    let store = ctx.store("app/db");
    block_on(async {
        assert!(store.list(0).await.unwrap().is_empty());
        let ts = 1_700_000_000_120; // formats with a trimmed fraction: ...20.12Z
        store.put_new(0, 2, 3, ltx_blob(ts, b'b', 5000), ts).await.unwrap();
        store
            .put_new(0, 1, 1, ltx_blob(ts - 5, b'a', 4000), ts - 5)
            .await
            .unwrap();
        store.put_new(9, 1, 3, ltx_blob(ts, b's', 6000), ts).await.unwrap();

        // Keys are Litestream's S3 layout: <path>/<level %04x>/<name>, no "ltx/" directory.
        let mut keys = ctx.keys("");
        keys.sort();
        assert_eq!(
            keys,
            [
                "app/db/0000/0000000000000001-0000000000000001.ltx",
                "app/db/0000/0000000000000002-0000000000000003.ltx",
                "app/db/0009/0000000000000001-0000000000000003.ltx",
            ],
            "{}",
            s3.name()
        );
        let l0 = store.list(0).await.unwrap();
        assert_eq!(
            l0.iter().map(|f| (f.min_txid, f.max_txid, f.size)).collect::<Vec<_>>(),
            [(1, 1, 4000), (2, 3, 5000)]
        );
        assert_eq!(store.list(9).await.unwrap().len(), 1);
        assert!(store.list(1).await.unwrap().is_empty());

        // Whole and ranged reads; a range past the end is an error, not a short read.
        let whole = store.get(0, 2, 3).await.unwrap();
        assert_eq!(whole, ltx_blob(ts, b'b', 5000));
        assert_eq!(
            store.get_range(0, 2, 3, 4000..4100).await.unwrap(),
            whole.slice(4000..4100)
        );
        assert_eq!(store.get_range(0, 2, 3, 0..40).await.unwrap(), whole.slice(0..40));
        assert!(store.get_range(0, 2, 3, 4990..5010).await.is_err(), "past the end");
        assert!(store.get(0, 7, 7).await.unwrap_err().is_not_found());
        let ranged = s3.raw(
            "GET",
            &format!("/{}/app/db/0000/0000000000000002-0000000000000003.ltx", ctx.bucket),
            &[("Range", "bytes=100-199")],
            b"",
        );
        assert_eq!(ranged.status, 206, "{}: a ranged GET", s3.name());
        assert_eq!(ranged.body, whole[100..200]);

        // The timestamp metadata is on the object, as Litestream formats it.
        let head = s3.raw(
            "HEAD",
            &format!("/{}/app/db/0000/0000000000000002-0000000000000003.ltx", ctx.bucket),
            &[],
            b"",
        );
        assert_eq!(head.status, 200);
        let meta = head
            .header(&format!("x-amz-meta-{S3_TIMESTAMP_METADATA}"))
            .unwrap_or_else(|| panic!("{}: no timestamp metadata: {:?}", s3.name(), head.headers));
        assert_eq!(meta, format_rfc3339_nano(ts));
        assert_eq!(store.timestamp(0, 2, 3).await.unwrap(), ts);
        assert_eq!(store.head(0, 2, 3).await.unwrap().size, 5000);

        // A second conditional create loses and changes nothing; our own identical bytes
        // again (a retry whose response was lost) count as done.
        let err = store.put_new(0, 2, 3, ltx_blob(ts, b'X', 5000), ts).await.unwrap_err();
        assert!(
            matches!(err, Error::AlreadyExists { .. }),
            "{}: the second create: {err:?}",
            s3.name()
        );
        assert_eq!(store.get(0, 2, 3).await.unwrap(), whole, "the loser changed nothing");
        store.put_new(0, 2, 3, whole.clone(), ts).await.unwrap();
        let raw = s3.raw(
            "PUT",
            &format!("/{}/app/db/0000/0000000000000002-0000000000000003.ltx", ctx.bucket),
            &[("If-None-Match", "*")],
            b"other",
        );
        assert_eq!(raw.status, 412, "{}: If-None-Match: * on an existing key", s3.name());

        // Overwrite, delete (twice: a missing file is fine).
        store.put(0, 2, 3, ltx_blob(ts, b'Y', 10), ts).await.unwrap();
        assert_eq!(store.get(0, 2, 3).await.unwrap(), ltx_blob(ts, b'Y', 10));
        store.delete(0, 2, 3).await.unwrap();
        store.delete(0, 2, 3).await.unwrap();
        assert!(store.get(0, 2, 3).await.unwrap_err().is_not_found());

        // Foreign objects in a level directory are skipped, never trusted.
        for junk in [
            "app/db/0000/README",
            "app/db/0000/0000000000000009-0000000000000002.ltx",
            "app/db/0000/x/y.ltx",
        ] {
            let put = s3.raw("PUT", &format!("/{}/{junk}", ctx.bucket), &[], b"junk");
            assert_eq!(put.status, 200, "{}: PUT {junk}", s3.name());
        }
        let l0 = store.list(0).await.unwrap();
        assert_eq!(
            l0.iter().map(|f| (f.min_txid, f.max_txid)).collect::<Vec<_>>(),
            [(1, 1)]
        );
    });
}

/// Eight writers create the same file at once, ten times over: exactly one wins each
/// time, the others are told another writer owns it, and the winner's bytes are stored.
pub fn racing_conditional_creates_have_one_winner(s3: &dyn S3Server) {
    const WRITERS: usize = 8;
    let ctx = Ctx::new(s3, "racing-creates");
    let store = ctx.store("db");
    block_on(async {
        for round in 1..=10u64 {
            let bodies: Vec<Bytes> = (0..WRITERS)
                .map(|w| ltx_blob(round as i64, b'a' + w as u8, 3000))
                .collect();
            let results =
                futures::future::join_all(bodies.iter().map(|b| store.put_new(0, round, round, b.clone(), 0))).await;
            let winners: Vec<usize> = (0..WRITERS).filter(|&w| results[w].is_ok()).collect();
            assert_eq!(
                winners.len(),
                1,
                "{}: round {round}: {} of {WRITERS} racing creates won: {results:?}",
                s3.name(),
                winners.len()
            );
            for (w, r) in results.iter().enumerate() {
                if let Err(e) = r {
                    assert!(e.is_already_exists(), "{}: writer {w}: {e:?}", s3.name());
                }
            }
            assert_eq!(store.get(0, round, round).await.unwrap(), bodies[winners[0]]);
        }
    });
}

/// 1,100 files in one level (a day of level-0 files at Litestream's 30 s default is
/// 2,880): our listing and the server's own paginate past 1,000 and agree, in order.
pub fn listings_go_past_1000_objects(s3: &dyn S3Server) {
    const FILES: u64 = 1100;
    let ctx = Ctx::new(s3, "listing");
    let store = ctx.store("db");
    block_on(async {
        let puts = futures::stream::iter(1..=FILES)
            .map(|txid| {
                let store = &store;
                async move { store.put_new(0, txid, txid, ltx_blob(txid as i64, b'l', 100), 0).await }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        assert!(
            puts.iter().all(Result::is_ok),
            "{}: {:?}",
            s3.name(),
            puts.iter().find(|r| r.is_err())
        );
        let listed = store.list(0).await.unwrap();
        assert_eq!(listed.len() as u64, FILES, "{}: our listing", s3.name());
        assert!(listed
            .iter()
            .zip(1..)
            .all(|(f, txid)| f.min_txid == txid && f.max_txid == txid));
        assert_eq!(
            ctx.keys("db/0000/").len() as u64,
            FILES,
            "{}: the server's listing",
            s3.name()
        );

        // Deleting them all (what retention does, one file at a time) leaves none listed.
        let deletes = futures::stream::iter(1..=FILES)
            .map(|txid| {
                let store = &store;
                async move { store.delete(0, txid, txid).await }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        assert!(deletes.iter().all(Result::is_ok), "{}", s3.name());
        assert!(store.list(0).await.unwrap().is_empty(), "{}", s3.name());
        assert!(ctx.keys("db/").is_empty(), "{}: {:?}", s3.name(), ctx.keys("db/"));
    });
}

/// The real `litestream` 0.5.17 replicates a database to the store; we find and read
/// every file it wrote, and its timestamp metadata parses to each header's.
pub fn reads_what_litestream_wrote(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "interop");
    let url = ctx.url("app");
    let store = ctx.store("app");
    block_on(litestream::reads_what_litestream_wrote(LitestreamTarget {
        replicate: &|cmd, db, _| {
            with_creds(cmd.arg(db).arg(&url));
        },
        store: store.as_ref(),
        list_keys: &|| ctx.keys(""),
        head: &|key| s3.raw("HEAD", &format!("/{}/{key}", ctx.bucket), &[], b""),
        ltx_key: |level, min, max| format!("app/{level:04x}/{min:016x}-{max:016x}.ltx"),
        key_prefix: "app/",
        meta_prefix: "x-amz-meta-",
        timestamp_header: "x-amz-meta-litestream-timestamp",
        bucket_word: "bucket",
        second_sql: "INSERT INTO t VALUES (4);",
        log_tail: &|| ctx.log(),
    }));
}

/// The probe a primary runs before it first writes to a location finds the store
/// honouring conditional creates, and leaves nothing behind.
pub fn the_fencing_probe_finds_conditional_creates_honoured(s3: &dyn S3Server) {
    let ctx = Ctx::new(s3, "probe");
    let store = ctx.store("app");
    for _ in 0..3 {
        assert_eq!(
            block_on(probe_conditional_creates(store.as_ref())).unwrap(),
            ConditionalCreates::Honoured,
            "{}",
            s3.name()
        );
    }
    assert_eq!(
        ctx.keys(""),
        Vec::<String>::new(),
        "{}: the probe's markers are gone",
        s3.name()
    );
}
