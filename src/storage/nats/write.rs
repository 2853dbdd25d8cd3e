//! Writing to the object store: an object's chunks on a fresh subject, then its metadata
//! message (conditional for a new name, `put_new`), and deletions.

use super::*;

/// Whether a metadata publish lost the race for a new name.
enum Created {
    Yes,
    /// A live object already has this name.
    Conflict,
}

impl NatsReplica {
    /// Publishes `data` as chunks on a fresh subject, then its metadata. With `create`, the
    /// metadata goes out only if nothing is on the name's meta subject (or only a deletion
    /// marker), atomically; otherwise it replaces whatever version is there.
    pub(super) async fn write(&self, name: &str, data: Bytes, timestamp_ms: i64, create: bool) -> Result<()> {
        let ctx = self.ctx("PUT", name);
        let s = self.session(ctx).await?;
        let previous = if create { None } else { self.meta(s, name, ctx).await? };
        let nuid = client::nuid();
        let chunk_subject = self.subjects.chunks(&nuid);
        if let Err(e) = self.publish_chunks(s, &chunk_subject, &data, ctx).await {
            let _ = s.purge(&chunk_subject, ctx).await;
            return Err(e);
        }
        let meta = ObjectMeta {
            name: name.to_string(),
            headers: Some(
                [(
                    meta::TIMESTAMP_HEADER.to_string(),
                    vec![format_rfc3339_nano(timestamp_ms)],
                )]
                .into(),
            ),
            options: Some(MetaOptions {
                link: None,
                max_chunk_size: Some(self.settings.chunk_size as u64),
            }),
            bucket: self.settings.bucket.clone(),
            nuid: nuid.clone(),
            size: data.len() as u64,
            mtime: Some(format_rfc3339_nano(now_ms())),
            chunks: data.len().div_ceil(self.settings.chunk_size) as u64,
            digest: Some(digest(&data)),
            ..Default::default()
        };
        let published = if create {
            self.publish_new_meta(s, &meta, ctx).await
        } else {
            self.publish_meta(s, &meta, None, ctx)
                .await
                .map(|_| Created::Yes)
                .map_err(Error::from)
        };
        // On failure the chunks stay: the metadata may have been stored with its ack lost,
        // and then they are the object's. A retry of put_new finds its own bytes there (see
        // Created::Conflict), a retry of put replaces them and purges these.
        let published = published?;
        self.maps.forget(name);
        match published {
            Created::Yes => {
                if let Some((_, old)) = previous.filter(|(_, m)| !m.deleted && m.nuid != nuid) {
                    if let Err(e) = s.purge(&self.subjects.chunks(&old.nuid), ctx).await {
                        tracing::warn!(store = %self.settings.name, key = name, error = %e,
                            "could not remove the chunks of the version this put replaced");
                    }
                }
                Ok(())
            }
            Created::Conflict => {
                let _ = s.purge(&chunk_subject, ctx).await;
                let existing = self.live_meta(s, name, ctx).await;
                let ours = match existing {
                    Ok(m) if m.size == meta.size && m.digest.is_some() && m.digest == meta.digest => true,
                    Ok(m) if m.digest.is_none() => self.read_all(s, &m, ctx).await.is_ok_and(|b| b == data),
                    _ => false,
                };
                if ours {
                    tracing::debug!(store = %self.settings.name, key = name, "conditional put found its own earlier write");
                    Ok(())
                } else {
                    Err(Error::AlreadyExists {
                        store: self.settings.name.clone(),
                        key: name.to_string(),
                    })
                }
            }
        }
    }

    async fn publish_chunks(&self, s: &Session, subject: &str, data: &Bytes, ctx: Ctx<'_>) -> Result<()> {
        let mut in_flight = Vec::new();
        let size = self.settings.chunk_size;
        for start in (0..data.len()).step_by(size) {
            let chunk = data.slice(start..(start + size).min(data.len()));
            in_flight.push(s.publish(subject.to_string(), None, chunk));
            if in_flight.len() == PUBLISH_WINDOW {
                for r in futures_util::future::join_all(in_flight.drain(..)).await {
                    r.map_err(|e| ctx.error(&e))?;
                }
            }
        }
        for r in futures_util::future::join_all(in_flight).await {
            r.map_err(|e| ctx.error(&e))?;
        }
        Ok(())
    }

    /// Publishes metadata with `Nats-Rollup: sub` (only the latest per name is kept) and,
    /// if given, the sequence the name's last metadata message must have.
    async fn publish_meta(
        &self,
        s: &Session,
        meta: &ObjectMeta,
        expected_last: Option<u64>,
        ctx: Ctx<'_>,
    ) -> std::result::Result<u64, PublishFailure> {
        let mut headers = Headers::new();
        headers.insert("Nats-Rollup", "sub");
        if let Some(seq) = expected_last {
            headers.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
        }
        let payload = serde_json::to_vec(meta).expect("metadata serializes");
        s.publish(self.subjects.meta(&meta.name), Some(headers), payload.into())
            .await
            .map_err(|e| match e {
                client::NatsError::Api { err_code, .. } if err_code == WRONG_LAST_SEQUENCE => {
                    PublishFailure::WrongLastSequence
                }
                _ => PublishFailure::Failed(ctx.error(&e)),
            })
    }

    /// The conditional create: expects no message on the meta subject; if the last one is a
    /// deletion marker, expects exactly that one instead (a deleted name may be written again).
    async fn publish_new_meta(&self, s: &Session, meta: &ObjectMeta, ctx: Ctx<'_>) -> Result<Created> {
        let mut expected = 0;
        for _ in 0..4 {
            match self.publish_meta(s, meta, Some(expected), ctx).await {
                Ok(_) => return Ok(Created::Yes),
                Err(PublishFailure::Failed(e)) => return Err(e),
                Err(PublishFailure::WrongLastSequence) => {}
            }
            match self.meta(s, &meta.name, ctx).await? {
                Some((seq, m)) if m.deleted => expected = seq,
                Some(_) => return Ok(Created::Conflict),
                None => expected = 0,
            }
        }
        Err(ctx.transient("the object's metadata kept changing during a conditional create"))
    }

    /// Deletes one object: a deletion marker as the NATS clients write it, then its chunks.
    pub(super) async fn delete_name(&self, key: &str) -> Result<()> {
        let ctx = self.ctx("DELETE", key);
        self.timed(ctx, 0, async {
            let s = self.session(ctx).await?;
            let Some((_, meta)) = self.meta(s, key, ctx).await? else {
                return Ok(());
            };
            if meta.deleted {
                return Ok(());
            }
            let marker = ObjectMeta {
                deleted: true,
                size: 0,
                chunks: 0,
                digest: None,
                mtime: Some(format_rfc3339_nano(now_ms())),
                ..meta.clone()
            };
            self.publish_meta(s, &marker, None, ctx).await?;
            self.maps.forget(key);
            s.purge(&self.subjects.chunks(&meta.nuid), ctx).await
        })
        .await
    }
}

/// Why a metadata publish failed.
enum PublishFailure {
    /// `Nats-Expected-Last-Subject-Sequence` did not hold.
    WrongLastSequence,
    Failed(Error),
}

impl From<PublishFailure> for Error {
    fn from(f: PublishFailure) -> Error {
        match f {
            PublishFailure::Failed(e) => e,
            PublishFailure::WrongLastSequence => unreachable!("only conditional publishes expect a sequence"),
        }
    }
}
