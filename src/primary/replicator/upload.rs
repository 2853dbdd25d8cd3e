//! Uploading staged files with conditional creates, in TXID order.

use super::*;
use crate::primary::level_cache::file_bytes;

/// How far a round of uploads got.
pub(super) enum Uploads {
    /// Every staged file is stored.
    Done,
    /// A PUT outlasted the engine's patience and goes on without this thread
    /// (`crate::engine::round_trip`); its end wakes the worker, whose next turn goes on.
    Deferred,
    /// The turn had its share of the engine's time (`crate::engine::TURN_SHARE`) and
    /// files are left: the next turn, after other databases', goes on.
    More,
}

impl Primary {
    /// Uploads staged files in TXID order, removing each once stored.
    pub(super) fn upload_staged(&self) -> Result<Uploads, String> {
        let started = Instant::now();
        if crate::engine::request_in_flight() {
            return Ok(Uploads::Deferred);
        }
        let staged = self.staging.list();
        for file in staged.map_err(|e| format!("listing {}: {e}", self.staging.dir().display()))? {
            if self.lock().fatal.is_some() {
                return Ok(Uploads::Done);
            }
            // The closing turn runs on the closing connection's thread: it uploads all.
            if crate::engine::in_turn() && started.elapsed() >= crate::engine::TURN_SHARE {
                return Ok(Uploads::More);
            }
            if let Uploads::Deferred = self.upload_one(&file)? {
                return Ok(Uploads::Deferred);
            }
        }
        Ok(Uploads::Done)
    }

    pub(super) fn upload_one(&self, file: &StagedFile) -> Result<Uploads, String> {
        // Mapped when large (a snapshot staged at open is the size of the database), so
        // the body is page cache, not a heap copy. Staged files are immutable once
        // named (`Staging::stage` writes a temp file and renames it; nothing opens them
        // for writing again), which a mapping needs: see `file_bytes`.
        let body = file_bytes(&file.path).map_err(|e| format!("{}: {e}", file.path.display()))?;
        if let Err(damage) = crate::ltx::verify(&body[..]) {
            return self.drop_damaged(file, &damage.to_string());
        }
        let header = crate::ltx::Header::decode(&body[..body.len().min(100)]).ok();
        let timestamp = header.map_or(0, |h| h.timestamp_ms);
        if let Some(header) = &header {
            self.snapshot_if_chain_breaks(file, header, &body)?;
        }
        let (store, data, min, max) = (Arc::clone(&self.store), body.clone(), file.min_txid, file.max_txid);
        // The size tells the status how long the upload may take (`Primary::store_silent`).
        let key = format!("put 0 {min} {max} {}", body.len());
        let put = crate::engine::round_trip(&key, crate::engine::PATIENCE, async move {
            store.put_new(0, min, max, data, timestamp).await
        });
        let Ok(put) = put else {
            return Ok(Uploads::Deferred);
        };
        match put {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {
                // The store already accepts identical bytes as our own earlier write;
                // this also reports a conflict it could not confirm (its read-back
                // failed). Only bytes seen to differ mean another primary: a failed read
                // here is retried, not fatal. A large file is compared by its size and
                // ends, not read whole (`storage::compare`).
                let same = block_on(crate::storage::stored_equals(
                    &*self.store,
                    0,
                    file.min_txid,
                    file.max_txid,
                    &body,
                ))
                .map_err(|e| e.to_string())?;
                if !same {
                    let reason = format!(
                        "another primary wrote TXID {}-{} to {} first; this database stops replicating and \
                         refuses writes (two primaries on one replica)",
                        file.min_txid,
                        file.max_txid,
                        self.store.describe()
                    );
                    tracing::error!(db = %self.db_path.display(), "{reason}");
                    let mut shared = self.lock();
                    shared.fatal = Some(reason.clone());
                    self.refusing.store(true, Ordering::Relaxed);
                    self.progress.notify_all();
                    return Err(reason);
                }
            }
            Err(e) => {
                crate::primary::replica_check::doubt(&self.replica_check);
                self.lock().uploads_failing = true;
                return Err(format!("uploading TXID {}-{}: {e}", file.min_txid, file.max_txid));
            }
        }
        let cached = self
            .level_cache
            .as_ref()
            .is_some_and(|cache| cache.adopt(0, file.min_txid, file.max_txid, &file.path).is_ok());
        if !cached {
            self.staging.remove(file).map_err(|e| e.to_string())?;
        }
        let mut shared = self.lock();
        shared.uploaded_txid = shared.uploaded_txid.max(file.max_txid);
        if let Some(header) = &header {
            shared.replica_page_size = Some(header.page_size);
            crate::primary::replica_check::uploaded(&self.replica_check, file.max_txid, header.page_size);
        }
        follower::publish_uploaded(
            &self.config.staging_dir,
            self.config.file_modes,
            Uploaded {
                txid: shared.uploaded_txid,
                node_id: self.node_id,
            },
        );
        shared.uploads += 1;
        shared.uploaded_bytes += body.len() as u64;
        let now = now_ms();
        shared.last_upload_ms = Some(now);
        if let Some(oldest) = shared.oldest_pending_ms.take() {
            shared.last_lag_ms = Some(now - oldest);
        }
        if shared.uploaded_txid >= shared.next_txid - 1 {
            shared.oldest_pending_ms = None;
        } else {
            shared.oldest_pending_ms = Some(now);
        }
        shared.last_error = None;
        shared.uploads_failing = false;
        self.progress.notify_all();
        Ok(Uploads::Done)
    }

    /// A staged file whose bytes do not check (its structure, or its file checksum: a
    /// disk or file system that did not keep what was fsynced, an operator's edit) is
    /// never stored. Stored, every restore and compaction through it failed, so no state
    /// after it was restorable until a snapshot happened to come. Its commits are in the
    /// database: the file is removed and a full snapshot at the next TXID covers them,
    /// stored at level 9 too so that restores start from it past the gap, as when the
    /// staging directory is removed (`stage.rs`). Files staged after it still go up.
    fn drop_damaged(&self, file: &StagedFile, damage: &str) -> Result<Uploads, String> {
        let _staging = self.stage_lock.lock().unwrap_or_else(|p| p.into_inner());
        let reason = format!(
            "the staged file {} (TXIDs {}-{}) is damaged: {damage}",
            file.path.display(),
            file.min_txid,
            file.max_txid
        );
        tracing::error!(
            db = %self.db_path.display(),
            "{reason}; it is not stored: removed it, and a full snapshot at the next TXID covers its commits \
             (restores to TXIDs {}-{} are not possible)",
            file.min_txid,
            file.max_txid
        );
        self.staging
            .remove(file)
            .map_err(|e| format!("removing the damaged {}: {e}", file.path.display()))?;
        let mut shared = self.lock();
        shared.require_snapshot(reason);
        shared.chain_start_owed = true;
        Ok(Uploads::Done)
    }

    /// Before a full image goes up that no restore plan could reach through the files
    /// before it, stores it as a level-9 snapshot too (TXIDs 1..=its last), so that
    /// plans start from it (`reseed.rs`): the first file of a new page size (plans must
    /// not mix page sizes), and the first full image after the open found the replica
    /// lacking TXIDs this database had replicated (`reconcile.rs`), after compaction
    /// found a gap (`chain_gaps.rs`), or that `litestream_snapshot()` asked for. Done before the
    /// level-0 upload: a kill in between leaves a snapshot whose level-0 twin is uploaded
    /// on restart, never the reverse.
    pub(super) fn snapshot_if_chain_breaks(
        &self,
        file: &StagedFile,
        header: &crate::ltx::Header,
        bytes: &[u8],
    ) -> Result<(), String> {
        if file.min_txid <= 1 {
            // A plan starts from it as it is: nothing more is owed, unless a snapshot
            // was asked for after it (a gap found meanwhile waits for that one).
            let mut shared = self.lock();
            if shared.snapshot_needed.is_none() && file.max_txid >= shared.last_snapshot_txid {
                shared.chain_start_owed = false;
                shared.chain_mended();
            }
            return Ok(());
        }
        // The level-0 PUT that follows may outlast the turn (`round_trip`): the next turn
        // comes back here with the same file, whose snapshot is stored already.
        if self.lock().reseed_stored == Some(file.max_txid) {
            return Ok(());
        }
        let owed = self.lock().chain_start_owed;
        let why = if owed {
            "restores must be able to start from it (the replica lacks TXIDs before it, or \
             litestream_snapshot() asked for it)"
                .to_string()
        } else {
            let known = self.lock().replica_page_size;
            let previous = match known {
                Some(p) => Some(p),
                None => self.page_size_before(file.min_txid)?,
            };
            let Some(previous) = previous.filter(|p| *p != header.page_size) else {
                return Ok(());
            };
            format!(
                "the page size changed from {previous} to {} outside the VFS",
                header.page_size
            )
        };
        // Written to a file and mapped for the PUT: the image is the size of the database.
        let (scratch, out) = self
            .staging
            .scratch("reseed")
            .map_err(|e| format!("staging directory {}: {e}", self.config.staging_dir.display()))?;
        let out = io::BufWriter::with_capacity(256 << 10, out);
        let Some(out) = crate::primary::reseed::as_snapshot(bytes, &self.encoding(), self.key(), out)? else {
            if owed {
                // Commits staged before the owed snapshot: plans start after them.
                return Ok(());
            }
            tracing::error!(
                db = %self.db_path.display(),
                "TXID {}-{} has page size {} after files of another one and is not a full image; \
                 restores past it will fail",
                file.min_txid,
                file.max_txid,
                header.page_size
            );
            return Ok(());
        };
        tracing::warn!(
            db = %self.db_path.display(),
            txid = file.max_txid,
            "{why}: storing the full image as a level-9 snapshot so that restores start from it"
        );
        // Written and closed before it is mapped (`file_bytes`); removed once stored.
        drop(out.into_inner().map_err(|e| e.into_error().to_string())?);
        let snapshot = scratch
            .bytes()
            .map_err(|e| format!("{}: {e}", scratch.path().display()))?;
        block_on(
            self.store
                .put(SNAPSHOT_LEVEL, 1, file.max_txid, snapshot, header.timestamp_ms),
        )
        .map_err(|e| format!("uploading the snapshot at TXID {}: {e}", file.max_txid))?;
        let mut shared = self.lock();
        shared.reseed_stored = Some(file.max_txid);
        shared.chain_start_owed = false;
        shared.chain_mended();
        Ok(())
    }

    /// Page size of the stored file holding TXID `txid - 1` (level 0 first: it is almost
    /// always there), `None` if no file holds it.
    pub(super) fn page_size_before(&self, txid: u64) -> Result<Option<u32>, String> {
        let want = txid - 1;
        // A closing connection may be the one waiting: each request is bounded, as at open.
        for level in crate::restore::EVERY_LEVEL {
            let files = crate::storage::while_application_waits(self.store.as_ref(), "LIST", self.store.list(level))
                .map_err(|e| e.to_string())?;
            let Some(f) = files.iter().find(|f| f.min_txid <= want && want <= f.max_txid) else {
                continue;
            };
            let read = self.store.get_range(level, f.min_txid, f.max_txid, 0..100);
            let head =
                crate::storage::while_application_waits(self.store.as_ref(), "GET", read).map_err(|e| e.to_string())?;
            let header = crate::ltx::Header::decode(&head).map_err(|e| e.to_string())?;
            return Ok(Some(header.page_size));
        }
        Ok(None)
    }
}
