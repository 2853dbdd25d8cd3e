//! One restore, start to finish: resolve the target, plan, stream and merge the files
//! into a temporary file beside the destination, verify, fsync, rename.

use super::buffers::BufferPool;
use super::decode::{FilePages, ThreadedPages, MAX_THREADS};
use super::download::RemoteReader;
use super::oldest::oldest_restorable;
use super::open::OpenPool;
use super::plan::{plan, plan_at_time, resolve_timestamp, txid_both, Listing};
use super::progress::{register, RestoreProgress};
use super::write::PageWriter;
use crate::file_modes::FileModes;
use crate::ltx::crypto::PrivateKey;
use crate::ltx::{page_checksum, DbChecksum, DecodedPages, Merge, PageSource, Position};
use crate::runtime::block_on;
use crate::storage::{LtxObject, ReplicaStore};
use crate::time_target::TimeTarget;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;

/// What to restore to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest TXID in the replica.
    Latest,
    /// Exactly this TXID (it must end a file: see [`plan`]).
    Txid(u64),
    /// The newest state whose files were all written at or before this time (ms since
    /// the epoch, LTX header timestamps).
    Timestamp(i64),
}

impl Target {
    /// Parses what a user types: 'latest', a TXID as Litestream prints it (16 hex
    /// digits) or as a decimal number prefixed with `txid:`, an RFC 3339 timestamp, or a
    /// relative time ('10 minutes ago').
    pub fn parse(text: &str) -> Result<Target, String> {
        let t = text.trim();
        if t.len() == 16 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            return u64::from_str_radix(t, 16).map(Target::Txid).map_err(|e| e.to_string());
        }
        if let Some(n) = t.strip_prefix("txid:") {
            return n
                .trim()
                .parse()
                .map(Target::Txid)
                .map_err(|_| format!("'{text}' is not a TXID"));
        }
        match crate::time_target::parse_time(t) {
            Ok(TimeTarget::Latest) => Ok(Target::Latest),
            Ok(TimeTarget::At(ms)) => Ok(Target::Timestamp(ms)),
            Err(e) => Err(format!(
                "{e}, or a TXID (16 hex digits as Litestream prints them, or txid:<decimal>)"
            )),
        }
    }
}

/// How to restore.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Replace an existing database (and remove its `-wal`/`-shm`, which belong to the
    /// old contents). Off by default: a restore never destroys data unless asked.
    pub overwrite: bool,
    /// Size of one ranged GET.
    pub chunk_bytes: u64,
    /// Ranged GETs in flight per file.
    pub chunks_ahead: usize,
    /// Bytes of chunks fetched ahead of the merge, all files together; each file may
    /// also always hold one chunk (see `download`).
    pub prefetch_bytes: u64,
    /// Opens encrypted (LTX v4) files; without it a restore of an encrypted replica
    /// fails with a message saying so.
    pub key: Option<Arc<PrivateKey>>,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            overwrite: false,
            chunk_bytes: 8 << 20,
            chunks_ahead: 4,
            prefetch_bytes: 64 << 20,
            key: None,
        }
    }
}

/// What a restore did.
#[derive(Clone, Debug)]
pub struct Restored {
    pub position: Position,
    /// The files applied, oldest first.
    pub plan: Vec<LtxObject>,
    pub bytes_downloaded: u64,
    pub elapsed: std::time::Duration,
}

/// Restores `store` at `target` into `dest`. Without `overwrite`, `dest` (and any
/// `-wal`, `-shm` or `-journal` beside it) must not exist.
pub fn restore(
    store: Arc<dyn ReplicaStore>,
    dest: &Path,
    target: Target,
    options: &RestoreOptions,
) -> Result<Restored, String> {
    let started = Instant::now();
    // Checked first, before any download: the temp file is the first thing created in
    // this directory, and its "No such file or directory" named a file the user never
    // asked for rather than the directory that is missing.
    let dir = parent_dir(dest);
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(format!(
                "cannot restore to {}: {} is not a directory",
                dest.display(),
                dir.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "cannot restore to {}: the directory {} does not exist (create it first)",
                dest.display(),
                dir.display()
            ))
        }
        Err(e) => return Err(format!("cannot restore to {}: {}: {e}", dest.display(), dir.display())),
    }
    let companions = companions(dest);
    if !options.overwrite {
        if let Some(existing) = std::iter::once(dest.to_path_buf())
            .chain(companions.iter().cloned())
            .find(|p| p.exists())
        {
            return Err(format!(
                "{} already exists; restore to a new path, or ask to overwrite it",
                existing.display()
            ));
        }
    }
    if let Some(holder) = options
        .overwrite
        .then(|| super::in_use::holder(dest, &companions))
        .flatten()
    {
        let who = if holder.pid == i64::from(std::process::id()) {
            "this process".to_string()
        } else if holder.pid > 0 {
            format!("process {}", holder.pid)
        } else {
            "another process".to_string()
        };
        return Err(format!(
            "{} is open: {who} holds a lock on {}, as SQLite does while a connection has the \
             database open. Restoring over an open database corrupts it; close every connection \
             to it (stop the application) first, or restore to a new path",
            dest.display(),
            holder.file.display()
        ));
    }
    let describe = store.describe().to_string();
    let listing = block_on(Listing::fetch(store.as_ref())).map_err(|e| format!("listing {describe}: {e}"))?;
    let files = match target {
        Target::Latest => plan(&listing, None),
        Target::Txid(t) => plan(&listing, Some(t)),
        Target::Timestamp(ms) => {
            let found = resolve_timestamp(&listing, ms, |f| {
                block_on(store.timestamp(f.level, f.min_txid, f.max_txid))
            })
            .map_err(|e| format!("reading timestamps in {describe}: {e}"))?;
            // A time before the oldest state the files restore: named with that state's
            // TXID and time, the earliest a time target reaches (an operations tester, t6).
            let oldest = oldest_restorable(&listing);
            let before_oldest = || {
                let at = crate::storage::format_rfc3339_nano(ms);
                let Some((txid, file)) = &oldest else {
                    return format!("has no state at or before {at}");
                };
                let written = block_on(store.timestamp(file.level, file.min_txid, file.max_txid))
                    .map(|t| format!(", written {}", crate::storage::format_rfc3339_nano(t)))
                    .unwrap_or_default();
                format!(
                    "has no state at or before {at}: the oldest state it can restore is TXID {}{written}; \
                     ask for that time or a later one",
                    txid_both(*txid)
                )
            };
            match found {
                None => Err(before_oldest()),
                Some(bound) => plan_at_time(&listing, bound).map_err(|e| match &oldest {
                    Some((txid, _)) if bound < *txid => before_oldest(),
                    _ => e,
                }),
            }
        }
    }
    .map_err(|e| format!("replica {describe} {e}"))?;
    let progress = Arc::new(RestoreProgress {
        replica: describe.clone(),
        dest: dest.display().to_string(),
        target_txid: files.last().map_or(0, |f| f.max_txid),
        files: files.len(),
        total_bytes: files.iter().map(|f| f.size).sum(),
        downloaded: Arc::new(AtomicU64::new(0)),
        started,
    });
    register(&progress);
    tracing::info!(
        replica = %describe,
        dest = %dest.display(),
        txid = progress.target_txid,
        files = files.len(),
        bytes = progress.total_bytes,
        "restoring"
    );
    let tmp = temp_path(dest);
    // The temp file becomes the database: a database replaced keeps its permissions and
    // owner, a new one gets what SQLite gives a new database.
    let modes = FileModes::of_database(dest);
    let result = write_merged(&store, &files, &tmp, modes, options, &progress.downloaded);
    let position = match result {
        Ok(p) => p,
        Err(failed) => {
            let _ = fs::remove_file(&tmp);
            let target_txid = progress.target_txid;
            let e = match failed {
                // One file failed: that file, and (its bytes wrong) what restores without it.
                MergeFailed::File(i, error) => {
                    let damaged = std::slice::from_ref(&files[i]);
                    let without = error
                        .is_damage()
                        .then(|| super::damaged::restorable_without(&listing, damaged, target_txid))
                        .flatten();
                    super::damaged::failure(store.as_ref(), &files[i], &error, without)
                }
                // No one file to blame: the files it was merging.
                MergeFailed::Other(e) => {
                    let names: Vec<String> = files
                        .iter()
                        .map(|f| format!("level {} file {:x}-{:x}", f.level, f.min_txid, f.max_txid))
                        .collect();
                    format!("{e} (merging {})", names.join(", "))
                }
            };
            // A "wrong key" may be a changed byte in a file's leading recipient block (only
            // a keyed restore opens one: a keyless one, perhaps failing on a store that is
            // down, asks nothing more).
            let suspects = if options.key.is_some() { &files[..] } else { &[] };
            let corrupt: Vec<String> = super::diagnose::recipient_copies_differ(store.as_ref(), suspects)
                .iter()
                .map(|f| format!("level {} file {:x}-{:x}", f.level, f.min_txid, f.max_txid))
                .collect();
            let corrupt = match corrupt.is_empty() {
                true => String::new(),
                false => format!(
                    "; corrupt: {} (the two copies of its recipient block differ: the key was not \
                     tried on an intact one, whatever the error says)",
                    corrupt.join(", ")
                ),
            };
            return Err(format!("restoring {describe} to {}: {e}{corrupt}", dest.display()));
        }
    };
    if options.overwrite {
        for c in &companions {
            if let Err(e) = fs::remove_file(c) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    let _ = fs::remove_file(&tmp);
                    return Err(format!("removing {}: {e}", c.display()));
                }
            }
        }
    }
    // The restored file says which replica state it is, so that a primary opened on it
    // with no staging state beside it continues that replica (`provenance.rs`).
    if let Ok(note) = crate::provenance::ReplicaNote::of(&tmp, &describe, position.txid) {
        note.save(&tmp);
    }
    if let Err(e) = fs::rename(&tmp, dest) {
        let _ = fs::remove_file(&tmp); // a failed restore leaves nothing behind
        return Err(format!("{}: {e}", dest.display()));
    }
    crate::durable::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let restored = Restored {
        position,
        plan: files,
        bytes_downloaded: progress.downloaded.load(std::sync::atomic::Ordering::Relaxed),
        elapsed: started.elapsed(),
    };
    tracing::info!(
        dest = %dest.display(),
        txid = position.txid,
        files = restored.plan.len(),
        ms = restored.elapsed.as_millis() as u64,
        "restore complete"
    );
    Ok(restored)
}

/// Restores the latest state of `store` into `dest` (which must not exist).
pub fn restore_latest(store: &Arc<dyn ReplicaStore>, dest: &Path) -> Result<Position, String> {
    restore(Arc::clone(store), dest, Target::Latest, &RestoreOptions::default()).map(|r| r.position)
}

/// The process (other than this one) that has the database at `db` open, as the lock
/// table shows it, if any.
pub fn open_elsewhere(db: &Path) -> Option<i64> {
    super::in_use::holder(db, &companions(db))
        .map(|h| h.pid)
        .filter(|&pid| pid != i64::from(std::process::id()))
}

/// The files SQLite keeps beside the database at `dest`.
pub(super) fn companions(dest: &Path) -> Vec<PathBuf> {
    ["-wal", "-shm", "-journal"]
        .iter()
        .map(|s| {
            let mut p = dest.as_os_str().to_owned();
            p.push(s);
            PathBuf::from(p)
        })
        .collect()
}

/// The directory `dest` is in (`.` for a bare file name).
fn parent_dir(dest: &Path) -> &Path {
    dest.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn temp_path(dest: &Path) -> PathBuf {
    let mut p = dest.as_os_str().to_owned();
    p.push(".litestream-restore.tmp");
    PathBuf::from(p)
}

/// Why [`write_merged`] failed.
enum MergeFailed {
    /// Reading the plan's file at this index failed (its bytes, or the store giving them).
    File(usize, crate::ltx::Error),
    /// Anything else: the files do not fit together, writing the result, the database
    /// checksum of the whole.
    Other(String),
}

impl From<String> for MergeFailed {
    fn from(e: String) -> Self {
        MergeFailed::Other(e)
    }
}

/// Streams every file of the plan at once and merges them page by page into `tmp`: the
/// largest files decode on threads of their own, a thread writes (see `decode`, `write`).
fn write_merged(
    store: &Arc<dyn ReplicaStore>,
    files: &[LtxObject],
    tmp: &Path,
    modes: FileModes,
    options: &RestoreOptions,
    downloaded: &Arc<AtomicU64>,
) -> Result<Position, MergeFailed> {
    let out = Arc::new(modes.create_file(tmp).map_err(|e| format!("{}: {e}", tmp.display()))?);
    let budget = Arc::new(Semaphore::new(
        (options.prefetch_bytes / options.chunk_bytes.max(1)).max(1) as usize,
    ));
    // Every download starts before any header is awaited.
    let readers: Vec<RemoteReader> = files
        .iter()
        .map(|f| {
            RemoteReader::spawn_with_budget(
                Arc::clone(store),
                f.clone(),
                options.chunk_bytes,
                options.chunks_ahead,
                Arc::clone(&budget),
                Arc::clone(downloaded),
            )
        })
        .collect();
    let mut by_size: Vec<usize> = (0..files.len()).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(files[i].size));
    let threaded = &by_size[..by_size.len().min(MAX_THREADS)];
    let key = options.key.as_deref();
    let buffers = BufferPool::new();
    // Encrypted files' pages are opened on a thread per core (see `open`).
    let pool = key
        .map(|_| OpenPool::per_core(&buffers))
        .transpose()
        .map_err(|e| e.to_string())?;
    let sources = readers
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            if threaded.contains(&i) {
                ThreadedPages::spawn(r, format!("restore-decode-{i}"), key, pool.as_ref(), &buffers)
                    .map(FilePages::Threaded)
            } else {
                DecodedPages::with_key(r, key).map(FilePages::InLine)
            }
            .map_err(|e| MergeFailed::File(i, e))
        })
        .collect::<Result<Vec<_>, MergeFailed>>()?;
    let merge = Merge::from_sources(sources).map_err(|e| e.to_string())?;
    let header = merge.header;
    if header.min_txid != 1 {
        return Err(MergeFailed::Other(format!(
            "the plan starts at TXID {}, not at a snapshot",
            header.min_txid
        )));
    }
    let mut writer = PageWriter::new(Arc::clone(&out), header.page_size).map_err(|e| e.to_string())?;
    let mut checksum = DbChecksum::new();
    let verify = !header.no_checksum();
    let post_apply = merge
        .run_sources_blaming(|pgno, source| {
            if verify {
                let sum = source.page_checksum();
                checksum.toggle_checksum(sum.unwrap_or_else(|| page_checksum(pgno, source.page())));
            }
            match source.shared_page() {
                Some((pages, at)) => writer.write_shared(pgno, pages, at),
                None => writer.write_page(pgno, source.page()),
            }
            .map_err(crate::ltx::Error::Io)
        })
        .map_err(|e| match e.input {
            Some(i) => MergeFailed::File(i, e.error),
            None => MergeFailed::Other(e.error.to_string()),
        })?;
    writer.finish().map_err(|e| e.to_string())?;
    // Pages the merge never wrote are holes, which read as zeros: the lock page among
    // them, as a snapshot restores it.
    out.set_len(header.page_size as u64 * header.commit as u64)
        .map_err(|e| e.to_string())?;
    if verify && checksum.value() != post_apply {
        return Err(MergeFailed::Other(format!(
            "database checksum after merging is {:016x}, the last file says {post_apply:016x}",
            checksum.value()
        )));
    }
    out.sync_all().map_err(|e| e.to_string())?;
    Ok(Position {
        txid: header.max_txid,
        page_size: header.page_size,
        commit: header.commit,
    })
}
