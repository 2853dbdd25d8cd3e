//! [`ReplicaStore`] over any `object_store` backend (S3, GCS, Azure, local files, memory).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions,
    PutOptions,
};

use super::compare::{compare, Found};
use super::error::{from_object_store, Error, Redactor, Result};
use super::layout::Layout;
use super::multipart::{Multipart, Upload};
use super::name::{parse_name, unfinished_name};
use super::store::{header_timestamp, LtxObject, ReplicaStore};
use super::timestamp::{format_rfc3339_nano, parse_rfc3339_ms};
use crate::file_modes::FileModes;

mod in_parts;

/// A replica location in an object store.
pub struct ObjectReplica {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    /// Metadata key for the header timestamp (`litestream-timestamp` on S3/GCS,
    /// `litestreamtimestamp` on Azure, whose metadata names cannot contain '-'), or `None`
    /// where the backend keeps no metadata (local files).
    metadata_key: Option<&'static str>,
    /// Attributes sent with every put besides the timestamp (e.g. S3 storage class).
    extra_attributes: Attributes,
    name: String,
    redactor: Redactor,
    /// Local directory stores only: the filesystem path objects live under, so a put can
    /// be made durable (see [`ObjectReplica::make_durable`]).
    fsync_root: Option<std::path::PathBuf>,
    /// Local directory stores only: the permissions of the database replicated here,
    /// given to every file and directory a put creates (see [`ObjectReplica::prepare_dirs`]).
    file_modes: Option<FileModes>,
    /// S3 and Azure: large files go up in parts (`multipart.rs`); `None`: one PUT always.
    multipart: Option<Multipart>,
}

impl std::fmt::Debug for ObjectReplica {
    // Not derived: the backend's Debug output can include its credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReplica")
            .field("name", &self.name)
            .field("layout", &self.layout)
            .finish()
    }
}

impl ObjectReplica {
    /// Wraps `store`. `name` is the redacted URL used in messages; `redactor` knows the
    /// secrets the store was configured with.
    /// The last step of opening a cloud store: build the client (its error, redacted,
    /// is a configuration error), lay keys out under the URL's path, and wrap both.
    pub(crate) fn from_builder<S: ObjectStore>(
        built: object_store::Result<S>,
        target: &super::target::Target,
        style: super::layout::LevelStyle,
        metadata_key: &'static str,
        redactor: Redactor,
    ) -> Result<Self> {
        let store = built
            .map_err(|e| super::error::Error::config(format!("{}: {}", target.name, redactor.clean(&e.to_string()))))?;
        let layout = Layout::from_user_path(&target.path, style)?;
        Ok(Self::new(
            Arc::new(store),
            layout,
            Some(metadata_key),
            target.name.clone(),
            redactor,
        ))
    }

    pub(crate) fn new(
        store: Arc<dyn ObjectStore>,
        layout: Layout,
        metadata_key: Option<&'static str>,
        name: String,
        redactor: Redactor,
    ) -> Self {
        ObjectReplica {
            store,
            layout,
            metadata_key,
            extra_attributes: Attributes::new(),
            name,
            redactor,
            fsync_root: None,
            file_modes: None,
            multipart: None,
        }
    }

    /// Files above `multipart`'s threshold go up in parts (stores whose single PUT is
    /// limited: S3, Azure).
    pub(crate) fn with_multipart(mut self, multipart: Multipart) -> Self {
        self.multipart = Some(multipart);
        self
    }

    /// Objects are files under `root` (object_store's local store rooted there): every
    /// put is fsynced before it counts as stored.
    pub(crate) fn with_fsync(mut self, root: std::path::PathBuf) -> Self {
        self.fsync_root = Some(root);
        self
    }

    /// Local directory stores: files and directories puts create get `modes` (`None`:
    /// the process's defaults, for stores that are only read).
    pub(crate) fn with_file_modes(mut self, modes: Option<FileModes>) -> Self {
        self.file_modes = modes;
        self
    }

    /// For local directory stores with permissions to keep: creates the directories from
    /// the replica's own down to `key`'s with them before the put, so the file
    /// object_store writes (with the process's default permissions, and only then
    /// given ours in [`ObjectReplica::make_durable`]) is never reachable by users the
    /// database keeps out. The replica directory itself is left as it is if it exists
    /// (it may be the user's choice); those below it are ours by name.
    async fn prepare_dirs(&self, key: &Path) -> Result<()> {
        let (Some(root), Some(modes)) = (&self.fsync_root, self.file_modes) else {
            return Ok(());
        };
        let file = root.join(key.as_ref());
        let base = root.join(self.layout.base().as_ref());
        self.local_io("MKDIR", key, move || {
            // The object's own directory first, as object_store would (a replica path
            // that is not a directory says "Not a directory"); then those below the
            // replica's that already existed get our permissions.
            if let Some(dir) = file.parent() {
                modes.create_dir_all(dir)?;
            }
            for dir in file
                .ancestors()
                .skip(1)
                .take_while(|d| d.starts_with(&base) && *d != base)
            {
                modes.own_dir(dir)?;
            }
            Ok(())
        })
        .await
    }

    /// Runs blocking filesystem work of a local store off the async runtime; its error is
    /// the store's, for `op` on `key`.
    async fn local_io<T: Send + 'static>(
        &self,
        op: &'static str,
        key: &Path,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T> {
        let done = tokio::task::spawn_blocking(work)
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        done.map_err(|e| Error::Other {
            store: self.name.clone(),
            op,
            key: key.to_string(),
            message: e.to_string(),
        })
    }

    /// For local directory stores: makes the put of `key` survive a power loss, not only
    /// a crash of this process (`local_durable.rs`: the file, its directory, and the
    /// directories above the first time).
    ///
    /// The file's modification time becomes `timestamp_ms`, the time its last TXID was
    /// committed: what S3's `litestream-timestamp` metadata says, and what Litestream's
    /// `restore -timestamp` reads from a local replica. Left at the upload time, a
    /// compacted file written after a target time would be passed over by Litestream
    /// (its level-0 files gone) and it would restore an older state than ours.
    async fn make_durable(&self, key: &Path, timestamp_ms: i64) -> Result<()> {
        let Some(root) = &self.fsync_root else {
            return Ok(());
        };
        let file = root.join(key.as_ref());
        let base = root.join(self.layout.base().as_ref());
        let modes = self.file_modes;
        self.local_io("FSYNC", key, move || {
            super::local_durable::make_put_durable(&file, &base, modes, timestamp_ms)
        })
        .await
    }

    /// Adds an attribute sent with every put.
    pub(crate) fn with_attribute(mut self, attribute: Attribute, value: impl Into<AttributeValue>) -> Self {
        self.extra_attributes.insert(attribute, value.into());
        self
    }

    /// The key layout, for tests and diagnostics.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    fn err(&self, e: object_store::Error, op: &'static str, key: &Path) -> Error {
        from_object_store(e, &self.name, op, key.as_ref(), &self.redactor)
    }

    fn invalid(&self, op: &'static str, key: &Path, message: String) -> Error {
        Error::InvalidData {
            store: self.name.clone(),
            op,
            key: key.to_string(),
            message,
        }
    }

    fn put_options(&self, mode: PutMode, timestamp_ms: i64) -> PutOptions {
        let mut attributes = self.extra_attributes.clone();
        if let Some(k) = self.metadata_key {
            attributes.insert(Attribute::Metadata(k.into()), format_rfc3339_nano(timestamp_ms).into());
        }
        PutOptions {
            mode,
            attributes,
            ..Default::default()
        }
    }

    fn to_ltx_object(level: u8, min_txid: u64, max_txid: u64, meta: &ObjectMeta) -> LtxObject {
        LtxObject {
            level,
            min_txid,
            max_txid,
            size: meta.size,
            last_modified: Some(meta.last_modified.into()),
        }
    }

    /// The timestamp from object metadata, if the store keeps it and the object has it.
    async fn metadata_timestamp(&self, key: &Path) -> Result<Option<i64>> {
        let Some(meta_key) = self.metadata_key else {
            return Ok(None);
        };
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(key, opts)
            .await
            .map_err(|e| self.err(e, "HEAD", key))?;
        let Some(value) = r.attributes.get(&Attribute::Metadata(meta_key.into())) else {
            return Ok(None);
        };
        match parse_rfc3339_ms(value) {
            Some(ms) => Ok(Some(ms)),
            None => {
                // Litestream fails a timestamp restore on an unparsable value; the header is the
                // authority anyway, so fall back to it.
                tracing::warn!(store = %self.name, key = %key, value = %value.as_ref(), "unparsable timestamp metadata");
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl ReplicaStore for ObjectReplica {
    fn describe(&self) -> &str {
        &self.name
    }

    fn file_key(&self, level: u8, min_txid: u64, max_txid: u64) -> String {
        let key = self.layout.key(level, min_txid, max_txid);
        match &self.fsync_root {
            Some(root) => root.join(key.as_ref()).display().to_string(),
            None => key.to_string(),
        }
    }

    async fn list(&self, level: u8) -> Result<Vec<LtxObject>> {
        let dir = self.layout.level_dir(level);
        let listing = match self.store.list_with_delimiter(Some(&dir)).await {
            Ok(l) => l,
            // A missing level is an empty listing on every backend; a 404 on LIST means the
            // bucket itself is missing, which must not look like an empty replica.
            Err(e @ object_store::Error::NotFound { .. }) => {
                return Err(match self.err(e, "LIST", &dir) {
                    Error::NotFound { store, key } => Error::Other {
                        message: "the bucket or container does not exist".into(),
                        store,
                        op: "LIST",
                        key,
                    },
                    other => other,
                })
            }
            Err(e) => {
                return Err(match self.err(e, "LIST", &dir) {
                    // S3 answers a missing bucket with a 404 whose body names it; object_store
                    // passes that on as a generic error.
                    Error::Other {
                        store, key, message, ..
                    } if message.contains("NoSuchBucket") => Error::Other {
                        message: "the bucket or container does not exist (S3 NoSuchBucket)".into(),
                        store,
                        op: "LIST",
                        key,
                    },
                    other => other,
                });
            }
        };
        let mut files = Vec::with_capacity(listing.objects.len());
        for meta in &listing.objects {
            if meta.location == dir {
                continue; // a "directory marker" object some tools create
            }
            match meta.location.filename().and_then(parse_name) {
                Some((min, max)) => files.push(Self::to_ltx_object(level, min, max, meta)),
                None if meta.location.filename().is_some_and(unfinished_name) => {
                    tracing::debug!(store = %self.name, key = %meta.location, "skipping a file its writer has not finished")
                }
                None => tracing::warn!(
                    store = %self.name,
                    key = %meta.location,
                    "skipping object whose name is not an LTX file name (%016x-%016x.ltx)"
                ),
            }
        }
        files.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(files)
    }

    async fn get(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<Bytes> {
        let key = self.layout.key(level, min_txid, max_txid);
        let r = self.store.get(&key).await.map_err(|e| self.err(e, "GET", &key))?;
        r.bytes().await.map_err(|e| self.err(e, "GET", &key))
    }

    async fn get_range(&self, level: u8, min_txid: u64, max_txid: u64, range: Range<u64>) -> Result<Bytes> {
        let key = self.layout.key(level, min_txid, max_txid);
        if range.start > range.end {
            return Err(self.invalid("GET", &key, format!("bad range {range:?}")));
        }
        if range.start == range.end {
            return Ok(Bytes::new());
        }
        let want = range.end - range.start;
        let b = self
            .store
            .get_range(&key, range.clone())
            .await
            .map_err(|e| self.err(e, "GET", &key))?;
        if b.len() as u64 != want {
            return Err(self.invalid("GET", &key, format!("asked for bytes {range:?}, got {} bytes", b.len())));
        }
        Ok(b)
    }

    async fn head(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<LtxObject> {
        let key = self.layout.key(level, min_txid, max_txid);
        let meta = self.store.head(&key).await.map_err(|e| self.err(e, "HEAD", &key))?;
        Ok(Self::to_ltx_object(level, min_txid, max_txid, &meta))
    }

    async fn timestamp(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<i64> {
        let key = self.layout.key(level, min_txid, max_txid);
        if let Some(ms) = self.metadata_timestamp(&key).await? {
            return Ok(ms);
        }
        let b = self
            .get_range(level, min_txid, max_txid, 0..super::store::TIMESTAMP_PREFIX)
            .await?;
        header_timestamp(&b).map_err(|why| self.invalid("GET", &key, why))
    }

    async fn put_new(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let key = self.layout.key(level, min_txid, max_txid);
        self.prepare_dirs(&key).await?;
        let put = match self.in_parts(data.len()) {
            Some(multipart) => {
                let file = (level, min_txid, max_txid);
                self.create_in_parts(&key, file, &data, timestamp_ms, multipart).await
            }
            None => {
                let opts = self.put_options(PutMode::Create, timestamp_ms);
                let put = self.store.put_opts(&key, data.clone().into(), opts).await;
                put.map(drop).map_err(|e| self.err(e, "PUT", &key))
            }
        };
        let err = match put {
            Ok(()) => return self.make_durable(&key, timestamp_ms).await,
            Err(e) => e,
        };
        if err.is_already_exists() {
            // A lost response to our own earlier attempt (an HTTP-level retry inside
            // object_store, or a caller's retry) leaves our bytes there: that is success.
            // Anything else there belongs to another writer.
            match compare(self, level, min_txid, max_txid, &data).await {
                Ok(Found::Same) => {
                    tracing::debug!(store = %self.name, key = %key, "conditional put found its own earlier write");
                    return self.make_durable(&key, timestamp_ms).await;
                }
                // A local file is linked into place before it is fsynced: a power cut in
                // between can leave a torn file under the final name, never acknowledged.
                Ok(Found::Torn) if self.fsync_root.is_some() => {
                    tracing::warn!(store = %self.name, key = %key, "replacing a torn file (left by a power loss before its fsync)");
                    return self.put(level, min_txid, max_txid, data, timestamp_ms).await;
                }
                _ => {}
            }
        }
        Err(err)
    }

    async fn put(&self, level: u8, min_txid: u64, max_txid: u64, data: Bytes, timestamp_ms: i64) -> Result<()> {
        let key = self.layout.key(level, min_txid, max_txid);
        self.prepare_dirs(&key).await?;
        if let Some(multipart) = self.in_parts(data.len()) {
            let upload = self.send_in_parts(&key, &data, timestamp_ms, multipart).await?;
            self.complete(upload, &key, (level, min_txid, max_txid), &data).await?;
            return self.make_durable(&key, timestamp_ms).await;
        }
        let opts = self.put_options(PutMode::Overwrite, timestamp_ms);
        self.store
            .put_opts(&key, data.into(), opts)
            .await
            .map_err(|e| self.err(e, "PUT", &key))?;
        self.make_durable(&key, timestamp_ms).await
    }

    fn put_requests(&self, bytes: u64, create: bool) -> u32 {
        self.multipart.map_or(1, |m| m.requests(bytes, create))
    }

    async fn sweep_abandoned(&self, idle: std::time::Duration) -> Result<u32> {
        let Some(root) = &self.fsync_root else {
            return Ok(0);
        };
        let base = self.layout.base().clone();
        let mut dirs = vec![root.join(base.as_ref())];
        // Levels 0 to 8 and the snapshots' 9: every directory a put writes into.
        for level in 0..=9 {
            dirs.push(root.join(self.layout.level_dir(level).as_ref()));
        }
        self.local_io("SWEEP", &base, move || {
            super::local::sweep_abandoned_staging(&dirs, idle)
        })
        .await
    }

    async fn delete(&self, level: u8, min_txid: u64, max_txid: u64) -> Result<()> {
        self.delete_key(&self.layout.key(level, min_txid, max_txid)).await
    }

    async fn create_marker(&self, name: &str, data: Bytes) -> Result<()> {
        let key = self.layout.marker(name);
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        // The fencing probe's markers are often a new replica's first objects: the
        // directory object_store would create for them must get the database's bits.
        self.prepare_dirs(&key).await?;
        self.store
            .put_opts(&key, data.into(), opts)
            .await
            .map(drop)
            .map_err(|e| self.err(e, "PUT", &key))
    }

    async fn delete_marker(&self, name: &str) -> Result<()> {
        self.delete_key(&self.layout.marker(name)).await
    }
}

impl ObjectReplica {
    async fn delete_key(&self, key: &Path) -> Result<()> {
        match self.store.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e, "DELETE", key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{open_store, StoreOptions};
    use crate::ltx::{Header, FLAG_ENCRYPTED, FLAG_NO_CHECKSUM};
    use crate::runtime::block_on;

    /// The first bytes of an LTX file with this header (the rest does not matter to
    /// `timestamp`, which reads only the header).
    fn file_with(flags: u32, recipients: u16, timestamp_ms: i64) -> bytes::Bytes {
        let h = Header {
            flags,
            page_size: 4096,
            commit: 1,
            min_txid: 2,
            max_txid: 3,
            timestamp_ms,
            recipients,
            ..Header::default()
        };
        let mut b = h.encode().to_vec();
        b.resize(200, 0);
        b.into()
    }

    #[test]
    fn a_local_store_reads_the_timestamp_of_plaintext_and_encrypted_headers() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().display());
        let store = open_store(&url, &StoreOptions::default()).unwrap();
        // A local store keeps no timestamp metadata: the header is the only source.
        let v3 = file_with(FLAG_NO_CHECKSUM, 0, 1_700_000_000_123);
        let v4 = file_with(FLAG_NO_CHECKSUM | FLAG_ENCRYPTED, 1, 1_700_000_000_456);
        block_on(store.put_new(0, 2, 3, v3, 0)).unwrap();
        block_on(store.put_new(1, 2, 3, v4, 0)).unwrap();
        assert_eq!(block_on(store.timestamp(0, 2, 3)).unwrap(), 1_700_000_000_123);
        assert_eq!(block_on(store.timestamp(1, 2, 3)).unwrap(), 1_700_000_000_456);

        block_on(store.put_new(2, 2, 3, vec![b'x'; 200].into(), 0)).unwrap();
        let err = block_on(store.timestamp(2, 2, 3)).unwrap_err().to_string();
        assert!(err.contains("not an LTX file") && err.contains("bad magic"), "{err}");
    }
}
