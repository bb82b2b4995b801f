//! The blob sync index, on SQLite and PostgreSQL: what each namespace holds (md5, size, last
//! change) and which paths are tombstones.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndexEntry {
    pub namespace: String,
    pub path: String,
    pub md5: String,
    pub size: i64,
    pub last_modified: DateTime<Utc>,
    pub is_deleted: bool,
}

#[async_trait]
pub trait BlobIndexStore: Send + Sync {
    /// Records the path's current state (a live version or a tombstone).
    async fn upsert(&self, entry: &IndexEntry) -> StoreResult<()>;

    async fn get(&self, namespace: &str, path: &str) -> StoreResult<Option<IndexEntry>>;

    /// Deletes tombstones last changed before `before`; returns how many.
    async fn purge_tombstones(&self, before: DateTime<Utc>) -> StoreResult<u64>;
}

#[derive(FromRow)]
struct EntryRow {
    namespace: String,
    path: String,
    md5: String,
    size: i64,
    last_modified: i64,
    is_deleted: bool,
}

const UPSERT: &str = "INSERT INTO blob_index (namespace, path, md5, size, last_modified, is_deleted) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (namespace, path) DO UPDATE SET md5 = excluded.md5, \
     size = excluded.size, last_modified = excluded.last_modified, is_deleted = excluded.is_deleted";
const GET: &str = "SELECT * FROM blob_index WHERE namespace = $1 AND path = $2";
const PURGE: &str = "DELETE FROM blob_index WHERE is_deleted AND last_modified < $1";

macro_rules! sql_blob_index_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl BlobIndexStore for $name {
            async fn upsert(&self, e: &IndexEntry) -> StoreResult<()> {
                sqlx::query(UPSERT)
                    .bind(&e.namespace)
                    .bind(&e.path)
                    .bind(&e.md5)
                    .bind(e.size)
                    .bind(to_millis(e.last_modified))
                    .bind(e.is_deleted)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get(&self, namespace: &str, path: &str) -> StoreResult<Option<IndexEntry>> {
                let row: Option<EntryRow> =
                    sqlx::query_as(GET).bind(namespace).bind(path).fetch_optional(&self.pool).await?;
                Ok(row.map(|r| IndexEntry {
                    namespace: r.namespace,
                    path: r.path,
                    md5: r.md5,
                    size: r.size,
                    last_modified: from_millis(r.last_modified),
                    is_deleted: r.is_deleted,
                }))
            }

            async fn purge_tombstones(&self, before: DateTime<Utc>) -> StoreResult<u64> {
                Ok(sqlx::query(PURGE).bind(to_millis(before)).execute(&self.pool).await?.rows_affected())
            }
        }
    };
}

sql_blob_index_store!(SqliteBlobIndex, SqlitePool);
sql_blob_index_store!(PostgresBlobIndex, PgPool);
