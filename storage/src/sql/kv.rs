//! Versioned key/value entries with optimistic concurrency, on SQLite and PostgreSQL.
//! One statement per operation, so a condition and its write are atomic on both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, SqlitePool};

use crate::error::{StoreError, StoreResult};

/// A value with the version that wrote it and when.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub value: Value,
    pub version: i64,
    pub updated_at: DateTime<Utc>,
}

/// The condition a write or delete needs to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Write whatever is there.
    Any,
    /// Only if the key does not exist.
    Absent,
    /// Only if the key exists at exactly this version.
    Version(i64),
}

#[async_trait]
pub trait KeyValueStore: Send + Sync {
    async fn get(&self, namespace: &str, key: &str) -> StoreResult<Option<Versioned>>;

    /// Writes `value` if `expect` holds and returns the new version;
    /// `StoreError::PreconditionFailed` otherwise.
    async fn put(&self, namespace: &str, key: &str, value: &Value, expect: Expect) -> StoreResult<i64>;

    /// Deletes if `expect` holds. `Ok(false)` when there was nothing to delete under `Any`.
    async fn delete(&self, namespace: &str, key: &str, expect: Expect) -> StoreResult<bool>;

    /// Entries whose key starts with `prefix`, in key order, after `after`, at most `limit`.
    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> StoreResult<Vec<(String, Versioned)>>;
}

const GET: &str = "SELECT value, version, updated_at FROM kv_entries WHERE namespace = $1 AND key = $2";
const UPSERT: &str = "INSERT INTO kv_entries (namespace, key, value, version, updated_at) \
     VALUES ($1, $2, $3, 1, $4) \
     ON CONFLICT (namespace, key) DO UPDATE \
     SET value = excluded.value, version = kv_entries.version + 1, updated_at = excluded.updated_at \
     RETURNING version";
const INSERT_IF_ABSENT: &str = "INSERT INTO kv_entries (namespace, key, value, version, updated_at) \
     VALUES ($1, $2, $3, 1, $4) ON CONFLICT (namespace, key) DO NOTHING RETURNING version";
const UPDATE_IF_VERSION: &str = "UPDATE kv_entries SET value = $3, version = version + 1, updated_at = $4 \
     WHERE namespace = $1 AND key = $2 AND version = $5 RETURNING version";
const DELETE_ANY: &str = "DELETE FROM kv_entries WHERE namespace = $1 AND key = $2";
const DELETE_IF_VERSION: &str = "DELETE FROM kv_entries WHERE namespace = $1 AND key = $2 AND version = $3";
const LIST: &str = "SELECT key, value, version, updated_at FROM kv_entries \
     WHERE namespace = $1 AND substr(key, 1, length($2)) = $2 AND key > $3 \
     ORDER BY key LIMIT $4";

/// Largest page `list` returns.
pub(super) const MAX_LIST_LIMIT: u32 = 1000;

/// Both backends run the same statements; only the pool type differs.
macro_rules! sql_key_value_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl KeyValueStore for $name {
            async fn get(&self, namespace: &str, key: &str) -> StoreResult<Option<Versioned>> {
                let row: Option<(Json<Value>, i64, DateTime<Utc>)> =
                    sqlx::query_as(GET).bind(namespace).bind(key).fetch_optional(&self.pool).await?;
                Ok(row.map(|(value, version, updated_at)| Versioned { value: value.0, version, updated_at }))
            }

            async fn put(
                &self,
                namespace: &str,
                key: &str,
                value: &Value,
                expect: Expect,
            ) -> StoreResult<i64> {
                let now = Utc::now();
                let query = match expect {
                    Expect::Any => sqlx::query_scalar(UPSERT),
                    Expect::Absent => sqlx::query_scalar(INSERT_IF_ABSENT),
                    Expect::Version(_) => sqlx::query_scalar(UPDATE_IF_VERSION),
                };
                let mut query = query.bind(namespace).bind(key).bind(Json(value)).bind(now);
                if let Expect::Version(version) = expect {
                    query = query.bind(version);
                }
                let version: Option<i64> = query.fetch_optional(&self.pool).await?;
                version.ok_or(StoreError::PreconditionFailed)
            }

            async fn delete(&self, namespace: &str, key: &str, expect: Expect) -> StoreResult<bool> {
                let result = match expect {
                    Expect::Any => {
                        sqlx::query(DELETE_ANY).bind(namespace).bind(key).execute(&self.pool).await?
                    }
                    Expect::Version(version) => {
                        sqlx::query(DELETE_IF_VERSION)
                            .bind(namespace)
                            .bind(key)
                            .bind(version)
                            .execute(&self.pool)
                            .await?
                    }
                    Expect::Absent => {
                        return match self.get(namespace, key).await? {
                            None => Ok(false),
                            Some(_) => Err(StoreError::PreconditionFailed),
                        };
                    }
                };
                match (result.rows_affected(), expect) {
                    (0, Expect::Version(_)) => Err(StoreError::PreconditionFailed),
                    (n, _) => Ok(n > 0),
                }
            }

            async fn list(
                &self,
                namespace: &str,
                prefix: &str,
                after: Option<&str>,
                limit: u32,
            ) -> StoreResult<Vec<(String, Versioned)>> {
                let rows: Vec<(String, Json<Value>, i64, DateTime<Utc>)> = sqlx::query_as(LIST)
                    .bind(namespace)
                    .bind(prefix)
                    .bind(after.unwrap_or(""))
                    .bind(i64::from(limit.min(MAX_LIST_LIMIT)))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows
                    .into_iter()
                    .map(|(key, value, version, updated_at)| {
                        (key, Versioned { value: value.0, version, updated_at })
                    })
                    .collect())
            }
        }
    };
}

sql_key_value_store!(SqliteKv, SqlitePool);
sql_key_value_store!(PostgresKv, PgPool);
