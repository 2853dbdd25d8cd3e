//! `nats://host:port/bucket[/path]` — LTX files in a NATS JetStream object store bucket.
//!
//! Keys are Litestream's (`<path>/ltx/<level>/<name>`; with no path, `ltx/<level>/<name>` at
//! the bucket root, which is where Litestream 0.5.17 puts them), and each object carries the
//! LTX header timestamp in its `Litestream-Timestamp` header, so either tool reads the other's
//! replica. We speak the object store layout (NATS ADR-20, see `meta.rs`) ourselves rather
//! than through a client library's object store module, for three things those lack:
//! - a conditional create: the metadata message of a new object is published with
//!   `Nats-Expected-Last-Subject-Sequence`, which the server checks atomically (`put_new`);
//! - ranged reads: only the chunk messages covering a range are fetched (`chunks.rs`);
//! - errors instead of panics when the server goes away in the middle of a read.
//!
//! The connection is made at the first request, not at open, like the HTTP stores; the
//! bucket is created then if it does not exist (Litestream itself requires it to exist).

mod chunks;
mod client;
mod connect;
mod errors;
mod meta;
mod nkey;
mod proto;
mod session;
mod settings;
mod write;

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use tokio::sync::OnceCell;

use super::error::{Error, Result};
use super::layout::Layout;
use super::name::{parse_name, unfinished_name};
use super::options::StoreOptions;
use super::store::{header_timestamp, LtxObject, ReplicaStore};
use super::target::{EnvFn, Target};
use super::timestamp::{format_rfc3339_nano, parse_rfc3339_ms};
use chunks::{ChunkMap, MapCache};
use errors::Ctx;
pub use meta::TIMESTAMP_HEADER as NATS_TIMESTAMP_HEADER;
use meta::{digest, MetaOptions, ObjectMeta, Subjects};
use proto::Headers;
use session::{Session, Which, WRONG_LAST_SEQUENCE};
use settings::Settings;

/// How long any one request may take before it counts as a transient failure, on top of
/// one second per MiB moved.
const BASE_TIMEOUT: Duration = Duration::from_secs(30);
/// Chunk publishes in flight at once during an upload.
const PUBLISH_WINDOW: usize = 16;
/// Chunk fetches in flight at once during a ranged read.
const FETCH_PARALLEL: usize = 8;

/// A replica in a NATS JetStream object store bucket.
pub struct NatsReplica {
    settings: Settings,
    subjects: Subjects,
    session: OnceCell<Session>,
    maps: MapCache,
}

impl std::fmt::Debug for NatsReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsReplica")
            .field("name", &self.settings.name)
            .field("bucket", &self.settings.bucket)
            .field("layout", &self.settings.layout)
            .field("auth", &self.settings.auth)
            .finish()
    }
}

pub(crate) fn open(t: &Target, opts: &StoreOptions, env: EnvFn<'_>) -> Result<NatsReplica> {
    let settings = Settings::parse(t, opts, env)?;
    Ok(NatsReplica {
        subjects: Subjects::new(&settings.bucket),
        settings,
        session: OnceCell::new(),
        maps: MapCache::new(),
    })
}

impl NatsReplica {
    /// The key layout, for tests and diagnostics.
    pub fn layout(&self) -> &Layout {
        &self.settings.layout
    }

    fn ctx<'a>(&'a self, op: &'static str, key: &'a str) -> Ctx<'a> {
        Ctx {
            store: &self.settings.name,
            op,
            key,
            redactor: &self.settings.redactor,
        }
    }

    fn key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.settings.layout.key(level, min_txid, max_txid).to_string()
    }

    async fn session(&self, ctx: Ctx<'_>) -> Result<&Session> {
        let s = self
            .session
            .get_or_try_init(|| Session::open(&self.settings, &self.subjects, ctx))
            .await?;
        // While the client is reconnecting a request would only wait for its timeout; say
        // at once what is wrong, and let the caller's retries wait for the connection.
        if !s.client.is_connected() {
            return Err(ctx.transient(&match s.client.reconnect_error() {
                Some(why) => format!("not connected to the NATS server (reconnecting; the last attempt: {why})"),
                None => "not connected to the NATS server (reconnecting)".to_string(),
            }));
        }
        Ok(s)
    }

    /// Runs `f` with a time limit of [`BASE_TIMEOUT`] plus a second per MiB of `bytes`, and
    /// gives up at once if the connection drops meanwhile (every step of an operation is
    /// safe to repeat, so the caller's retry starts over).
    async fn timed<T>(&self, ctx: Ctx<'_>, bytes: u64, f: impl Future<Output = Result<T>>) -> Result<T> {
        let limit = BASE_TIMEOUT + Duration::from_secs(bytes >> 20);
        let lost = async {
            match self.session.get() {
                Some(s) => s.lost().await,
                None => std::future::pending().await,
            }
        };
        let result = tokio::select! {
            r = tokio::time::timeout(limit, f) => r.unwrap_or_else(|_| Err(ctx.timed_out(limit))),
            () = lost => Err(ctx.transient("lost the connection to the NATS server during the request")),
        };
        match result {
            Err(e) if may_be_missing_stream(&e) => Err(self.recreate_missing_bucket(ctx, e).await),
            other => other,
        }
    }

    /// After an error that a missing stream gives, creates the bucket again if it is gone
    /// and says so; otherwise (JetStream restarting also answers "no responders") the
    /// error stands. The replica then holds nothing older than what comes next: the
    /// primary's check of its chain re-seeds it with a snapshot.
    async fn recreate_missing_bucket(&self, ctx: Ctx<'_>, error: Error) -> Error {
        let Some(s) = self.session.get() else {
            return error;
        };
        match s.recreate_if_missing(&self.settings, &self.subjects, ctx).await {
            Ok(true) => {
                let message = format!(
                    "the bucket {} did not exist (its stream was deleted, or the server lost its storage): \
                     created it again, empty",
                    self.settings.bucket
                );
                tracing::warn!(store = %self.settings.name, "{message}");
                ctx.transient(&message)
            }
            Ok(false) | Err(_) => error,
        }
    }

    /// The last metadata message of `name` and its stream sequence; `None` if the name was
    /// never written. A deleted object is returned (with `deleted` set).
    async fn meta(&self, s: &Session, name: &str, ctx: Ctx<'_>) -> Result<Option<(u64, ObjectMeta)>> {
        let Some(m) = s.get(Which::LastOn(&self.subjects.meta(name)), ctx).await? else {
            return Ok(None);
        };
        let meta: ObjectMeta = serde_json::from_slice(&m.payload)
            .map_err(|e| ctx.invalid(format!("object metadata is not valid JSON: {e}")))?;
        Ok(Some((m.sequence, meta)))
    }

    /// The live metadata of `name`: NotFound when missing or deleted, InvalidData for links.
    async fn live_meta(&self, s: &Session, name: &str, ctx: Ctx<'_>) -> Result<ObjectMeta> {
        match self.meta(s, name, ctx).await? {
            Some((_, m)) if !m.deleted => {
                if m.is_link() {
                    return Err(ctx.invalid("the object is a link; links are not followed".into()));
                }
                Ok(m)
            }
            _ => Err(ctx.not_found()),
        }
    }

    /// The whole object, streamed by an ordered consumer over its chunk subject, checked
    /// against the size, chunk count and digest its metadata declares.
    async fn read_all(&self, s: &Session, meta: &ObjectMeta, ctx: Ctx<'_>) -> Result<Bytes> {
        if meta.chunks == 0 {
            return match meta.size {
                0 => Ok(Bytes::new()),
                n => Err(ctx.invalid(format!("metadata says {n} bytes in no chunks"))),
            };
        }
        let mut out = BytesMut::with_capacity(meta.size as usize);
        let mut chunks = 0u64;
        s.consume(self.subjects.chunks(&meta.nuid), false, false, ctx, |_, m| {
            chunks += 1;
            out.extend_from_slice(&m.payload);
            Ok(())
        })
        .await?;
        if chunks != meta.chunks || out.len() as u64 != meta.size {
            return Err(ctx.invalid(format!(
                "read {} bytes in {chunks} chunks, metadata says {} bytes in {}",
                out.len(),
                meta.size,
                meta.chunks
            )));
        }
        check_digest(meta, &out, ctx)?;
        Ok(out.freeze())
    }

    /// The chunk map of the live version of `name` (see `chunks.rs`).
    async fn chunk_map(&self, s: &Session, name: &str, ctx: Ctx<'_>) -> Result<(Arc<ChunkMap>, Option<Bytes>)> {
        if let Some(m) = self.maps.get(name) {
            return Ok((m, None));
        }
        let meta = self.live_meta(s, name, ctx).await?;
        let subject = self.subjects.chunks(&meta.nuid);
        let (map, data) = if meta.chunks == 1 {
            // One chunk (most level-0 files): fetching it is cheaper than asking where it is.
            let m = s
                .get(Which::FirstOn(&subject), ctx)
                .await?
                .ok_or_else(|| ctx.not_found())?;
            let map = ChunkMap::new(meta.nuid.clone(), &[(m.sequence, m.payload.len() as u64)]);
            (map, Some(m.payload))
        } else {
            let mut found = Vec::with_capacity(meta.chunks as usize);
            let mut bad = None;
            s.consume(subject, false, true, ctx, |seq, m| {
                match m.headers.get("Nats-Msg-Size").map(|v| v.parse::<u64>()) {
                    Some(Ok(size)) => found.push((seq, size)),
                    _ => bad = Some(seq),
                }
                Ok(())
            })
            .await?;
            if let Some(seq) = bad {
                return Err(ctx.invalid(format!("chunk at sequence {seq} has no Nats-Msg-Size header")));
            }
            (ChunkMap::new(meta.nuid.clone(), &found), None)
        };
        if map.sequences.len() as u64 != meta.chunks || map.size() != meta.size {
            // Chunks purged under us (deleted or overwritten since we read the metadata).
            return Err(ctx.transient(&format!(
                "object changed while reading it: found {} bytes in {} chunks, metadata says {} in {}; \
                 read again",
                map.size(),
                map.sequences.len(),
                meta.size,
                meta.chunks
            )));
        }
        let map = Arc::new(map);
        self.maps.put(name, Arc::clone(&map));
        Ok((map, data))
    }

    /// Bytes `range` of `name` from the chunks that hold them. `Ok(None)` when the cached map
    /// turned out stale (a chunk is gone), so the caller can rebuild it once.
    async fn read_range(&self, s: &Session, name: &str, range: &Range<u64>, ctx: Ctx<'_>) -> Result<Option<Bytes>> {
        let (map, single) = self.chunk_map(s, name, ctx).await?;
        if range.end > map.size() {
            return Err(ctx.invalid(format!("asked for bytes {range:?} of a {}-byte object", map.size())));
        }
        if let Some(data) = single {
            return Ok(Some(data.slice(range.start as usize..range.end as usize)));
        }
        let subject = self.subjects.chunks(&map.nuid);
        let pieces = map.pieces(range);
        let fetched: Vec<Option<Bytes>> = stream::iter(pieces)
            .map(|p| {
                let subject = &subject;
                async move {
                    let m = s.get(Which::Sequence(p.sequence), ctx).await?;
                    Ok::<_, Error>(match m {
                        Some(m) if &m.subject == subject && m.payload.len() as u64 == p.chunk_len => {
                            Some(m.payload.slice(p.take))
                        }
                        _ => None,
                    })
                }
            })
            .buffered(FETCH_PARALLEL)
            .try_collect()
            .await?;
        if fetched.iter().any(Option::is_none) {
            self.maps.forget(name);
            return Ok(None);
        }
        let mut out = BytesMut::with_capacity((range.end - range.start) as usize);
        for part in fetched.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        Ok(Some(out.freeze()))
    }
}

/// What a request to a bucket whose stream is gone fails with: publishes and direct gets
/// find no responders, API requests "stream not found" (JetStream error 10059).
fn may_be_missing_stream(e: &Error) -> bool {
    let text = e.to_string();
    text.contains("no responders") || text.contains("(10059)")
}

fn check_digest(meta: &ObjectMeta, data: &[u8], ctx: Ctx<'_>) -> Result<()> {
    match &meta.digest {
        Some(d) if d.starts_with("SHA-256=") => {
            let ours = digest(data);
            if ours.trim_end_matches('=') != d.trim_end_matches('=') {
                return Err(ctx.invalid(format!("digest mismatch: metadata says {d}, data has {ours}")));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_mtime(meta: &ObjectMeta) -> Option<SystemTime> {
    let ms = parse_rfc3339_ms(meta.mtime.as_deref()?)?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).ok()?))
}

#[async_trait]
impl ReplicaStore for NatsReplica {
    fn describe(&self) -> &str {
        &self.settings.name
    }

    fn file_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        self.key(level, min_txid, max_txid)
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxObject>> {
        let dir = self.settings.layout.level_dir(level).to_string();
        let ctx = self.ctx("LIST", &dir);
        self.timed(ctx, 0, async {
            let s = self.session(ctx).await?;
            let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            let mut files = Vec::new();
            // Every object's metadata in the bucket: the meta subjects are base64 of the whole
            // name, so the server cannot filter by prefix.
            s.consume(self.subjects.all_meta(), true, false, ctx, |_, m| {
                let Ok(meta) = serde_json::from_slice::<ObjectMeta>(&m.payload) else {
                    tracing::warn!(store = %self.settings.name, subject = %m.subject, "skipping unparsable object metadata");
                    return Ok(());
                };
                let Some(file) = meta.name.strip_prefix(&prefix) else {
                    return Ok(());
                };
                if meta.deleted {
                    return Ok(());
                }
                match parse_name(file) {
                    Some((min_txid, max_txid)) => files.push(LtxObject {
                        level,
                        min_txid,
                        max_txid,
                        size: meta.size,
                        last_modified: parse_mtime(&meta),
                    }),
                    None if unfinished_name(file) => {
                        tracing::debug!(store = %self.settings.name, key = %meta.name, "skipping a file its writer has not finished")
                    }
                    None => tracing::warn!(
                        store = %self.settings.name,
                        key = %meta.name,
                        "skipping object whose name is not an LTX file name (%016x-%016x.ltx)"
                    ),
                }
                Ok(())
            })
            .await?;
            files.sort_by_key(|f| (f.min_txid, f.max_txid));
            Ok(files)
        })
        .await
    }

    async fn get(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<Bytes> {
        let key = self.key(level, min_txid, max_txid);
        let ctx = self.ctx("GET", &key);
        let s = self.timed(ctx, 0, self.session(ctx)).await?;
        let meta = self.timed(ctx, 0, self.live_meta(s, &key, ctx)).await?;
        self.timed(ctx, meta.size, self.read_all(s, &meta, ctx)).await
    }

    async fn get_range(&self, level: u8, min_txid: u64, max_txid: u64, range: Range<u64>) -> Result<Bytes> {
        let key = self.key(level, min_txid, max_txid);
        let ctx = self.ctx("GET", &key);
        if range.start > range.end {
            return Err(ctx.invalid(format!("bad range {range:?}")));
        }
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        self.timed(ctx, range.end - range.start, async {
            let s = self.session(ctx).await?;
            for _ in 0..2 {
                if let Some(b) = self.read_range(s, &key, &range, ctx).await? {
                    return Ok(b);
                }
            }
            // Stale twice in a row: the object is being replaced or deleted right now.
            Err(ctx.transient("the object's chunks disappeared while reading it (being overwritten or deleted?)"))
        })
        .await
    }

    async fn head(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<LtxObject> {
        let key = self.key(level, min_txid, max_txid);
        let ctx = self.ctx("HEAD", &key);
        self.timed(ctx, 0, async {
            let s = self.session(ctx).await?;
            let meta = self.live_meta(s, &key, ctx).await?;
            Ok(LtxObject {
                level,
                min_txid,
                max_txid,
                size: meta.size,
                last_modified: parse_mtime(&meta),
            })
        })
        .await
    }

    async fn timestamp(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<i64> {
        let key = self.key(level, min_txid, max_txid);
        let ctx = self.ctx("HEAD", &key);
        let header = self
            .timed(ctx, 0, async {
                let s = self.session(ctx).await?;
                let meta = self.live_meta(s, &key, ctx).await?;
                Ok(meta.header(meta::TIMESTAMP_HEADER).map(str::to_string))
            })
            .await?;
        if let Some(v) = header {
            match parse_rfc3339_ms(&v) {
                Some(ms) => return Ok(ms),
                None => {
                    tracing::warn!(store = %self.settings.name, key = %key, value = %v, "unparsable timestamp header")
                }
            }
        }
        let b = self
            .get_range(level, min_txid, max_txid, 0..super::store::TIMESTAMP_PREFIX)
            .await?;
        header_timestamp(&b).map_err(|why| self.ctx("GET", &key).invalid(why))
    }

    async fn put_new(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let key = self.key(level, min_txid, max_txid);
        let ctx = self.ctx("PUT", &key);
        let size = data.len() as u64;
        self.timed(ctx, size, self.write(&key, data, timestamp_ms, true)).await
    }

    async fn put(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let key = self.key(level, min_txid, max_txid);
        let ctx = self.ctx("PUT", &key);
        let size = data.len() as u64;
        self.timed(ctx, size, self.write(&key, data, timestamp_ms, false)).await
    }

    async fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<()> {
        self.delete_name(&self.key(level, min_txid, max_txid)).await
    }

    async fn create_marker(&self, name: &str, data: Bytes) -> Result<()> {
        let key = self.settings.layout.marker(name).to_string();
        let ctx = self.ctx("PUT", &key);
        let size = data.len() as u64;
        self.timed(ctx, size, self.write(&key, data, now_ms(), true)).await
    }

    async fn delete_marker(&self, name: &str) -> Result<()> {
        self.delete_name(self.settings.layout.marker(name).as_ref()).await
    }
}
