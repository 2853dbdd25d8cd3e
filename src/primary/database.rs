//! A database this process has open as a primary, whether it replicates it (leads) or
//! another process does (follows). Every process that writes through the VFS guards
//! the WAL the same way: before frames go away it leaves a hand-off record
//! (`handoff.rs`), so no commit escapes the replicating process, whoever wrote it.

use super::follower;
use super::follower_writes::FollowerWrites;
use super::handoff::HandoffDir;
use super::leader_lock::LeaderLock;
use super::shared_staging;
use super::state::StateFile;
use super::wal_index::WalIndexView;
use super::{Primary, Snapshotter};
use crate::config::{Config, SyncMode};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

mod leadership;
mod wal_hooks;

/// How a process that becomes the replicating one prepares: the VFS layer's snapshot
/// implementation and its WAL-mode check (function pointers: they outlive every open).
#[derive(Clone, Copy)]
pub struct Tools {
    pub snapshotter: fn() -> Box<dyn Snapshotter>,
    pub prepare_db: fn(&Path) -> Result<(), String>,
}

pub struct Database {
    pub path: PathBuf,
    pub config: Config,
    /// Where this process's settings say commits go (`leader.json`, compared by followers).
    destination: follower::Destination,
    tools: Tools,
    /// What this process's writers did while another process replicated.
    follower_writes: FollowerWrites,
    lock: LeaderLock,
    records: HandoffDir,
    /// The hand-off records reached `max_staging` (`hand_off_tail`): warned once.
    handoff_full: AtomicBool,
    state_file: StateFile,
    /// Set while this process replicates the database.
    leader: RwLock<Option<Arc<Primary>>>,
    /// A primary opened by a takeover while a connection of this process was inside a
    /// write transaction it began as a follower's: it becomes `leader` when that
    /// transaction releases the write lock (`install`).
    waiting: Mutex<Option<Arc<Primary>>>,
    /// `waiting` holds a primary (read on every release of the write lock).
    is_waiting: AtomicBool,
    /// Held while this process becomes or stops being the replicating one. Opening
    /// replication reads the store: writers keep reading `leader` meanwhile.
    transition: Mutex<()>,
    /// The last handle closed: no more taking over.
    closed: AtomicBool,
    /// This process's mappings of the wal-index: what SQLite counts committed.
    pub wal_index: Arc<WalIndexView>,
    /// Why the last takeover failed, until one succeeds (`leadership.rs`): named in a
    /// follower's status error while nobody replicates.
    takeover_failed: Mutex<Option<String>>,
}

/// How long an open waits for another process's open of a missing database (a restore
/// of a large one takes minutes) before it gives up.
const LEADERS_OPEN_WAIT: Duration = Duration::from_secs(15 * 60);

impl Database {
    /// Opens the per-process state of `path` (creating its staging directory); nobody
    /// leads yet.
    pub fn new(path: &Path, mut config: Config, tools: Tools) -> Result<Database, String> {
        // A replica URL that names no store (a typo in the scheme, a missing credential)
        // fails the open before anything is made beside the database. Opening a store
        // makes no request.
        crate::storage::open_store(&config.replica_url, &config.store_options).map_err(|e| e.to_string())?;
        let lock_dir = shared_staging::lock_dir(path);
        let create = |dir: &Path| {
            config
                .file_modes
                .create_dir_all(dir)
                .map_err(|e| format!("staging directory {}", crate::file_modes::unwritable_hint(&e, dir)))
        };
        create(&lock_dir)?;
        let lock = LeaderLock::open(&lock_dir, config.file_modes)?;
        lock.also_guard(&config.staging_dir);
        config.staging_dir = shared_staging::choose(path, &config.staging_dir, lock.held_by_another());
        create(&config.staging_dir)?;
        super::staging_owner::claim(&config.staging_dir, path, config.file_modes)?;
        Ok(Database {
            path: path.to_path_buf(),
            destination: follower::Destination::of(&config),
            tools,
            follower_writes: FollowerWrites::default(),
            records: HandoffDir::new(&config.staging_dir, config.file_modes),
            state_file: StateFile::new(&config.staging_dir, config.file_modes),
            config,
            lock,
            leader: RwLock::new(None),
            waiting: Mutex::new(None),
            is_waiting: AtomicBool::new(false),
            handoff_full: AtomicBool::new(false),
            transition: Mutex::new(()),
            closed: AtomicBool::new(false),
            wal_index: Arc::default(),
            takeover_failed: Mutex::new(None),
        })
    }

    /// The primary when this process replicates the database.
    #[inline]
    pub fn leader(&self) -> Option<Arc<Primary>> {
        if self.inherited() {
            self.lock.forget_inherited(); // a child using only inherited connections
            return None;
        }
        self.leader.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Opened by the parent of this process before a `fork()`: the parent's, used here
    /// only through connections the child inherited (SQLite says not to). They follow:
    /// never replicate (the primary's threads are the parent's), never take the lock
    /// (its descriptor is closed: `LeaderLock`), and their commits reach the replicating
    /// process as any follower's do. The child's own opens get a `Database` of their own.
    #[inline]
    pub fn inherited(&self) -> bool {
        self.lock.inherited()
    }

    /// In a child of `fork()`: closes the child's descriptor of the replication lock,
    /// which must not outlive the parent here.
    pub fn forget_inherited(&self) {
        self.lock.forget_inherited();
    }

    /// Becomes the replicating process if no process is: takes the lock and resumes
    /// replication from the staging state, the hand-off records and the WAL. Returns
    /// true when this process leads (now or already, perhaps from the end of a write
    /// transaction in progress: see [`Database::install`]).
    pub fn try_lead(&self) -> Result<bool, String> {
        self.lead(&self.tools.prepare_db, true)
    }

    /// Called when another process replicates: if the database is missing or empty,
    /// that process may be restoring it from the replica (its open announced node id 0
    /// and has not finished). Opening now would make an empty file that this process
    /// then reads while the other restores, or that the restore refuses to replace (found
    /// by hand 2026-12-06: workers started together on a deleted database ran on an empty
    /// one, and the replica's latest state became that empty database). Waits until that
    /// open finishes, or until the lock is free (this process then leads, and restores
    /// the database itself). Returns whether this process leads.
    pub fn wait_for_the_leaders_open(&self, prepare_db: &dyn Fn(&Path) -> Result<(), String>) -> Result<bool, String> {
        let lock_dir = shared_staging::lock_dir(&self.path);
        let started = Instant::now();
        let mut said = None::<Instant>;
        loop {
            let present = std::fs::metadata(&self.path).is_ok_and(|m| m.len() > 0);
            if present || self.inherited() {
                return Ok(false);
            }
            if !self.lock.held_by_another() && self.try_lead_with(prepare_db)? {
                return Ok(true);
            }
            // Not leading: another process took the lock first, or this one may not lead.
            // The lock's "opening" byte, not `leader.json`, says whether its open is done:
            // the file is taken before the lock and that file is written after it.
            if !(self.lock.held_by_another() && self.lock.opening_by_another()) {
                return Ok(false); // its open is done: the file is what it left
            }
            let opening = follower::read_leader(&lock_dir)
                .map_or_else(|| "another process".to_string(), |l| format!("process {}", l.pid));
            if started.elapsed() >= LEADERS_OPEN_WAIT {
                return Err(format!(
                    "{} is missing or empty and {} has been opening it for {:?} (restoring it from its \
                     replica?); this open does not make an empty database beside that",
                    self.path.display(),
                    opening,
                    LEADERS_OPEN_WAIT
                ));
            }
            if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(30)) {
                tracing::info!(
                    db = %self.path.display(),
                    "the database is missing or empty and {} is opening it (restoring it from its replica?): waiting for it",
                    opening
                );
                said = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`Database::try_lead`] with the open's own preparation of the database (it knows
    /// whether the open may create the file or write it).
    pub fn try_lead_with(&self, prepare_db: &dyn Fn(&Path) -> Result<(), String>) -> Result<bool, String> {
        self.lead(prepare_db, false)
    }

    fn lead(&self, prepare_db: &dyn Fn(&Path) -> Result<(), String>, takeover: bool) -> Result<bool, String> {
        if self.inherited() {
            self.lock.forget_inherited();
            return Ok(false);
        }
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        if self.leader().is_some() {
            return Ok(true);
        }
        if self.is_waiting.load(Ordering::Acquire) {
            self.install_waiting();
            return Ok(true);
        }
        if self.closed.load(Ordering::Relaxed) {
            return Ok(false);
        }
        if !self.lock.try_acquire()? {
            return Ok(false);
        }
        // Said at once, node id to follow: opening replication can take seconds of store
        // round trips, and a process opening the database meanwhile would otherwise read
        // the previous replicating process's staging directory (`shared_staging::choose`).
        let lock_dir = shared_staging::lock_dir(&self.path);
        follower::announce_leader(&lock_dir, self.config.file_modes, 0, self.destination.clone());
        let started = std::time::Instant::now();
        let primary = match Primary::open(
            &self.path,
            self.config.clone(),
            (self.tools.snapshotter)(),
            prepare_db,
            Arc::clone(&self.wal_index),
        ) {
            Ok(primary) => primary,
            Err(e) => {
                self.lock.release();
                return Err(e);
            }
        };
        follower::announce_leader(
            &lock_dir,
            self.config.file_modes,
            primary.node_id(),
            self.destination.clone(),
        );
        self.lock.opened();
        tracing::info!(
            db = %self.path.display(),
            pid = std::process::id(),
            ms = started.elapsed().as_millis() as u64,
            "this process replicates the database now"
        );
        // Installed first: the turn a takeover wakes may probe the wal-index, whose
        // recovery the application's writers wait for only once this primary is theirs.
        self.install(Arc::clone(&primary));
        if takeover {
            primary.taken_over();
        }
        Ok(true)
    }

    /// Makes `primary` the one this process's writers report to, unless a connection of
    /// this process holds the WAL write lock: its transaction began as a follower's (its
    /// header written without capture, perhaps frames spilled), and capture joining in
    /// its middle would meet frames of a generation it never saw begin, or overwritten
    /// frames it took for committed (a needless snapshot). Then the primary waits, still
    /// following the WAL and the records as for any other writer, and the release of the
    /// write lock installs it. The check and the install are one step under the mutex
    /// that a writer taking the lock goes through first, so a writer either sees the
    /// primary before it writes or holds the lock the install waits for.
    fn install(&self, primary: Arc<Primary>) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        *waiting = Some(primary);
        self.is_waiting.store(true, Ordering::Release);
        if !self.install_locked(&mut waiting) {
            tracing::debug!(db = %self.path.display(), "a write transaction of this process is in progress; replicating from its end");
        }
    }

    /// Installs the waiting primary if no writer of this process holds the lock now.
    fn install_waiting(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if self.install_locked(&mut waiting) {
            tracing::debug!(db = %self.path.display(), "the write transaction ended; replicating");
        }
    }

    fn install_locked(&self, waiting: &mut Option<Arc<Primary>>) -> bool {
        let Some(primary) = waiting.as_ref() else {
            return false;
        };
        let installed = self.wal_index.unless_write_locked(|| {
            *self.leader.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::clone(primary));
        });
        if installed {
            *waiting = None;
            self.is_waiting.store(false, Ordering::Release);
        }
        installed
    }

    /// The last handle of this process closed: stop replicating (uploading what is
    /// left) and let another process lead.
    pub fn close(&self) {
        if self.inherited() {
            // The primaries are the parent's: closing them here would upload from two
            // processes, and wait for threads this one does not have.
            self.lock.forget_inherited();
            return;
        }
        self.store_own_commits_nobody_replicates();
        self.closed.store(true, Ordering::Relaxed);
        let _transition = self.transition.lock().unwrap_or_else(|p| p.into_inner());
        // The waiting one first, under its mutex: a release installing it meanwhile
        // would leave a leader behind the close.
        let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        self.is_waiting.store(false, Ordering::Release);
        let primaries = [
            waiting.take(),
            self.leader.write().unwrap_or_else(|p| p.into_inner()).take(),
        ];
        drop(waiting);
        for primary in primaries.into_iter().flatten() {
            primary.close();
        }
        self.lock.release();
    }

    /// A follower closing after it committed while no process replicates (the one that
    /// did closed first) takes replication over, so that the close below stores its
    /// commits. Left in the hand-off records, they reached the replica only when the
    /// database was next opened: for a connection per request, after the next quiet
    /// period (a tester: the last 1-3 commits of 4 runs in 9). Its leadership job would
    /// have taken over within seconds had the process stayed.
    fn store_own_commits_nobody_replicates(&self) {
        if self.leader().is_some() || self.follower_writes.last_write_ms().is_none() || self.lock.held_by_another() {
            return;
        }
        // A follower whose settings name another replica (or key) than the one the
        // database was replicated to would move replication there: a tester's worker
        // with another replica= stored its own and another worker's last commits in its
        // replica, and the one the others use lacked them. They wait in the hand-off
        // records for the next process that replicates where the database goes.
        if let Some(why) = self.destination_differs() {
            tracing::warn!(
                db = %self.path.display(),
                "no process replicates the database, and this closing one does not take replication over: {why}; \
                 its commits are stored when a process replicating there next opens the database"
            );
            return;
        }
        match self.try_lead() {
            Ok(true) => tracing::info!(
                db = %self.path.display(),
                "no process replicates the database: this closing one took replication over to store its commits"
            ),
            Ok(false) => {}
            Err(e) => tracing::warn!(
                db = %self.path.display(),
                "no process replicates the database, and taking replication over at close failed: {e}; \
                 its commits are stored when the database is next opened"
            ),
        }
    }

    /// Who replicates the database, for a follower's status.
    pub fn follower_status(&self) -> serde_json::Value {
        let mut status = follower::status(
            &self.path,
            &self.config.staging_dir,
            self.lock.held_by_another(),
            &|uploaded_at| self.follower_writes.oldest_unstored_ms(uploaded_at),
            &self.destination,
            self.config.sync_interval,
        );
        self.follower_writes
            .add_to_status(&mut status, self.config.sync_mode == SyncMode::Commit);
        let failed = self.takeover_failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let (Some(error), Some(why)) = (status["error"].as_str(), failed) {
            if status["replicated_by"].is_null() {
                status["error"] = format!("{error}: {why}").into();
            }
        }
        if self.inherited() {
            status["inherited_across_fork"] = true.into();
            if status["replicated_by"].is_null() {
                status["error"] = self.inherited_unreplicated().into();
            }
        }
        status
    }

    /// Why a connection a child inherited across `fork()` gets no backup now: it never
    /// replicates, and no process does (its parent closed the database or exited).
    fn inherited_unreplicated(&self) -> String {
        format!(
            "no process replicates {} now, and this connection was opened before fork() by the parent process: \
             connections inherited across fork() never take replication over, so its commits are not backed up \
             until a process opens the database itself; open connections in each worker after the fork \
             (README, \"Pre-fork servers\")",
            self.path.display()
        )
    }

    /// A writer of this process wrote the WAL while another process replicates.
    #[inline]
    pub fn follower_wrote(&self) {
        self.follower_writes.wrote();
    }

    /// Why this process's commits do not go where its settings say, if they do not: the
    /// replicating process names another replica or other encryption, or stages where
    /// this process's hand-off records and sync requests do not reach it.
    pub fn destination_differs(&self) -> Option<String> {
        let leader = follower::read_leader(&shared_staging::lock_dir(&self.path))?;
        follower::destination_differs(&self.path, &leader, &self.destination)
    }

    /// Another open of this database in this process, with `config`: it shares this
    /// replication, so settings that say where commits go must be the same (a second
    /// connection's `replica=R2` or key was accepted and ignored, its syncs succeeding
    /// for commits stored in R1 — found by a tester); others that differ are said once.
    pub fn check_another_open(&self, config: &Config) -> Result<(), String> {
        let theirs = follower::Destination::of(config);
        if (&theirs.replica, &theirs.recipients) != (&self.destination.replica, &self.destination.recipients) {
            return Err(format!(
                "{} is already open in this process replicating to {}; this open says {}: every connection of \
                 a process shares one replication of a database (open it with the same replica= and encryption \
                 settings, or close the others first)",
                self.path.display(),
                self.destination.describe(),
                theirs.describe()
            ));
        }
        let ours = &self.config;
        let differs: Vec<&str> = [
            ("sync", ours.sync_mode != config.sync_mode),
            ("sync_interval", ours.sync_interval != config.sync_interval),
            ("sync_timeout", ours.sync_timeout != config.sync_timeout),
        ]
        .into_iter()
        .filter_map(|(name, differs)| differs.then_some(name))
        .collect();
        if !differs.is_empty() {
            tracing::warn!(
                db = %self.path.display(),
                "this open's {} differ from the first open's in this process; the first open's apply to every \
                 connection of the process",
                differs.join(", ")
            );
        }
        Ok(())
    }

    /// The newest TXID the replicating process reports stored.
    pub fn uploaded_txid(&self) -> Option<u64> {
        follower::read_uploaded(&self.config.staging_dir).map(|u| u.txid)
    }

    /// `litestream_sync()` on a connection of this process: this process's own primary
    /// when it leads, else the replicating process through the staging directory.
    pub fn sync(&self, timeout: Duration) -> Result<u64, String> {
        match self.leader() {
            Some(primary) => primary.sync_all(timeout),
            None => self.ask_leader(timeout, follower::Ask::Sync),
        }
    }

    /// `litestream_snapshot()`: a full snapshot at the next TXID, stored within
    /// `timeout`, by this process or the one that replicates the database.
    pub fn snapshot(&self, timeout: Duration) -> Result<u64, String> {
        match self.leader() {
            Some(primary) => primary.snapshot_now(timeout),
            None => self.ask_leader(timeout, follower::Ask::Snapshot),
        }
    }

    fn ask_leader(&self, timeout: Duration, what: follower::Ask) -> Result<u64, String> {
        // Nobody would answer in time: no process leads, and this one cannot take over.
        if self.inherited() && !self.lock.held_by_another() {
            return Err(self.inherited_unreplicated());
        }
        follower::ask(
            &self.path,
            &self.config.staging_dir,
            self.config.file_modes,
            timeout,
            &self.destination,
            &|| self.leader(),
            what,
        )
    }
}
