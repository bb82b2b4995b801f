//! Semantic memories (AIBrain's `/api/v1/memories...` routes) in the shapes its clients
//! parse: `{success: true, ...}` with camelCase memories, errors `{success: false, error,
//! code}`. CRUD, list and history live here; search, ingest, import, export and the sync
//! feed in the modules below. Every route acts for the caller on the caller's memories.

pub(crate) mod bulk;
mod device;
pub mod input;
pub(crate) mod search;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use chrono::Utc;
use jobs::kinds::ImportError;
use serde_json::{Value, json};
use services::memories::{Memories, MemoriesError, memory_json};
use storage::sql::{ListFrom, from_millis, to_millis};

pub(crate) use self::device::apply_device_change;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::input::{
    CreateBody, DEFAULT_LIST_LIMIT, ListParams, MAX_LIST_LIMIT, UpdateBody, invalid, parse_body,
};
use crate::auth::Caller;
use crate::error::{ApiError, AppQuery, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create, list))
        .routes(routes!(search::search))
        .routes(routes!(bulk::ingest))
        .routes(routes!(bulk::import))
        .routes(routes!(bulk::export))
        .routes(routes!(bulk::updates))
        .routes(routes!(read, update, delete))
        .routes(routes!(history))
        .layer(middleware::map_response_with_state(ErrorFamily::AiBrain, reshape_errors))
}

pub(crate) fn memories(state: &AppState) -> &Arc<Memories> {
    &state.jobs.services.memories
}

/// Per-user limits of the costly routes, counted in `storage::counters` (Redis in scale-out).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limited {
    Search,
    Ingest,
    Import,
}

impl Limited {
    fn rule(self, state: &AppState) -> (&'static str, u64, Duration) {
        let limits = &state.config.limits;
        match self {
            Limited::Search => ("search", limits.memory_search_per_minute, Duration::from_secs(60)),
            Limited::Ingest => ("ingest", limits.memory_ingest_per_hour, Duration::from_secs(3600)),
            Limited::Import => ("import", limits.memory_import_per_hour, Duration::from_secs(3600)),
        }
    }
}

/// Counts one use of `route` by the caller; 429 with `Retry-After` past the limit.
pub(crate) async fn count_use(state: &AppState, caller: &Caller, route: Limited) -> Result<(), ApiError> {
    let (name, limit, window) = route.rule(state);
    let count = state.backends.counters.hit(&format!("memories:{name}:{}", caller.user.id), window).await?;
    if count.hits > limit {
        let per = if window.as_secs() == 60 { "a minute" } else { "an hour" };
        return Err(ApiError::rate_limited(
            format!("Too many {name} requests: at most {limit} {per}; try again later"),
            count.resets_in,
        ));
    }
    Ok(())
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::Memories(e) => e.into(),
            ImportError::Submit(e) => e.into(),
        }
    }
}

impl From<MemoriesError> for ApiError {
    fn from(e: MemoriesError) -> Self {
        match e {
            MemoriesError::Store(e) => e.into(),
            MemoriesError::EmbeddingsUnavailable(why) => {
                tracing::warn!(error = %why, "embedding failed");
                ApiError::new(ErrorCode::Unavailable, format!("embeddings are unavailable: {why}"))
            }
            MemoriesError::InvalidVector(why) => invalid("embedding", why),
            MemoriesError::Extraction(why) => {
                ApiError::new(ErrorCode::Unavailable, format!("fact extraction failed: {why}"))
            }
            MemoriesError::Cancelled => ApiError::new(ErrorCode::Conflict, "cancelled"),
        }
    }
}

pub(crate) fn not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("Memory {} not found", id.chars().take(128).collect::<String>()),
    )
}

fn check_vector(state: &AppState, vector: Option<Vec<f32>>) -> Result<Option<Vec<f32>>, ApiError> {
    vector.map(|v| memories(state).check_vector(v)).transpose().map_err(ApiError::from)
}

#[utoipa::path(post, path = "/api/v1/memories", tag = "memories", request_body = CreateBody,
    responses((status = 201, description = "`{success, memory}`"),
    (status = 422, description = "A field out of bounds, named")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("memories:rw")?;
    let (mut new, embed, vector) = parse_body::<CreateBody>(&body)?.into_new()?;
    new.embedding = check_vector(&state, vector)?;
    let memory = memories(&state).create(&caller.user.id, new, embed).await?;
    Ok((StatusCode::CREATED, Json(json!({"success": true, "memory": memory_json(&memory)}))).into_response())
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ReadParams {
    /// Send the memory's vector too.
    #[serde(default)]
    pub include_embedding: bool,
}

#[utoipa::path(get, path = "/api/v1/memories/{id}", tag = "memories", params(("id" = String, Path), ReadParams),
    responses((status = 200, description = "`{success, memory}`"), (status = 404, description = "No such memory")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppQuery(params): AppQuery<ReadParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:read")?;
    let memory = memories(&state)
        .store
        .get(&caller.user.id, &id, params.include_embedding)
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(json!({"success": true, "memory": memory_json(&memory)})))
}

#[utoipa::path(put, path = "/api/v1/memories/{id}", tag = "memories", params(("id" = String, Path)),
    request_body = UpdateBody,
    responses((status = 200, description = "`{success, memory}`; changed content keeps the old one as history"),
    (status = 404, description = "No such live memory"), (status = 422, description = "A field out of bounds")))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:rw")?;
    let (mut patch, vector) = parse_body::<UpdateBody>(&body)?.into_patch()?;
    patch.embedding = check_vector(&state, vector)?;
    let memory = memories(&state).update(&caller.user.id, &id, patch).await?.ok_or_else(|| not_found(&id))?;
    Ok(Json(json!({"success": true, "memory": memory_json(&memory)})))
}

#[utoipa::path(delete, path = "/api/v1/memories/{id}", tag = "memories", params(("id" = String, Path)),
    responses((status = 200, description = "`{success, message}`"), (status = 404, description = "No such memory")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:rw")?;
    if !memories(&state).delete(&caller.user.id, &id).await? {
        return Err(not_found(&id));
    }
    Ok(Json(json!({"success": true, "message": "Memory deleted successfully"})))
}

/// A list cursor: the last memory's creation time and id.
fn list_cursor(created_at: chrono::DateTime<Utc>, id: &str) -> String {
    format!("{}.{id}", to_millis(created_at))
}

fn parse_list_cursor(cursor: &str) -> Result<ListFrom, ApiError> {
    let (millis, id) =
        cursor.split_once('.').ok_or_else(|| invalid("cursor", "not a cursor from this API"))?;
    let millis: i64 = millis.parse().map_err(|_| invalid("cursor", "not a cursor from this API"))?;
    Ok(ListFrom::After { created_at: from_millis(millis), id: id.to_string() })
}

#[utoipa::path(get, path = "/api/v1/memories", tag = "memories", params(ListParams),
    responses((status = 200, description = "`{success, memories, count, nextCursor}`, newest first")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(mut params): AppQuery<ListParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:read")?;
    let filter = params.filter()?;
    let limit = params.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit < 1 {
        return Err(invalid("limit", "must be at least 1"));
    }
    let limit = limit.min(MAX_LIST_LIMIT);
    let from = match (&params.cursor, params.offset) {
        (Some(cursor), _) => parse_list_cursor(cursor)?,
        (None, Some(offset)) if offset < 0 => return Err(invalid("offset", "must not be negative")),
        (None, offset) => ListFrom::Offset(offset.unwrap_or(0)),
    };
    let found = memories(&state).store.list(&caller.user.id, &filter, &from, limit).await?;
    let next = (found.len() as i64 == limit)
        .then(|| found.last().map(|m| list_cursor(m.created_at, &m.id)))
        .flatten();
    let listed: Vec<Value> = found.iter().map(memory_json).collect();
    Ok(Json(json!({"success": true, "count": listed.len(), "memories": listed, "nextCursor": next})))
}

#[utoipa::path(get, path = "/api/v1/memories/{id}/history", tag = "memories", params(("id" = String, Path)),
    responses((status = 200, description = "`{success, memory, history, count}`: the versions it replaced, newest first"),
    (status = 404, description = "No such memory")))]
pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:read")?;
    let store = &memories(&state).store;
    let memory = store.get(&caller.user.id, &id, false).await?.ok_or_else(|| not_found(&id))?;
    let versions: Vec<Value> = store.history(&caller.user.id, &id).await?.iter().map(memory_json).collect();
    Ok(Json(json!({
        "success": true,
        "memory": memory_json(&memory),
        "count": versions.len(),
        "history": versions,
    })))
}
