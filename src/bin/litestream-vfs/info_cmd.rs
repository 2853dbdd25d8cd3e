//! `litestream-vfs info`: a replica at a glance: levels, TXID range, snapshots, and what
//! a restore of the latest state would download.

use litestream_vfs::ltx::{Header, HEADER_SIZE};
use litestream_vfs::restore::{oldest_restorable, plan_reachable, Listing, LEVELS, SNAPSHOT_LEVEL};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{LtxObject, ReplicaStore};
use serde_json::json;

use crate::args::{parse, Flag};
use crate::{format, store, CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs info [--json] URL

Summarizes the replica at URL (or a local replica directory): files, bytes and TXID range
per level, the snapshots and when they were taken, the newest TXID and when it was
written, the oldest TXID a restore can reach with the files present and when it was
written, the plan a restore of the latest state would follow (files and bytes), and
which files of that plan are encrypted (LTX v4) and to how many recipients. It reads only
file headers, which are not encrypted, so it needs no key.
Exit status 1 if the replica cannot be read or holds no LTX files.

Options:
  -json   JSON instead of text";

const FLAGS: &[Flag] = &[Flag {
    names: &["json"],
    value: false,
}];

pub fn run(argv: &[String]) -> CmdResult {
    // -key is known here only to say why it is not wanted: `restore`, `ltx` and `rekey`
    // take it, and a script passing it everywhere should learn that info reads no page.
    let p = parse(argv, &[FLAGS, &crate::keys::KEY_FLAGS].concat()).map_err(Failure::Usage)?;
    if p.has("key") || p.has("key-file") {
        return Err(Failure::Usage(
            "info takes no key: it reads only file headers, which are not encrypted (give -key to restore, ltx or rekey)"
                .into(),
        ));
    }
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
    // How far back a restore goes: retention removes old snapshots and levels.
    let oldest = oldest_restorable(&listing)
        .map(|(txid, f)| {
            Ok::<_, String>(json!({
                "txid": format::txid(txid),
                "txid_decimal": txid,
                "timestamp": timestamp(&f)?,
            }))
        })
        .transpose()?;
    let encryption = encryption_summary(store, &listing)?;
    let restore_plan = match plan_reachable(&listing) {
        Ok((files, gap)) => json!({
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
            // The plan stops short of the newest file: a restore of the latest state
            // fails, one of this plan's TXID (asked for explicitly) works.
            "gap": gap.map(|g| json!({
                "after_txid": format::txid(g.reached),
                "next_file": {
                    "level": g.next.level,
                    "min_txid": format::txid(g.next.min_txid),
                    "max_txid": format::txid(g.next.max_txid),
                },
                "error": format!("replica {g}"),
            })),
        }),
        Err(e) => json!({ "error": format!("cannot restore: replica {e}") }),
    };
    Ok(json!({
        "replica": name,
        "min_txid": format::txid(min_txid),
        "max_txid": format::txid(newest.max_txid),
        "max_txid_decimal": newest.max_txid,
        "latest_timestamp": timestamp(newest)?,
        "oldest_restorable": oldest,
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
    let Ok((files, _)) = plan_reachable(listing) else {
        return Ok(serde_json::Value::Null);
    };
    let mut encrypted = 0usize;
    let mut recipients = std::collections::BTreeSet::new();
    // Runs of consecutive encrypted files of the plan: which TXIDs need the key, when a
    // replica holds plaintext history from before encryption was turned on.
    let mut runs: Vec<Vec<LtxObject>> = Vec::new();
    let mut in_run = false;
    for f in &files {
        let head = block_on(store.get_range(f.level, f.min_txid, f.max_txid, 0..HEADER_SIZE as u64))
            .map_err(|e| format!("reading the header of a level {} file: {e}", f.level))?;
        let h = Header::decode(&head).map_err(|e| e.to_string())?;
        if h.is_encrypted() {
            encrypted += 1;
            recipients.insert(h.recipients);
            match runs.last_mut() {
                Some(run) if in_run => run.push(f.clone()),
                _ => runs.push(vec![f.clone()]),
            }
        }
        in_run = h.is_encrypted();
    }
    Ok(json!({
        "plan_files": files.len(),
        "encrypted_plan_files": encrypted,
        "encrypted_steps": runs.iter().flat_map(|run| format::plan_steps(run)).collect::<Vec<_>>(),
        "recipients": recipients.into_iter().collect::<Vec<_>>(),
    }))
}

/// The `encryption:` line: how many files of the restore plan are encrypted, to how many
/// recipients, and in a plan that mixes plaintext and encrypted files, which are which.
fn encryption_line(e: &serde_json::Value) -> String {
    let n = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let (encrypted, total) = (n(&e["encrypted_plan_files"]), n(&e["plan_files"]));
    if encrypted == 0 {
        return format!("0 of {total} files of the restore plan encrypted (all plaintext)");
    }
    let counts: Vec<String> = e["recipients"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r.to_string())
        .collect();
    let mut line = format!(
        "{encrypted} of {total} files of the restore plan encrypted (LTX v4), to {} recipient(s)",
        counts.join(" or ")
    );
    if encrypted < total {
        let steps: Vec<&str> = e["encrypted_steps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s.as_str())
            .collect();
        line.push_str(&format!(": {}; the others plaintext", steps.join(", ")));
    }
    line
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
    let oldest = &d["oldest_restorable"];
    match oldest.is_null() {
        true => println!("  oldest restorable: none (no snapshot or file from TXID 1 to start from)"),
        false => println!(
            "  oldest restorable: TXID {} ({}, written {})",
            s(&oldest["txid"]),
            n(&oldest["txid_decimal"]),
            s(&oldest["timestamp"])
        ),
    }
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
        println!("  encryption:   {}", encryption_line(e));
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
        let gap = &p["gap"];
        if !gap.is_null() {
            println!(
                "  GAP:          the plan stops at a gap, short of the latest TXID: {}. A restore of \
                 the latest state fails; -txid {} restores the state before the gap",
                s(&gap["error"]),
                s(&gap["after_txid"])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encryption_line_names_the_encrypted_files_of_a_mixed_plan() {
        let mixed = json!({
            "plan_files": 4,
            "encrypted_plan_files": 2,
            "encrypted_steps": ["L0 x2 0000000000000004-0000000000000005"],
            "recipients": [1],
        });
        assert_eq!(
            encryption_line(&mixed),
            "2 of 4 files of the restore plan encrypted (LTX v4), to 1 recipient(s): \
             L0 x2 0000000000000004-0000000000000005; the others plaintext"
        );
        let all = json!({
            "plan_files": 2,
            "encrypted_plan_files": 2,
            "encrypted_steps": ["L0 x2 0000000000000001-0000000000000003"],
            "recipients": [1, 2],
        });
        assert_eq!(
            encryption_line(&all),
            "2 of 2 files of the restore plan encrypted (LTX v4), to 1 or 2 recipient(s)"
        );
        let none = json!({"plan_files": 3, "encrypted_plan_files": 0, "encrypted_steps": [], "recipients": []});
        assert_eq!(
            encryption_line(&none),
            "0 of 3 files of the restore plan encrypted (all plaintext)"
        );
    }
}
