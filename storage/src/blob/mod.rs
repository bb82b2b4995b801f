//! Blob stores: bytes under validated keys with MD5 etags and atomic conditional writes.
//! Files under the data dir (embedded default) or S3 with native conditional requests.

mod fs;
mod key;
mod s3;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use md5::{Digest, Md5};

pub use fs::FilesystemBlobStore;
pub use key::{BlobKey, MAX_KEY_BYTES, MAX_SEGMENT_BYTES};
pub use s3::S3BlobStore;

use crate::error::StoreResult;

/// What a store knows of one object. `etag` is the lowercase hex MD5 of the content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub key: String,
    pub etag: String,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct Blob {
    pub meta: BlobMeta,
    pub body: Bytes,
}

/// The condition a write or delete needs to hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// Whatever is there.
    None,
    /// Only if nothing is stored under the key (S3 `If-None-Match: *`).
    Absent,
    /// Only if the stored object has this etag (S3 `If-Match`).
    Matches(String),
}

#[async_trait]
pub trait BlobStore: Send + Sync {
    fn backend_name(&self) -> &'static str;

    /// Stores `body` if `condition` holds; `StoreError::PreconditionFailed` otherwise.
    async fn put(&self, key: &BlobKey, body: Bytes, condition: Condition) -> StoreResult<BlobMeta>;

    async fn get(&self, key: &BlobKey) -> StoreResult<Option<Blob>>;

    async fn head(&self, key: &BlobKey) -> StoreResult<Option<BlobMeta>>;

    /// Copies the object at `from` to `to` (replacing it) if `from`'s etag is `source_etag`;
    /// `StoreError::PreconditionFailed` when it is not, or nothing is stored under `from`.
    async fn copy(&self, from: &BlobKey, to: &BlobKey, source_etag: &str) -> StoreResult<BlobMeta>;

    /// Deletes if `condition` holds. `Ok(false)` when nothing was stored under the key;
    /// `StoreError::PreconditionFailed` when an object is stored with another etag.
    async fn delete(&self, key: &BlobKey, condition: Condition) -> StoreResult<bool>;

    /// Objects whose key starts with `prefix`, in key order, after `after`, at most `limit`.
    async fn list(&self, prefix: &str, after: Option<&str>, limit: usize) -> StoreResult<Vec<BlobMeta>>;

    /// Proves the backend answers (for `/health`).
    async fn check(&self) -> StoreResult<()>;
}

/// Lowercase hex MD5, the etag of every backend.
pub fn md5_hex(body: &[u8]) -> String {
    hex::encode(md5_digest(body))
}

pub fn md5_digest(body: &[u8]) -> [u8; 16] {
    Md5::digest(body).into()
}
