//! The OpenAPI document and the two pages that render it (`/docs`: Swagger UI, `/redoc`:
//! Redoc). Their scripts and styles are vendored from the npm registry into
//! `api/assets/vendor` (see `scripts/vendor-ui-assets.sh`) and served by the binary, so the
//! pages work with no internet.

use std::sync::OnceLock;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use utoipa::OpenApi;

use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

/// The document's frame: info, tags and schemas no handler names; the paths come from the
/// routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Engram",
        description = "Memory platform for AI agents: git memory, blob sync, federation, semantic memories and agent evaluations on one job-orchestration core."
    ),
    components(schemas(crate::error::ErrorCode)),
    tags(
        (name = "platform", description = "Health, readiness, metrics and documentation"),
        (name = "jobs", description = "Background jobs, their logs, workers and queues"),
        (name = "schedules", description = "Recurring jobs from cron expressions"),
        (name = "auth", description = "Accounts and sessions (AIBrain's shapes)"),
        (name = "git memory", description = "DiffMem: memory repos, context, search and sessions"),
        (name = "blob sync", description = "Memory proxy: files with conditional writes, tombstones, versions and a sync index"),
        (name = "federation", description = "agmem coordinator: agents push summaries, pulls read the merge"),
        (name = "memories", description = "AIBrain: semantic memories with hybrid search, ingest, import/export and live sync")
    )
)]
pub struct ApiDoc;

/// The document served at `/openapi.json`: what the routers carry (`super::routes`, on this
/// `ApiDoc`'s info, tags and shared schemas), completed by `openapi::finish`.
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let (_, document) = super::routes().split_for_parts();
        let mut document = serde_json::to_value(document).expect("the OpenAPI document serializes");
        super::openapi::finish(&mut document);
        document
    })
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .route("/openapi.json", get(served_document))
        .route("/docs", get(|| async { Html(SWAGGER_PAGE) }))
        .route("/redoc", get(|| async { Html(REDOC_PAGE) }))
        .route("/docs/assets/{file}", get(asset))
}

async fn served_document(State(state): State<AppState>) -> Json<Value> {
    let dimensions = state.jobs.services.memories.dimensions();
    Json(super::openapi::for_this_server(openapi(), state.engine.kinds.names(), dimensions))
}

const SWAGGER_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Engram API</title>
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/assets/swagger-init.js"></script>
</body>
</html>
"#;

const SWAGGER_INIT: &str =
    "window.ui = SwaggerUIBundle({ url: '/openapi.json', dom_id: '#swagger-ui', deepLinking: true });\n";

const REDOC_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Engram API reference</title>
</head>
<body>
  <redoc spec-url="/openapi.json"></redoc>
  <script src="/docs/assets/redoc.standalone.js"></script>
</body>
</html>
"#;

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (content_type, body): (&str, &'static [u8]) = match file.as_str() {
        "swagger-ui.css" => ("text/css; charset=utf-8", include_bytes!("../../assets/vendor/swagger-ui.css")),
        "swagger-ui-bundle.js" => {
            ("text/javascript; charset=utf-8", include_bytes!("../../assets/vendor/swagger-ui-bundle.js"))
        }
        "swagger-init.js" => ("text/javascript; charset=utf-8", SWAGGER_INIT.as_bytes()),
        "redoc.standalone.js" => {
            ("text/javascript; charset=utf-8", include_bytes!("../../assets/vendor/redoc.standalone.js"))
        }
        _ => return Err(ApiError::not_found("no such documentation asset")),
    };
    Ok(([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=86400")], body)
        .into_response())
}
