//! The HTTP surface: one folder per service (`git_memory/` with DiffMem's original paths,
//! `memories/` with its WebSocket, `blob_sync/`, `federation/`), plus `jobs/` (jobs, their log
//! stream, schedules) and `identity/` (sessions, API keys, invites, GitHub sign-in), merged
//! into one router behind the layers every request passes (request id, tracing, CORS,
//! compression, error shapes, metrics, timeout, body limit).

pub mod blob_sync;
pub mod dashboard;
pub mod docs;
pub mod evals;
pub mod federation;
pub mod git_memory;
pub mod health;
pub mod identity;
pub mod jobs;
pub mod memories;
pub mod metrics;
pub mod openapi;
#[cfg(test)]
mod tests;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::{Router, middleware};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use storage::config::CorsOrigins;

use crate::error::{not_found, reshape_errors_by_path};
use crate::state::AppState;

/// Every route, each router carrying the OpenAPI operations of its handlers.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(docs::ApiDoc::openapi())
        .merge(identity::router())
        .merge(blob_sync::router())
        .merge(dashboard::router())
        .merge(health::router())
        .merge(metrics::router())
        .merge(docs::router())
        .merge(evals::router())
        .merge(federation::router())
        .merge(jobs::router())
        .merge(git_memory::router())
        .merge(memories::router())
        .merge(memories::ws::router())
}

pub fn router(state: AppState) -> Router {
    let (routes, _) = routes().split_for_parts();
    with_platform_layers(routes, state)
}

/// Puts `routes` behind the layers every request passes, with the 404 fallback.
pub(crate) fn with_platform_layers(routes: Router<AppState>, state: AppState) -> Router {
    let config = state.config.clone();
    let router = routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(config.http.body_limit_bytes))
        .layer(RequestBodyLimitLayer::new(config.http.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, config.http.request_timeout))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), metrics::registry::track))
        .layer(middleware::from_fn(reshape_errors_by_path))
        .layer(CompressionLayer::new());
    let router = match cors_layer(&config.http.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
        .layer(PropagateRequestIdLayer::new(REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID.clone(), MakeRequestUlid))
        .with_state(state)
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids are ULIDs unless the client sent one.
#[derive(Clone, Copy)]
struct MakeRequestUlid;

impl MakeRequestId for MakeRequestUlid {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&ulid::Ulid::generate().to_string()).ok().map(RequestId::new)
    }
}

fn request_span(request: &Request) -> tracing::Span {
    let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("unmatched");
    let request_id = request.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

fn cors_layer(origins: &CorsOrigins) -> Option<CorsLayer> {
    let allow = match origins {
        CorsOrigins::None => return None,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        }
    };
    Some(CorsLayer::new().allow_origin(allow).allow_methods(Any).allow_headers(Any).expose_headers(Any))
}
