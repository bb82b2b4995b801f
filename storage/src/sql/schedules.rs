//! Recurring jobs, on SQLite and PostgreSQL. `advance` moves a schedule to its next tick only
//! if nobody else did first, so each tick is enqueued once however many schedulers run.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Schedule {
    pub id: String,
    pub owner: String,
    pub kind: String,
    pub payload: Value,
    pub cron: String,
    pub timezone: String,
    pub paused: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait ScheduleStore: Send + Sync {
    /// Stores a new schedule (its `next_run_at` computed by the caller).
    async fn create(&self, schedule: &Schedule) -> StoreResult<()>;

    async fn get(&self, id: &str) -> StoreResult<Option<Schedule>>;

    /// Every schedule, or one owner's, oldest first.
    async fn list(&self, owner: Option<&str>) -> StoreResult<Vec<Schedule>>;

    /// Replaces the editable fields (kind, payload, cron, timezone, paused, next_run_at).
    async fn update(&self, schedule: &Schedule) -> StoreResult<bool>;

    async fn delete(&self, id: &str) -> StoreResult<bool>;

    /// Unpaused schedules whose next tick is at or before `now`.
    async fn due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Schedule>>;

    /// Moves the schedule from the tick `expected` to `next`; `false` when another scheduler
    /// already did (or the schedule changed meanwhile).
    async fn advance(
        &self,
        id: &str,
        expected: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> StoreResult<bool>;
}

#[derive(FromRow)]
struct ScheduleRow {
    id: String,
    owner: String,
    kind: String,
    payload: Json<Value>,
    cron: String,
    timezone: String,
    paused: bool,
    next_run_at: Option<i64>,
    last_run_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl From<ScheduleRow> for Schedule {
    fn from(row: ScheduleRow) -> Self {
        Schedule {
            id: row.id,
            owner: row.owner,
            kind: row.kind,
            payload: row.payload.0,
            cron: row.cron,
            timezone: row.timezone,
            paused: row.paused,
            next_run_at: row.next_run_at.map(from_millis),
            last_run_at: row.last_run_at.map(from_millis),
            created_at: from_millis(row.created_at),
            updated_at: from_millis(row.updated_at),
        }
    }
}

const INSERT: &str = "INSERT INTO schedules (id, owner, kind, payload, cron, timezone, paused, next_run_at, \
     last_run_at, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
const GET: &str = "SELECT * FROM schedules WHERE id = $1";
const LIST: &str = "SELECT * FROM schedules WHERE ($1 IS NULL OR owner = $1) ORDER BY id";
const UPDATE: &str = "UPDATE schedules SET kind = $2, payload = $3, cron = $4, timezone = $5, paused = $6, \
     next_run_at = $7, updated_at = $8 WHERE id = $1";
const DELETE: &str = "DELETE FROM schedules WHERE id = $1";
const DUE: &str = "SELECT * FROM schedules WHERE NOT paused AND next_run_at IS NOT NULL AND next_run_at <= $1 \
     ORDER BY next_run_at LIMIT $2";
const ADVANCE: &str = "UPDATE schedules SET next_run_at = $3, last_run_at = $2, updated_at = $4 \
     WHERE id = $1 AND next_run_at = $2 AND NOT paused";

macro_rules! sql_schedule_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl ScheduleStore for $name {
            async fn create(&self, s: &Schedule) -> StoreResult<()> {
                sqlx::query(INSERT)
                    .bind(&s.id)
                    .bind(&s.owner)
                    .bind(&s.kind)
                    .bind(Json(&s.payload))
                    .bind(&s.cron)
                    .bind(&s.timezone)
                    .bind(s.paused)
                    .bind(s.next_run_at.map(to_millis))
                    .bind(s.last_run_at.map(to_millis))
                    .bind(to_millis(s.created_at))
                    .bind(to_millis(s.updated_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn get(&self, id: &str) -> StoreResult<Option<Schedule>> {
                let row: Option<ScheduleRow> =
                    sqlx::query_as(GET).bind(id).fetch_optional(&self.pool).await?;
                Ok(row.map(Schedule::from))
            }

            async fn list(&self, owner: Option<&str>) -> StoreResult<Vec<Schedule>> {
                let rows: Vec<ScheduleRow> = sqlx::query_as(LIST).bind(owner).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Schedule::from).collect())
            }

            async fn update(&self, s: &Schedule) -> StoreResult<bool> {
                let result = sqlx::query(UPDATE)
                    .bind(&s.id)
                    .bind(&s.kind)
                    .bind(Json(&s.payload))
                    .bind(&s.cron)
                    .bind(&s.timezone)
                    .bind(s.paused)
                    .bind(s.next_run_at.map(to_millis))
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }

            async fn delete(&self, id: &str) -> StoreResult<bool> {
                Ok(sqlx::query(DELETE).bind(id).execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn due(&self, now: DateTime<Utc>, limit: u32) -> StoreResult<Vec<Schedule>> {
                let rows: Vec<ScheduleRow> = sqlx::query_as(DUE)
                    .bind(to_millis(now))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.into_iter().map(Schedule::from).collect())
            }

            async fn advance(
                &self,
                id: &str,
                expected: DateTime<Utc>,
                next: Option<DateTime<Utc>>,
            ) -> StoreResult<bool> {
                let result = sqlx::query(ADVANCE)
                    .bind(id)
                    .bind(to_millis(expected))
                    .bind(next.map(to_millis))
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok(result.rows_affected() == 1)
            }
        }
    };
}

sql_schedule_store!(SqliteSchedules, SqlitePool);
sql_schedule_store!(PostgresSchedules, PgPool);
