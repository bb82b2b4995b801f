//! `POST /api/v1/memories/search`: hybrid (default), semantic or keyword search over the
//! caller's live memories, each hit with `similarity` and its score parts.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use serde_json::{Value, json};
use services::memories::{SearchMode, SearchRequest, memory_json};

use super::input::{DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT, SearchBody, invalid, parse_body};
use super::{Limited, count_use, memories};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Longest query text embedded or searched.
const MAX_QUERY_CHARS: usize = 2_000;

#[utoipa::path(post, path = "/api/v1/memories/search", tag = "memories", request_body = SearchBody,
    responses((status = 200, description = "`{success, memories, count, mode}`; each memory has `similarity` \
        and `scores` {semantic, keyword, score}"),
    (status = 422, description = "Neither query nor embedding, or a field out of bounds"),
    (status = 429, description = "Over the search limit; see Retry-After"),
    (status = 503, description = "Semantic search without an embedding model")))]
pub(crate) async fn search(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require("memories:read")?;
    let body: SearchBody = parse_body(&body)?;
    let limit = body.limit.unwrap_or(DEFAULT_SEARCH_LIMIT);
    if !(1..=MAX_SEARCH_LIMIT).contains(&limit) {
        return Err(invalid("limit", format!("must be 1 to {MAX_SEARCH_LIMIT}")));
    }
    let query = body.query.filter(|q| !q.trim().is_empty());
    if let Some(query) = &query
        && (query.chars().count() > MAX_QUERY_CHARS || query.contains('\0'))
    {
        return Err(invalid("query", format!("must be at most {MAX_QUERY_CHARS} characters, without NUL")));
    }
    let mode = body.mode.unwrap_or_default();
    if query.is_none() && body.embedding.is_none() {
        return Err(invalid("query", "a query or an embedding is required"));
    }
    if mode == SearchMode::Keyword && query.is_none() {
        return Err(invalid("query", "keyword search needs a query"));
    }
    let embedding = body.embedding.map(|v| memories(&state).check_vector(v)).transpose()?;
    let filter = body.filter.unwrap_or_default().into_filter()?;
    count_use(&state, &caller, Limited::Search).await?;

    let request = SearchRequest { query, embedding, mode, filter, limit };
    let service = memories(&state);
    let mut hits = service.search(&caller.user.id, request).await?;
    if body.include_embedding {
        for hit in &mut hits {
            hit.memory.embedding =
                service.store.get(&caller.user.id, &hit.memory.id, true).await?.and_then(|m| m.embedding);
        }
    }
    let found: Vec<Value> = hits
        .iter()
        .map(|hit| {
            let mut value = memory_json(&hit.memory);
            value["similarity"] = json!(hit.scores.semantic.unwrap_or(hit.scores.score));
            value["score"] = json!(hit.scores.score);
            value["scores"] = json!({"semantic": hit.scores.semantic, "keyword": hit.scores.keyword, "score": hit.scores.score});
            value
        })
        .collect();
    Ok(Json(json!({"success": true, "count": found.len(), "mode": mode.as_str(), "memories": found})))
}
