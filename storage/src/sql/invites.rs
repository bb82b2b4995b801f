//! Invitations to register (`ENGRAM_REGISTRATION=invite`), on SQLite and PostgreSQL: an
//! administrator issues one, optionally for one email address, and it admits one account
//! before it expires. Only the SHA-256 hash of an invitation's code is stored.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::StoreResult;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Invite {
    pub id: String,
    /// Only this address may register with it, when set (lower-cased).
    pub email: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub used_by: Option<String>,
}

/// An invitation to store; `code_hash` is the SHA-256 hash of the code handed out.
#[derive(Debug, Clone)]
pub struct NewInvite {
    pub id: String,
    pub code_hash: String,
    pub email: Option<String>,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait InviteStore: Send + Sync {
    async fn create(&self, invite: NewInvite) -> StoreResult<Invite>;

    /// Every invitation, newest first.
    async fn list(&self) -> StoreResult<Vec<Invite>>;

    /// Deletes an invitation nobody used yet; `false` when there is none such.
    async fn revoke(&self, id: &str) -> StoreResult<bool>;

    /// Spends the unused, unexpired invitation with this code for `user_id` registering as
    /// `email` (an invitation naming an address admits only that one); `None` otherwise.
    async fn take(&self, code_hash: &str, email: &str, user_id: &str) -> StoreResult<Option<Invite>>;

    /// Makes a taken invitation usable again (the registration it was taken for failed).
    async fn give_back(&self, id: &str) -> StoreResult<()>;
}

#[derive(FromRow)]
struct InviteRow {
    id: String,
    email: Option<String>,
    created_by: String,
    created_at: i64,
    expires_at: i64,
    used_at: Option<i64>,
    used_by: Option<String>,
}

impl From<InviteRow> for Invite {
    fn from(row: InviteRow) -> Self {
        Invite {
            id: row.id,
            email: row.email,
            created_by: row.created_by,
            created_at: from_millis(row.created_at),
            expires_at: from_millis(row.expires_at),
            used_at: row.used_at.map(from_millis),
            used_by: row.used_by,
        }
    }
}

const INSERT: &str = "INSERT INTO invites (id, code_hash, email, created_by, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, email, created_by, created_at, expires_at, used_at, used_by";
const LIST: &str = "SELECT id, email, created_by, created_at, expires_at, used_at, used_by FROM invites \
     ORDER BY created_at DESC, id DESC";
const REVOKE: &str = "DELETE FROM invites WHERE id = $1 AND used_at IS NULL";
const TAKE: &str = "UPDATE invites SET used_at = $4, used_by = $3 WHERE code_hash = $1 AND used_at IS NULL \
     AND expires_at > $4 AND (email IS NULL OR email = $2) \
     RETURNING id, email, created_by, created_at, expires_at, used_at, used_by";
const GIVE_BACK: &str = "UPDATE invites SET used_at = NULL, used_by = NULL WHERE id = $1";

macro_rules! sql_invite_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl InviteStore for $name {
            async fn create(&self, invite: NewInvite) -> StoreResult<Invite> {
                let row: InviteRow = sqlx::query_as(INSERT)
                    .bind(&invite.id)
                    .bind(&invite.code_hash)
                    .bind(&invite.email)
                    .bind(&invite.created_by)
                    .bind(to_millis(Utc::now()))
                    .bind(to_millis(invite.expires_at))
                    .fetch_one(&self.pool)
                    .await?;
                Ok(row.into())
            }

            async fn list(&self) -> StoreResult<Vec<Invite>> {
                let rows: Vec<InviteRow> = sqlx::query_as(LIST).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(Invite::from).collect())
            }

            async fn revoke(&self, id: &str) -> StoreResult<bool> {
                Ok(sqlx::query(REVOKE).bind(id).execute(&self.pool).await?.rows_affected() == 1)
            }

            async fn take(&self, code_hash: &str, email: &str, user_id: &str) -> StoreResult<Option<Invite>> {
                let row: Option<InviteRow> = sqlx::query_as(TAKE)
                    .bind(code_hash)
                    .bind(email)
                    .bind(user_id)
                    .bind(to_millis(Utc::now()))
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.map(Invite::from))
            }

            async fn give_back(&self, id: &str) -> StoreResult<()> {
                sqlx::query(GIVE_BACK).bind(id).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

sql_invite_store!(SqliteInvites, SqlitePool);
sql_invite_store!(PostgresInvites, PgPool);
