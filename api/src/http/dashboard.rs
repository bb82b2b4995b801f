//! The dashboard's landing page at `/`: which backends serve this process and where to go.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().route("/", get(home))
}

/// Renders any askama page, or a 500 that says nothing internal.
pub struct Page<T: Template>(pub T);

impl<T: Template> IntoResponse for Page<T> {
    fn into_response(self) -> Response {
        match self.0.render() {
            Ok(html) => (StatusCode::OK, Html(html)).into_response(),
            Err(e) => ApiError::internal(format!("template failed: {e}")).into_response(),
        }
    }
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    version: &'static str,
    database: &'static str,
    queue: &'static str,
    blob_store: &'static str,
    event_bus: &'static str,
}

async fn home(State(state): State<AppState>) -> Page<HomePage> {
    Page(HomePage {
        version: env!("CARGO_PKG_VERSION"),
        database: state.backends.database.backend_name(),
        queue: state.queue.backend_name(),
        blob_store: state.backends.blobs.backend_name(),
        event_bus: state.backends.events.backend_name(),
    })
}
