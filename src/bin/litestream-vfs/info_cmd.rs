//! `litestream-vfs info`: a replica at a glance: levels, TXID range, snapshots, and what
//! a restore of the latest state would download.

use litestream_vfs::restore::{plan, Listing, LEVELS, SNAPSHOT_LEVEL};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{LtxObject, ReplicaStore};
use serde_json::json;

use crate::args::{parse, Flag};
use crate::{format, store, CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs info [--json] URL

Summarizes the replica at URL (or a local replica directory): files, bytes and TXID range
per level, the snapshots and when they were taken, the newest TXID and when it was
written, and the plan a restore of the latest state would follow (files and bytes).
Exit status 1 if the replica cannot be read or holds no LTX files.

Options:
  -json   JSON instead of text";

const FLAGS: &[Flag] = &[Flag {
    names: &["json"],
    value: false,
}];

pub fn run(argv: &[String]) -> CmdResult {
    let p = parse(argv, FLAGS).map_err(Failure::Usage)?;
    let url = match p.positional.as_slice() {
        [url] => url,
        _ => return Err(Failure::Usage("info takes one replica URL".into())),
    };
    let store = store::open(url)?;
    let doc = summarize(store.as_ref()).map_err(Failure::Failed)?;
    if p.has("json") {
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        print_text(&doc);
    }
    Ok(())
}

fn summarize(store: &dyn ReplicaStore) -> Result<serde_json::Value, String> {
    let name = store.describe().to_string();
    let levels: Vec<u8> = (0..=9).collect();
    let lists = block_on(futures::future::try_join_all(levels.iter().map(|&l| store.list(l))))
        .map_err(|e| format!("listing {name}: {e}"))?;
    let all: Vec<&LtxObject> = lists.iter().flatten().collect();
    if all.is_empty() {
        return Err(format!("replica {name} holds no LTX files"));
    }
    let per_level: Vec<serde_json::Value> = lists
        .iter()
        .filter(|files| !files.is_empty())
        .map(|files| {
            json!({
                "level": files[0].level,
                "files": files.len(),
                "bytes": files.iter().map(|f| f.size).sum::<u64>(),
                "min_txid": format::txid(files.iter().map(|f| f.min_txid).min().unwrap_or(0)),
                "max_txid": format::txid(files.iter().map(|f| f.max_txid).max().unwrap_or(0)),
            })
        })
        .collect();
    // The same listing a restore plans from: the snapshot level and levels 8..0.
    let listing = Listing {
        snapshots: lists[SNAPSHOT_LEVEL as usize].clone(),
        incremental: LEVELS.iter().map(|&l| lists[l as usize].clone()).collect(),
    };
    let timestamp = |f: &LtxObject| {
        block_on(store.timestamp(f.level, f.min_txid, f.max_txid))
            .map(format::time)
            .map_err(|e| format!("reading the header of a level {} file in {name}: {e}", f.level))
    };
    let snapshots = listing
        .snapshots
        .iter()
        .map(|f| {
            Ok(json!({
                "min_txid": format::txid(f.min_txid),
                "max_txid": format::txid(f.max_txid),
                "size": f.size,
                "timestamp": timestamp(f)?,
            }))
        })
        .collect::<Result<Vec<_>, String>>()?;
    // Of the files ending at the newest TXID, the lowest level was written first: when
    // that TXID was committed, not when a compaction or snapshot copied it.
    let newest = all
        .iter()
        .max_by_key(|f| (f.max_txid, std::cmp::Reverse(f.level)))
        .expect("not empty");
    let min_txid = all.iter().map(|f| f.min_txid).min().unwrap_or(0);
    let encryption = encryption_summary(store, &listing)?;
    let restore_plan = match plan(&listing, None) {
        Ok(files) => json!({
            "txid": format::txid(files.last().map_or(0, |f| f.max_txid)),
            "files": files.len(),
            "bytes": files.iter().map(|f| f.size).sum::<u64>(),
            "steps": format::plan_steps(&files),
            "plan": files.iter().map(|f| json!({
                "level": f.level,
                "min_txid": format::txid(f.min_txid),
                "max_txid": format::txid(f.max_txid),
                "size": f.size,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => json!({ "error": format!("cannot restore: replica {e}") }),
    };
    Ok(json!({
        "replica": name,
        "min_txid": format::txid(min_txid),
        "max_txid": format::txid(newest.max_txid),
        "max_txid_decimal": newest.max_txid,
        "latest_timestamp": timestamp(newest)?,
        "files": all.len(),
        "bytes": all.iter().map(|f| f.size).sum::<u64>(),
        "levels": per_level,
        "snapshots": snapshots,
        "restore_plan": restore_plan,
        "encryption": encryption,
    }))
}

/// Which files of the latest restore plan are encrypted, and to how many recipients
/// (one 100-byte ranged GET per file of the plan).
fn encryption_summary(store: &dyn ReplicaStore, listing: &Listing) -> Result<serde_json::Value, String> {
    let Ok(files) = plan(listing, None) else {
        return Ok(serde_json::Value::Null);
    };
    let mut encrypted = 0usize;
    let mut recipients = std::collections::BTreeSet::new();
    for f in &files {
        let head = block_on(store.get_range(f.level, f.min_txid, f.max_txid, 0..100))
            .map_err(|e| format!("reading the header of a level {} file: {e}", f.level))?;
        let h = litestream_vfs::ltx::Header::decode(&head).map_err(|e| e.to_string())?;
        if h.is_encrypted() {
            encrypted += 1;
            recipients.insert(h.recipients);
        }
    }
    Ok(json!({
        "plan_files": files.len(),
        "encrypted_plan_files": encrypted,
        "recipients": recipients.into_iter().collect::<Vec<_>>(),
    }))
}

fn print_text(d: &serde_json::Value) {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    println!("replica {}", s(&d["replica"]));
    println!(
        "  TXIDs:        {} to {} (latest {}, written {})",
        s(&d["min_txid"]),
        s(&d["max_txid"]),
        n(&d["max_txid_decimal"]),
        s(&d["latest_timestamp"])
    );
    println!("  files:        {}, {}", n(&d["files"]), format::bytes(n(&d["bytes"])));
    for l in d["levels"].as_array().into_iter().flatten() {
        println!(
            "  level {}:      {:>5} files {:>12}  TXIDs {}-{}",
            n(&l["level"]),
            n(&l["files"]),
            format::bytes(n(&l["bytes"])),
            s(&l["min_txid"]),
            s(&l["max_txid"])
        );
    }
    let snaps = d["snapshots"].as_array().cloned().unwrap_or_default();
    if snaps.is_empty() {
        println!("  snapshots:    none at level 9");
    }
    for (i, snap) in snaps.iter().enumerate() {
        println!(
            "  {}  TXID {} at {} ({})",
            if i == 0 { "snapshots:" } else { "          " },
            s(&snap["max_txid"]),
            s(&snap["timestamp"]),
            format::bytes(n(&snap["size"]))
        );
    }
    let e = &d["encryption"];
    if !e.is_null() {
        let counts: Vec<String> = e["recipients"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.to_string())
            .collect();
        println!(
            "  encryption:   {} of {} files of the restore plan encrypted (LTX v4){}",
            n(&e["encrypted_plan_files"]),
            n(&e["plan_files"]),
            if counts.is_empty() {
                String::new()
            } else {
                format!(", to {} recipient(s)", counts.join(" or "))
            }
        );
    }
    let p = &d["restore_plan"];
    if let Some(e) = p["error"].as_str() {
        println!("  restore plan: {e}");
    } else {
        let steps: Vec<String> = p["steps"].as_array().into_iter().flatten().map(s).collect();
        println!(
            "  restore plan: TXID {} from {} files, {}: {}",
            s(&p["txid"]),
            n(&p["files"]),
            format::bytes(n(&p["bytes"])),
            steps.join(", ")
        );
    }
}
