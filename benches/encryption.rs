//! Encryption at rest (LTX v4): what sealing costs per core.
//!
//! - `seal` / `open`: ChaCha20-Poly1305 over one 4 KiB page payload under a file's page
//!   key (with the 42-byte AAD): the cipher alone, the per-core figure the ≥ 1 GiB/s goal
//!   is about;
//! - `encode` / `decode`: a 16 MiB snapshot of text-like pages through the whole codec
//!   (LZ4, CRC-64, frames, index), plaintext v3 and encrypted v4 side by side;
//! - `wrap`: one HPKE wrap of a content key (X25519 + HKDF + ChaCha20-Poly1305), paid once
//!   per file written; `unwrap`: the same, paid once per file read.
//!
//! Throughput is in bytes of payload (seal/open) or of uncompressed pages (encode/decode).
//! Run: `cargo bench --bench encryption` (under a minute).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use litestream_vfs::ltx::crypto::{unwrap_content_key, wrap_content_key, ContentKey, FileKeys, OsEntropy, PrivateKey};
use litestream_vfs::ltx::{decode_file_with, Compression, Encoder, Encoding, Header, FLAG_NO_CHECKSUM};

const PAGE: usize = 4096;
const PAGES: u32 = 4096; // 16 MiB

/// Text-like pages that LZ4 compresses about 2:1, as table pages do.
fn pages() -> Vec<Vec<u8>> {
    (0..PAGES)
        .map(|p| {
            let mut page = Vec::with_capacity(PAGE);
            let mut i = 0u64;
            while page.len() < PAGE {
                let x = (p as u64 * 2_654_435_761 + i * 40_503) % 1_000_003;
                page.extend_from_slice(format!("row {x:07} customer{} paid {} ", x % 977, x % 31).as_bytes());
                i += 1;
            }
            page.truncate(PAGE);
            page
        })
        .collect()
}

fn encode(pages: &[Vec<u8>], encoding: &Encoding) -> Vec<u8> {
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: PAGE as u32,
        commit: PAGES,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1,
        ..Default::default()
    };
    let mut enc = Encoder::with_encoding(Vec::with_capacity(pages.len() * PAGE), header, encoding).unwrap();
    for (i, p) in pages.iter().enumerate() {
        enc.write_page(i as u32 + 1, p).unwrap();
    }
    enc.finish(0).unwrap().0
}

/// Seconds of CPU this thread has used: unlike wall time, it does not grow while other
/// work on a shared machine holds the core.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Runs `f` (which handles `bytes`) until it used 2 s of CPU; prints GiB per CPU second.
fn per_cpu_second(label: &str, bytes: u64, mut f: impl FnMut()) {
    f();
    let (start, mut n) = (thread_cpu_s(), 0u64);
    while thread_cpu_s() - start < 2.0 {
        f();
        n += 1;
    }
    let gib = (n * bytes) as f64 / (1u64 << 30) as f64;
    println!(
        "per CPU second: {label:<28} {:6.2} GiB/s",
        gib / (thread_cpu_s() - start)
    );
}

fn bench(c: &mut Criterion) {
    let mut entropy = OsEntropy::default();
    let key = PrivateKey::generate(&mut entropy).unwrap();
    let cek = ContentKey::generate(&mut entropy).unwrap();
    let keys = FileKeys::new(&cek, &[7u8; 100]);
    let payload = vec![0x5au8; PAGE];
    let fh = [0, 0, 0, 9, 0, 1];

    let mut g = c.benchmark_group("cipher");
    g.throughput(Throughput::Bytes(PAGE as u64));
    let mut out = Vec::with_capacity(PAGE + 28);
    g.bench_function("seal 4 KiB", |b| {
        b.iter(|| {
            out.clear();
            keys.seal_page(&fh, black_box(&payload), &mut entropy, &mut out)
                .unwrap();
        })
    });
    out.clear();
    keys.seal_page(&fh, &payload, &mut entropy, &mut out).unwrap();
    let sealed = out.clone();
    let mut buf = sealed.clone();
    g.bench_function("open 4 KiB", |b| {
        b.iter(|| {
            buf.copy_from_slice(&sealed);
            black_box(keys.open_page(&fh, &mut buf).unwrap());
        })
    });
    g.finish();

    let pages = pages();
    let plain = Encoding::plain(Compression::Lz4);
    let sealed_enc = Encoding::sealed(Compression::Lz4, &[key.public_key()]);
    {
        let mut out = Vec::with_capacity(PAGE + 28);
        per_cpu_second("seal 4 KiB", PAGE as u64, || {
            out.clear();
            keys.seal_page(&fh, black_box(&payload), &mut entropy, &mut out)
                .unwrap();
        });
        let mut buf = sealed.clone();
        per_cpu_second("open 4 KiB", PAGE as u64, || {
            buf.copy_from_slice(&sealed);
            black_box(keys.open_page(&fh, &mut buf).unwrap());
        });
        let total = PAGES as u64 * PAGE as u64;
        let v3 = encode(&pages, &plain);
        let v4 = encode(&pages, &sealed_enc);
        per_cpu_second("encode v3", total, || drop(black_box(encode(&pages, &plain))));
        per_cpu_second("encode v4 (encrypted)", total, || {
            drop(black_box(encode(&pages, &sealed_enc)))
        });
        per_cpu_second("decode v3", total, || {
            drop(black_box(decode_file_with(&v3, None).unwrap()))
        });
        per_cpu_second("decode v4 (encrypted)", total, || {
            drop(black_box(decode_file_with(&v4, Some(&key)).unwrap()))
        });
    }
    let mut g = c.benchmark_group("codec 16 MiB");
    g.throughput(Throughput::Bytes(PAGES as u64 * PAGE as u64));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("encode v3", |b| b.iter(|| black_box(encode(&pages, &plain))));
    g.bench_function("encode v4 (encrypted)", |b| {
        b.iter(|| black_box(encode(&pages, &sealed_enc)))
    });
    let v3 = encode(&pages, &plain);
    let v4 = encode(&pages, &sealed_enc);
    g.bench_function("decode v3", |b| {
        b.iter(|| black_box(decode_file_with(&v3, None).unwrap()))
    });
    g.bench_function("decode v4 (encrypted)", |b| {
        b.iter(|| black_box(decode_file_with(&v4, Some(&key)).unwrap()))
    });
    g.finish();

    let mut g = c.benchmark_group("per file");
    let block = wrap_content_key(&cek, &[key.public_key()], &mut entropy).unwrap();
    g.bench_function("wrap (HPKE seal, 1 recipient)", |b| {
        b.iter(|| black_box(wrap_content_key(&cek, &[key.public_key()], &mut entropy).unwrap()))
    });
    g.bench_function("unwrap (HPKE open)", |b| {
        b.iter(|| black_box(unwrap_content_key(&block, &key).unwrap()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
