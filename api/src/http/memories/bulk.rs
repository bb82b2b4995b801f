//! The routes that move many memories: ingest (an `ingest_conversation` job), import (inline
//! when small, else an `import_memories` job), the JSONL export and the sync feed.

use std::io;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use jobs::kinds::{ImportMemories, ImportStart, IngestConversation, start_import};
use serde_json::{Value, json};
use services::memories::{change_json, decode_cursor, encode_cursor, memory_json};
use storage::sql::{ChangesFrom, MemoryChange};

use super::input::{ExportParams, ImportBody, IngestBody, UpdatesParams, invalid, parse_body, parse_instant};
use super::{Limited, count_use, memories};
use crate::auth::Caller;
use crate::error::{ApiError, AppQuery};
use crate::http::jobs::wait::{Outcome, accepted, for_caller, prefers_async, submit_and_wait};
use crate::state::AppState;

const EXPORT_PAGE: i64 = 500;
const DEFAULT_UPDATES_LIMIT: i64 = 500;
const MAX_UPDATES_LIMIT: i64 = 1_000;

#[utoipa::path(post, path = "/api/v1/memories/ingest", tag = "memories", request_body = IngestBody,
    responses((status = 201, description = "`{success, memories, count, message, decisions}`"),
    (status = 202, description = "`Prefer: respond-async`, or still running after 30 s: `{job_id, status_url, events_url}`"),
    (status = 409, description = "The ingest job could not do it as things stand"),
    (status = 422, description = "A field out of bounds"), (status = 429, description = "Over the ingest limit")))]
pub(crate) async fn ingest(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("memories:rw")?;
    let payload = parse_body::<IngestBody>(&body)?.into_payload()?;
    count_use(&state, &caller, Limited::Ingest).await?;
    let submit = for_caller::<IngestConversation>(&caller, &payload);
    Ok(match submit_and_wait(&state, !prefers_async(&headers), submit).await? {
        Outcome::Finished(result) => (StatusCode::CREATED, Json(result)).into_response(),
        Outcome::Accepted(job) => accepted(&job),
    })
}

#[utoipa::path(post, path = "/api/v1/memories/import", tag = "memories", request_body = ImportBody,
    responses((status = 201, description = "`{success, imported, skipped}`"),
    (status = 202, description = "A large import still running: `{job_id, status_url, events_url}`"),
    (status = 409, description = "The import job could not do it as things stand"),
    (status = 422, description = "An item out of bounds, named (`memories[3].content`)"),
    (status = 429, description = "Over the import limit")))]
pub(crate) async fn import(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("memories:rw")?;
    let service = memories(&state).clone();
    let (items, deduplicate) = parse_body::<ImportBody>(&body)?
        .into_items(|v| service.check_vector(v).map_err(|e| e.to_string()))?;
    count_use(&state, &caller, Limited::Import).await?;
    let blobs = state.backends.blobs.as_ref();
    let start = start_import(
        &state.engine,
        &service,
        blobs,
        &caller.user.id,
        items,
        deduplicate,
        prefers_async(&headers),
    );
    let payload = match start.await? {
        ImportStart::Stored(outcome) => {
            let body = json!({"success": true, "imported": outcome.imported, "skipped": outcome.skipped});
            return Ok((StatusCode::CREATED, Json(body)).into_response());
        }
        ImportStart::Staged(payload) => payload,
    };
    let submit = for_caller::<ImportMemories>(&caller, &payload);
    Ok(match submit_and_wait(&state, !prefers_async(&headers), submit).await? {
        Outcome::Finished(result) => {
            let body = json!({"success": true, "imported": result["imported"], "skipped": result["skipped"]});
            (StatusCode::CREATED, Json(body)).into_response()
        }
        Outcome::Accepted(job) => accepted(&job),
    })
}

#[utoipa::path(get, path = "/api/v1/memories/export", tag = "memories", params(ExportParams),
    responses((status = 200, description = "JSON Lines (`application/x-ndjson`): one memory per line, in id order")))]
pub(crate) async fn export(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(params): AppQuery<ExportParams>,
) -> Result<Response, ApiError> {
    caller.require("memories:read")?;
    let store = memories(&state).store.clone();
    let owner = caller.user.id.clone();
    let with_vectors = params.include_embeddings;
    // The state is the id to continue after; `None` once the last page was sent.
    let pages = futures::stream::unfold(Some(String::new()), move |after| {
        let store = store.clone();
        let owner = owner.clone();
        async move {
            let after = after?;
            let page = match store.export_page(&owner, Some(&after), EXPORT_PAGE, with_vectors).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::error!(error = %e, "export failed part way");
                    return Some((Err(io::Error::other("export failed")), None));
                }
            };
            let last = page.last()?.id.clone();
            let mut lines = Vec::new();
            for memory in &page {
                serde_json::to_writer(&mut lines, &memory_json(memory)).ok()?;
                lines.push(b'\n');
            }
            let next = (page.len() as i64 == EXPORT_PAGE).then_some(last);
            Some((Ok::<Bytes, io::Error>(Bytes::from(lines)), next))
        }
    });
    // Fused: the body may be polled once more after its end.
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(pages.fuse())).into_response())
}

#[utoipa::path(get, path = "/api/v1/memories/sync/updates", tag = "memories", params(UpdatesParams),
    responses((status = 200, description = "`{success, memories, deleted, changes, count, cursor, hasMore}`: \
        changes in order, deletes as tombstones; pass `cursor` back for the next page")))]
pub(crate) async fn updates(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(params): AppQuery<UpdatesParams>,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:read")?;
    let limit = params.limit.unwrap_or(DEFAULT_UPDATES_LIMIT);
    if !(1..=MAX_UPDATES_LIMIT).contains(&limit) {
        return Err(invalid("limit", format!("must be 1 to {MAX_UPDATES_LIMIT}")));
    }
    let from = match (&params.cursor, &params.updated_after) {
        (Some(cursor), _) => ChangesFrom::Seq(
            decode_cursor(cursor).ok_or_else(|| invalid("cursor", "not a cursor from this API"))?,
        ),
        (None, Some(after)) => {
            ChangesFrom::UpdatedAfter(parse_instant("updatedAfter", &Value::String(after.clone()))?)
        }
        (None, None) => ChangesFrom::Seq(0),
    };
    let page = memories(&state).changes(&caller.user.id, from, limit).await?;
    let mut live = Vec::new();
    let mut deleted = Vec::new();
    for change in &page.changes {
        match change {
            MemoryChange::Upserted(memory) => live.push(memory_json(memory)),
            MemoryChange::Deleted { .. } => deleted.push(change_json(change)),
        }
    }
    Ok(Json(json!({
        "success": true,
        "count": live.len(),
        "memories": live,
        "deleted": deleted,
        "changes": page.changes.iter().map(change_json).collect::<Vec<_>>(),
        "cursor": encode_cursor(page.cursor),
        "hasMore": page.has_more,
    })))
}
