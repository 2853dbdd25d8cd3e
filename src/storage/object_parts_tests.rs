//! `ObjectReplica`'s uploads in parts, over object_store's in-memory store behind a
//! stand-in for the network that can let another writer in, fail a part, or never answer.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions,
    PutPayload, PutResult, UploadPart,
};

use super::error::Redactor;
use super::layout::{Layout, LevelStyle};
use super::multipart::Multipart;
use super::object::ObjectReplica;
use super::store::ReplicaStore;
use crate::runtime::block_on;

const MIB: usize = 1 << 20;

/// What the stand-in does besides passing requests on.
#[derive(Clone, Default)]
enum Twist {
    #[default]
    None,
    /// Another writer stores these bytes under the key while our parts are in flight.
    CreateDuringParts(Bytes),
    /// Another writer's completion of these bytes lands right after ours.
    OverwriteAfterComplete(Bytes),
    /// The part with this index fails.
    FailPart(usize),
    /// The part with this index never gets an answer.
    HangPart(usize),
}

#[derive(Debug, Default)]
struct Seen {
    parts: AtomicUsize,
    started: AtomicUsize,
    aborted: AtomicBool,
}

#[derive(Debug)]
struct StandIn {
    inner: Arc<InMemory>,
    twist: Mutex<Twist>,
    seen: Arc<Seen>,
}

impl std::fmt::Debug for Twist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Twist")
    }
}

impl std::fmt::Display for StandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stand-in")
    }
}

#[derive(Debug)]
struct Parts {
    inner: Box<dyn MultipartUpload>,
    store: Arc<InMemory>,
    key: Path,
    twist: Twist,
    seen: Arc<Seen>,
    index: usize,
}

#[async_trait]
impl MultipartUpload for Parts {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let index = self.index;
        self.index += 1;
        self.seen.parts.fetch_add(1, Ordering::SeqCst);
        match &self.twist {
            Twist::FailPart(i) if *i == index => Box::pin(async {
                Err(object_store::Error::Generic {
                    store: "stand-in",
                    source: "connection reset".into(),
                })
            }),
            Twist::HangPart(i) if *i == index => Box::pin(futures::future::pending()),
            Twist::CreateDuringParts(theirs) if index == 0 => {
                let (store, key, theirs) = (Arc::clone(&self.store), self.key.clone(), theirs.clone());
                let part = self.inner.put_part(data);
                Box::pin(async move {
                    store.put(&key, theirs.into()).await?;
                    part.await
                })
            }
            _ => self.inner.put_part(data),
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let done = self.inner.complete().await?;
        if let Twist::OverwriteAfterComplete(theirs) = &self.twist {
            self.store.put(&self.key, theirs.clone().into()).await?;
        }
        Ok(done)
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.seen.aborted.store(true, Ordering::SeqCst);
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for StandIn {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.seen.started.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(Parts {
            inner: self.inner.put_multipart_opts(location, opts).await?,
            store: Arc::clone(&self.inner),
            key: location.clone(),
            twist: self.twist.lock().unwrap().clone(),
            seen: Arc::clone(&self.seen),
            index: 0,
        }))
    }
    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }
    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

/// A replica in parts of 5 MiB above 5 MiB, with `twist`.
fn replica(twist: Twist) -> (ObjectReplica, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let store = StandIn {
        inner: Arc::new(InMemory::new()),
        twist: Mutex::new(twist),
        seen: Arc::clone(&seen),
    };
    let layout = Layout::new(Path::from("db"), LevelStyle::S3Hex);
    let multipart = Multipart {
        threshold: 5 * MIB as u64,
        part_size: 5 * MIB as u64,
    };
    let replica = ObjectReplica::new(
        Arc::new(store),
        layout,
        Some("litestream-timestamp"),
        "stand-in://db".into(),
        Redactor::default(),
    )
    .with_multipart(multipart);
    (replica, seen)
}

/// An LTX-looking file of `len` bytes (magic first, checksum-like trailer).
fn file(len: usize, seed: u8) -> Bytes {
    let mut v: Vec<u8> = (0..len).map(|i| ((i * 7) as u8) ^ seed).collect();
    v[..4].copy_from_slice(b"LTX1");
    v[len - 8..].fill(0x80 | seed);
    v.into()
}

#[test]
fn a_large_file_goes_up_in_parts_with_its_timestamp() {
    let (r, seen) = replica(Twist::None);
    let data = file(12 * MIB + 3, 1);
    block_on(r.put_new(0, 1, 9, data.clone(), 1_700_000_000_123)).unwrap();
    assert_eq!(seen.started.load(Ordering::SeqCst), 1);
    assert_eq!(seen.parts.load(Ordering::SeqCst), 3, "5 + 5 + 2 MiB");
    assert_eq!(block_on(r.get(0, 1, 9)).unwrap(), data);
    assert_eq!(
        block_on(r.timestamp(0, 1, 9)).unwrap(),
        1_700_000_000_123,
        "metadata kept"
    );
    // A file at the threshold, and any overwrite of one, keep their single PUT.
    block_on(r.put_new(0, 10, 10, file(5 * MIB, 2), 0)).unwrap();
    assert_eq!(seen.started.load(Ordering::SeqCst), 1);
    block_on(r.put(1, 1, 9, data.clone(), 5)).unwrap();
    assert_eq!(
        seen.started.load(Ordering::SeqCst),
        2,
        "a large overwrite goes in parts too"
    );
    assert_eq!(block_on(r.get(1, 1, 9)).unwrap(), data);
}

#[test]
fn a_create_in_parts_of_a_taken_name_uploads_nothing() {
    let (r, seen) = replica(Twist::None);
    let ours = file(11 * MIB, 1);
    block_on(r.put_new(0, 1, 9, ours.clone(), 0)).unwrap();
    // Our own earlier write (its answer lost): success, without a second upload.
    block_on(r.put_new(0, 1, 9, ours.clone(), 0)).unwrap();
    assert_eq!(seen.started.load(Ordering::SeqCst), 1);
    // Another writer's file: refused, kept.
    let err = block_on(r.put_new(0, 1, 9, file(11 * MIB, 2), 0)).unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert_eq!(seen.started.load(Ordering::SeqCst), 1);
    assert_eq!(block_on(r.get(0, 1, 9)).unwrap(), ours);
}

#[test]
fn a_file_created_while_the_parts_go_up_is_not_replaced() {
    let theirs = file(11 * MIB, 2);
    let (r, seen) = replica(Twist::CreateDuringParts(theirs.clone()));
    let err = block_on(r.put_new(0, 1, 9, file(11 * MIB, 1), 0)).unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert!(
        seen.aborted.load(Ordering::SeqCst),
        "our upload was aborted, not completed"
    );
    assert_eq!(block_on(r.get(0, 1, 9)).unwrap(), theirs);
}

#[test]
fn a_file_completed_over_ours_is_found() {
    let theirs = file(11 * MIB, 2);
    let (r, _) = replica(Twist::OverwriteAfterComplete(theirs.clone()));
    let err = block_on(r.put_new(0, 1, 9, file(11 * MIB, 1), 0)).unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    // The same bytes completed over ours (a clone of this primary) are ours.
    let (r, _) = replica(Twist::OverwriteAfterComplete(theirs.clone()));
    block_on(r.put_new(0, 1, 9, theirs.clone(), 0)).unwrap();
}

#[test]
fn a_failed_part_aborts_the_upload() {
    let (r, seen) = replica(Twist::FailPart(1));
    let err = block_on(r.put_new(0, 1, 9, file(16 * MIB, 1), 0)).unwrap_err();
    assert!(!err.is_already_exists(), "{err}");
    assert!(seen.aborted.load(Ordering::SeqCst));
    assert!(block_on(r.head(0, 1, 9)).is_err(), "nothing stored");
}

#[test]
fn an_upload_given_up_half_way_aborts_itself() {
    let (r, seen) = replica(Twist::HangPart(2));
    let data = file(16 * MIB, 1);
    // The timer needs the runtime: made inside the future block_on runs.
    let gave_up = block_on(async { tokio::time::timeout(Duration::from_millis(200), r.put(0, 1, 9, data, 0)).await });
    assert!(gave_up.is_err(), "the part never answers");
    // The abort runs in the background once the upload is dropped.
    for _ in 0..100 {
        if seen.aborted.load(Ordering::SeqCst) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("a dropped upload was not aborted");
}
