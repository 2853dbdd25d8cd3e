//! What a page read costs on a NATS JetStream object store, which has no ranged GET.
//!
//! Starts Debian's `nats-server -js` (`NATS_SERVER`, default `/usr/sbin/nats-server`) on a
//! loopback port, uploads one ~100 MiB snapshot LTX file (incompressible 4 KiB pages, so
//! each page frame is ~4.1 KiB) through our `nats://` store, then reads page frames the way
//! the read replica does and prints, per read, the latency and the bytes the server sent
//! (its `/connz` counters), against what a store with native ranges would move (the frame).
//!
//! Compared:
//! - `page (map cached)`: `get_range` of one random frame once the object's chunk map is
//!   known: one direct get of the 128 KiB chunk holding it (two if it straddles);
//! - `page (first read)`: the same on a fresh store: object metadata + the headers-only
//!   consumer that maps the chunks + the chunk;
//! - `read-and-cut`: what a client without a chunk map does (Litestream's NATS client:
//!   stream the object from the start, discard up to the offset) — modelled by its average
//!   cost, half a whole-object GET;
//! - `index tail` (last 32 KiB, as the replica's open reads it) and `8 MiB span` (a
//!   hydration read).
//!
//! Run: `cargo bench --bench nats_page_reads` (or `make bench-nats`), ~30 s. Numbers from a
//! loopback server on a shared 2-core machine: compare ratios, not absolute times.

use std::io::Read;
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use litestream_vfs::ltx::{decode_file, Compression, Encoder, Header, PageIndexEntry, FLAG_NO_CHECKSUM};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{open_store_with_env, ReplicaStore, StoreOptions};

const PAGE_SIZE: usize = 4096;
const TARGET_BYTES: usize = 100 << 20;
const PAGE_READS: usize = 300;

struct Server {
    child: Child,
    port: u16,
    monitor: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .expect("a loopback port")
        .port()
}

fn start_server() -> Server {
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, monitor) = (free_port(), free_port());
    let child = Command::new(&bin)
        .args([
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &monitor.to_string(),
        ])
        .arg("-sd")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e} (run make setup)"));
    let started = Instant::now();
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let mut b = [0u8; 4];
            if s.read_exact(&mut b).is_ok() && &b == b"INFO" {
                break;
            }
        }
        assert!(started.elapsed() < Duration::from_secs(30), "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Server {
        child,
        port,
        monitor,
        _dir: dir,
    }
}

/// Bytes the server has sent to our store's connections (named `litestream-vfs`).
fn bytes_sent(monitor: u16) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", monitor)).expect("monitor port");
    use std::io::Write;
    write!(s, "GET /connz?limit=1024 HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let body = raw.split("\r\n\r\n").nth(1).expect("HTTP body");
    let v: serde_json::Value = serde_json::from_str(body).expect("connz JSON");
    v["connections"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter(|c| c["name"] == "litestream-vfs")
                .map(|c| c["out_bytes"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// A snapshot of incompressible pages, ~`TARGET_BYTES` long.
fn snapshot() -> Bytes {
    let pages = (TARGET_BYTES / PAGE_SIZE) as u32;
    let header = Header {
        flags: FLAG_NO_CHECKSUM,
        page_size: PAGE_SIZE as u32,
        commit: pages,
        min_txid: 1,
        max_txid: 1,
        timestamp_ms: 1_700_000_000_000,
        ..Header::default()
    };
    let mut enc = Encoder::new(Vec::with_capacity(TARGET_BYTES + (8 << 20)), header, Compression::Lz4).unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut page = vec![0u8; PAGE_SIZE];
    let lock = litestream_vfs::ltx::lock_pgno(PAGE_SIZE as u32);
    for pgno in 1..=pages {
        if pgno == lock {
            continue;
        }
        for b in page.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes());
        }
        enc.write_page(pgno, &page).unwrap();
    }
    Bytes::from(enc.finish(0).unwrap().0)
}

fn open(server: &Server, chunk: &str) -> Arc<dyn ReplicaStore> {
    let url = format!("nats://127.0.0.1:{}/bench/{chunk}?nats_chunk_size={chunk}", server.port);
    open_store_with_env(&url, &StoreOptions::default(), &|_| None).unwrap()
}

/// Runs `f`, returning (its result, seconds, bytes the server sent meanwhile).
fn measured<T>(server: &Server, f: impl FnOnce() -> T) -> (T, f64, u64) {
    let before = bytes_sent(server.monitor);
    let started = Instant::now();
    let out = f();
    let secs = started.elapsed().as_secs_f64();
    (out, secs, bytes_sent(server.monitor) - before)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let server = start_server();
    let file = snapshot();
    let index: Vec<PageIndexEntry> = decode_file(&file).unwrap().index.into_entries();
    let mean_frame = index.iter().map(|e| e.size as f64).sum::<f64>() / index.len() as f64;
    println!(
        "snapshot: {:.1} MiB, {} pages, mean frame {mean_frame:.0} bytes",
        file.len() as f64 / (1 << 20) as f64,
        index.len(),
    );
    // The default chunk size, and the smaller one a primary serving replicas might choose.
    for chunk in ["128k", "32k"] {
        run(&server, &file, &index, chunk);
    }
}

fn run(server: &Server, file: &Bytes, index: &[PageIndexEntry], chunk: &str) {
    let len = file.len() as u64;
    println!("\n== nats_chunk_size={chunk}");
    let store = open(server, chunk);
    let ((), secs, _) = measured(server, || block_on(store.put_new(9, 1, 1, file.clone(), 0)).unwrap());
    println!(
        "upload (put_new): {secs:.2} s, {:.0} MiB/s",
        len as f64 / (1 << 20) as f64 / secs
    );

    // Whole object, as a restore reads it.
    let (whole, whole_secs, whole_bytes) = measured(server, || block_on(store.get(9, 1, 1)).unwrap());
    assert_eq!(&whole, file);
    println!(
        "whole GET: {whole_secs:.2} s, {:.1} MiB sent, {:.0} MiB/s",
        whole_bytes as f64 / (1 << 20) as f64,
        len as f64 / (1 << 20) as f64 / whole_secs
    );

    // First page read on a fresh store: metadata, chunk map, chunk.
    let fresh = open(server, chunk);
    block_on(fresh.list(9)).unwrap(); // connect outside the measurement
    let e = &index[index.len() / 2];
    let range = e.offset..e.offset + e.size as u64;
    let (b, first_secs, first_bytes) = measured(server, || block_on(fresh.get_range(9, 1, 1, range.clone())).unwrap());
    assert_eq!(b, file.slice(range.start as usize..range.end as usize));

    // Page reads with the map cached: random frames.
    let mut x: u64 = 42;
    let mut lat = Vec::with_capacity(PAGE_READS);
    let mut bytes = 0u64;
    let mut frames = 0u64;
    for _ in 0..PAGE_READS {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let e = &index[(x >> 33) as usize % index.len()];
        let range = e.offset..e.offset + e.size as u64;
        let (b, secs, sent) = measured(server, || block_on(fresh.get_range(9, 1, 1, range.clone())).unwrap());
        assert_eq!(b.len() as u64, e.size as u64);
        lat.push(secs * 1000.0);
        bytes += sent;
        frames += e.size as u64;
    }
    lat.sort_by(f64::total_cmp);
    let per_read = bytes as f64 / PAGE_READS as f64;
    let per_frame = frames as f64 / PAGE_READS as f64;

    // The replica's open: the index tail; and a hydration span.
    let tail = len - (32 << 10)..len;
    let (_, tail_secs, tail_bytes) = measured(server, || block_on(fresh.get_range(9, 1, 1, tail.clone())).unwrap());
    let span = 40 << 20..48 << 20;
    let (_, span_secs, span_bytes) = measured(server, || block_on(fresh.get_range(9, 1, 1, span.clone())).unwrap());

    let cut_bytes = whole_bytes as f64 / 2.0;
    let cut_ms = whole_secs * 1000.0 / 2.0;
    println!();
    println!(
        "{:<22} {:>12} {:>14} {:>16}",
        "read", "latency", "bytes sent", "x frame size"
    );
    println!(
        "{:<22} {:>9.2} ms {:>14.0} {:>15.1}x   (p90 {:.2} ms, p99 {:.2} ms, n={PAGE_READS})",
        "page (map cached)",
        percentile(&lat, 0.5),
        per_read,
        per_read / per_frame,
        percentile(&lat, 0.9),
        percentile(&lat, 0.99)
    );
    println!(
        "{:<22} {:>9.2} ms {:>14} {:>15.1}x",
        "page (first read)",
        first_secs * 1000.0,
        first_bytes,
        first_bytes as f64 / e.size as f64
    );
    println!(
        "{:<22} {:>9.2} ms {:>14.0} {:>15.0}x   (half a whole GET, on average)",
        "read-and-cut",
        cut_ms,
        cut_bytes,
        cut_bytes / per_frame
    );
    println!(
        "{:<22} {:>9.2} ms {:>14} {:>15.2}x   (32 KiB)",
        "index tail",
        tail_secs * 1000.0,
        tail_bytes,
        tail_bytes as f64 / (32 << 10) as f64
    );
    println!(
        "{:<22} {:>9.2} ms {:>14} {:>15.2}x   (8 MiB, {:.0} MiB/s)",
        "hydration span",
        span_secs * 1000.0,
        span_bytes,
        span_bytes as f64 / (8 << 20) as f64,
        8.0 / span_secs
    );
    println!();
    println!(
        "page read: {:.1}x the bytes of a native ranged GET, {:.0}x fewer than read-and-cut, \
         {:.0}x faster than read-and-cut (median)",
        per_read / per_frame,
        cut_bytes / per_read,
        cut_ms / percentile(&lat, 0.5)
    );
}
