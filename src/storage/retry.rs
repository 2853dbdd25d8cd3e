//! Retrying transient storage errors with capped exponential backoff and jitter.
//!
//! Only [`Error::is_transient`] errors are retried: a missing object, a conflicting writer
//! or a configuration problem does not get better by asking again.

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use super::error::{Error, Result};
use super::store::ReplicaStore;

/// How long and how often to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay before the first retry.
    pub initial: Duration,
    /// Upper bound of any one delay.
    pub max_delay: Duration,
    /// Give up after this many attempts in total (`None`: no limit).
    pub max_attempts: Option<u32>,
    /// Give up when the next attempt would start later than this after the first one
    /// (`None`: no limit).
    pub deadline: Option<Duration>,
}

impl RetryPolicy {
    /// What an open's requests retry with: the application waits for them, so a few
    /// quick attempts within 5 s ride out a dropped connection or a restarting server.
    /// The deadline bounds them, not a count: five attempts spent 1.5 s, and an open
    /// during a NATS server's 2 s restart failed on its header GET (CI, 2026-12-08).
    pub fn at_open() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
            max_attempts: Some(10),
            deadline: Some(Duration::from_secs(5)),
        }
    }
}

impl Default for RetryPolicy {
    /// 100 ms doubling up to 10 s, at most 8 attempts and 1 minute.
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            max_attempts: Some(8),
            deadline: Some(Duration::from_secs(60)),
        }
    }
}

impl RetryPolicy {
    /// The nominal (pre-jitter) delay after failed attempt number `attempt` (1-based).
    fn nominal_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1).min(31)).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max_delay)
    }

    /// "Equal jitter": between half and all of the nominal delay, so concurrent clients
    /// spread out while each still backs off.
    fn delay(&self, attempt: u32) -> Duration {
        let d = self.nominal_delay(attempt);
        let half = d / 2;
        half + half.mul_f64(random_unit())
    }
}

/// Runs `op` until it succeeds, fails with a non-transient error, or `policy` runs out;
/// then returns its last result.
pub async fn retry<T, F, Fut>(mut op: F, policy: &RetryPolicy) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let err: Error = match op().await {
            Ok(v) => return Ok(v),
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => e,
        };
        if policy.max_attempts.is_some_and(|max| attempt >= max) {
            return Err(err);
        }
        let delay = policy.delay(attempt);
        if policy.deadline.is_some_and(|limit| start.elapsed() + delay > limit) {
            return Err(err);
        }
        tracing::debug!(attempt, delay_ms = delay.as_millis() as u64, error = %err, "retrying storage operation");
        tokio::time::sleep(delay).await;
    }
}

/// The longest the application waits for one answer of the store, where it waits at all
/// (an open's check of the replica, a close's page-size check): a store that accepts
/// connections and never answers held an open for object_store's whole-request timeout
/// (10 minutes, measured). With saved state the open then goes on from it, as when the
/// store refuses connections. Shorter than the silence limit every HTTP request has
/// (`silence.rs`, 30 s), which is set for background work.
pub const APPLICATION_WAIT: Duration = Duration::from_secs(10);

/// `op` on `store`, given up as a transient error when it has not answered within
/// `limit`: bounds a wait of the application (retries included) below what the store's
/// own requests may take.
pub async fn within<T>(
    limit: Duration,
    store: &str,
    op: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result,
        Err(_) => Err(Error::Transient {
            store: store.to_string(),
            op,
            key: String::new(),
            message: format!("no answer within {limit:?}"),
        }),
    }
}

/// `op` on `store` where the application waits for it: [`within`] [`APPLICATION_WAIT`].
pub fn while_application_waits<T>(
    store: &dyn ReplicaStore,
    op: &'static str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    crate::runtime::block_on(within(APPLICATION_WAIT, store.describe(), op, fut))
}

/// `op`, and when it has not answered within `delay`, `op` once more beside it (`op(true)`):
/// the first success wins and the other is dropped, which abandons its request. A store's
/// latency has a tail (one GET in thousands held for seconds by a slow disk, a hung
/// connection, a stalled proxy), and a second request rarely lands in it again: a reader
/// then waits `delay` plus one ordinary answer instead of the silence limit.
///
/// At most one second request. A transient error of one while the other is still out
/// waits for the other (it may yet answer); a permanent one (a missing object, a refused
/// request) is the answer, as the other would get it too. When both fail, the first error
/// is returned, for [`retry`] to judge. `delay` `None`: `op(false)` alone.
pub async fn hedged<T, F, Fut>(delay: Option<Duration>, mut op: F) -> Result<T>
where
    F: FnMut(bool) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let first = op(false);
    let Some(delay) = delay else {
        return first.await;
    };
    tokio::pin!(first);
    tokio::select! {
        answer = &mut first => return answer,
        _ = tokio::time::sleep(delay) => {}
    }
    let second = op(true);
    tokio::pin!(second);
    // Whichever answers first; a transient failure waits for the other.
    tokio::select! {
        answer = &mut first => match answer {
            Err(e) if e.is_transient() => second.await.map_err(|_| e),
            answer => answer,
        },
        answer = &mut second => match answer {
            Err(e) if e.is_transient() => first.await.map_err(|_| e),
            answer => answer,
        },
    }
}

/// A uniform value in [0, 1). Jitter needs no real randomness; std's per-instance hasher keys
/// are random enough and save a dependency.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn transient() -> Error {
        Error::Transient {
            store: "t".into(),
            op: "GET",
            key: "k".into(),
            message: "503".into(),
        }
    }

    fn fast(max_attempts: Option<u32>, deadline: Option<Duration>) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_attempts,
            deadline,
        }
    }

    #[test]
    fn within_gives_up_on_an_operation_that_does_not_answer() {
        let started = Instant::now();
        let got: Result<()> = crate::runtime::block_on(within(Duration::from_millis(50), "s", "LIST", async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }));
        assert!(got.as_ref().is_err_and(|e| e.is_transient()), "{got:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        let fast: Result<u8> = crate::runtime::block_on(within(Duration::from_secs(5), "s", "GET", async { Ok(3) }));
        assert_eq!(fast.unwrap(), 3);
    }

    /// An operation for [`hedged`]: the first request answers `first` after `first_ms`,
    /// the second `second` after `second_ms`; `calls` counts the requests made.
    fn two_requests(
        calls: &AtomicU32,
        (first_ms, first): (u64, Result<u8>),
        (second_ms, second): (u64, Result<u8>),
    ) -> impl FnMut(bool) -> std::pin::Pin<Box<dyn Future<Output = Result<u8>>>> + '_ {
        move |hedge| {
            calls.fetch_add(1, Ordering::SeqCst);
            let (ms, answer) = if hedge {
                (second_ms, second.clone())
            } else {
                (first_ms, first.clone())
            };
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                answer
            })
        }
    }

    fn not_found() -> Error {
        Error::NotFound {
            store: "t".into(),
            key: "k".into(),
        }
    }

    #[tokio::test]
    async fn an_answer_within_the_delay_is_not_hedged() {
        let calls = AtomicU32::new(0);
        let ms = Duration::from_millis;
        let got = hedged(Some(ms(500)), two_requests(&calls, (5, Ok(1)), (0, Ok(2)))).await;
        assert_eq!((got, calls.load(Ordering::SeqCst)), (Ok(1), 1));
        // No delay: no hedge, however long the request takes.
        let calls = AtomicU32::new(0);
        let got = hedged(None, two_requests(&calls, (60, Ok(1)), (0, Ok(2)))).await;
        assert_eq!((got, calls.load(Ordering::SeqCst)), (Ok(1), 1));
    }

    #[tokio::test]
    async fn a_request_held_past_the_delay_is_hedged_and_the_first_answer_wins() {
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let got = hedged(
            Some(Duration::from_millis(30)),
            two_requests(&calls, (60_000, Ok(1)), (10, Ok(2))),
        )
        .await;
        assert_eq!((got, calls.load(Ordering::SeqCst)), (Ok(2), 2));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // The first request answers before its hedge does: the first one's answer.
        let calls = AtomicU32::new(0);
        let got = hedged(
            Some(Duration::from_millis(20)),
            two_requests(&calls, (50, Ok(1)), (60_000, Ok(2))),
        )
        .await;
        assert_eq!((got, calls.load(Ordering::SeqCst)), (Ok(1), 2));
    }

    #[tokio::test]
    async fn a_transient_failure_waits_for_the_other_request_and_a_permanent_one_does_not() {
        let ms = Some(Duration::from_millis(20));
        // The first fails (a timeout) while its hedge is out: the hedge's answer.
        let calls = AtomicU32::new(0);
        let got = hedged(ms, two_requests(&calls, (50, Err(transient())), (100, Ok(2)))).await;
        assert_eq!(got, Ok(2));
        // Both fail: the first failure, for retry to judge.
        let first = Error::Transient {
            store: "t".into(),
            op: "GET",
            key: "first".into(),
            message: "timed out".into(),
        };
        let calls = AtomicU32::new(0);
        let got = hedged(
            ms,
            two_requests(&calls, (50, Err(first.clone())), (100, Err(transient()))),
        )
        .await;
        assert_eq!(got, Err(first));
        // A missing object is missing for the hedge too: no waiting for it.
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let got = hedged(ms, two_requests(&calls, (50, Err(not_found())), (60_000, Ok(2)))).await;
        assert!(got.is_err_and(|e| e.is_not_found()));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: None,
            deadline: None,
        };
        let nominal: Vec<u64> = (1..=6).map(|a| p.nominal_delay(a).as_millis() as u64).collect();
        assert_eq!(nominal, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.nominal_delay(u32::MAX), Duration::from_secs(1));
        for a in 1..10 {
            let d = p.delay(a);
            assert!(d >= p.nominal_delay(a) / 2 && d <= p.nominal_delay(a), "{d:?}");
        }
    }

    #[tokio::test]
    async fn retries_transient_until_success() {
        let calls = AtomicU32::new(0);
        let r = retry(
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 3 {
                    Err(transient())
                } else {
                    Ok(7)
                }
            },
            &fast(Some(10), None),
        )
        .await;
        assert_eq!(r, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn stops_at_max_attempts_and_on_permanent_errors() {
        let calls = AtomicU32::new(0);
        let r: Result<()> = retry(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(transient())
            },
            &fast(Some(3), None),
        )
        .await;
        assert!(r.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<()> = retry(
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err(Error::NotFound {
                    store: "t".into(),
                    key: "k".into(),
                })
            },
            &fast(Some(3), None),
        )
        .await;
        assert!(r.unwrap_err().is_not_found());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn stops_at_the_deadline() {
        let start = Instant::now();
        let r: Result<()> = retry(
            || async { Err(transient()) },
            &fast(None, Some(Duration::from_millis(30))),
        )
        .await;
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
