//! Blob sync, in the memory proxy's shapes: `GET`/`PUT`/`DELETE /blob/{path}` with its
//! `Content-MD5` preconditions and tombstones, `GET /sync` (the sync index, with a `since`
//! cursor and paging), plus kept versions (`?version=`, `/blob/{path}/versions`), batches
//! (`POST /blobs/batch`) and change notices over SSE (`GET /sync/events`). Each user syncs
//! their own namespace. Errors carry the `detail` string FastAPI clients read.

pub mod headers;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, middleware};
use base64::Engine;
use chrono::SecondsFormat;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use services::blob_sync::{Precondition, SyncError, SyncedFile, changes_topic};
use storage::sql::IndexEntry;
use utoipa::{IntoParams, OpenApi, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::headers::{
    http_date, if_match, none_match_hits, parse_precondition, precondition, verify_body_digest,
};
use crate::auth::Caller;
use crate::error::{ApiError, AppJson, AppQuery, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

/// Most index entries one `GET /sync` answers.
pub const MAX_SYNC_PAGE: i64 = 10_000;
/// Most operations in one batch.
pub const MAX_BATCH: usize = 100;
const VERSIONS_SUFFIX: &str = "/versions";

/// Files larger than `BLOB_MAX_MB` get 413 from `BlobSync::write`; bodies larger than
/// `ENGRAM_BODY_LIMIT_MB` get it from the platform's body limit first.
pub fn router() -> OpenApiRouter<AppState> {
    // `routes!` would route the documented `/blob/{path}` (one segment); a blob path has many.
    OpenApiRouter::with_openapi(BlobPaths::openapi())
        .route("/blob/{*path}", get(read).put(write).delete(delete))
        .routes(routes!(index))
        .routes(routes!(events))
        .routes(routes!(batch))
        .layer(middleware::map_response_with_state(ErrorFamily::FastApi, reshape_errors))
}

/// The operations on `/blob/{*path}`, documented as `/blob/{path}`.
#[derive(OpenApi)]
#[openapi(paths(read, write, delete))]
struct BlobPaths;

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        let code = match &e {
            SyncError::InvalidPath(_) => ErrorCode::BadRequest,
            SyncError::TooLarge { .. } => ErrorCode::PayloadTooLarge,
            SyncError::PreconditionFailed(_) => ErrorCode::PreconditionFailed,
            SyncError::NotFound(_) => ErrorCode::NotFound,
            SyncError::CursorExpired(_) => ErrorCode::Gone,
            SyncError::Store(_) => return ApiError::internal(e),
        };
        ApiError::new(code, e.to_string())
    }
}

/// The namespace a caller syncs: their own.
fn namespace(caller: &Caller) -> &str {
    &caller.user.id
}

fn iso(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// A kept version (see `/blob/{path}/versions`); the live file when absent.
    version: Option<i64>,
}

/// Read a file (or one of its kept versions)
#[utoipa::path(get, path = "/blob/{path}", tag = "blob sync", params(ReadQuery), responses(
    (status = 200, description = "The file's bytes; `ETag` (its MD5), `Last-Modified`, `Content-Type`"),
    (status = 304, description = "`If-None-Match` names the current MD5"),
    (status = 400, description = "Invalid path"),
    (status = 404, description = "No such file, or a tombstone")))]
pub async fn read(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
    AppQuery(query): AppQuery<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    caller.require("blobs:read")?;
    let ns = namespace(&caller);
    // `/blob/a/versions` lists a's versions, unless a live file is called `a/versions`.
    if let Some(listed) = path.strip_suffix(VERSIONS_SUFFIX)
        && query.version.is_none()
        && !state.blob_sync.is_live(ns, &path).await?
    {
        let versions = state.blob_sync.versions(ns, listed).await?;
        return Ok(Json(json!({"path": listed, "versions": versions})).into_response());
    }
    let file = state.blob_sync.read(ns, &path, query.version).await?;
    Ok(file_response(file, &headers))
}

fn file_response(file: SyncedFile, request: &HeaderMap) -> Response {
    let mut headers = HeaderMap::new();
    let etag = HeaderValue::from_str(&format!("\"{}\"", file.md5)).expect("hex is a header value");
    headers.insert(header::ETAG, etag);
    if let Ok(date) = HeaderValue::from_str(&http_date(file.last_modified)) {
        headers.insert(header::LAST_MODIFIED, date);
    }
    if let Some(version) = file.version {
        headers.insert("x-blob-version", HeaderValue::from(version));
    }
    if none_match_hits(request, &file.md5) {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    let content_type = file
        .content_type
        .and_then(|t| HeaderValue::from_str(&t).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    (StatusCode::OK, headers, file.body).into_response()
}

/// What a write answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct WriteReply {
    path: String,
    md5: String,
    size: i64,
    last_modified: String,
    version: i64,
}

impl From<IndexEntry> for WriteReply {
    fn from(e: IndexEntry) -> Self {
        WriteReply {
            path: e.path,
            md5: e.md5,
            size: e.size,
            last_modified: iso(e.last_modified),
            version: e.version,
        }
    }
}

/// Create or update a file, conditionally
#[utoipa::path(put, path = "/blob/{path}", tag = "blob sync", request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
    (status = 201, description = "Created (`Content-MD5: new`)", body = WriteReply),
    (status = 200, description = "Updated (`Content-MD5: <current md5>`)", body = WriteReply),
    (status = 400, description = "Invalid path, missing or malformed Content-MD5, or a body digest mismatch"),
    (status = 412, description = "The precondition does not hold"),
    (status = 413, description = "Larger than BLOB_MAX_MB")))]
pub async fn write(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    caller.require("blobs:rw")?;
    let precondition = precondition(&headers)?;
    verify_body_digest(&headers, &body)?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let written = state.blob_sync.write(namespace(&caller), &path, body, precondition, content_type).await?;
    let status = if written.created { StatusCode::CREATED } else { StatusCode::OK };
    let etag = HeaderValue::from_str(&format!("\"{}\"", written.entry.md5)).expect("hex is a header value");
    Ok((status, [(header::ETAG, etag)], Json(WriteReply::from(written.entry))).into_response())
}

/// Delete a file (leaves a tombstone in the sync index)
#[utoipa::path(delete, path = "/blob/{path}", tag = "blob sync", responses(
    (status = 204, description = "Tombstoned"),
    (status = 404, description = "No such file"),
    (status = 412, description = "`If-Match` names another MD5")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    caller.require("blobs:rw")?;
    state.blob_sync.delete(namespace(&caller), &path, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// Only entries changed after this cursor (from an earlier answer's `cursor`).
    since: Option<i64>,
    /// At most this many entries (1–10,000; default 10,000); `has_more` says whether to ask again.
    limit: Option<i64>,
}

/// The sync index
#[utoipa::path(get, path = "/sync", tag = "blob sync", params(SyncQuery), responses(
    (status = 200, description = "`{files: {path: {md5, last_modified, size, is_deleted}}, index_last_modified, cursor, has_more}`"),
    (status = 410, description = "`since` is older than the tombstone retention: sync again without it"),
    (status = 422, description = "Invalid since or limit")))]
pub async fn index(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(query): AppQuery<SyncQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require("blobs:read")?;
    let limit = query.limit.unwrap_or(MAX_SYNC_PAGE);
    if !(1..=MAX_SYNC_PAGE).contains(&limit) {
        return Err(ApiError::new(ErrorCode::Unprocessable, "limit must be between 1 and 10000"));
    }
    if query.since.is_some_and(|s| s < 0) {
        return Err(ApiError::new(ErrorCode::Unprocessable, "since must be a cursor from an earlier answer"));
    }
    let page = state.blob_sync.changes(namespace(&caller), query.since, limit).await?;
    let index_last_modified =
        page.entries.iter().map(|e| e.last_modified).max().unwrap_or_else(chrono::Utc::now);
    let files: BTreeMap<&str, Value> = page
        .entries
        .iter()
        .map(|e| {
            let entry = json!({
                "md5": e.md5,
                "last_modified": iso(e.last_modified),
                "size": e.size,
                "is_deleted": e.is_deleted,
                "version": e.version,
            });
            (e.path.as_str(), entry)
        })
        .collect();
    Ok(Json(json!({
        "files": files,
        "index_last_modified": iso(index_last_modified),
        "cursor": page.cursor,
        "has_more": page.has_more,
    })))
}

/// Changes of the caller's files as they happen (SSE)
#[utoipa::path(get, path = "/sync/events", tag = "blob sync", responses(
    (status = 200, description = "`event: change` with `{path, md5, size, is_deleted, version, cursor}` per change: pull `/sync?since=`",
     content_type = "text/event-stream")))]
pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require("blobs:read")?;
    let live = state.backends.events.subscribe(&changes_topic(namespace(&caller))).await?;
    let ready = Event::default().event("ready").data("{}");
    let changes = live.map(|event| Event::default().event("change").data(event.payload.to_string()));
    let stream = futures::stream::once(async move { ready }).chain(changes).map(Ok);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// At most 100; applied in order, each on its own precondition.
    operations: Vec<BatchOperation>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum BatchOperation {
    Put {
        path: String,
        /// `new`, or the MD5 of the version to replace.
        content_md5: String,
        /// The file as UTF-8 text, or
        content: Option<String>,
        /// the file's bytes in base64.
        content_base64: Option<String>,
        content_type: Option<String>,
    },
    Delete {
        path: String,
        if_match: Option<String>,
    },
}

/// Several writes and deletes in one request
#[utoipa::path(post, path = "/blobs/batch", tag = "blob sync", request_body = BatchBody, responses(
    (status = 200, description = "`{results: [{op, path, status, md5?, version?, detail?}], succeeded, failed}`: one result per operation, in order"),
    (status = 422, description = "Not a batch, or more than 100 operations")))]
pub async fn batch(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(body): AppJson<BatchBody>,
) -> Result<Json<Value>, ApiError> {
    caller.require("blobs:rw")?;
    if body.operations.is_empty() || body.operations.len() > MAX_BATCH {
        return Err(ApiError::new(ErrorCode::Unprocessable, "operations must hold between 1 and 100 items"));
    }
    let ns = namespace(&caller);
    let mut results = Vec::with_capacity(body.operations.len());
    for operation in body.operations {
        let (op, path, outcome) = match operation {
            BatchOperation::Put { path, content_md5, content, content_base64, content_type } => {
                let outcome = async {
                    let precondition: Precondition = parse_precondition(&content_md5)?;
                    let bytes = match (content, content_base64) {
                        (Some(text), None) => Bytes::from(text),
                        (None, Some(encoded)) => base64::engine::general_purpose::STANDARD
                            .decode(encoded)
                            .map(Bytes::from)
                            .map_err(|_| {
                                ApiError::new(ErrorCode::BadRequest, "content_base64 is not base64")
                            })?,
                        _ => {
                            return Err(ApiError::new(
                                ErrorCode::BadRequest,
                                "give exactly one of content and content_base64",
                            ));
                        }
                    };
                    let written = state.blob_sync.write(ns, &path, bytes, precondition, content_type).await?;
                    let status = if written.created { 201 } else { 200 };
                    Ok((status, Some(written.entry)))
                }
                .await;
                ("put", path, outcome)
            }
            BatchOperation::Delete { path, if_match } => {
                let outcome = async {
                    let if_match = match if_match {
                        None => None,
                        Some(raw) => Some(headers::parse_md5(&raw).ok_or_else(|| {
                            ApiError::new(ErrorCode::BadRequest, "if_match must be the file's MD5")
                        })?),
                    };
                    let entry = state.blob_sync.delete(ns, &path, if_match).await?;
                    Ok((204, Some(entry)))
                }
                .await;
                ("delete", path, outcome)
            }
        };
        results.push(match outcome {
            Ok((status, entry)) => json!({
                "op": op,
                "path": path,
                "status": status,
                "md5": entry.as_ref().map(|e| e.md5.clone()),
                "version": entry.as_ref().map(|e| e.version),
            }),
            Err(error) => {
                if error.code == ErrorCode::Internal {
                    return Err(error);
                }
                json!({"op": op, "path": path, "status": error.code.status().as_u16(), "detail": error.message})
            }
        });
    }
    let succeeded = results.iter().filter(|r| r["status"].as_u64().is_some_and(|s| s < 300)).count();
    Ok(Json(json!({"failed": results.len() - succeeded, "succeeded": succeeded, "results": results})))
}
