//! `GET /health` (every backend checked, 503 when one is down) and `GET /ready`.

use std::future::Future;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// How long one backend may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> Router<AppState> {
    Router::new().route("/health", get(health)).route("/ready", get(ready))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Unavailable,
}

/// The seeds' `{"status": …}` (and the memory proxy's `storage`) plus one field per backend.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    /// `ok` when every backend answers, `degraded` otherwise.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub timestamp: DateTime<Utc>,
    pub version: &'static str,
    /// The memory proxy's field: `connected` when the blob store answers.
    #[schema(example = "connected")]
    pub storage: &'static str,
    pub database: CheckStatus,
    pub queue: CheckStatus,
    pub blob_store: CheckStatus,
    pub event_bus: CheckStatus,
    pub backends: BackendNames,
}

/// Which implementation serves each concern.
#[derive(Debug, Serialize, ToSchema)]
pub struct BackendNames {
    #[schema(example = "sqlite")]
    pub database: &'static str,
    #[schema(example = "sqlite")]
    pub queue: &'static str,
    #[schema(example = "filesystem")]
    pub blob_store: &'static str,
    #[schema(example = "in-process")]
    pub event_bus: &'static str,
}

async fn probe<E: std::fmt::Display>(
    what: &'static str,
    check: impl Future<Output = Result<(), E>>,
) -> CheckStatus {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => CheckStatus::Ok,
        Ok(Err(e)) => {
            tracing::warn!(backend = what, error = %e, "health check failed");
            CheckStatus::Unavailable
        }
        Err(_) => {
            tracing::warn!(backend = what, "health check timed out");
            CheckStatus::Unavailable
        }
    }
}

/// Health of the process and every backend
#[utoipa::path(get, path = "/health", tag = "platform", responses(
    (status = 200, description = "Every backend answers", body = HealthReport),
    (status = 503, description = "At least one backend does not answer", body = HealthReport)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let backends = &state.backends;
    let (database, queue, blob_store, event_bus) = tokio::join!(
        probe("database", backends.database.ping()),
        probe("queue", state.queue.ping()),
        probe("blob_store", backends.blobs.check()),
        probe("event_bus", backends.events.check()),
    );
    let healthy = [database, queue, blob_store, event_bus].iter().all(|s| *s == CheckStatus::Ok);
    let report = HealthReport {
        status: if healthy { "ok" } else { "degraded" },
        timestamp: Utc::now(),
        version: env!("CARGO_PKG_VERSION"),
        storage: if blob_store == CheckStatus::Ok { "connected" } else { "disconnected" },
        database,
        queue,
        blob_store,
        event_bus,
        backends: BackendNames {
            database: backends.database.backend_name(),
            queue: state.queue.backend_name(),
            blob_store: backends.blobs.backend_name(),
            event_bus: backends.events.backend_name(),
        },
    };
    let status = if healthy { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(report))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyReport {
    #[schema(example = "ready")]
    pub status: &'static str,
}

/// Whether this process takes traffic: its database answers and it is not shutting down
#[utoipa::path(get, path = "/ready", tag = "platform", responses(
    (status = 200, description = "Ready", body = ReadyReport),
    (status = 503, description = "Shutting down or the database does not answer")))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<ReadyReport>, ApiError> {
    if state.is_draining() {
        return Err(ApiError::unavailable("shutting down"));
    }
    if probe("database", state.backends.database.ping()).await != CheckStatus::Ok {
        return Err(ApiError::unavailable("the database does not answer"));
    }
    Ok(Json(ReadyReport { status: "ready" }))
}
