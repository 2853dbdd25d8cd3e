//! A store whose requests end the moment its owner stops: the compaction job's view of
//! the replica. A close waits for a compaction turn in progress before it takes its own
//! last turn, and a turn on a store that does not answer waits out each request's
//! silence limit (30 s) in turn: a store tester's closes took 100–136 s on a silent S3
//! or Azure, against `sync_timeout`'s 30 s. Stopped, every request in flight or made
//! after ends as a transient failure, which the compaction turn treats as any other (its
//! steps are safe to cut short: a kill mid-compaction is the same, `compaction_crash`).

use super::{Error, LtxObject, ReplicaStore, Result};
use async_trait::async_trait;
use bytes::Bytes;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Stops a [`Stoppable`]'s requests (`stop`, or `stop_after` a grace), once and for good.
#[derive(Debug, Default)]
pub struct Stop {
    stopped: AtomicBool,
    deadline: std::sync::Mutex<Option<Instant>>,
    notify: Notify,
}

impl Stop {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Lets requests run for `grace` more, then stops them. Stopped at once, a close cut
    /// every compaction turn short: with a connection per request (a close at every
    /// request), only the first level-1 window was ever written and level 0 grew by a
    /// file per commit for good (a tester: 10,476 files in 5 minutes).
    pub fn stop_after(&self, grace: Duration) {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + grace);
        self.notify.notify_waiters();
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst) || self.deadline().is_some_and(|at| at <= Instant::now())
    }

    async fn stopped(&self) {
        loop {
            let notified = self.notify.notified();
            if self.stopped.load(Ordering::SeqCst) {
                return;
            }
            match self.deadline() {
                Some(at) => {
                    tokio::select! {
                        () = notified => {}
                        () = tokio::time::sleep_until(at.into()) => return,
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[derive(Debug)]
pub struct Stoppable {
    inner: Arc<dyn ReplicaStore>,
    stop: Arc<Stop>,
}

impl Stoppable {
    pub fn new(inner: Arc<dyn ReplicaStore>, stop: Arc<Stop>) -> Stoppable {
        Stoppable { inner, stop }
    }

    /// Runs `request` unless or until the stop. Generic only in the thin part: the race
    /// itself is one function for every kind of request (ten copies of `select!` were
    /// 20 KB of the shipped library).
    async fn run<T: Send>(&self, op: &'static str, request: impl Future<Output = Result<T>> + Send) -> Result<T> {
        let mut answer = None;
        let finished = {
            let request = std::pin::pin!(async {
                answer = Some(request.await);
            });
            self.race(request).await
        };
        match finished {
            true => answer.expect("the request finished"),
            false => Err(Error::Transient {
                store: self.inner.describe().to_string(),
                op,
                key: String::new(),
                message: "not waited for: the database closed".into(),
            }),
        }
    }

    /// True when `request` ran to its end, false when the stop came first.
    async fn race(&self, request: std::pin::Pin<&mut (dyn Future<Output = ()> + Send + '_)>) -> bool {
        if self.stop.is_stopped() {
            return false;
        }
        tokio::select! {
            () = request => true,
            () = self.stop.stopped() => false,
        }
    }
}

#[async_trait]
impl ReplicaStore for Stoppable {
    fn describe(&self) -> &str {
        self.inner.describe()
    }

    fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint()
    }

    fn file_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.inner.file_key(level, min_txid, max_txid)
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxObject>> {
        self.run("LIST", self.inner.list(level)).await
    }

    async fn get(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<Bytes> {
        self.run("GET", self.inner.get(level, min_txid, max_txid)).await
    }

    async fn get_range(&self, level: u8, min_txid: u64, max_txid: u64, range: Range<u64>) -> Result<Bytes> {
        self.run("GET", self.inner.get_range(level, min_txid, max_txid, range))
            .await
    }

    async fn head(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<LtxObject> {
        self.run("HEAD", self.inner.head(level, min_txid, max_txid)).await
    }

    async fn timestamp(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<i64> {
        self.run("HEAD", self.inner.timestamp(level, min_txid, max_txid)).await
    }

    async fn put_new(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        self.run("PUT", self.inner.put_new(level, min_txid, max_txid, data, timestamp_ms))
            .await
    }

    async fn put(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        self.run("PUT", self.inner.put(level, min_txid, max_txid, data, timestamp_ms))
            .await
    }

    fn put_requests(&self, bytes: u64, create: bool) -> u32 {
        self.inner.put_requests(bytes, create)
    }

    async fn sweep_abandoned(&self, idle: std::time::Duration) -> Result<u32> {
        self.run("SWEEP", self.inner.sweep_abandoned(idle)).await
    }

    async fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<()> {
        self.run("DELETE", self.inner.delete(level, min_txid, max_txid)).await
    }

    async fn create_marker(&self, name: &str, data: Bytes) -> Result<()> {
        self.run("PUT", self.inner.create_marker(name, data)).await
    }

    async fn delete_marker(&self, name: &str) -> Result<()> {
        self.run("DELETE", self.inner.delete_marker(name)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::block_on;

    /// A store that never answers a LIST.
    #[derive(Debug)]
    struct Silent;

    #[async_trait]
    impl ReplicaStore for Silent {
        fn describe(&self) -> &str {
            "silent://"
        }
        async fn list(&self, _: u8) -> Result<Vec<LtxObject>> {
            std::future::pending().await
        }
        async fn get(&self, _: u8, _: u64, _: u64) -> Result<Bytes> {
            unimplemented!()
        }
        async fn get_range(&self, _: u8, _: u64, _: u64, _: Range<u64>) -> Result<Bytes> {
            unimplemented!()
        }
        async fn head(&self, _: u8, _: u64, _: u64) -> Result<LtxObject> {
            unimplemented!()
        }
        async fn timestamp(&self, _: u8, _: u64, _: u64) -> Result<i64> {
            unimplemented!()
        }
        async fn put_new(&self, _: u8, _: u64, _: u64, _: Bytes, _: i64) -> Result<()> {
            unimplemented!()
        }
        async fn put(&self, _: u8, _: u64, _: u64, _: Bytes, _: i64) -> Result<()> {
            unimplemented!()
        }
        async fn delete(&self, _: u8, _: u64, _: u64) -> Result<()> {
            unimplemented!()
        }
        async fn create_marker(&self, _: &str, _: Bytes) -> Result<()> {
            unimplemented!()
        }
        async fn delete_marker(&self, _: &str) -> Result<()> {
            unimplemented!()
        }
    }

    #[test]
    fn a_request_in_flight_ends_when_stopped_and_later_ones_at_once() {
        let stop = Arc::new(Stop::default());
        let store = Arc::new(Stoppable::new(Arc::new(Silent), Arc::clone(&stop)));
        let waiting = {
            let store = Arc::clone(&store);
            std::thread::spawn(move || block_on(store.list(1)))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(!waiting.is_finished(), "a silent store holds the request");
        stop.stop();
        let ended = waiting.join().unwrap();
        assert!(matches!(ended, Err(Error::Transient { op: "LIST", .. })), "{ended:?}");
        assert!(block_on(store.list(2)).is_err(), "after the stop: at once");
    }
}
