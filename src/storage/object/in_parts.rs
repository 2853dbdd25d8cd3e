//! Files above the multipart threshold (`multipart.rs`): sent in parts, and created
//! only where nothing is, with HEADs standing in for a conditional completion.

use super::*;

impl ObjectReplica {
    /// How a file of `len` bytes goes up in parts, if it does.
    pub(super) fn in_parts(&self, len: usize) -> Option<Multipart> {
        self.multipart.filter(|m| m.applies(len as u64))
    }

    /// Starts an upload in parts of `data` to `key`, with the attributes a PUT would set
    /// (the timestamp metadata Litestream reads, the storage class), and sends its parts;
    /// a failure aborts it. What is left is to complete it.
    pub(super) async fn send_in_parts(
        &self,
        key: &Path,
        data: &Bytes,
        timestamp_ms: i64,
        multipart: Multipart,
    ) -> Result<Upload> {
        let opts = PutMultipartOptions {
            attributes: self.put_options(PutMode::Overwrite, timestamp_ms).attributes,
            ..Default::default()
        };
        let (len, part_size) = (data.len() as u64, multipart.part_size_for(data.len() as u64));
        tracing::debug!(store = %self.name, key = %key, bytes = len, parts = multipart.parts(len), part_size, "uploading in parts");
        let mut upload = Upload::start(&*self.store, key, opts, &self.name)
            .await
            .map_err(|e| self.err(e, "PUT", key))?;
        if let Err(e) = upload.send(data, part_size).await {
            upload.abort().await;
            return Err(self.err(e, "PUT", key));
        }
        Ok(upload)
    }

    /// A conditional create in parts. object_store 0.12 cannot make the completion
    /// conditional (S3 takes `If-None-Match: *` on it, Azure on Put Block List; neither
    /// is exposed), so HEADs stand in for it: one before the upload starts (a file there
    /// already, most often our own earlier attempt, is not uploaded again), one after the
    /// last part just before the completion, and one after it, which finds a file another
    /// writer completed over ours (its ETag is not the one our completion got). Each
    /// finding is `AlreadyExists`, and `put_new` compares what is there with ours.
    ///
    /// What is left unguarded is about one request long: two writers whose HEADs before
    /// completing both find nothing, the first of which completes and checks again before
    /// the second completes; the second's file replaces the first's and neither learns of
    /// it here. Only files above the threshold take this path (snapshots, huge
    /// transactions): the fencing probe still refuses a store that ignores conditional
    /// creates, and every smaller file, most of a primary's, is still created
    /// conditionally, so two primaries still meet at their next small file
    /// (docs/reliability.md).
    pub(super) async fn create_in_parts(
        &self,
        key: &Path,
        file: (u8, u64, u64),
        data: &Bytes,
        timestamp_ms: i64,
        multipart: Multipart,
    ) -> Result<()> {
        if self.exists(key).await? {
            return Err(self.taken(key));
        }
        let upload = self.send_in_parts(key, data, timestamp_ms, multipart).await?;
        match self.exists(key).await {
            Ok(false) => {}
            found => {
                upload.abort().await;
                return Err(found.err().unwrap_or_else(|| self.taken(key)));
            }
        }
        let done = self.complete(upload, key, file, data).await?;
        // A store whose completion answers without an ETag, or with one spelled unlike
        // its HEAD's, only costs the comparison `put_new` then makes.
        let Some(ours) = done else {
            return Ok(());
        };
        let now = self.store.head(key).await.map_err(|e| self.err(e, "HEAD", key))?;
        let unquoted = |t: &str| t.trim_matches('"').to_string();
        if now.e_tag.as_deref().map(unquoted) != Some(unquoted(&ours)) {
            tracing::warn!(store = %self.name, key = %key, "another writer completed a file over the one just uploaded in parts");
            return Err(self.taken(key));
        }
        Ok(())
    }

    /// Completes an upload in parts of `data` as `file`. A completion whose answer was
    /// lost is sent again by object_store, and S3 may answer the second with 404 (the
    /// upload is gone: it completed); a failed completion that left our bytes there is
    /// success (`None`: no ETag to check it by).
    pub(super) async fn complete(
        &self,
        upload: Upload,
        key: &Path,
        (level, min_txid, max_txid): (u8, u64, u64),
        data: &Bytes,
    ) -> Result<Option<String>> {
        let e = match upload.complete().await {
            Ok(done) => return Ok(done.e_tag),
            Err(e) => self.err(e, "PUT", key),
        };
        match compare(self, level, min_txid, max_txid, data).await {
            Ok(Found::Same) => {
                tracing::debug!(store = %self.name, key = %key, "a failed completion had completed the upload ({e})");
                Ok(None)
            }
            _ => Err(e),
        }
    }

    /// Whether an object is at `key` (one HEAD).
    pub(super) async fn exists(&self, key: &Path) -> Result<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.err(e, "HEAD", key)),
        }
    }

    pub(super) fn taken(&self, key: &Path) -> Error {
        Error::AlreadyExists {
            store: self.name.clone(),
            key: key.to_string(),
        }
    }
}
