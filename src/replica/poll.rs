//! Following the store: the poller's one turn ([`Replica::poll_once`]), which finds new
//! TXIDs, re-plans when the store's files changed, and publishes the next [`State`].

use super::fetch::{FetchError, Fetcher};
use super::history::{self, Listed};
use super::state::{FileKey, State};
use super::Replica;
use crate::restore;
use crate::storage::LtxObject;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

/// A poll re-lists every level after this many polls, even when level 0 alone says
/// nothing changed, to pick up compaction and shorter plans.
const FULL_LIST_EVERY: u32 = 30;

/// The longest level-0 chain read to carry pages over a re-plan (see [`Replica::bridge`]):
/// a few polls' worth; a replica further behind re-fetches instead.
const MAX_BRIDGE_FILES: usize = 32;

/// The level-0 files that continue TXID `txid`, in order (the longest file at each step).
fn level0_chain(l0: &[crate::storage::LtxObject], mut txid: u64) -> Vec<crate::storage::LtxObject> {
    let mut chain = Vec::new();
    while let Some(next) = l0.iter().filter(|f| f.min_txid == txid + 1).max_by_key(|f| f.max_txid) {
        txid = next.max_txid;
        chain.push(next.clone());
    }
    chain
}

/// The stored objects `state` was planned from.
fn plan_objects(state: &State) -> Vec<LtxObject> {
    state.files().iter().map(|f| f.object.clone()).collect()
}

impl Replica {
    /// Looks for new TXIDs: level 0 alone when it continues the current state, every
    /// level when it does not (or a planned file vanished, or it is time to).
    ///
    /// Async, so that the poller's turn can hand the whole poll to the async runtime
    /// when the store is slow (`jobs.rs`): a replica of a stalled store then holds none
    /// of the engine's few threads.
    ///
    /// `awaited`: an application waits for this poll (`litestream_wait`), and its reads
    /// hedge as a query's do. A routine poll's do not: no one waits for it, and one the
    /// store holds ends at the silence limit, the next poll going on.
    pub(super) async fn poll_once(&self, awaited: bool) -> Result<(), FetchError> {
        self.stats().polls.fetch_add(1, Ordering::Relaxed);
        let fetcher = if awaited {
            self.fetcher.clone()
        } else {
            self.fetcher.background()
        };
        let fetcher = &fetcher;
        let (cur, full) = {
            let mut g = self.lock();
            g.polls_since_full += 1;
            let full = g.replan || g.polls_since_full >= FULL_LIST_EVERY;
            (Arc::clone(&g.current), full)
        };
        if !full {
            let l0 = fetcher.list(0).await?;
            let l0_max = l0.iter().map(|f| f.max_txid).max().unwrap_or(0);
            self.saw_in_store(l0_max);
            let cur_l0: Vec<&LtxObject> = cur.files().iter().map(|f| &f.object).filter(|o| o.level == 0).collect();
            // Listed as planned: TXIDs, size and time. A level-0 name listed with other
            // bytes is another history, which the full listing below tells.
            let vanished = cur_l0.iter().any(|planned| !l0.iter().any(|o| o == *planned));
            if !vanished {
                if l0_max <= cur.txid {
                    self.caught_up(None, l0_max);
                    return Ok(());
                }
                let chain = level0_chain(&l0, cur.txid);
                // Stopped at a gap the last full listing found: only a snapshot past it
                // (level 9) mends it, which the periodic full listing finds. Listing
                // every level at every poll meanwhile cost 10 LISTs a poll for nothing.
                if chain.is_empty() && self.lock().gap.as_ref().is_some_and(|g| g.reached == cur.txid) {
                    return Ok(());
                }
                // Level 0 alone vouches for the chain only through files of `cur` it
                // still lists: without any, the store may hold another history that
                // happens to continue the TXID (`history_replaced`), so list it all.
                if !chain.is_empty() && !cur_l0.is_empty() {
                    let files = self.plan_files_async(fetcher, chain).await?;
                    // A file of another page size: the primary's database was rebuilt
                    // (`PRAGMA page_size` and `VACUUM`), and the new history starts at a
                    // snapshot on a higher level that level 0 alone does not show.
                    // Re-plan from every level now; waiting for the periodic full
                    // listing served the old TXID for 30 polls and called the replica
                    // corrupt meanwhile. Any other misfit is corrupt, as before (a full
                    // listing at every poll would cost a LIST per level for nothing).
                    if let Some(f) = files.iter().find(|f| f.header.page_size != cur.page_size) {
                        tracing::debug!(
                            replica = %self.name,
                            file = %f.key(),
                            from = cur.page_size,
                            to = f.header.page_size,
                            "the page size changed; re-planning from every level"
                        );
                    } else {
                        let next = cur.extend(files).map_err(FetchError::Corrupt)?;
                        self.caught_up(Some(next), l0_max);
                        return Ok(());
                    }
                }
            }
        }
        let listing = fetcher.list_all().await?;
        {
            let mut g = self.lock();
            g.replan = false;
            g.polls_since_full = 0;
            g.store_txid = listing.max_txid();
        }
        let listed = history::listed(&cur, &listing);
        let (plan, gap) = restore::plan_reachable(&listing).map_err(FetchError::Corrupt)?;
        let plan_txid = plan.last().map_or(0, |f| f.max_txid);
        let replaced = match &listed {
            Listed::Rewritten(why) => Some(why.clone()),
            // Nothing of `cur` left and an older newest TXID: another database.
            Listed::Nothing if plan_txid < cur.txid => Some(history::nothing_left(&cur)),
            _ => None,
        };
        if let Some(why) = replaced {
            self.note_gap(gap);
            return self
                .follow_replaced_history(fetcher, &cur, plan, listing.max_txid(), why)
                .await;
        }
        if plan_txid < cur.txid {
            let why = gap.map_or(String::new(), |g| format!(" (it {g})"));
            return Err(FetchError::Corrupt(format!(
                "the replica went back from TXID {} to {plan_txid}{why}; keeping TXID {}",
                cur.txid, cur.txid
            )));
        }
        self.note_gap(gap);
        let same = plan.len() == cur.files().len() && plan.iter().zip(cur.files()).all(|(a, b)| *a == b.object);
        if same {
            self.caught_up(None, listing.max_txid());
            return Ok(());
        }
        let files = self.plan_files_async(fetcher, plan).await?;
        let mut next = State::build(files).map_err(FetchError::Corrupt)?;
        next.history = cur.history;
        // Before publishing: the first read of the new plan already finds what carried.
        let bridge = self
            .bridge(fetcher, &cur, &listing)
            .await
            .filter(|b| b.txid <= next.txid);
        let base = bridge.as_ref().unwrap_or(&cur);
        if listed == Listed::Nothing && !self.same_history(fetcher, &cur, base, &next).await {
            let why = history::nothing_left(&cur) + ", and the new files disagree with it";
            return self
                .follow_replaced_history(fetcher, &cur, plan_objects(&next), listing.max_txid(), why)
                .await;
        }
        self.carry_over(base, &next);
        drop(bridge);
        let live: std::collections::HashSet<FileKey> = next.files().iter().map(|f| f.key()).collect();
        self.known_files().retain(|k, _| live.contains(k));
        tracing::debug!(replica = %self.name, txid = next.txid, files = next.files().len(), "re-planned");
        self.caught_up(Some(next), listing.max_txid());
        Ok(())
    }

    /// The database at the replica's URL is another one now (`history.rs`): no
    /// cached page, planned file or hydrated page of the old one may serve it. Before, the
    /// poll appended the new database's files to the old one's state once its TXIDs
    /// passed the old ones, and carried the old pages over: a tester's replicas then
    /// served 29 wrong rows and a hydrated file that failed `integrity_check`, with no
    /// error; while the new TXIDs were lower, they served the deleted database. The store
    /// is followed as it is now, at a lower TXID too.
    async fn follow_replaced_history(
        &self,
        fetcher: &Fetcher,
        cur: &State,
        plan: Vec<LtxObject>,
        store_max: u64,
        why: String,
    ) -> Result<(), FetchError> {
        let to = plan.last().map_or(0, |f| f.max_txid);
        tracing::warn!(
            replica = %self.name,
            from = cur.txid,
            to,
            "the replica holds another database now ({why}): dropping every cached and hydrated page of \
             the old one and following the store from TXID {to}"
        );
        self.cache.clear();
        self.known_files().clear();
        if let Some(hydration) = &self.hydration {
            if let Err(e) = hydration.forget() {
                hydration.record_error(&format!("emptying the hydration file for the replaced database: {e}"));
            }
        }
        let files = self.plan_files_async(fetcher, plan).await?;
        let mut next = State::build(files).map_err(FetchError::Corrupt)?;
        next.history = cur.history.wrapping_add(1);
        self.stats().history_replacements.fetch_add(1, Ordering::Relaxed);
        self.caught_up(Some(next), store_max);
        Ok(())
    }

    /// `cur` extended by the level-0 files of `listing` that follow it, when there are a
    /// few: the state a carry-over to a new plan starts from. The newest compacted file
    /// often ends after `cur` (it took in what was written since the last poll), and the
    /// carry rule trusts only files ending at or before the TXID carried from; the
    /// level-0 chain reaches that far and tells which pages those TXIDs wrote. `None`
    /// when there is no such chain (or its indexes cannot be read): carry from `cur`.
    async fn bridge(&self, fetcher: &Fetcher, cur: &State, listing: &restore::Listing) -> Option<State> {
        let l0: Vec<_> = listing
            .incremental
            .iter()
            .flatten()
            .filter(|f| f.level == 0)
            .cloned()
            .collect();
        let chain = level0_chain(&l0, cur.txid);
        if chain.is_empty() || chain.len() > MAX_BRIDGE_FILES {
            return None;
        }
        let files = self.plan_files_async(fetcher, chain).await.ok()?;
        cur.extend(files).ok()
    }

    /// Records the newest TXID a listing of level 0 showed (level 0 holds the newest
    /// files; a full listing sets it outright), before the poll tries to reach it.
    fn saw_in_store(&self, l0_max: u64) {
        let mut g = self.lock();
        g.store_txid = g.store_txid.max(l0_max);
    }

    /// Publishes `next` (if any) and records whether the replica reached `store_max`.
    fn caught_up(&self, next: Option<State>, store_max: u64) {
        let mut g = self.lock();
        if let Some(next) = next {
            tracing::debug!(replica = %self.name, from = g.current.txid, to = next.txid, "new TXID ready");
            g.current = Arc::new(next);
            self.changed.notify_all();
            self.wake_hydrator();
        }
        if g.current.txid >= store_max {
            g.last_caught_up = Some(Instant::now());
            g.gap = None;
        }
        g.last_error = None;
    }

    /// Records the gap the newest plan stops at (`None`: it reaches the newest file),
    /// logging it when it is new: the replica serves the state before it, and says so in
    /// its status instead of looking merely behind.
    pub(super) fn note_gap(&self, gap: Option<restore::Gap>) {
        let mut g = self.lock();
        if let Some(new) = gap.as_ref().filter(|new| g.gap.as_ref() != Some(*new)) {
            tracing::warn!(
                replica = %self.name,
                "the replica {new}: serving TXID {}, the state before it, until a snapshot past it is stored",
                new.reached
            );
        }
        g.gap = gap;
    }
}
