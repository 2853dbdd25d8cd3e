//! `litestream-vfs ltx`: what is inside a local LTX file (header, pages, index, and a
//! full verification), or which files a replica holds, level by level.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use futures::{StreamExt, TryStreamExt};
use litestream_vfs::ltx::crypto::{PrivateKey, TAG_SIZE};
use litestream_vfs::ltx::{
    Decoder, FrameHeader, Header, FRAME_FLAG_SIZE, FRAME_FLAG_ZSTD, FRAME_HEADER_SIZE, HEADER_SIZE, INDEX_FOOTER_SIZE,
};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{redact_url, LtxObject, ReplicaStore};
use serde_json::json;

use crate::args::{parse, Flag};
use crate::{format, store, CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs ltx [--level N|all] [--json] FILE_OR_URL...

For a local .ltx file: prints its header, its pages and page index, and verifies it the way
a restore does (every frame decompresses to one page, the index matches the frames, the
file checksum and, for a checksummed snapshot, the database checksum). Exit status 1 if
any file fails verification.

An encrypted file (LTX v4) is opened with -key / -key-file (else
LITESTREAM_ENCRYPTION_KEY / LITESTREAM_ENCRYPTION_KEY_FILE): every page and the index are
then authenticated too. Without a key its structure and file checksum (which covers the
ciphertext) are still verified, its contents are not.

For a replica URL (or a local replica directory): lists its files per level, like
`litestream ltx`: level, min and max TXID, size, the time in the file's header, and
whether the file is encrypted and to how many recipients. A replica that holds no LTX
files at all (often a typo in the URL) is an error, exit status 1, as for info. It opens
no file, so it takes no key (-key / -key-file are refused when only replicas are given,
as info refuses them): `verify -key` checks that a key opens a replica's files.

Options:
  -level N|all    only this level of a replica (default: all)
  -json           JSON instead of text
  -key HEX        private key to open encrypted files with (visible in /proc/<pid>/cmdline
                  and shell history: prefer -key-file or LITESTREAM_ENCRYPTION_KEY)
  -key-file PATH  a file holding it";

const FLAGS: &[Flag] = &[
    Flag {
        names: &["level"],
        value: true,
    },
    Flag {
        names: &["json"],
        value: false,
    },
];

/// Replica levels Litestream 0.5 may write: 0 to 9 (9 = snapshots).
const ALL_LEVELS: std::ops::RangeInclusive<u8> = 0..=9;

pub fn run(argv: &[String]) -> CmdResult {
    let p = parse(argv, &[FLAGS, &crate::keys::KEY_FLAGS].concat()).map_err(Failure::Usage)?;
    if p.positional.is_empty() {
        return Err(Failure::Usage("ltx needs at least one .ltx file or replica URL".into()));
    }
    let levels: Vec<u8> = match p.value("level") {
        None | Some("all") => ALL_LEVELS.collect(),
        Some(l) => match l.parse::<u8>() {
            Ok(n) if ALL_LEVELS.contains(&n) => vec![n],
            _ => return Err(Failure::Usage(format!("-level wants 0 to 9 or 'all', not {l:?}"))),
        },
    };
    let json = p.has("json");
    // A key on the command line with only replicas to list was ignored, exit 0, even a
    // wrong one, while `info -key` refuses it (an operations tester, t35): a listing
    // reads headers only and opens no file, so it cannot say whether the key opens them.
    let is_replica = |arg: &String| arg.contains("://") || Path::new(arg).is_dir();
    if (p.has("key") || p.has("key-file")) && p.positional.iter().all(is_replica) {
        return Err(Failure::Usage(
            "ltx takes no key for a replica URL: it lists only file headers, which are not encrypted, and \
             opens no file, so a key is not checked (give -key to ltx with a local .ltx file, or to verify, \
             which checks that the key opens the replica's files, restore or rekey)"
                .into(),
        ));
    }
    let key = crate::keys::key(&p)?;
    let mut failures = Vec::new();
    let mut docs = Vec::new();
    for arg in &p.positional {
        let path = Path::new(arg);
        let result = if is_replica(arg) {
            list_replica(arg, &levels, json)
        } else {
            inspect_file(path, json, key.as_ref())
        };
        match result {
            Ok(doc) => docs.push(doc),
            Err(e) => {
                // A replica URL as info and restore name it: a NATS password or token, a
                // secret parameter, were printed as given here (a security tester).
                let shown = match is_replica(arg) {
                    true => redact_url(arg),
                    false => arg.clone(),
                };
                eprintln!("litestream-vfs: {}", store::with_hint(format!("{shown}: {e}")));
                failures.push(shown);
            }
        }
    }
    if json {
        let out = if docs.len() == 1 { docs.remove(0) } else { json!(docs) };
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    }
    match failures.len() {
        0 => Ok(()),
        n => Err(Failure::Failed(format!(
            "{n} of {} failed: {}",
            p.positional.len(),
            failures.join(", ")
        ))),
    }
}

// ------------------------------------------------------------------- replica listing

/// One replica's files at `levels`, printed (text) or returned (JSON).
fn list_replica(url: &str, levels: &[u8], json: bool) -> Result<serde_json::Value, String> {
    let store = store::open(url).map_err(|e| match e {
        Failure::Failed(m) | Failure::Usage(m) => m,
    })?;
    let files = block_on(list_with_headers(store.as_ref(), levels))?;
    // An empty replica fails, as it does for info and restore (docs/cli.md: exit status 1
    // for an empty replica), so that a typo in the URL is not read as an empty backup;
    // it exited 0 here (a documentation tester). One empty level of a replica holding
    // files elsewhere is an answer, not a failure.
    if files.is_empty() {
        let others: Vec<u8> = ALL_LEVELS.filter(|l| !levels.contains(l)).collect();
        let lists = block_on(futures::future::try_join_all(others.iter().map(|&l| store.list(l))))
            .map_err(|e| e.to_string())?;
        if lists.iter().all(Vec::is_empty) {
            return Err(format!("replica {} holds no LTX files", store.describe()));
        }
    }
    let rows: Vec<serde_json::Value> = files
        .iter()
        .map(|(f, h)| {
            json!({
                "level": f.level,
                "min_txid": format::txid(f.min_txid),
                "max_txid": format::txid(f.max_txid),
                "size": f.size,
                "timestamp": format::time(h.timestamp_ms),
                "encrypted": h.is_encrypted(),
                "recipients": h.recipients,
            })
        })
        .collect();
    if !json {
        println!("{}", store.describe());
        println!(
            "{:<6} {:<16}  {:<16}  {:>12}  {:<24}  encrypted",
            "level", "min_txid", "max_txid", "size", "created"
        );
        for (f, h) in &files {
            println!(
                "{:<6} {}  {}  {:>12}  {:<24}  {}",
                f.level,
                format::txid(f.min_txid),
                format::txid(f.max_txid),
                f.size,
                format::time(h.timestamp_ms),
                encryption(h)
            );
        }
        if files.is_empty() {
            println!("(no LTX files at this level)");
        }
    }
    Ok(json!({ "replica": store.describe(), "files": rows }))
}

/// Every file at `levels` (LISTed concurrently), in level then TXID order, each with its
/// header (one 100-byte ranged GET per file, 16 at a time).
pub async fn list_with_headers(store: &dyn ReplicaStore, levels: &[u8]) -> Result<Vec<(LtxObject, Header)>, String> {
    let lists = futures::future::try_join_all(levels.iter().map(|&l| store.list(l)))
        .await
        .map_err(|e| e.to_string())?;
    let files: Vec<LtxObject> = lists.into_iter().flatten().collect();
    futures::stream::iter(files)
        .map(|f| async move {
            let head = store
                .get_range(f.level, f.min_txid, f.max_txid, 0..HEADER_SIZE as u64)
                .await
                .map_err(|e| e.to_string())?;
            let name = format!("level {} file {:016x}-{:016x}", f.level, f.min_txid, f.max_txid);
            let h = Header::decode(&head).map_err(|e| format!("{name}: {e}"))?;
            Ok((f, h))
        })
        .buffered(16)
        .try_collect()
        .await
}

/// "no", or "yes (N recipients)".
pub fn encryption(h: &Header) -> String {
    if h.is_encrypted() {
        format!(
            "yes ({} recipient{})",
            h.recipients,
            if h.recipients == 1 { "" } else { "s" }
        )
    } else {
        "no".into()
    }
}

// ------------------------------------------------------------------ local file

/// How the pages of a file are compressed, by frame flags.
#[derive(Default)]
struct FrameKinds {
    lz4_block: u64,
    lz4_frame: u64,
    zstd: u64,
}

/// Decodes and verifies a local LTX file; prints what it found (text) or returns it (JSON).
fn inspect_file(path: &Path, json: bool, key: Option<&PrivateKey>) -> Result<serde_json::Value, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let file_len = file.metadata().map_err(|e| e.to_string())?.len();
    let mut dec = match Decoder::with_key(BufReader::with_capacity(1 << 20, file), key) {
        Ok(dec) => dec,
        // The leading recipient block is the one tried: a changed byte there reads as a
        // wrong key unless the copy at the end says otherwise.
        Err(e @ litestream_vfs::ltx::Error::NotARecipient { .. })
            if std::fs::read(path).is_ok_and(|b| litestream_vfs::ltx::recipient_copies::copies_differ(&b)) =>
        {
            return Err(format!(
                "the file is corrupt: its two copies of the recipient block differ, so the key was not \
                 tried on an intact one ({e}: not a wrong key)"
            ))
        }
        Err(e) => return Err(e.to_string()),
    };
    let header = *dec.header();
    let locked = dec.is_locked();
    if !json {
        println!("{}", path.display());
        print_header(&header);
    }
    let mut page = vec![0u8; header.page_size as usize];
    let mut pages = 0u64;
    let verified = loop {
        if locked {
            break dec.finish();
        }
        match dec.next_page(&mut page) {
            Ok(Some(_)) => pages += 1,
            Ok(None) => break dec.finish(),
            Err(e) => break Err(e),
        }
    };
    let summary = match verified {
        Ok(s) => s,
        Err(e) => {
            return Err(format!("verification failed after {pages} pages: {e}"));
        }
    };
    let entries = summary.index.entries();
    if locked {
        pages = entries.len() as u64;
    }
    let frames_start = header.frames_offset();
    let frames_end = entries.last().map_or(frames_start, |e| e.offset + e.size as u64);
    let frame_bytes = frames_end - frames_start;
    let seal_tail = if header.is_encrypted() {
        (TAG_SIZE + header.recipient_block_size()) as u64
    } else {
        0
    };
    let index_bytes =
        file_len.saturating_sub(frames_end + FRAME_HEADER_SIZE as u64 + INDEX_FOOTER_SIZE as u64 + seal_tail);
    let kinds = frame_kinds(path, entries.iter().map(|e| e.offset)).map_err(|e| e.to_string())?;
    let raw = pages * header.page_size as u64;
    let (first, last) = (
        entries.first().map_or(0, |e| e.pgno),
        entries.last().map_or(0, |e| e.pgno),
    );
    let t = summary.trailer;
    if !json {
        println!("  pages:               {pages} (page {first} to {last})");
        println!(
            "  page frames:         {} for {} of pages ({:.1}%): {}",
            format::bytes(frame_bytes),
            format::bytes(raw),
            100.0 * frame_bytes as f64 / raw.max(1) as f64,
            kinds.describe()
        );
        println!("  page index:          {} entries, {index_bytes} bytes", entries.len());
        println!("  post-apply checksum: {:016x}", t.post_apply_checksum);
        println!("  file checksum:       {:016x}", t.file_checksum);
        if locked {
            println!("  verified:            ok (structure and file checksum; contents not verified: no key)");
        } else {
            println!(
                "  verified:            ok (frames, index, file checksum{}{})",
                if header.is_encrypted() {
                    ", every page and the index authenticated"
                } else {
                    ""
                },
                if header.is_snapshot() && !header.no_checksum() {
                    ", database checksum"
                } else {
                    ""
                }
            );
        }
    }
    Ok(json!({
        "path": path.display().to_string(),
        "size": file_len,
        "header": header_json(&header),
        "pages": pages,
        "first_pgno": first,
        "last_pgno": last,
        "frame_bytes": frame_bytes,
        "frames": {"lz4_block": kinds.lz4_block, "lz4_frame": kinds.lz4_frame, "zstd": kinds.zstd},
        "index_entries": entries.len(),
        "index_bytes": index_bytes,
        "post_apply_checksum": format!("{:016x}", t.post_apply_checksum),
        "file_checksum": format!("{:016x}", t.file_checksum),
        "verified": true,
        "contents_verified": !locked,
    }))
}

fn print_header(h: &Header) {
    let kind = if h.is_snapshot() { " (snapshot)" } else { "" };
    let flags = if h.no_checksum() { " (no checksum)" } else { "" };
    println!(
        "  TXIDs:               {}-{}{kind}",
        format::txid(h.min_txid),
        format::txid(h.max_txid)
    );
    println!("  flags:               0x{:08x}{flags}", h.flags);
    println!("  page size:           {}", h.page_size);
    println!(
        "  commit:              {} pages ({})",
        h.commit,
        format::bytes(h.commit as u64 * h.page_size as u64)
    );
    println!(
        "  timestamp:           {} ({} ms)",
        format::time(h.timestamp_ms),
        h.timestamp_ms
    );
    println!("  pre-apply checksum:  {:016x}", h.pre_apply_checksum);
    println!(
        "  WAL:                 offset {}, size {}, salts {:08x} {:08x}",
        h.wal_offset, h.wal_size, h.wal_salt1, h.wal_salt2
    );
    println!("  node id:             {}", h.node_id);
    println!(
        "  encrypted:           {}",
        if h.is_encrypted() {
            format!("{} (LTX v4: X25519 / HKDF-SHA256 / ChaCha20-Poly1305)", encryption(h))
        } else {
            "no (LTX v3)".into()
        }
    );
}

fn header_json(h: &Header) -> serde_json::Value {
    json!({
        "flags": h.flags,
        "page_size": h.page_size,
        "commit": h.commit,
        "min_txid": format::txid(h.min_txid),
        "max_txid": format::txid(h.max_txid),
        "timestamp": format::time(h.timestamp_ms),
        "timestamp_ms": h.timestamp_ms,
        "pre_apply_checksum": format!("{:016x}", h.pre_apply_checksum),
        "wal_offset": h.wal_offset,
        "wal_size": h.wal_size,
        "wal_salt1": h.wal_salt1,
        "wal_salt2": h.wal_salt2,
        "node_id": h.node_id,
        "encrypted": h.is_encrypted(),
        "recipients": h.recipients,
    })
}

impl FrameKinds {
    fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("LZ4 block", self.lz4_block),
            ("LZ4 frame", self.lz4_frame),
            ("zstd", self.zstd),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(what, n)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            "no frames".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Reads the 6-byte header of every frame (the file is already verified, so the index's
/// offsets are the frames'), skipping the payloads.
fn frame_kinds(path: &Path, offsets: impl Iterator<Item = u64>) -> std::io::Result<FrameKinds> {
    let mut r = BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut kinds = FrameKinds::default();
    let mut at = 0u64;
    for offset in offsets {
        r.seek_relative(offset as i64 - at as i64)?;
        let mut b = [0u8; FRAME_HEADER_SIZE];
        r.read_exact(&mut b)?;
        at = offset + FRAME_HEADER_SIZE as u64;
        let flags = FrameHeader::parse(&b).flags;
        match flags {
            f if f == FRAME_FLAG_SIZE | FRAME_FLAG_ZSTD => kinds.zstd += 1,
            FRAME_FLAG_SIZE => kinds.lz4_block += 1,
            _ => kinds.lz4_frame += 1,
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_url_that_fails_is_named_without_its_secrets() {
        let args: Vec<String> = [
            "nats://u:CanaryNatsPw@127.0.0.1:99999/bkt",
            "s3://b/p?sse-customer-key=CanarySseKey&bogus=1",
        ]
        .map(String::from)
        .to_vec();
        match run(&args) {
            Err(Failure::Failed(m)) => {
                assert!(m.starts_with("2 of 2 failed: ") && !m.contains("Canary"), "{m}");
                assert!(m.contains("sse-customer-key=<redacted>"), "{m}");
            }
            other => panic!("{other:?}"),
        }
    }
}
