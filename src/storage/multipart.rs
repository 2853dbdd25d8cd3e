//! Files too large for one PUT go up in parts: S3's multipart upload, Azure's blocks.
//!
//! S3 takes at most 5 GB in one PUT and Azure's Put Blob 5,000 MiB, so a database whose
//! compressed snapshot is larger could never be replicated with one. Above
//! [`Multipart::threshold`] (100 MiB unless `multipart_threshold` says) a file is sent as
//! parts of [`Multipart::part_size`] (16 MiB, grown so that no file needs more than
//! 10,000 parts: a 5 TB file goes in parts of 500 MiB), four at a time. Every part is a
//! slice of the caller's `Bytes` (usually a mapping of the staged file), never a copy.
//!
//! GCS keeps one PUT (it takes 5 TiB in one), as do `file://`, `memory://` and NATS.
//!
//! A failed upload is aborted so that its parts are not billed forever. A process killed
//! in the middle cannot abort: S3 keeps the parts until a lifecycle rule
//! (`AbortIncompleteMultipartUpload`) removes them; Azure drops uncommitted blocks after a
//! week by itself.
//!
//! object_store 0.12 cannot make the completion conditional (`If-None-Match: *` on
//! `CompleteMultipartUpload`, or on Azure's Put Block List), which the two-primaries check
//! relies on: `ObjectReplica::put_new` checks with HEADs around it instead (see there).

use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt};
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStore, PutMultipartOptions, PutResult};

const MIB: u64 = 1 << 20;

/// Files larger than this go up in parts unless the store says otherwise.
pub const DEFAULT_THRESHOLD: u64 = 100 * MIB;

/// Part size unless the store says otherwise (grown for files above 160 GiB).
pub const DEFAULT_PART_SIZE: u64 = 16 * MIB;

/// S3's smallest part (all but the last), and so ours.
pub const MIN_PART_SIZE: u64 = 5 * MIB;

/// Azure's largest block (4,000 MiB); S3's largest part (5 GiB) is above it.
pub const MAX_PART_SIZE: u64 = 4000 * MIB;

/// S3's most parts in one upload (Azure takes 50,000 blocks).
const MAX_PARTS: u64 = 10_000;

/// Parts sent at once by one upload.
const PARTS_IN_FLIGHT: usize = 4;

/// When and how a store uploads in parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Multipart {
    /// Files larger than this many bytes go up in parts.
    pub threshold: u64,
    /// The size of every part but the last, unless the file needs larger ones.
    pub part_size: u64,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart {
            threshold: DEFAULT_THRESHOLD,
            part_size: DEFAULT_PART_SIZE,
        }
    }
}

impl Multipart {
    /// From the store's options (`None`: the environment's, else the default), checked:
    /// parts from 5 MiB to 4,000 MiB, a threshold of at least 5 MiB.
    pub fn from_options(
        threshold: Option<u64>,
        part_size: Option<u64>,
        env: super::target::EnvFn<'_>,
    ) -> std::result::Result<Multipart, String> {
        let from_env = |name: &str| -> std::result::Result<Option<u64>, String> {
            match env(name).filter(|v| !v.trim().is_empty()) {
                Some(text) => crate::config::parse_size(&text)
                    .map(Some)
                    .map_err(|e| format!("{name}: {e}")),
                None => Ok(None),
            }
        };
        // Each value with the name it was given under: a bad LITESTREAM_MULTIPART_PART_SIZE
        // is not reported as a multipart_part_size nobody typed.
        let (threshold, threshold_name) = match threshold {
            Some(t) => (t, "multipart_threshold"),
            None => (
                from_env("LITESTREAM_MULTIPART_THRESHOLD")?.unwrap_or(DEFAULT_THRESHOLD),
                "LITESTREAM_MULTIPART_THRESHOLD",
            ),
        };
        let (part_size, part_size_name) = match part_size {
            Some(p) => (p, "multipart_part_size"),
            None => (
                from_env("LITESTREAM_MULTIPART_PART_SIZE")?.unwrap_or(DEFAULT_PART_SIZE),
                "LITESTREAM_MULTIPART_PART_SIZE",
            ),
        };
        if threshold < MIN_PART_SIZE {
            return Err(format!(
                "{threshold_name} must be at least 5MiB (S3's smallest part), not {threshold} bytes"
            ));
        }
        if !(MIN_PART_SIZE..=MAX_PART_SIZE).contains(&part_size) {
            return Err(format!(
                "{part_size_name} must be from 5MiB (S3's smallest part) to 4000MiB (Azure's largest \
                 block), not {part_size} bytes"
            ));
        }
        Ok(Multipart { threshold, part_size })
    }

    /// Whether a file of `len` bytes goes up in parts.
    pub fn applies(&self, len: u64) -> bool {
        len > self.threshold
    }

    /// The part size for a file of `len` bytes: ours, or larger (a whole MiB) when ours
    /// would need more than 10,000 parts.
    pub fn part_size_for(&self, len: u64) -> u64 {
        let fewest = len.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
        self.part_size.max(fewest)
    }

    /// How many parts a file of `len` bytes goes up in.
    pub fn parts(&self, len: u64) -> u64 {
        len.div_ceil(self.part_size_for(len)).max(1)
    }

    /// The requests one put of `len` bytes makes, for the request budget (`pacing.rs`):
    /// one, or for an upload in parts its start, its parts and its completion, and for a
    /// conditional create the three HEADs around them.
    pub fn requests(&self, len: u64, create: bool) -> u32 {
        if !self.applies(len) {
            return 1;
        }
        let heads = if create { 3 } else { 0 };
        u32::try_from(self.parts(len) + 2 + heads).unwrap_or(u32::MAX)
    }
}

/// One upload in parts under way. Dropped before [`Upload::complete`] or
/// [`Upload::abort`] (its future cancelled), it aborts itself in the background.
pub(crate) struct Upload {
    inner: Option<Box<dyn MultipartUpload>>,
    key: Path,
    store: String,
}

impl Upload {
    /// Starts an upload to `key` whose object will have `opts`' attributes (S3 sets them
    /// at the start, Azure at the completion). `store` names it in the log.
    pub(crate) async fn start(
        objects: &dyn ObjectStore,
        key: &Path,
        opts: PutMultipartOptions,
        store: &str,
    ) -> object_store::Result<Upload> {
        let inner = objects.put_multipart_opts(key, opts).await?;
        Ok(Upload {
            inner: Some(inner),
            key: key.clone(),
            store: store.to_string(),
        })
    }

    /// Sends `data` as parts of `part_size` bytes, [`PARTS_IN_FLIGHT`] at a time, in
    /// order (S3 numbers them as they are made). Each part is a slice of `data`.
    pub(crate) async fn send(&mut self, data: &Bytes, part_size: u64) -> object_store::Result<()> {
        let upload = self.inner.as_mut().expect("an upload is sent before it ends");
        let part_size = usize::try_from(part_size).unwrap_or(usize::MAX);
        let mut in_flight = FuturesUnordered::new();
        let mut offset = 0;
        while offset < data.len() {
            let end = data.len().min(offset.saturating_add(part_size));
            in_flight.push(upload.put_part(data.slice(offset..end).into()));
            offset = end;
            if in_flight.len() >= PARTS_IN_FLIGHT {
                in_flight.next().await.transpose()?;
            }
        }
        while let Some(done) = in_flight.next().await {
            done?;
        }
        Ok(())
    }

    /// Completes the upload: the object appears whole under its key. A failed completion
    /// is aborted.
    pub(crate) async fn complete(mut self) -> object_store::Result<PutResult> {
        let mut upload = self.inner.take().expect("an upload ends once");
        let done = upload.complete().await;
        if done.is_err() {
            abort_logged(upload, &self.key, &self.store).await;
        }
        done
    }

    /// Gives the upload up and asks the store to drop its parts.
    pub(crate) async fn abort(mut self) {
        if let Some(upload) = self.inner.take() {
            abort_logged(upload, &self.key, &self.store).await;
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let Some(upload) = self.inner.take() else {
            return;
        };
        let (key, store) = (self.key.clone(), self.store.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move { abort_logged(upload, &key, &store).await });
            }
            Err(_) => tracing::warn!(
                store = %store, key = %key,
                "an upload in parts was dropped outside the runtime and not aborted: its parts stay until \
                 the bucket's lifecycle rule removes them"
            ),
        }
    }
}

async fn abort_logged(mut upload: Box<dyn MultipartUpload>, key: &Path, store: &str) {
    match upload.abort().await {
        Ok(()) => tracing::debug!(store = %store, key = %key, "aborted an upload in parts"),
        // S3's NoSuchUpload: it was completed after all (a completion whose answer was
        // lost), or aborted already.
        Err(object_store::Error::NotFound { .. }) => {
            tracing::debug!(store = %store, key = %key, "the upload in parts to abort is gone already")
        }
        Err(e) => tracing::warn!(
            store = %store, key = %key,
            "could not abort an upload in parts ({e}): its parts stay until the bucket's lifecycle rule \
             (AbortIncompleteMultipartUpload) removes them"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_fit_the_largest_files_in_10000_parts() {
        let m = Multipart::default();
        assert!(!m.applies(DEFAULT_THRESHOLD));
        assert!(m.applies(DEFAULT_THRESHOLD + 1));
        assert_eq!(m.part_size_for(200 * MIB), 16 * MIB);
        assert_eq!(m.parts(200 * MIB), 13);
        // 5 TB, S3's largest object: 500 MiB parts (rounded up to a MiB), 10,000 at most.
        let five_tb = 5_000_000_000_000;
        let part = m.part_size_for(five_tb);
        assert_eq!(part % MIB, 0);
        assert!(part <= MAX_PART_SIZE, "{part}");
        assert!(m.parts(five_tb) <= MAX_PARTS, "{}", m.parts(five_tb));
        assert_eq!(m.requests(10 * MIB, true), 1);
        assert_eq!(m.requests(200 * MIB, false), 15);
        assert_eq!(m.requests(200 * MIB, true), 18);
    }

    #[test]
    fn options_then_environment_then_defaults() {
        let none = |_: &str| None;
        assert_eq!(Multipart::from_options(None, None, &none), Ok(Multipart::default()));
        let env = |k: &str| (k == "LITESTREAM_MULTIPART_THRESHOLD").then(|| "8MiB".to_string());
        let m = Multipart::from_options(None, Some(6 * MIB), &env).unwrap();
        assert_eq!((m.threshold, m.part_size), (8 * MIB, 6 * MIB));
        assert_eq!(
            Multipart::from_options(Some(50 * MIB), None, &env).unwrap().threshold,
            50 * MIB
        );
        assert!(Multipart::from_options(Some(MIB), None, &none).is_err());
        assert!(Multipart::from_options(None, Some(4 * MIB), &none).is_err());
        assert!(Multipart::from_options(None, Some(5 * 1024 * MIB), &none).is_err());
        let bad = |_: &str| Some("lots".to_string());
        assert!(Multipart::from_options(None, None, &bad)
            .unwrap_err()
            .contains("LITESTREAM_MULTIPART"));
        // A value out of range is named as it was given.
        let small = |k: &str| (k == "LITESTREAM_MULTIPART_PART_SIZE").then(|| "1".to_string());
        let err = Multipart::from_options(None, None, &small).unwrap_err();
        assert!(err.starts_with("LITESTREAM_MULTIPART_PART_SIZE must be"), "{err}");
        let err = Multipart::from_options(None, Some(1), &none).unwrap_err();
        assert!(err.starts_with("multipart_part_size must be"), "{err}");
    }
}
