//! `litestream-vfs restore`: a replica into a new database file, at the latest state, a
//! TXID or a point in time.

use std::path::Path;

use litestream_vfs::restore::{refuse_directory, restore, Listing, RestoreOptions, Restored, Target};
use litestream_vfs::runtime::block_on;
use serde_json::json;

use crate::args::{parse, Flag};
use crate::progress::Progress;
use crate::{format, store, CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs restore -o PATH [options] URL

Restores the replica at URL into the new database file PATH: the newest snapshot at or
before the target, then the fewest files that reach it, downloaded in parallel and merged
page by page into PATH.litestream-restore.tmp, verified, fsynced and renamed into place.

Target (at most one; default: the latest TXID):
  -txid TXID        exactly this TXID: 16 hex digits as Litestream prints them, 0x and
                    hex digits, or a decimal number as litestream_txid() returns it
  -timestamp TIME   the newest state written at or before an RFC 3339 time
  -time WHEN        'latest' (or 'now'), an RFC 3339 time, a relative one ('10 minutes
                    ago'), or a TXID: 16 hex digits or 'txid:' and a decimal number

Options:
  -o, -output PATH     where to write the database (required)
  -overwrite, -force   replace PATH (and remove its -wal, -shm, -journal) if it exists
  -if-db-not-exists    exit 0 without restoring if PATH already exists
  -if-replica-exists   exit 0 without restoring if the replica holds no files
  -json                print the summary as JSON
  -chunk-mib N         size of one ranged GET in MiB (default 8)
  -parallelism N       ranged GETs in flight per file (default 4)
  -prefetch-mib N      MiB fetched ahead of the merge, all files together, besides the
                       one chunk each file holds (default 64)
  -key HEX             private key of an encrypted (LTX v4) replica (else
                       LITESTREAM_ENCRYPTION_KEY). A key on the command line is seen
                       by other users in /proc/<pid>/cmdline (ps) and is kept in shell
                       history: prefer -key-file or the environment
  -key-file PATH       a file holding it (else LITESTREAM_ENCRYPTION_KEY_FILE)

Flags take one dash or two. Progress goes to stderr (a bar on a terminal), the summary
to stdout. Exit status: 0 restored (or skipped by an -if-* flag), 1 failed, 2 usage.";

const FLAGS: &[Flag] = &[
    Flag {
        names: &["o", "output"],
        value: true,
    },
    Flag {
        names: &["txid"],
        value: true,
    },
    Flag {
        names: &["timestamp"],
        value: true,
    },
    Flag {
        names: &["time"],
        value: true,
    },
    Flag {
        names: &["overwrite", "force"],
        value: false,
    },
    Flag {
        names: &["if-db-not-exists"],
        value: false,
    },
    Flag {
        names: &["if-replica-exists"],
        value: false,
    },
    Flag {
        names: &["json"],
        value: false,
    },
    Flag {
        names: &["chunk-mib"],
        value: true,
    },
    Flag {
        names: &["parallelism"],
        value: true,
    },
    Flag {
        names: &["prefetch-mib"],
        value: true,
    },
];

pub fn run(argv: &[String]) -> CmdResult {
    let p = parse(argv, &[FLAGS, &crate::keys::KEY_FLAGS].concat()).map_err(Failure::Usage)?;
    let url = match p.positional.as_slice() {
        [url] => url.as_str(),
        [] => return Err(Failure::Usage("restore needs the replica URL".into())),
        more => return Err(Failure::Usage(format!("restore takes one replica URL, got {more:?}"))),
    };
    let dest = p
        .value("o")
        .ok_or_else(|| Failure::Usage("restore needs -o PATH, the database file to write".into()))?;
    let target = target(p.value("txid"), p.value("timestamp"), p.value("time")).map_err(Failure::Usage)?;
    let mut options = RestoreOptions {
        overwrite: p.has("overwrite"),
        key: crate::keys::key(&p)?.map(std::sync::Arc::new),
        ..Default::default()
    };
    if let Some(mib) = p.number::<u64>("chunk-mib").map_err(Failure::Usage)? {
        options.chunk_bytes = mib.max(1) << 20;
    }
    if let Some(n) = p.number::<usize>("parallelism").map_err(Failure::Usage)? {
        options.chunks_ahead = n.max(1);
    }
    if let Some(mib) = p.number::<u64>("prefetch-mib").map_err(Failure::Usage)? {
        options.prefetch_bytes = mib << 20;
    }
    let dest_path = Path::new(dest);
    // Before -if-db-not-exists, which would take a directory for an existing database
    // and exit 0 having restored nothing.
    refuse_directory(dest_path).map_err(Failure::Failed)?;
    if p.has("if-db-not-exists") && dest_path.exists() {
        eprintln!("{dest} already exists; nothing restored (-if-db-not-exists)");
        return Ok(());
    }
    let store = store::open(url)?;
    if p.has("if-replica-exists") {
        let listing = block_on(Listing::fetch(store.as_ref()))
            .map_err(|e| Failure::Failed(format!("listing {}: {e}", store.describe())))?;
        if listing.is_empty() {
            eprintln!(
                "replica {} holds no files; nothing restored (-if-replica-exists)",
                store.describe()
            );
            return Ok(());
        }
    }
    let restored = {
        let _progress = Progress::start(dest_path.display().to_string());
        restore(store, dest_path, target, &options).map_err(|e| {
            if !options.overwrite && e.contains("already exists") {
                Failure::Failed(format!("{e} (-overwrite replaces it)"))
            } else {
                Failure::Failed(e)
            }
        })?
    };
    if p.has("json") {
        println!("{}", summary_json(dest, &restored));
    } else {
        print!("{}", summary_text(dest, &restored));
    }
    Ok(())
}

/// The target the flags ask for (at most one of them).
pub fn target(txid: Option<&str>, timestamp: Option<&str>, time: Option<&str>) -> Result<Target, String> {
    match (txid, timestamp, time) {
        (None, None, None) => Ok(Target::Latest),
        (Some(t), None, None) => parse_txid(t).map(Target::Txid),
        (None, Some(ts), None) => litestream_vfs::storage::parse_rfc3339_ms(ts)
            .map(Target::Timestamp)
            .ok_or_else(|| format!("-timestamp {ts:?} is not an RFC 3339 time such as 2024-05-06T07:08:09Z")),
        (None, None, Some(w)) => Target::parse(w).map_err(|e| format!("-time: {e}")),
        _ => Err("give at most one of -txid, -timestamp and -time".into()),
    }
}

/// 16 hex digits (Litestream's spelling) or a decimal number (`litestream_txid()`'s);
/// a 16-digit number is always read as hex, like Litestream does. Digits with leading
/// zeros that are not 16 are refused: Litestream's spelling with a digit dropped or added
/// in copying would otherwise restore another point (decimal).
fn parse_txid(t: &str) -> Result<u64, String> {
    let t = t.trim();
    if t.len() != 16 && t.len() > 1 && t.starts_with('0') && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "-txid {t:?} has {} digits with leading zeros: Litestream prints TXIDs as exactly 16 hex \
             digits (0000000000000a3f); give those, or a decimal number without leading zeros",
            t.len()
        ));
    }
    let parsed = if t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        u64::from_str_radix(t, 16).ok()
    } else if let Some(hex) = t.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()
    } else {
        t.parse().ok()
    };
    parsed
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("-txid {t:?} is not a TXID: give 16 hex digits (0000000000000a3f) or a decimal number"))
}

fn summary_text(dest: &str, r: &Restored) -> String {
    let secs = r.elapsed.as_secs_f64();
    let db_bytes = r.position.page_size as u64 * r.position.commit as u64;
    let levels = format::plan_steps(&r.plan);
    format!(
        "restored TXID {} ({}) to {dest}\n  \
         files:      {} ({})\n  \
         downloaded: {} in {secs:.2} s ({})\n  \
         database:   {}, {} pages of {} bytes\n",
        format::txid(r.position.txid),
        r.position.txid,
        r.plan.len(),
        levels.join(", "),
        format::bytes(r.bytes_downloaded),
        format::rate(r.bytes_downloaded, secs),
        format::bytes(db_bytes),
        r.position.commit,
        r.position.page_size,
    )
}

fn summary_json(dest: &str, r: &Restored) -> serde_json::Value {
    json!({
        "path": dest,
        "txid": format::txid(r.position.txid),
        "txid_decimal": r.position.txid,
        "page_size": r.position.page_size,
        "pages": r.position.commit,
        "files": r.plan.iter().map(|f| json!({
            "level": f.level,
            "min_txid": format::txid(f.min_txid),
            "max_txid": format::txid(f.max_txid),
            "size": f.size,
        })).collect::<Vec<_>>(),
        "bytes_downloaded": r.bytes_downloaded,
        "seconds": r.elapsed.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txids_take_litestreams_hex_and_our_decimal() {
        assert_eq!(target(Some("000000000000002a"), None, None), Ok(Target::Txid(42)));
        assert_eq!(target(Some("42"), None, None), Ok(Target::Txid(42)));
        assert_eq!(target(Some("0x2a"), None, None), Ok(Target::Txid(42)));
        assert!(target(Some("0"), None, None).unwrap_err().contains("not a TXID"));
        assert!(target(Some("xyz"), None, None).unwrap_err().contains("16 hex digits"));
        // Litestream's spelling with a zero dropped or added: refused, not read as decimal.
        for copied_wrong in ["000000000000123", "00000000000000123", "000000000000a3f"] {
            let e = target(Some(copied_wrong), None, None).unwrap_err();
            assert!(e.contains("exactly 16 hex"), "{copied_wrong}: {e}");
        }
    }

    #[test]
    fn one_target_at_most_and_times_are_checked() {
        assert_eq!(target(None, None, None), Ok(Target::Latest));
        assert_eq!(
            target(None, Some("2024-05-06T07:08:09Z"), None),
            Ok(Target::Timestamp(1_714_979_289_000))
        );
        assert!(target(None, Some("yesterday"), None).unwrap_err().contains("RFC 3339"));
        assert!(matches!(
            target(None, None, Some("10 minutes ago")),
            Ok(Target::Timestamp(_))
        ));
        // The forms docs/cli.md lists for -time besides times.
        assert_eq!(target(None, None, Some("now")), Ok(Target::Latest));
        assert_eq!(target(None, None, Some("txid:42")), Ok(Target::Txid(42)));
        assert_eq!(target(None, None, Some("000000000000002a")), Ok(Target::Txid(42)));
        assert!(target(Some("1"), None, Some("latest"))
            .unwrap_err()
            .contains("at most one"));
    }
}
