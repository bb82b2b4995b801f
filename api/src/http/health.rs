//! `GET /health` (every backend checked, 503 when one is down; `degraded` too when a kind's
//! jobs wait past the stall bound for a live worker that claims the kind) and `GET /ready`.

use std::future::Future;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::http::metrics::registry::DeliveryWaits;
use crate::state::AppState;

/// How long one backend may take to answer a health check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(ready))
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
    /// `ok`, or `stalled` when a due job of some kind has waited longer than
    /// `ENGRAM_JOBS_STALL_AFTER_SECS` while a live worker claims the kind (`stalled_kinds`
    /// names them); `unavailable` when it cannot be told.
    #[schema(example = "ok")]
    pub job_delivery: &'static str,
    pub stalled_kinds: Vec<StalledKind>,
    pub backends: BackendNames,
}

/// A kind whose oldest due job has waited past the stall bound.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StalledKind {
    #[schema(example = "commit_session")]
    pub kind: String,
    /// How long its oldest due job has waited for a worker, in seconds.
    pub waiting_secs: f64,
}

pub(crate) async fn delivery_waits(state: &AppState) -> storage::StoreResult<DeliveryWaits> {
    let now = Utc::now();
    let (due, workers) = tokio::try_join!(state.engine.jobs.oldest_due(now), state.workers.list())?;
    let live_since = now - chrono::Duration::seconds(state.config.worker.stale_after_secs as i64);
    let waits = due
        .into_iter()
        .map(|(kind, due_at)| {
            let waited = (now - due_at).to_std().unwrap_or_default();
            let claimed =
                workers.iter().any(|w| !w.stopping && w.last_seen >= live_since && w.kinds.contains(&kind));
            (kind, waited, claimed)
        })
        .collect();
    Ok((waits, workers))
}

/// The kinds whose jobs wait past the stall bound for a worker that claims them.
async fn stalled_kinds(state: &AppState) -> storage::StoreResult<Vec<StalledKind>> {
    let bound = state.config.jobs.stall_after();
    Ok(delivery_waits(state)
        .await?
        .0
        .into_iter()
        .filter(|(_, waited, claimed)| *claimed && *waited > bound)
        .map(|(kind, waited, _)| StalledKind {
            kind,
            waiting_secs: (waited.as_millis() as f64 / 1000.0).round(),
        })
        .collect())
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
    (status = 200, description = "Every backend answers (`status` is `degraded` when jobs of a kind wait past the stall bound)", body = HealthReport),
    (status = 503, description = "At least one backend does not answer", body = HealthReport)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthReport>) {
    let backends = &state.backends;
    let (database, queue, blob_store, event_bus) = tokio::join!(
        probe("database", backends.database.ping()),
        probe("queue", state.queue.ping()),
        probe("blob_store", backends.blobs.check()),
        probe("event_bus", backends.events.check()),
    );
    let backends_up = [database, queue, blob_store, event_bus].iter().all(|s| *s == CheckStatus::Ok);
    let (job_delivery, stalled_kinds) = match tokio::time::timeout(CHECK_TIMEOUT, stalled_kinds(&state)).await
    {
        Ok(Ok(stalled)) if stalled.is_empty() => ("ok", stalled),
        Ok(Ok(stalled)) => {
            let kinds: Vec<&str> = stalled.iter().map(|s| s.kind.as_str()).collect();
            tracing::warn!(kinds = %kinds.join(","), "jobs wait past the stall bound for a worker");
            ("stalled", stalled)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot tell whether job delivery keeps up");
            ("unavailable", Vec::new())
        }
        Err(_) => ("unavailable", Vec::new()),
    };
    let report = HealthReport {
        status: if backends_up && job_delivery == "ok" { "ok" } else { "degraded" },
        timestamp: Utc::now(),
        version: env!("CARGO_PKG_VERSION"),
        storage: if blob_store == CheckStatus::Ok { "connected" } else { "disconnected" },
        database,
        queue,
        blob_store,
        event_bus,
        job_delivery,
        stalled_kinds,
        backends: BackendNames {
            database: backends.database.backend_name(),
            queue: state.queue.backend_name(),
            blob_store: backends.blobs.backend_name(),
            event_bus: backends.events.backend_name(),
        },
    };
    // Stalled jobs leave this process serving: only a backend that does not answer is a 503.
    let status = if backends_up { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
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
