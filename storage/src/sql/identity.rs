//! Accounts, login sessions with their rotating refresh tokens, and API keys, on SQLite and
//! PostgreSQL. Secrets never reach this store: callers pass password hashes (argon2id) and
//! SHA-256 hashes of token and key secrets.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, SqlitePool};

use super::millis::{from_millis, to_millis};
use crate::error::{StoreError, StoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub display_name: String,
    pub role: Role,
    pub org_id: Option<String>,
    pub team_id: Option<String>,
    pub github_login: Option<String>,
    pub settings: Value,
    pub created_at: DateTime<Utc>,
}

/// An account to create; `email` and `github_login` are stored as given (callers lower-case).
#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub email: Option<String>,
    pub password_hash: Option<String>,
    pub display_name: String,
    pub role: Role,
    pub github_login: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What presenting a refresh token did.
#[derive(Debug, Clone, PartialEq)]
pub enum Rotation {
    /// The token was current: it is spent and the new one replaces it.
    Rotated { session_id: String, user: User },
    /// The token had been spent before: someone holds a copy. Its session is now revoked.
    Reused { session_id: String },
    /// Unknown, expired, or of a revoked session.
    Invalid,
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// `None` when the email or GitHub login is taken.
    async fn create_user(&self, user: NewUser) -> StoreResult<Option<User>>;

    async fn user(&self, id: &str) -> StoreResult<Option<User>>;

    /// The user with this email and their password hash, if they have one.
    async fn credentials(&self, email: &str) -> StoreResult<Option<(User, Option<String>)>>;

    async fn user_by_github_login(&self, login: &str) -> StoreResult<Option<User>>;

    /// Starts a session with its first refresh token.
    async fn create_session(
        &self,
        session_id: &str,
        user_id: &str,
        refresh_hash: &str,
        refresh_expires: DateTime<Utc>,
    ) -> StoreResult<()>;

    /// The user of a session that has not been revoked.
    async fn session_user(&self, session_id: &str) -> StoreResult<Option<User>>;

    /// `false` when the session was unknown or already revoked.
    async fn revoke_session(&self, session_id: &str, reason: &str) -> StoreResult<bool>;

    /// Spends the refresh token `old_hash` and stores `new_hash` in its place, atomically.
    async fn rotate_refresh_token(
        &self,
        old_hash: &str,
        new_hash: &str,
        new_expires: DateTime<Utc>,
    ) -> StoreResult<Rotation>;

    async fn create_api_key(&self, key: &ApiKey, secret_hash: &str) -> StoreResult<()>;

    async fn api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>>;

    /// `false` when the user has no such unrevoked key.
    async fn revoke_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool>;

    /// The unrevoked key with this secret hash and its user; records the use, at most once
    /// a minute, so a busy client does not write on every request.
    async fn api_key_user(&self, secret_hash: &str) -> StoreResult<Option<(ApiKey, User)>>;
}

#[derive(FromRow)]
struct UserRow {
    id: String,
    email: Option<String>,
    password_hash: Option<String>,
    display_name: String,
    role: String,
    org_id: Option<String>,
    team_id: Option<String>,
    github_login: Option<String>,
    settings: Json<Value>,
    created_at: i64,
}

impl UserRow {
    fn into_user(self) -> StoreResult<(User, Option<String>)> {
        let role = Role::parse(&self.role).ok_or_else(|| {
            StoreError::backend("database", anyhow::anyhow!("unknown role {:?}", self.role))
        })?;
        let user = User {
            id: self.id,
            email: self.email,
            display_name: self.display_name,
            role,
            org_id: self.org_id,
            team_id: self.team_id,
            github_login: self.github_login,
            settings: self.settings.0,
            created_at: from_millis(self.created_at),
        };
        Ok((user, self.password_hash))
    }
}

fn user(row: Option<UserRow>) -> StoreResult<Option<User>> {
    row.map(|r| r.into_user().map(|(user, _)| user)).transpose()
}

#[derive(FromRow)]
struct ApiKeyRow {
    id: String,
    user_id: String,
    name: String,
    scopes: Json<Vec<String>>,
    created_at: i64,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

impl From<ApiKeyRow> for ApiKey {
    fn from(row: ApiKeyRow) -> Self {
        ApiKey {
            id: row.id,
            user_id: row.user_id,
            name: row.name,
            scopes: row.scopes.0,
            created_at: from_millis(row.created_at),
            last_used_at: row.last_used_at.map(from_millis),
            revoked_at: row.revoked_at.map(from_millis),
        }
    }
}

const INSERT_USER: &str = "INSERT INTO users (id, email, password_hash, display_name, role, github_login, \
     created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING *";
const USER: &str = "SELECT * FROM users WHERE id = $1";
const USER_BY_EMAIL: &str = "SELECT * FROM users WHERE email = $1";
const USER_BY_GITHUB: &str = "SELECT * FROM users WHERE github_login = $1";
const INSERT_SESSION: &str = "INSERT INTO sessions (id, user_id, created_at) VALUES ($1, $2, $3)";
const INSERT_REFRESH: &str =
    "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
const SESSION_USER: &str = "SELECT users.* FROM sessions JOIN users ON users.id = sessions.user_id \
     WHERE sessions.id = $1 AND sessions.revoked_at IS NULL";
const REVOKE_SESSION: &str = "UPDATE sessions SET revoked_at = $2, revoked_reason = $3 \
     WHERE id = $1 AND revoked_at IS NULL";
/// Spends a current token of a live session; returns its session.
const SPEND_REFRESH: &str = "UPDATE refresh_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL \
     AND expires_at > $2 AND session_id IN (SELECT id FROM sessions WHERE revoked_at IS NULL) RETURNING session_id";
const SPENT_REFRESH: &str =
    "SELECT session_id FROM refresh_tokens WHERE token_hash = $1 AND used_at IS NOT NULL";
const INSERT_API_KEY: &str = "INSERT INTO api_keys (id, user_id, name, secret_hash, scopes, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";
const API_KEYS: &str = "SELECT id, user_id, name, scopes, created_at, last_used_at, revoked_at FROM api_keys \
     WHERE user_id = $1 ORDER BY id";
const REVOKE_API_KEY: &str =
    "UPDATE api_keys SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL";
const API_KEY_BY_HASH: &str = "SELECT id, user_id, name, scopes, created_at, last_used_at, revoked_at \
     FROM api_keys WHERE secret_hash = $1 AND revoked_at IS NULL";
const TOUCH_API_KEY: &str = "UPDATE api_keys SET last_used_at = $2 WHERE id = $1";
/// How stale `last_used_at` may get before a use rewrites it.
const TOUCH_EVERY_MS: i64 = 60_000;

macro_rules! sql_identity_store {
    ($name:ident, $pool:ty) => {
        pooled_store!($name, $pool);

        #[async_trait]
        impl IdentityStore for $name {
            async fn create_user(&self, new: NewUser) -> StoreResult<Option<User>> {
                let row: Option<UserRow> = sqlx::query_as(INSERT_USER)
                    .bind(&new.id)
                    .bind(&new.email)
                    .bind(&new.password_hash)
                    .bind(&new.display_name)
                    .bind(new.role.as_str())
                    .bind(&new.github_login)
                    .bind(to_millis(Utc::now()))
                    .fetch_optional(&self.pool)
                    .await?;
                user(row)
            }

            async fn user(&self, id: &str) -> StoreResult<Option<User>> {
                user(sqlx::query_as(USER).bind(id).fetch_optional(&self.pool).await?)
            }

            async fn credentials(&self, email: &str) -> StoreResult<Option<(User, Option<String>)>> {
                let row: Option<UserRow> =
                    sqlx::query_as(USER_BY_EMAIL).bind(email).fetch_optional(&self.pool).await?;
                row.map(UserRow::into_user).transpose()
            }

            async fn user_by_github_login(&self, login: &str) -> StoreResult<Option<User>> {
                user(sqlx::query_as(USER_BY_GITHUB).bind(login).fetch_optional(&self.pool).await?)
            }

            async fn create_session(
                &self,
                session_id: &str,
                user_id: &str,
                refresh_hash: &str,
                refresh_expires: DateTime<Utc>,
            ) -> StoreResult<()> {
                let now = to_millis(Utc::now());
                let mut tx = self.pool.begin().await?;
                sqlx::query(INSERT_SESSION)
                    .bind(session_id)
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(INSERT_REFRESH)
                    .bind(refresh_hash)
                    .bind(session_id)
                    .bind(now)
                    .bind(to_millis(refresh_expires))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn session_user(&self, session_id: &str) -> StoreResult<Option<User>> {
                user(sqlx::query_as(SESSION_USER).bind(session_id).fetch_optional(&self.pool).await?)
            }

            async fn revoke_session(&self, session_id: &str, reason: &str) -> StoreResult<bool> {
                let done = sqlx::query(REVOKE_SESSION)
                    .bind(session_id)
                    .bind(to_millis(Utc::now()))
                    .bind(reason)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn rotate_refresh_token(
                &self,
                old_hash: &str,
                new_hash: &str,
                new_expires: DateTime<Utc>,
            ) -> StoreResult<Rotation> {
                let now = to_millis(Utc::now());
                let mut tx = self.pool.begin().await?;
                let spent: Option<String> = sqlx::query_scalar(SPEND_REFRESH)
                    .bind(old_hash)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some(session_id) = spent else {
                    let reused: Option<String> =
                        sqlx::query_scalar(SPENT_REFRESH).bind(old_hash).fetch_optional(&mut *tx).await?;
                    let Some(session_id) = reused else { return Ok(Rotation::Invalid) };
                    sqlx::query(REVOKE_SESSION)
                        .bind(&session_id)
                        .bind(now)
                        .bind("refresh token reused")
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    return Ok(Rotation::Reused { session_id });
                };
                sqlx::query(INSERT_REFRESH)
                    .bind(new_hash)
                    .bind(&session_id)
                    .bind(now)
                    .bind(to_millis(new_expires))
                    .execute(&mut *tx)
                    .await?;
                let row: Option<UserRow> =
                    sqlx::query_as(SESSION_USER).bind(&session_id).fetch_optional(&mut *tx).await?;
                tx.commit().await?;
                match user(row)? {
                    Some(user) => Ok(Rotation::Rotated { session_id, user }),
                    None => Ok(Rotation::Invalid),
                }
            }

            async fn create_api_key(&self, key: &ApiKey, secret_hash: &str) -> StoreResult<()> {
                sqlx::query(INSERT_API_KEY)
                    .bind(&key.id)
                    .bind(&key.user_id)
                    .bind(&key.name)
                    .bind(secret_hash)
                    .bind(Json(&key.scopes))
                    .bind(to_millis(key.created_at))
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn api_keys(&self, user_id: &str) -> StoreResult<Vec<ApiKey>> {
                let rows: Vec<ApiKeyRow> =
                    sqlx::query_as(API_KEYS).bind(user_id).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(ApiKey::from).collect())
            }

            async fn revoke_api_key(&self, user_id: &str, key_id: &str) -> StoreResult<bool> {
                let done = sqlx::query(REVOKE_API_KEY)
                    .bind(key_id)
                    .bind(user_id)
                    .bind(to_millis(Utc::now()))
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn api_key_user(&self, secret_hash: &str) -> StoreResult<Option<(ApiKey, User)>> {
                let key: Option<ApiKeyRow> =
                    sqlx::query_as(API_KEY_BY_HASH).bind(secret_hash).fetch_optional(&self.pool).await?;
                let Some(mut key) = key else { return Ok(None) };
                let now = to_millis(Utc::now());
                if key.last_used_at.is_none_or(|used| now - used >= TOUCH_EVERY_MS) {
                    sqlx::query(TOUCH_API_KEY).bind(&key.id).bind(now).execute(&self.pool).await?;
                    key.last_used_at = Some(now);
                }
                let Some(user) = self.user(&key.user_id).await? else { return Ok(None) };
                Ok(Some((ApiKey::from(key), user)))
            }
        }
    };
}

sql_identity_store!(SqliteIdentity, SqlitePool);
sql_identity_store!(PostgresIdentity, PgPool);
