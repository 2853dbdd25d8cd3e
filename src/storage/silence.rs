//! A request the store has stopped answering is abandoned, however long the request may
//! legitimately take.
//!
//! object_store bounds a request only by one whole-request timeout per client, which must
//! be long (minutes) for a multi-GB snapshot to go up at all. A store that accepts a
//! request and then goes silent (a hung load balancer, a brownout, a half-open
//! connection) therefore held that request for 10 minutes: the database's uploads, one
//! request at a time, stopped for as long after the store was back, and a read replica's
//! page read held the application's query as long. Every request of the HTTP stores goes
//! through [`Watchful`], which ends it as a timeout (retried like a dropped connection)
//! when the store has been silent too long:
//! - before the response's head: [`silence_limit`] plus the time the request body needs
//!   at [`SLOWEST_UPLOAD`] (a 1 MiB level-0 file gets 64 s more than an empty request);
//! - between two pieces of the response body, while the caller waits for one: the limit.
//!
//! A slow store that keeps answering keeps its requests; only silence ends them.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use object_store::client::{
    HttpClient, HttpError, HttpErrorKind, HttpRequest, HttpResponse, HttpResponseBody, HttpService,
};

/// How long the store may stay silent when `LITESTREAM_STORE_SILENCE_LIMIT` does not say:
/// S3 answers in well under a second when it is well; 30 s is far outside a healthy
/// store's tail and short beside the 10 minutes it replaces.
const DEFAULT_SILENCE_LIMIT: Duration = Duration::from_secs(30);

/// The upload rate (bytes/s) a request body is given time for before its answer is due:
/// 16 KiB/s. object_store hands hyper the body whole, so its progress is not seen here:
/// this rate is what tells a slow upload from a silent store, and it must hold for each
/// of the four parts of an upload in parts going up at once over a slow uplink (a
/// 1 Mbit/s link gives each ~32 KiB/s). Above ~9 MiB the due time passes the
/// whole-request timeout (`http.rs`, 10 minutes), which then bounds the request as
/// before; most uploads are a few KiB (a level-0 file is one sync interval of changes)
/// and learn of a silent store within the limit and a few seconds.
pub(crate) const SLOWEST_UPLOAD: u64 = 16 * 1024;

/// The longest silence tolerated: `LITESTREAM_STORE_SILENCE_LIMIT` (a duration such as
/// `30s`; an unreadable value is reported once and the default used), else 30 s.
pub(crate) fn silence_limit() -> Duration {
    static LIMIT: OnceLock<Duration> = OnceLock::new();
    *LIMIT.get_or_init(|| match std::env::var("LITESTREAM_STORE_SILENCE_LIMIT") {
        Err(_) => DEFAULT_SILENCE_LIMIT,
        Ok(text) => match crate::config::parse_duration(&text) {
            Ok(limit) if !limit.is_zero() => limit,
            _ => {
                tracing::warn!(value = %text, "LITESTREAM_STORE_SILENCE_LIMIT is not a duration above zero; using 30s");
                DEFAULT_SILENCE_LIMIT
            }
        },
    })
}

/// The time a request with a `body_len`-byte body may wait for the response's head.
pub(crate) fn answer_due(limit: Duration, body_len: u64) -> Duration {
    limit + Duration::from_secs_f64(body_len as f64 / SLOWEST_UPLOAD as f64)
}

/// An HTTP client whose requests end when the store goes silent (see the module).
#[derive(Debug)]
pub(crate) struct Watchful {
    pub(crate) inner: HttpClient,
    pub(crate) limit: Duration,
}

#[async_trait]
impl HttpService for Watchful {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let due = answer_due(self.limit, req.body().content_length() as u64);
        match tokio::time::timeout(due, self.inner.execute(req)).await {
            Ok(Ok(response)) => {
                let limit = self.limit;
                Ok(response.map(|body| HttpResponseBody::new(QuietBody::new(body, limit))))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(silent(format!("no answer from the store within {due:?}"))),
        }
    }
}

/// Requests abandoned in this process because the store went silent.
static SILENT_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// How many requests this process abandoned because the store went silent
/// (`litestream_status()`'s `engine.silent_requests`): a count that grows says the
/// store, or something in front of it, is holding requests without answering.
pub fn silent_requests() -> u64 {
    SILENT_REQUESTS.load(Ordering::Relaxed)
}

fn silent(message: String) -> HttpError {
    SILENT_REQUESTS.fetch_add(1, Ordering::Relaxed);
    tracing::debug!("abandoning a request: {message}");
    // "timed out" in the text as well as the kinds: both are how a timeout is recognised
    // as worth retrying (storage/error.rs) through object_store's wrappers.
    HttpError::new(
        HttpErrorKind::Timeout,
        std::io::Error::new(std::io::ErrorKind::TimedOut, format!("timed out: {message}")),
    )
}

/// A response body that fails when no piece of it arrives within the limit while its
/// reader waits. Time the reader spends elsewhere does not count: the clock starts when a
/// poll finds nothing ready.
struct QuietBody {
    inner: HttpResponseBody,
    limit: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: bool,
}

impl QuietBody {
    fn new(inner: HttpResponseBody, limit: Duration) -> QuietBody {
        QuietBody {
            inner,
            limit,
            timer: Box::pin(tokio::time::sleep(limit)),
            armed: false,
        }
    }
}

impl Body for QuietBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame);
        }
        if !this.armed {
            this.armed = true;
            let deadline = tokio::time::Instant::now() + this.limit;
            this.timer.as_mut().reset(deadline);
        }
        match this.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let limit = this.limit;
                Poll::Ready(Some(Err(silent(format!(
                    "the store sent nothing for {limit:?} mid-body"
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upload_gets_time_for_its_body_at_the_slowest_rate() {
        let limit = Duration::from_secs(30);
        assert_eq!(answer_due(limit, 0), limit);
        assert_eq!(answer_due(limit, 1 << 20), limit + Duration::from_secs(64));
    }

    #[test]
    fn a_body_that_goes_quiet_fails_as_a_timeout_and_one_that_trickles_does_not() {
        use futures::StreamExt;
        crate::runtime::block_on(async {
            // Three pieces 30 ms apart with a 200 ms limit: slow, never silent.
            let (tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, HttpError>>(1);
            let trickle = tokio::spawn(async move {
                let mut tx = tx;
                for _ in 0..3 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"x"))))
                        .await
                        .unwrap();
                }
            });
            let body = http_body_util::StreamBody::new(rx);
            let quiet = QuietBody::new(HttpResponseBody::new(body), Duration::from_millis(200));
            let got = HttpResponseBody::new(quiet).bytes().await.unwrap();
            assert_eq!(&got[..], b"xxx");
            trickle.await.unwrap();

            // One piece, then nothing (the sender is held open): the read fails at the limit.
            let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, HttpError>>(1);
            futures::SinkExt::send(&mut tx, Ok(Frame::data(Bytes::from_static(b"x"))))
                .await
                .unwrap();
            let quiet = QuietBody::new(
                HttpResponseBody::new(http_body_util::StreamBody::new(rx)),
                Duration::from_millis(100),
            );
            let started = std::time::Instant::now();
            let mut stream = HttpResponseBody::new(quiet).bytes_stream();
            assert!(stream.next().await.unwrap().is_ok());
            let err = stream.next().await.unwrap().unwrap_err();
            assert_eq!(err.kind(), HttpErrorKind::Timeout);
            assert!(err.to_string().contains("timed out") || format!("{err:?}").contains("timed out"));
            assert!(started.elapsed() >= Duration::from_millis(100));
            drop(tx);
        });
    }
}
