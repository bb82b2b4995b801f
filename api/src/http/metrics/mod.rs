//! `GET /metrics`: Prometheus text exposition of the HTTP traffic this process served, and of
//! job delivery over every process (read at scrape time): how long each kind's oldest due job
//! has waited, and each worker's consumers (alive, restarts).

pub mod registry;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// Prometheus metrics
#[utoipa::path(get, path = "/metrics", tag = "platform",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let delivery = super::health::delivery_waits(&state).await?;
    state.metrics.record_job_delivery(state.engine.kinds.names(), delivery);
    let text = state.metrics.render().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
