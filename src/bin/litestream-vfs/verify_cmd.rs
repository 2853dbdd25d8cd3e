//! `litestream-vfs verify`: downloads a replica's files and checks each, without
//! restoring: which are damaged, and the newest TXID a restore still reaches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use litestream_vfs::restore::{
    file_name, newest_restorable, plan_reachable, verify_files, Listing, Verdict, VerifyOptions,
};
use litestream_vfs::runtime::block_on;
use litestream_vfs::storage::{LtxObject, ReplicaStore};
use serde_json::json;

use crate::args::{parse, Flag};
use crate::{format, store, CmdResult, Failure};

pub const HELP: &str = "\
Usage: litestream-vfs verify [--all] [--json] [--key-file PATH | --key HEX] URL

Downloads the files of the replica at URL (or a local replica directory) and checks each
without restoring: header, every page frame, page index, trailer, file checksum, a
snapshot's database checksum, and that the header's TXIDs are the file name's. With the
key, every page of an encrypted (LTX v4) file is also authenticated; without it an
encrypted file's structure and file checksum are checked, its pages are not opened.
Files are streamed in chunks (a few MiB in memory each, whatever their size), four at a
time. Prints each file that fails, then a summary: files checked, bytes, damaged files,
and the newest TXID a restore reaches without the files that failed.

By default it checks the files a restore of the latest state uses (its plan); --all
checks every file of every level (older snapshots, the levels the plan skips).

Options:
  -all              every file of every level, not only the restore plan's
  -json             JSON instead of text
  -key HEX          private key of an encrypted replica (else LITESTREAM_ENCRYPTION_KEY)
  -key-file PATH    a file holding it (else LITESTREAM_ENCRYPTION_KEY_FILE)

Exit status: 0 every file checked, 1 a file is damaged or could not be read (or the
replica cannot be listed), 2 usage.";

const FLAGS: &[Flag] = &[
    Flag {
        names: &["all"],
        value: false,
    },
    Flag {
        names: &["json"],
        value: false,
    },
];

pub fn run(argv: &[String]) -> CmdResult {
    let p = parse(argv, &[FLAGS, &crate::keys::KEY_FLAGS].concat()).map_err(Failure::Usage)?;
    let url = match p.positional.as_slice() {
        [url] => url.as_str(),
        [] => return Err(Failure::Usage("verify needs the replica URL".into())),
        more => return Err(Failure::Usage(format!("verify takes one replica URL, got {more:?}"))),
    };
    let options = VerifyOptions {
        key: crate::keys::key(&p)?.map(Arc::new),
        ..Default::default()
    };
    let store = store::open(url)?;
    let name = store.describe().to_string();
    let listing =
        block_on(Listing::fetch(store.as_ref())).map_err(|e| Failure::Failed(format!("listing {name}: {e}")))?;
    if listing.is_empty() {
        return Err(Failure::Failed(format!("replica {name} holds no LTX files")));
    }
    let all = p.has("all");
    let files: Vec<LtxObject> = if all {
        listing
            .snapshots
            .iter()
            .chain(listing.incremental.iter().flatten())
            .cloned()
            .collect()
    } else {
        plan_reachable(&listing)
            .map_err(|e| {
                Failure::Failed(format!(
                    "replica {name} {e}: no restore plan to verify (--all checks every file)"
                ))
            })?
            .0
    };
    let started = Instant::now();
    let downloaded = Arc::new(AtomicU64::new(0));
    let verdicts = verify_files(&store, &files, &options, &downloaded);
    let report = Report {
        store: store.as_ref(),
        all,
        bytes: downloaded.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        newest: newest_restorable(&listing, &verdicts),
        verdicts: &verdicts,
    };
    if p.has("json") {
        println!("{}", serde_json::to_string_pretty(&report.json()).unwrap_or_default());
    } else {
        print!("{}", report.text());
    }
    match verdicts.iter().any(|v| v.error.is_some()) {
        true => Err(Failure::Failed(report.failed_line())),
        false => Ok(()),
    }
}

/// What a run found, printed as text or JSON.
struct Report<'a> {
    store: &'a dyn ReplicaStore,
    all: bool,
    bytes: u64,
    seconds: f64,
    newest: Option<u64>,
    verdicts: &'a [Verdict],
}

impl Report<'_> {
    fn failed(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.error.is_some())
    }

    fn damaged(&self) -> usize {
        self.verdicts.iter().filter(|v| v.damaged()).count()
    }

    fn unreadable(&self) -> usize {
        self.failed().count() - self.damaged()
    }

    fn at(&self, f: &LtxObject) -> String {
        self.store.file_key(f.level, f.min_txid, f.max_txid)
    }

    fn what(&self) -> &'static str {
        match self.all {
            true => "of every level",
            false => "of the restore plan",
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        for v in self.failed() {
            let (label, e) = (if v.damaged() { "DAMAGED" } else { "UNREADABLE" }, v.error.as_ref());
            let e = e.map(ToString::to_string).unwrap_or_default();
            out.push_str(&format!(
                "{label} {} at {}: {e}\n",
                file_name(&v.file),
                self.at(&v.file)
            ));
        }
        let locked = self.verdicts.iter().filter(|v| v.locked).count();
        out.push_str(&format!(
            "checked {} files {} of {} ({} in {:.2} s): {} damaged, {} unreadable\n",
            self.verdicts.len(),
            self.what(),
            self.store.describe(),
            format::bytes(self.bytes),
            self.seconds,
            self.damaged(),
            self.unreadable()
        ));
        if locked > 0 {
            out.push_str(&format!(
                "  {locked} encrypted files checked without the key: structure and file checksum only, \
                 pages not authenticated (give -key)\n"
            ));
        }
        out.push_str(&format!("  newest restorable TXID: {}\n", self.newest_line()));
        out
    }

    /// Files that failed because the key given is not one of their recipients.
    fn wrong_key(&self) -> usize {
        self.failed()
            .filter(|v| matches!(v.error, Some(litestream_vfs::ltx::Error::NotARecipient { .. })))
            .count()
    }

    /// The newest restorable TXID, unless files failed for the key: a `restore -txid` of
    /// the TXID reached without them reads other files, which are then encrypted to the
    /// same keys, and it failed with the same "wrong key" (an operations tester, t17).
    fn newest_known(&self) -> Option<u64> {
        self.newest.filter(|_| self.wrong_key() == 0)
    }

    fn newest_line(&self) -> String {
        let wrong = self.wrong_key();
        if wrong > 0 {
            let which = if wrong == self.verdicts.len() {
                format!("it opens none of the {wrong} files checked")
            } else {
                format!(
                    "it does not open {wrong} of the {} files checked (named above)",
                    self.verdicts.len()
                )
            };
            return format!(
                "not known with this key: the key given is not one of the files' recipients \
                 (wrong key): {which}, and a restore with it fails the same way; run verify \
                 again with the private key the replica is encrypted to for the newest TXID a \
                 restore reaches"
            );
        }
        match (self.newest, self.failed().next().is_some()) {
            (Some(t), false) => format!("{} ({t})", format::txid(t)),
            (Some(t), true) => format!(
                "{} ({t}) without the files that failed: restore -txid {}",
                format::txid(t),
                format::txid(t)
            ),
            (None, _) => "none: no plan starts without the files that failed".into(),
        }
    }

    /// The line on stderr when the exit status is 1.
    fn failed_line(&self) -> String {
        format!(
            "{} of {} files {} did not check ({} damaged, {} unreadable); newest restorable TXID: {}",
            self.failed().count(),
            self.verdicts.len(),
            self.what(),
            self.damaged(),
            self.unreadable(),
            self.newest_line()
        )
    }

    fn json(&self) -> serde_json::Value {
        let file = |v: &Verdict| {
            json!({
                "level": v.file.level,
                "min_txid": format::txid(v.file.min_txid),
                "max_txid": format::txid(v.file.max_txid),
                "size": v.file.size,
                "key": self.at(&v.file),
                "damaged": v.damaged(),
                "error": v.error.as_ref().map(ToString::to_string),
            })
        };
        json!({
            "replica": self.store.describe(),
            "files": if self.all { "all" } else { "plan" },
            "files_checked": self.verdicts.len(),
            "bytes": self.bytes,
            "seconds": self.seconds,
            "damaged": self.damaged(),
            "unreadable": self.unreadable(),
            "unauthenticated": self.verdicts.iter().filter(|v| v.locked).count(),
            "failed_files": self.failed().map(file).collect::<Vec<_>>(),
            "wrong_key_files": self.wrong_key(),
            "newest_restorable_txid": self.newest_known().map(format::txid),
            "newest_restorable_txid_decimal": self.newest_known(),
            "ok": self.failed().next().is_none(),
        })
    }
}
