//! Waking a job when a file appears in a directory. A follower's `litestream_sync()`
//! (and its `sync=commit`) writes a request file for the replicating process
//! (`primary/follower.rs`), which used to find it only at its worker's next turn: up to
//! `sync_interval` later, on every follower sync. Watched, the request wakes the worker
//! at once, and the follower waits about one upload.
//!
//! One inotify descriptor per process, read by a task on the I/O runtime (no thread of
//! its own). Where inotify is refused (its per-user limits), requests are served by the
//! worker's turns each `sync_interval`, as before; nothing else depends on the wake.

use super::{engine, JobId};
use crate::vfs::sys::fork::PerProcess;
use crate::vfs::sys::inotify::{Inotify, WatchId};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;

struct Watcher {
    inotify: AsyncFd<Inotify>,
    /// The jobs each watch wakes, with the end of the names that wake each (a directory
    /// watched twice is one watch).
    jobs: Mutex<HashMap<WatchId, Vec<(JobId, &'static str)>>>,
}

/// Made again in a child of `fork()`: the parent's task has no thread there.
static WATCHER: PerProcess<Option<Arc<Watcher>>> = PerProcess::new();

/// Wakes `job` while the returned value lives, whenever a file whose name ends with
/// `suffix` is created in (or moved into) directory `dir`. `None` when the directory
/// cannot be watched (said at debug level: the job still runs at its own times).
pub fn wake_on_new_file(dir: &Path, suffix: &'static str, job: JobId) -> Option<DirWatch> {
    let watcher = WATCHER.get(start).as_ref()?;
    let wd = match watcher.inotify.get_ref().watch_new_files(dir) {
        Ok(wd) => wd,
        Err(e) => {
            // Past the per-user limit of watches (8,192 by default on kernels before 5.11)
            // every database opened later is served at its interval: said once, with the
            // setting that lifts it. Other refusals concern one directory.
            if e.raw_os_error() == Some(libc::ENOSPC) {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "not watching {} (followers' syncs are answered once per sync_interval): {e}{}",
                        dir.display(),
                        limit_hint(&e)
                    )
                });
            }
            tracing::debug!(
                "not watching {} (served at each interval instead): {e}{}",
                dir.display(),
                limit_hint(&e)
            );
            return None;
        }
    };
    lock(watcher).entry(wd).or_default().push((job, suffix));
    Some(DirWatch {
        watcher: Arc::clone(watcher),
        wd,
        job,
    })
}

/// One job's watch of one directory; dropping it stops the wakes.
pub struct DirWatch {
    watcher: Arc<Watcher>,
    wd: WatchId,
    job: JobId,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        let mut jobs = lock(&self.watcher);
        let Some(list) = jobs.get_mut(&self.wd) else { return };
        if let Some(i) = list.iter().position(|(j, _)| *j == self.job) {
            list.swap_remove(i);
        }
        if list.is_empty() {
            jobs.remove(&self.wd);
            self.watcher.inotify.get_ref().unwatch(self.wd);
        }
    }
}

/// What lifts a refusal that is one of inotify's per-user limits: its error alone reads
/// "Too many open files" (instances) or "No space left on device" (watches), which sends
/// an operator to the wrong limit.
fn limit_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => {
            "; if no descriptor limit was reached, it is the per-user limit of inotify instances: raise fs.inotify.max_user_instances"
        }
        Some(libc::ENOSPC) => "; the per-user limit of inotify watches is reached: raise fs.inotify.max_user_watches",
        _ => "",
    }
}

type Jobs = HashMap<WatchId, Vec<(JobId, &'static str)>>;

fn lock(watcher: &Watcher) -> std::sync::MutexGuard<'_, Jobs> {
    watcher.jobs.lock().unwrap_or_else(|p| p.into_inner())
}

fn start() -> Option<Arc<Watcher>> {
    let runtime = crate::runtime::runtime();
    let _entered = runtime.enter();
    let inotify = Inotify::new().and_then(Inotify::into_async);
    let inotify = match inotify {
        Ok(inotify) => inotify,
        Err(e) => {
            tracing::warn!(
                "inotify unavailable ({e}{}): followers' syncs are answered once per sync_interval",
                limit_hint(&e)
            );
            return None;
        }
    };
    let watcher = Arc::new(Watcher {
        inotify,
        jobs: Mutex::default(),
    });
    runtime.spawn(wake_jobs(Arc::clone(&watcher)));
    Some(watcher)
}

async fn wake_jobs(watcher: Arc<Watcher>) {
    loop {
        let mut ready = match watcher.inotify.readable().await {
            Ok(ready) => ready,
            Err(e) => {
                tracing::warn!("inotify: {e}; followers' syncs are answered once per sync_interval");
                return;
            }
        };
        // Read to the end, so the readiness seen is used up (a newer one is kept).
        let ids = watcher.inotify.get_ref().drain();
        ready.clear_ready();
        let events = match ids {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!("inotify: {e}; followers' syncs are answered once per sync_interval");
                return;
            }
        };
        let mut woken: Vec<JobId> = {
            let jobs = lock(&watcher);
            events
                .iter()
                .filter_map(|(wd, name)| Some((jobs.get(wd)?, name)))
                .flat_map(|(list, name)| list.iter().filter(|(_, s)| name.ends_with(s.as_bytes())))
                .map(|(job, _)| *job)
                .collect()
        };
        woken.dedup();
        for job in woken {
            engine().wake(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::limit_hint;
    use std::io::Error;

    #[test]
    fn a_refusal_for_a_per_user_limit_names_the_setting_that_lifts_it() {
        let instances = limit_hint(&Error::from_raw_os_error(libc::EMFILE));
        assert!(instances.contains("fs.inotify.max_user_instances"), "{instances}");
        let watches = limit_hint(&Error::from_raw_os_error(libc::ENOSPC));
        assert!(watches.contains("fs.inotify.max_user_watches"), "{watches}");
        assert_eq!(limit_hint(&Error::from_raw_os_error(libc::ENOENT)), "");
    }
}
