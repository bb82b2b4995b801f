//! The SQL database: one SQLite file (embedded default) or PostgreSQL + pgvector (scale-out),
//! connected, migrated at start, and handed to the stores built on it.

/// A store struct over one pool type, with its constructor: each SQL store is written once
/// and instantiated for `SqlitePool` and `PgPool`.
macro_rules! pooled_store {
    ($name:ident, $pool:ty) => {
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            pub fn new(pool: $pool) -> Self {
                Self { pool }
            }
        }
    };
}

/// `ALL`, `as_str` and `parse` for an enum stored as text: each variant and its spelling.
macro_rules! text_enum {
    ($ty:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($ty::$variant),)+ _ => None }
            }
        }
    };
}

mod blob_index;
mod evals;
mod federation;
mod identity;
mod invites;
mod jobs;
mod kv;
pub mod memories;
mod memory_repos;
mod millis;
mod schedules;
mod workers;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

pub use blob_index::{
    BlobIndexStore, ChangePage, HeadFn, IndexEntry, Observed, PathState, PendingWrite, PostgresBlobIndex,
    Settled, SqliteBlobIndex, Transition, VersionEntry,
};
pub use evals::{
    EvalRun, EvalStore, EvalTask, JudgedRun, PostgresEvals, PullRequest, RunJudgement, RunStatus, RunUpdate,
    SqliteEvals, TaskQuery, TaskScope, TaskSpec, TaskStatus,
};
pub use federation::{
    AgentRecord, FederationStore, MergedView, PostgresFederation, PushOutcome, SqliteFederation, Summary,
};
pub use identity::{ApiKey, IdentityStore, NewUser, PostgresIdentity, Role, Rotation, SqliteIdentity, User};
pub use invites::{Invite, InviteStore, NewInvite, PostgresInvites, SqliteInvites};
pub use jobs::{
    AttemptOutcome, Job, JobFilter, JobStatus, JobStore, KindStats, LogLine, NewJob, PostgresJobs, SqliteJobs,
};
pub use kv::{Expect, KeyValueStore, PostgresKv, SqliteKv, Versioned};
pub use memories::{
    BACKLOG_FROM_VECTORS, BacklogSpan, ChangePage as MemoryChangePage, ChangesFrom, Deleted, Inserted,
    ListFrom, Memory, MemoryChange, MemoryFilter, MemoryPatch, MemoryScope, MemoryStore, MemoryType,
    NewMemory, PostgresMemories, ScoredMemory, SqliteMemories,
};
pub use memory_repos::{
    MemoryRepoRecord, MemoryRepoStore, PostgresMemoryRepos, RepoStatus, SqliteMemoryRepos,
};
pub use millis::{from_millis, to_millis};
pub use schedules::{PostgresSchedules, Schedule, ScheduleStore, SqliteSchedules};
pub use workers::{ConsumerLiveness, PostgresWorkers, SqliteWorkers, WorkerRecord, WorkerStore};

use crate::config::DatabaseConfig;

/// How long a connection attempt may take before start-up gives up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) a SQLite file in WAL mode with a busy timeout, with the same
/// durability on every pooled connection.
pub async fn open_sqlite(path: &std::path::Path) -> anyhow::Result<SqlitePool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let options = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    SqlitePoolOptions::new()
        .max_connections(8)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .with_context(|| format!("cannot open SQLite database {}", path.display()))
}

/// A connected, migrated database of either kind.
#[derive(Clone, Debug)]
pub enum Database {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Database {
    /// Connects and applies every pending migration. PostgreSQL migrations run under sqlx's
    /// advisory lock, so several replicas may start at once.
    pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<Self> {
        let database = match config {
            DatabaseConfig::Sqlite { path } => Database::Sqlite(open_sqlite(path).await?),
            DatabaseConfig::Postgres { url } => {
                // Iterative HNSW scans keep reading the index until enough rows pass a
                // search's owner and filter conditions, instead of filtering one
                // `ef_search`-sized batch and stopping short; set per session, so a search
                // is one statement.
                let options = PgConnectOptions::from_str(url.expose())
                    .with_context(|| format!("DATABASE_URL {} is not usable", url.masked()))?
                    .options([("hnsw.iterative_scan", "strict_order")]);
                let pool = PgPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(CONNECT_TIMEOUT)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot connect to PostgreSQL at {}", url.masked()))?;
                Database::Postgres(pool)
            }
        };
        database.migrate().await?;
        Ok(database)
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self {
            Database::Sqlite(pool) => sqlx::migrate!("../migrations/sqlite")
                .run(pool)
                .await
                .context("cannot apply SQLite migrations")?,
            Database::Postgres(pool) => sqlx::migrate!("../migrations/postgres")
                .run(pool)
                .await
                .context("cannot apply PostgreSQL migrations (the role needs to create the vector and hstore extensions)")?,
        }
        Ok(())
    }

    /// One round trip, for health checks.
    pub async fn ping(&self) -> anyhow::Result<()> {
        match self {
            Database::Sqlite(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
            Database::Postgres(pool) => {
                sqlx::query("SELECT 1").execute(pool).await?;
            }
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }

    pub fn key_value_store(&self) -> Arc<dyn KeyValueStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteKv::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresKv::new(pool.clone())),
        }
    }

    pub fn job_store(&self) -> Arc<dyn JobStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteJobs::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresJobs::new(pool.clone())),
        }
    }

    pub fn blob_index(&self) -> Arc<dyn BlobIndexStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteBlobIndex::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresBlobIndex::new(pool.clone())),
        }
    }

    pub fn worker_store(&self) -> Arc<dyn WorkerStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteWorkers::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresWorkers::new(pool.clone())),
        }
    }

    pub fn schedule_store(&self) -> Arc<dyn ScheduleStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteSchedules::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresSchedules::new(pool.clone())),
        }
    }

    pub fn identity_store(&self) -> Arc<dyn IdentityStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteIdentity::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresIdentity::new(pool.clone())),
        }
    }

    pub fn invite_store(&self) -> Arc<dyn InviteStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteInvites::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresInvites::new(pool.clone())),
        }
    }

    pub fn memory_repo_store(&self) -> Arc<dyn MemoryRepoStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteMemoryRepos::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresMemoryRepos::new(pool.clone())),
        }
    }

    pub fn memory_store(&self) -> Arc<dyn MemoryStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteMemories::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresMemories::new(pool.clone())),
        }
    }

    pub fn federation_store(&self) -> Arc<dyn FederationStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteFederation::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresFederation::new(pool.clone())),
        }
    }

    pub fn eval_store(&self) -> Arc<dyn EvalStore> {
        match self {
            Database::Sqlite(pool) => Arc::new(SqliteEvals::new(pool.clone())),
            Database::Postgres(pool) => Arc::new(PostgresEvals::new(pool.clone())),
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Sqlite(pool) => pool.close().await,
            Database::Postgres(pool) => pool.close().await,
        }
    }
}
