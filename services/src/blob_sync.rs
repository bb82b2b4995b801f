//! Blob sync (the memory proxy): files per namespace with conditional writes, tombstones,
//! kept versions and a sync index in the database. The blob store decides each conditional
//! write atomically (S3 `If-None-Match`/`If-Match`, or the filesystem's per-key lock); the
//! index is then settled from that write. A write records itself as pending first, so a
//! process that dies between the store and the index leaves a row the sweep (`repair_stale`)
//! settles from the store; reads settle any disagreement they see. The index never names a
//! content the store lacks: an overwritten or deleted version is copied aside first.
//!
//! Object keys are hashes (`sync/<ns hash>/<aa>/<path hash>`, versions under
//! `sync/<ns hash>/versions/<path hash>/<md5>`), so any valid path fits every store's key
//! rules whatever `S3_PREFIX` adds.

use std::sync::Arc;

use aws_lc_rs::digest::{SHA256, digest};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde_json::json;

use storage::blob::{BlobKey, BlobMeta, BlobStore, Condition, md5_hex};
use storage::error::StoreError;
use storage::events::EventBus;
use storage::sql::{
    BlobIndexStore, ChangePage, IndexEntry, Observed, PathState, Settled, Transition, VersionEntry,
};

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = storage::blob::MAX_KEY_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    InvalidPath(String),
    #[error("the file is {size} bytes; the limit is {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the cursor {0} is older than the tombstone retention: sync again without `since`")]
    CursorExpired(i64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type SyncResult<T> = Result<T, SyncError>;

/// The write a `PUT` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `Content-MD5: new`: only if no live file is there (a tombstone may be).
    Create,
    /// `Content-MD5: <md5>`: only if the live file has this MD5.
    Update(String),
}

#[derive(Debug, Clone, Copy)]
pub struct SyncLimits {
    pub max_file_bytes: usize,
    /// Versions kept per path, the current one included (1: no history).
    pub keep_versions: u32,
}

/// A file as read.
#[derive(Debug, Clone)]
pub struct SyncedFile {
    pub md5: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    pub content_type: Option<String>,
    pub version: Option<i64>,
    pub body: Bytes,
}

/// A successful write.
#[derive(Debug, Clone)]
pub struct Written {
    pub entry: IndexEntry,
    pub created: bool,
}

#[derive(Clone)]
pub struct BlobSync {
    blobs: Arc<dyn BlobStore>,
    index: Arc<dyn BlobIndexStore>,
    events: Arc<dyn EventBus>,
    limits: SyncLimits,
}

/// The event-bus topic of a namespace's changes.
pub fn changes_topic(namespace: &str) -> String {
    format!("blobs:{namespace}")
}

/// Checks a client's path: UTF-8 (already), at most 1,024 bytes, no leading `/`, no empty,
/// `.` or `..` segment, no control character.
pub fn check_path(path: &str) -> SyncResult<()> {
    BlobKey::parse(path).map(drop).map_err(|e| match e {
        StoreError::InvalidKey(why) => SyncError::InvalidPath(why),
        other => SyncError::Store(other),
    })
}

fn sha256_hex(text: &str) -> String {
    hex::encode(digest(&SHA256, text.as_bytes()))
}

fn key(raw: String) -> BlobKey {
    BlobKey::parse(&raw).expect("hashed keys are valid")
}

/// Where the live object of `path` is stored.
pub fn object_key(namespace: &str, path: &str) -> BlobKey {
    let path_hash = sha256_hex(path);
    key(format!("sync/{}/{}/{path_hash}", &sha256_hex(namespace)[..32], &path_hash[..2]))
}

fn versions_prefix(namespace: &str, path: &str) -> String {
    format!("sync/{}/versions/{}/", &sha256_hex(namespace)[..32], sha256_hex(path))
}

fn version_key(namespace: &str, path: &str, md5: &str) -> BlobKey {
    key(format!("{}{md5}", versions_prefix(namespace, path)))
}

impl BlobSync {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        index: Arc<dyn BlobIndexStore>,
        events: Arc<dyn EventBus>,
        limits: SyncLimits,
    ) -> Self {
        Self { blobs, index, events, limits }
    }

    pub fn limits(&self) -> SyncLimits {
        self.limits
    }

    /// Stores `body` at `path` if `precondition` holds.
    pub async fn write(
        &self,
        namespace: &str,
        path: &str,
        body: Bytes,
        precondition: Precondition,
        content_type: Option<String>,
    ) -> SyncResult<Written> {
        check_path(path)?;
        if body.len() > self.limits.max_file_bytes {
            return Err(SyncError::TooLarge { size: body.len(), limit: self.limits.max_file_bytes });
        }
        let key = object_key(namespace, path);
        let md5 = md5_hex(&body);
        let size = body.len() as i64;
        let pending = self.index.begin_write(namespace, path).await?;
        let stored = async {
            let condition = match &precondition {
                Precondition::Create => Condition::Absent,
                Precondition::Update(current) => {
                    self.keep_aside(namespace, path, &key, current).await?;
                    Condition::Matches(current.clone())
                }
            };
            self.blobs.put(&key, body, condition).await
        }
        .await;
        let meta = match stored {
            Ok(meta) => meta,
            Err(e) => {
                self.index.end_write(&pending).await?;
                return Err(match e {
                    StoreError::PreconditionFailed => {
                        self.explain_conflict(namespace, path, &precondition).await
                    }
                    other => other.into(),
                });
            }
        };
        let transition = Transition {
            from: match &precondition {
                Precondition::Create => PathState::Absent,
                Precondition::Update(current) => PathState::Live(current.clone()),
            },
            to: Some(Observed { md5, size, last_modified: meta.last_modified, content_type }),
        };
        let settled = self.settle(namespace, path, Some(&transition)).await?;
        self.index.end_write(&pending).await?;
        let entry = settled
            .entry
            .ok_or_else(|| StoreError::backend("index", anyhow::anyhow!("a settled write has no entry")))?;
        Ok(Written { entry, created: precondition == Precondition::Create })
    }

    /// Tombstones `path` if it is live (and has MD5 `if_match`, when given).
    pub async fn delete(
        &self,
        namespace: &str,
        path: &str,
        if_match: Option<String>,
    ) -> SyncResult<IndexEntry> {
        check_path(path)?;
        let key = object_key(namespace, path);
        let missing = || SyncError::NotFound(format!("no file at {path}"));
        let expected = match if_match {
            Some(md5) => md5,
            None => match self.blobs.head(&key).await? {
                Some(meta) => meta.etag,
                None => {
                    self.settle(namespace, path, None).await?;
                    return Err(missing());
                }
            },
        };
        let pending = self.index.begin_write(namespace, path).await?;
        let deleted = async {
            self.keep_aside(namespace, path, &key, &expected).await?;
            self.blobs.delete(&key, Condition::Matches(expected.clone())).await
        }
        .await;
        match deleted {
            Ok(true) => {}
            Ok(false) | Err(StoreError::PreconditionFailed) => {
                self.index.end_write(&pending).await?;
                return Err(match self.blobs.head(&key).await? {
                    None => {
                        self.settle(namespace, path, None).await?;
                        missing()
                    }
                    Some(meta) => SyncError::PreconditionFailed(format!(
                        "the file's current MD5 is {}, not {expected}",
                        meta.etag
                    )),
                });
            }
            Err(e) => {
                self.index.end_write(&pending).await?;
                return Err(e.into());
            }
        }
        let transition = Transition { from: PathState::Live(expected), to: None };
        let settled = self.settle(namespace, path, Some(&transition)).await?;
        self.index.end_write(&pending).await?;
        settled.entry.ok_or_else(|| {
            StoreError::backend("index", anyhow::anyhow!("a settled delete has no entry")).into()
        })
    }

    /// The live file at `path`, or one of its kept versions.
    pub async fn read(&self, namespace: &str, path: &str, version: Option<i64>) -> SyncResult<SyncedFile> {
        check_path(path)?;
        if let Some(version) = version {
            return self.read_version(namespace, path, version).await;
        }
        let key = object_key(namespace, path);
        let (blob, entry) = tokio::try_join!(self.blobs.get(&key), self.index.get(namespace, path))?;
        let agrees = |entry: &Option<IndexEntry>, md5: Option<&str>| match (entry, md5) {
            (Some(e), Some(md5)) => !e.is_deleted && e.md5 == md5,
            (Some(e), None) => e.is_deleted,
            (None, md5) => md5.is_none(),
        };
        let entry = if agrees(&entry, blob.as_ref().map(|b| b.meta.etag.as_str())) {
            entry
        } else {
            // The index lags the store (a write in flight, or one cut short): settle it now.
            self.settle(namespace, path, None).await?.entry
        };
        let Some(blob) = blob else {
            return Err(SyncError::NotFound(format!("no file at {path}")));
        };
        let indexed = entry.filter(|e| e.md5 == blob.meta.etag);
        Ok(SyncedFile {
            md5: blob.meta.etag,
            size: blob.body.len() as u64,
            last_modified: indexed.as_ref().map_or(blob.meta.last_modified, |e| e.last_modified),
            content_type: indexed.as_ref().and_then(|e| e.content_type.clone()),
            version: indexed.map(|e| e.version),
            body: blob.body,
        })
    }

    async fn read_version(&self, namespace: &str, path: &str, version: i64) -> SyncResult<SyncedFile> {
        let versions = self.index.versions(namespace, path).await?;
        let Some(kept) = versions.into_iter().find(|v| v.version == version) else {
            return Err(SyncError::NotFound(format!("version {version} of {path} is not kept")));
        };
        if kept.is_deleted {
            return Err(SyncError::NotFound(format!("version {version} of {path} is its deletion")));
        }
        // An older version was copied aside before it was replaced; the newest is the object.
        for key in [version_key(namespace, path, &kept.md5), object_key(namespace, path)] {
            if let Some(blob) = self.blobs.get(&key).await?
                && blob.meta.etag == kept.md5
            {
                return Ok(SyncedFile {
                    md5: kept.md5,
                    size: blob.body.len() as u64,
                    last_modified: kept.created_at,
                    content_type: kept.content_type,
                    version: Some(kept.version),
                    body: blob.body,
                });
            }
        }
        Err(SyncError::NotFound(format!("version {version} of {path} is no longer stored")))
    }

    /// The path's kept versions, newest first.
    pub async fn versions(&self, namespace: &str, path: &str) -> SyncResult<Vec<VersionEntry>> {
        check_path(path)?;
        let versions = self.index.versions(namespace, path).await?;
        if versions.is_empty() {
            return Err(SyncError::NotFound(format!("no file at {path}")));
        }
        Ok(versions)
    }

    /// Whether a live file is indexed at `path`.
    pub async fn is_live(&self, namespace: &str, path: &str) -> SyncResult<bool> {
        Ok(self.index.get(namespace, path).await?.is_some_and(|e| !e.is_deleted))
    }

    /// Index entries changed after `since` (every one when `None`), at most `limit`.
    pub async fn changes(&self, namespace: &str, since: Option<i64>, limit: i64) -> SyncResult<ChangePage> {
        let since = since.unwrap_or(0).max(0);
        let page = self.index.changes(namespace, since, limit).await?;
        if since > 0 && since < page.purged_seq {
            return Err(SyncError::CursorExpired(since));
        }
        Ok(page)
    }

    /// Settles writes whose process died before settling them; returns how many.
    pub async fn repair_stale(&self, started_before: DateTime<Utc>) -> SyncResult<usize> {
        let stale = self.index.stale_writes(started_before, 1000).await?;
        for (id, namespace, path) in &stale {
            self.settle(namespace, path, None).await?;
            self.index.end_write(id).await?;
        }
        Ok(stale.len())
    }

    /// Purges tombstones last changed before `before`, with their kept versions.
    pub async fn purge_tombstones(
        &self,
        before: DateTime<Utc>,
        namespace: Option<&str>,
    ) -> SyncResult<usize> {
        let purged = self.index.purge_tombstones(before, namespace).await?;
        for (namespace, path) in &purged {
            let prefix = versions_prefix(namespace, path);
            for object in self.blobs.list(&prefix, None, 10_000).await? {
                if let Ok(key) = BlobKey::parse(&object.key) {
                    self.blobs.delete(&key, Condition::None).await?;
                }
            }
        }
        Ok(purged.len())
    }

    /// Copies the live object aside as the version `md5` before it is replaced or deleted,
    /// so every kept version stays readable. Fails with a precondition error when the live
    /// object is not `md5`.
    async fn keep_aside(
        &self,
        namespace: &str,
        path: &str,
        key: &BlobKey,
        md5: &str,
    ) -> Result<(), StoreError> {
        if self.limits.keep_versions <= 1 {
            return Ok(());
        }
        self.blobs.copy(key, &version_key(namespace, path, md5), md5).await.map(drop)
    }

    async fn settle(&self, namespace: &str, path: &str, hint: Option<&Transition>) -> SyncResult<Settled> {
        let blobs = self.blobs.clone();
        let key = object_key(namespace, path);
        let head = move || {
            let (blobs, key) = (blobs.clone(), key.clone());
            async move { Ok(blobs.head(&key).await?.map(observed)) }.boxed()
        };
        let settled = self.index.settle(namespace, path, hint, &head, self.limits.keep_versions).await?;
        for md5 in &settled.pruned {
            if let Err(e) = self.blobs.delete(&version_key(namespace, path, md5), Condition::None).await {
                tracing::warn!(error = %e, namespace, path, md5, "could not delete a version beyond the kept count");
            }
        }
        if settled.changed
            && let Some(entry) = &settled.entry
        {
            let event = json!({
                "path": entry.path,
                "md5": entry.md5,
                "size": entry.size,
                "is_deleted": entry.is_deleted,
                "last_modified": entry.last_modified,
                "version": entry.version,
                "cursor": entry.seq,
            });
            if let Err(e) = self.events.publish(&changes_topic(namespace), event).await {
                tracing::warn!(error = %e, namespace, "could not announce a blob change");
            }
        }
        Ok(settled)
    }

    async fn explain_conflict(&self, namespace: &str, path: &str, precondition: &Precondition) -> SyncError {
        let live = match self.blobs.head(&object_key(namespace, path)).await {
            Ok(live) => live,
            Err(e) => return e.into(),
        };
        SyncError::PreconditionFailed(match (precondition, live) {
            (Precondition::Create, Some(meta)) => format!(
                "a file exists at {path} (MD5 {}); send its MD5 in Content-MD5 to update it",
                meta.etag
            ),
            (Precondition::Update(_), None) => {
                format!("no file exists at {path}; send Content-MD5: new to create it")
            }
            (Precondition::Update(expected), Some(meta)) => {
                format!("the file's current MD5 is {}, not {expected}", meta.etag)
            }
            (Precondition::Create, None) => format!("{path} changed while it was written; try again"),
        })
    }
}

fn observed(meta: BlobMeta) -> Observed {
    Observed { md5: meta.etag, size: meta.size as i64, last_modified: meta.last_modified, content_type: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_are_short_and_fixed_whatever_the_path() {
        let long = ["segment"; 120].join("/");
        let key = object_key("01jabc", &long);
        assert!(key.as_str().len() < 120, "{key}");
        assert_ne!(object_key("a", "x"), object_key("b", "x"), "namespaces are apart");
        assert!(
            version_key("a", "x", "d41d8cd98f00b204e9800998ecf8427e")
                .as_str()
                .starts_with(&versions_prefix("a", "x"))
        );
    }

    #[test]
    fn paths_are_checked() {
        assert!(check_path("memory/topics/ai.md").is_ok());
        for bad in ["", "/abs", "a/../b", "a\u{7}b", "a//b"] {
            assert!(matches!(check_path(bad), Err(SyncError::InvalidPath(_))), "{bad:?}");
        }
    }
}
