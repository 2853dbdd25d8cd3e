//! LTX codec throughput on real SQLite table pages.
//!
//! At bench time the `sqlite3` shell (`SQLITE3_BIN`, default `sqlite3`) builds an
//! orders-like database with 4 KiB pages; its pages are encoded as one snapshot and
//! decoded back. Throughput is in bytes of uncompressed pages. Also prints the total
//! compressed size with LZ4 and zstd levels 1 and 3.
//!
//! Run: `cargo bench --bench ltx` (about half a minute).

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use litestream_vfs::ltx::{
    read_page_frame_with, Compression, Decoder, Encoder, Header, PageDecompressor, FLAG_NO_CHECKSUM,
};

const PAGE_SIZE: usize = 4096;

/// Pages of a freshly built database: customers and orders with text, numbers and blobs,
/// plus an index, like an application's tables.
fn sqlite_pages() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("bench.db");
    let sqlite3 = std::env::var_os("SQLITE3_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| "sqlite3".into());
    let script = "
        PRAGMA page_size = 4096;
        CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT,
                               created INTEGER);
        CREATE TABLE orders(id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT,
                            sku TEXT, qty INTEGER, price REAL, created INTEGER, note TEXT,
                            token BLOB);
        CREATE INDEX orders_customer ON orders(customer_id, created);
        INSERT INTO customers SELECT value, 'Customer ' || value,
               'user' || value || '@example.com',
               CASE value % 5 WHEN 0 THEN 'Paris' WHEN 1 THEN 'Berlin' WHEN 2 THEN 'Lisbon'
                              WHEN 3 THEN 'Oslo' ELSE 'Rome' END,
               1700000000 + value * 37 FROM generate_series(1, 10000);
        INSERT INTO orders SELECT value, (value * 7919) % 10000 + 1,
               CASE value % 4 WHEN 0 THEN 'pending' WHEN 1 THEN 'paid'
                              WHEN 2 THEN 'shipped' ELSE 'delivered' END,
               'SKU-' || printf('%06d', (value * 31) % 5000), value % 9 + 1,
               round(((value * 7) % 20000) / 100.0, 2), 1700000000 + value * 13,
               CASE WHEN value % 3 = 0 THEN 'gift wrap, leave at door' ELSE NULL END,
               randomblob(16) FROM generate_series(1, 60000);
    ";
    let out = Command::new(&sqlite3)
        .arg(&db)
        .arg(script)
        .output()
        .expect("run sqlite3 (set SQLITE3_BIN)");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&db).expect("read bench db");
    assert_eq!(bytes.len() % PAGE_SIZE, 0);
    bytes
}

fn header(commit: u32) -> Header {
    Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: PAGE_SIZE as u32,
        commit,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_700_000_000_000,
        ..Header::default()
    }
}

fn encode(db: &[u8], c: Compression, out: Vec<u8>) -> Vec<u8> {
    let commit = (db.len() / PAGE_SIZE) as u32;
    let mut enc = Encoder::new(out, header(commit), c).unwrap();
    for (i, page) in db.chunks_exact(PAGE_SIZE).enumerate() {
        enc.write_page(i as u32 + 1, page).unwrap();
    }
    enc.finish(0).unwrap().0
}

fn decode(file: &[u8], page: &mut [u8]) -> u64 {
    let mut dec = Decoder::new(file).unwrap();
    let mut acc = 0u64;
    while let Some(pgno) = dec.next_page(page).unwrap() {
        acc += pgno as u64 + page[100] as u64;
    }
    dec.finish().unwrap();
    acc
}

fn bench(c: &mut Criterion) {
    let db = sqlite_pages();
    let pages = db.len() / PAGE_SIZE;

    let lz4 = encode(&db, Compression::Lz4, Vec::new());
    let z1 = encode(&db, Compression::Zstd(1), Vec::new());
    let z3 = encode(&db, Compression::Zstd(3), Vec::new());
    eprintln!(
        "\n{pages} pages, {:.1} MiB of SQLite table pages",
        db.len() as f64 / (1 << 20) as f64
    );
    for (name, f) in [("lz4", &lz4), ("zstd-1", &z1), ("zstd-3", &z3)] {
        eprintln!(
            "  {name:7} file {:>9} bytes  ratio {:.2}x",
            f.len(),
            db.len() as f64 / f.len() as f64
        );
    }

    let mut g = c.benchmark_group("ltx");
    g.throughput(Throughput::Bytes(db.len() as u64));
    let mut out = Vec::with_capacity(lz4.len() * 2);
    g.bench_function("encode/lz4", |b| {
        b.iter(|| {
            out.clear();
            out = encode(black_box(&db), Compression::Lz4, std::mem::take(&mut out));
        })
    });
    g.bench_function("encode/zstd-1", |b| {
        b.iter(|| {
            out.clear();
            out = encode(black_box(&db), Compression::Zstd(1), std::mem::take(&mut out));
        })
    });
    let mut page = vec![0u8; PAGE_SIZE];
    g.bench_function("decode/lz4", |b| b.iter(|| decode(black_box(&lz4), &mut page)));
    g.bench_function("decode/zstd-1", |b| b.iter(|| decode(black_box(&z1), &mut page)));
    g.bench_function("decode/zstd-3", |b| b.iter(|| decode(black_box(&z3), &mut page)));

    // Lazy-replica path: one frame at a time through the index.
    let idx = litestream_vfs::ltx::decode_file(&lz4).unwrap().index;
    let mut dec = PageDecompressor::new();
    g.bench_function("read_page_frame/lz4", |b| {
        b.iter(|| {
            for e in idx.entries() {
                let f = &lz4[e.offset as usize..(e.offset + e.size as u64) as usize];
                read_page_frame_with(&mut dec, f, e.pgno, PAGE_SIZE as u32, &mut page).unwrap();
            }
        })
    });
    g.finish();

    let mut gc = c.benchmark_group("crc64");
    gc.throughput(Throughput::Bytes(db.len() as u64));
    gc.bench_function("crc64", |b| b.iter(|| litestream_vfs::ltx::crc64(black_box(&db))));
    gc.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
