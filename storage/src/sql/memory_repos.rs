//! Git memory records on SQLite and PostgreSQL: which memory repo each user id has, the
//! remote it syncs with (token sealed), how its last sync went, the GitHub tokens users
//! exchanged, and the leases that make one process at a time a repo's writer.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::StoreResult;

/// How a memory repo stands with its remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoStatus {
    /// In step with its remote as of `last_sync`, or without a remote.
    Active,
    /// The last sync found the remote changed the same lines; nothing was overwritten.
    Conflict,
    /// The last sync failed (remote unreachable, token refused, push rejected, …).
    Error,
}

impl RepoStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RepoStatus::Active => "active",
            RepoStatus::Conflict => "conflict",
            RepoStatus::Error => "error",
        }
    }

    fn parse(value: &str) -> Self {
        match value {
            "conflict" => RepoStatus::Conflict,
            "error" => RepoStatus::Error,
            _ => RepoStatus::Active,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MemoryRepoRecord {
    pub user_id: String,
    pub repo_url: Option<String>,
    pub branch: String,
    /// The remote's token, sealed with `storage::git_memory::seal`.
    pub sealed_token: Option<String>,
    pub status: RepoStatus,
    pub last_sync: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait MemoryRepoStore: Send + Sync {
    /// Records a repo set up (again) for `record.user_id`, replacing an earlier record.
    async fn put(&self, record: &MemoryRepoRecord) -> StoreResult<()>;

    async fn get(&self, user_id: &str) -> StoreResult<Option<MemoryRepoRecord>>;

    /// Every repo with a remote, for scheduling syncs.
    async fn with_remote(&self) -> StoreResult<Vec<MemoryRepoRecord>>;

    /// Records the outcome of a sync at `at`.
    async fn record_sync(
        &self,
        user_id: &str,
        status: RepoStatus,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> StoreResult<()>;

    async fn put_github_token(&self, user_id: &str, sealed_token: &str) -> StoreResult<()>;

    async fn github_token(&self, user_id: &str) -> StoreResult<Option<String>>;

    /// Takes the lease `name` for `holder` until `until`, when it is free, expired or already
    /// `holder`'s; returns whether `holder` now holds it.
    async fn try_lease(&self, name: &str, holder: &str, until: DateTime<Utc>) -> StoreResult<bool>;

    /// Gives the lease up if `holder` holds it.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
}

#[derive(FromRow)]
struct RepoRow {
    user_id: String,
    repo_url: Option<String>,
    branch: String,
    sealed_token: Option<String>,
    status: String,
    last_sync: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
    updated_at: i64,
}

impl From<RepoRow> for MemoryRepoRecord {
    fn from(r: RepoRow) -> Self {
        Self {
            user_id: r.user_id,
            repo_url: r.repo_url,
            branch: r.branch,
            sealed_token: r.sealed_token,
            status: RepoStatus::parse(&r.status),
            last_sync: r.last_sync.map(from_millis),
            last_error: r.last_error,
            created_at: from_millis(r.created_at),
            updated_at: from_millis(r.updated_at),
        }
    }
}

const PUT: &str = "INSERT INTO memory_repos (user_id, repo_url, branch, sealed_token, status, last_sync, \
     last_error, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (user_id) DO UPDATE SET repo_url = excluded.repo_url, branch = excluded.branch, \
     sealed_token = excluded.sealed_token, status = excluded.status, last_sync = excluded.last_sync, \
     last_error = excluded.last_error, updated_at = excluded.updated_at";
const GET: &str = "SELECT * FROM memory_repos WHERE user_id = $1";
const WITH_REMOTE: &str = "SELECT * FROM memory_repos WHERE repo_url IS NOT NULL ORDER BY user_id";
const RECORD_SYNC: &str = "UPDATE memory_repos SET status = $2, last_error = $3, last_sync = $4, updated_at = $4 WHERE user_id = $1";
const PUT_GITHUB_TOKEN: &str = "INSERT INTO github_tokens (user_id, sealed_token, updated_at) VALUES ($1, $2, $3) \
     ON CONFLICT (user_id) DO UPDATE SET sealed_token = excluded.sealed_token, updated_at = excluded.updated_at";
const GITHUB_TOKEN: &str = "SELECT sealed_token FROM github_tokens WHERE user_id = $1";
/// One statement, so two processes racing for a lease cannot both win it.
const TRY_LEASE: &str = "INSERT INTO leases (name, holder, expires_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE leases.expires_at < $4 OR leases.holder = excluded.holder";
const RELEASE_LEASE: &str = "DELETE FROM leases WHERE name = $1 AND holder = $2";

macro_rules! sql_memory_repo_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl MemoryRepoStore for $name {
            async fn put(&self, r: &MemoryRepoRecord) -> StoreResult<()> {
                sqlx::query(PUT)
                    .bind(&r.user_id)
                    .bind(&r.repo_url)
                    .bind(&r.branch)
                    .bind(&r.sealed_token)
                    .bind(r.status.as_str())
                    .bind(r.last_sync.map(to_millis))
                    .bind(&r.last_error)
                    .bind(to_millis(r.created_at))
                    .bind(to_millis(r.updated_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get(&self, user_id: &str) -> StoreResult<Option<MemoryRepoRecord>> {
                let row: Option<RepoRow> =
                    sqlx::query_as(GET).bind(user_id).fetch_optional(&self.pool).await?;
                Ok(row.map(Into::into))
            }

            async fn with_remote(&self) -> StoreResult<Vec<MemoryRepoRecord>> {
                let rows: Vec<RepoRow> = sqlx::query_as(WITH_REMOTE).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn record_sync(
                &self,
                user_id: &str,
                status: RepoStatus,
                error: Option<&str>,
                at: DateTime<Utc>,
            ) -> StoreResult<()> {
                sqlx::query(RECORD_SYNC)
                    .bind(user_id)
                    .bind(status.as_str())
                    .bind(error)
                    .bind(to_millis(at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn put_github_token(&self, user_id: &str, sealed_token: &str) -> StoreResult<()> {
                sqlx::query(PUT_GITHUB_TOKEN)
                    .bind(user_id)
                    .bind(sealed_token)
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn github_token(&self, user_id: &str) -> StoreResult<Option<String>> {
                Ok(sqlx::query_scalar(GITHUB_TOKEN).bind(user_id).fetch_optional(&self.pool).await?)
            }

            async fn try_lease(&self, name: &str, holder: &str, until: DateTime<Utc>) -> StoreResult<bool> {
                let taken = sqlx::query(TRY_LEASE)
                    .bind(name)
                    .bind(holder)
                    .bind(to_millis(until))
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(taken == 1)
            }

            async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
                sqlx::query(RELEASE_LEASE).bind(name).bind(holder).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

sql_memory_repo_store!(SqliteMemoryRepos, SqlitePool);
sql_memory_repo_store!(PostgresMemoryRepos, PgPool);
