//! Reading a replica's pages: one ranged GET per page not cached (a growing run of
//! frames for a scan), a fresh plan of the same TXID when compaction or retention took
//! a file of the plan away, and the pages that arrive with the indexes kept.

use super::*;

impl Replica {
    /// Fills `buf` with the bytes at `offset` of the database at `state`. Returns false
    /// when the read runs past the end (the rest of `buf` is zeroed, as SQLite wants).
    pub fn read(&self, state: &State, offset: u64, buf: &mut [u8]) -> Result<bool, ReadError> {
        let ps = state.page_size as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let pgno = pos / ps + 1;
            if pgno > state.commit as u64 {
                buf[done..].fill(0);
                return Ok(false);
            }
            let pgno = pgno as u32;
            let in_page = (pos % ps) as usize;
            let n = (ps as usize - in_page).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            let page = self.page(state, pgno)?;
            // Every source of a page (cache, hydration file, store) is keyed by a file of
            // the state's page size; a page of another size is a bug, reported and not
            // sliced into (that panicked).
            if let Some(page) = page.as_ref().filter(|p| p.len() as u64 != ps) {
                self.stats().read_errors.fetch_add(1, Ordering::Relaxed);
                return Err(ReadError::Corrupt(format!(
                    "replica {}: page {pgno} of TXID {} is {} bytes, not the page size {ps}",
                    self.name,
                    state.txid,
                    page.len()
                )));
            }
            match page {
                Some(page) if pgno == 1 => {
                    let mut patched = page.to_vec();
                    state.patch_page1(&mut patched);
                    out.copy_from_slice(&patched[in_page..in_page + n]);
                }
                Some(page) => out.copy_from_slice(&page[in_page..in_page + n]),
                None => out.fill(0),
            }
            done += n;
        }
        Ok(true)
    }

    /// One decompressed page, from the cache or one ranged GET; `None` reads as zeros.
    fn page(&self, state: &State, pgno: u32) -> Result<Option<Arc<[u8]>>, ReadError> {
        let identity = state as *const State as usize;
        let stand_in = match &*self.stand_in.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((of, fresh)) if *of == identity && fresh.txid == state.txid => Some(Arc::clone(fresh)),
            _ => None,
        };
        self.page_or_replan(stand_in.as_deref().unwrap_or(state), pgno, Some(identity))
    }

    /// The page from `state`'s plan; when a file of that plan has gone from the store
    /// (compaction or retention) and `replan_for` is set, from a fresh plan of the same
    /// TXID, which then stands in for the state identified by `replan_for` for the rest of
    /// its transaction: every plan of one TXID yields the same page.
    fn page_or_replan(
        &self,
        state: &State,
        pgno: u32,
        replan_for: Option<usize>,
    ) -> Result<Option<Arc<[u8]>>, ReadError> {
        let Some(loc) = state.locate(pgno) else {
            return Ok(None);
        };
        let stats = self.stats();
        let key = PageKey {
            file: loc.file.key(),
            pgno,
        };
        if let Some(page) = self.cache.get(&key) {
            stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(page));
        }
        stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.hydration {
            let mut page = vec![0u8; state.page_size as usize];
            match h.read(&key, &mut page) {
                Ok(true) => return Ok(Some(page.into())),
                Ok(false) => {}
                Err(e) => tracing::warn!(replica = %self.name, error = %e, "reading the hydration file"),
            }
        }
        // A miss right after the previous fetch's last page is a sequential read
        // (a scan): fetch a run of following pages four times longer than the last in
        // the same round trip (1, 4, 16, ... pages: a 1,000-row range of 4 KiB rows in
        // 5 round trips, where doubling took 8).
        let sequential = self.readahead_end.load(Ordering::Relaxed).wrapping_add(1) == pgno;
        let window = if sequential {
            (self.readahead_window.load(Ordering::Relaxed) * READAHEAD_GROWTH).min(MAX_READAHEAD_PAGES)
        } else {
            1
        };
        self.readahead_window.store(window, Ordering::Relaxed);
        // Following pages whose frames sit end to end in the same file.
        let mut run = vec![(pgno, loc.offset, loc.size)];
        let mut end = loc.offset + loc.size as u64;
        while (run.len() as u32) < window {
            let next = pgno + run.len() as u32;
            match state.locate(next) {
                Some(l) if std::ptr::eq(l.file, loc.file) && l.offset == end => {
                    end += l.size as u64;
                    run.push((next, l.offset, l.size));
                }
                _ => break,
            }
        }
        self.readahead_end
            .store(run.last().expect("non-empty").0, Ordering::Relaxed);
        let range = loc.offset..end;
        let result = block_on(self.fetcher.get_range_split(&loc.file.object, range))
            .and_then(|bytes| decode_frames(loc.file, state.page_size, &bytes, loc.offset, &run));
        // Pages read ahead go to the cache; the one asked for is returned below.
        let result = result.map(|pages| {
            let mut wanted = None;
            for (p, page) in pages {
                if p == pgno {
                    wanted = Some(page);
                } else {
                    self.keep(
                        PageKey {
                            file: key.file,
                            pgno: p,
                        },
                        page.into(),
                    );
                }
            }
            wanted.expect("the run starts with the page asked for")
        });
        let page: Arc<[u8]> = match result {
            Ok(page) => page.into(),
            Err(e) => {
                stats.read_errors.fetch_add(1, Ordering::Relaxed);
                return Err(match e {
                    FetchError::Storage(e) if e.is_not_found() => {
                        // Compaction or retention removed a file of the plan: re-plan.
                        self.lock().replan = true;
                        self.wake_poller();
                        if let Some(identity) = replan_for {
                            if let Some(fresh) = self.state_exactly(state.txid) {
                                let fresh = Arc::new(fresh);
                                // Same TXID: every page the transaction has cached carries,
                                // and so do hydrated slots: their old files are gone, and
                                // without this the rest of the transaction fetched every
                                // page one GET at a time (the soak's ~25 s queries).
                                self.carry_over(state, &fresh);
                                *self.stand_in.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some((identity, Arc::clone(&fresh)));
                                return self.page_or_replan(&fresh, pgno, None);
                            }
                        }
                        // No plan reaches this TXID any more: retention removed the
                        // files that held it. Retrying the transaction read the same
                        // state again, failing each time, for a connection pinned to a
                        // time (`litestream_set_time`) whose status looked healthy.
                        if replan_for.is_some() && state.txid < self.current().txid {
                            return Err(ReadError::Io(format!(
                                "replica {}: the state at TXID {} is no longer in the replica: retention or \
                                 compaction removed the files that held it ({} is gone); retry the \
                                 transaction, or on a connection pinned with litestream_set_time(), set a \
                                 later time or 'latest'",
                                self.name, state.txid, key.file
                            )));
                        }
                        ReadError::Io(format!(
                            "replica {}: reading page {pgno}: {} is gone from the replica (compacted or \
                             deleted); retry the transaction",
                            self.name, key.file
                        ))
                    }
                    FetchError::Storage(e) => ReadError::Io(format!("replica {}: reading page {pgno}: {e}", self.name)),
                    FetchError::Corrupt(m) => ReadError::Corrupt(format!("replica {}: {m}", self.name)),
                    FetchError::Key(m) | FetchError::Local(m) => ReadError::Io(format!("replica {}: {m}", self.name)),
                });
            }
        };
        self.keep(key, Arc::clone(&page));
        Ok(Some(page))
    }

    /// A page just fetched: counted, written to the hydration file (when there is one) and
    /// kept in the cache.
    fn keep(&self, key: PageKey, page: Arc<[u8]>) {
        self.stats().pages_fetched.fetch_add(1, Ordering::Relaxed);
        if let Some(h) = &self.hydration {
            if let Err(e) = h.write(&key, &page, &mut |k, old| self.cache.insert(k, old.into())) {
                let message = e.to_string();
                match self.lock().hydration_write_warning.due(&message, Instant::now()) {
                    Some(0) => tracing::warn!(replica = %self.name, error = %message, "writing the hydration file"),
                    Some(held) => tracing::warn!(
                        replica = %self.name,
                        error = %message,
                        "writing the hydration file ({held} more times since it was last logged)"
                    ),
                    None => {}
                }
            }
        }
        self.cache.insert(key, page);
    }

    /// Keeps the pages of `state` whose frames arrived whole in `heads` (the first bytes
    /// of each of its files, in plan order) without another request. Only the version the
    /// state serves: a frame a later file replaces is skipped.
    pub(super) fn keep_first_pages(&self, state: &State, heads: &[Bytes]) {
        let mut kept = 0;
        for (file, head) in state.files().iter().zip(heads) {
            let current = |e: &&crate::ltx::PageIndexEntry| {
                state
                    .locate(e.pgno)
                    .is_some_and(|l| std::ptr::eq(l.file, &**file) && l.offset == e.offset)
            };
            let frames: Vec<Frame> = file
                .entries
                .iter()
                .take_while(|e| e.offset + e.size as u64 <= head.len() as u64)
                .filter(current)
                .map(|e| (e.pgno, e.offset, e.size))
                .collect();
            match decode_frames(file, state.page_size, head, 0, &frames) {
                Ok(pages) => {
                    kept += pages.len();
                    for (pgno, page) in pages {
                        self.keep(PageKey { file: file.key(), pgno }, page.into());
                    }
                }
                // Not fatal: the page is fetched on its own when asked for, and fails there.
                Err(e) => tracing::warn!(replica = %self.name, error = %e, "decoding the first pages of a file"),
            }
        }
        self.stats()
            .pages_read_at_open
            .fetch_add(kept as u64, Ordering::Relaxed);
        tracing::debug!(replica = %self.name, pages = kept, "kept the pages read with the indexes");
    }
}
