//! What AIBrain's clients send, parsed and checked: bodies and query strings become store
//! types, and anything out of bounds is a 422 naming the field (`memories[3].content: ...`).

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use jobs::kinds::IngestPayload;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use services::memories::MAX_TAGS;
use services::memories::import::ImportItem;
use storage::sql::{MemoryFilter, MemoryPatch, MemoryScope, MemoryType, NewMemory};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, ErrorCode};

pub const MAX_CONTENT_CHARS: usize = 10_000;
pub const MAX_TAG_CHARS: usize = 50;
pub const MAX_URL_CHARS: usize = 2048;
pub const MAX_PLATFORM_CHARS: usize = 50;
pub const MAX_CONVERSATION_ID_CHARS: usize = 255;
pub const MAX_CLIENT_ID_CHARS: usize = 128;
pub const MAX_CONVERSATION_CHARS: usize = 200_000;
pub const MAX_IMPORT_ITEMS: usize = 10_000;
pub const MAX_SEARCH_LIMIT: i64 = 100;
pub const DEFAULT_SEARCH_LIMIT: i64 = 20;
pub const MAX_LIST_LIMIT: i64 = 200;
pub const DEFAULT_LIST_LIMIT: i64 = 50;

pub fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::Unprocessable, format!("{field}: {message}"))
}

/// Parses a JSON body into `T`; a value of the wrong type is a 422 naming its path.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid("body", "a JSON object is required"));
    }
    crate::error::require_object(body)?;
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    let parsed = match parsed {
        Err(e) if e.inner().is_data() => crate::error::with_whole_numbers(body).ok_or(e),
        other => other,
    };
    parsed.map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::new(ErrorCode::BadRequest, format!("body: not valid JSON ({inner})"))
        } else {
            // A missing field is reported at its parent's path; name the field itself.
            let message = inner.to_string();
            let missing = message.strip_prefix("missing field `").and_then(|rest| rest.split_once('`'));
            match (missing, path.as_str()) {
                (Some((name, _)), ".") => invalid(name, "is required"),
                (Some((name, _)), parent) => invalid(&format!("{parent}.{name}"), "is required"),
                (None, ".") => invalid("body", message),
                (None, path) => invalid(path, message),
            }
        }
    })
}

fn check_text(field: &str, value: &str, min: usize, max: usize) -> Result<(), ApiError> {
    let chars = value.chars().count();
    if chars < min || chars > max {
        return Err(invalid(field, format!("must be {min} to {max} characters (got {chars})")));
    }
    if value.contains('\0') {
        return Err(invalid(field, "must not contain NUL characters"));
    }
    Ok(())
}

fn check_optional(field: &str, value: Option<String>, max: usize) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) => {
            check_text(field, &v, 0, max)?;
            if v.chars().any(char::is_control) {
                return Err(invalid(field, "must not contain control characters"));
            }
            Ok(Some(v).filter(|v| !v.is_empty()))
        }
        None => Ok(None),
    }
}

/// A memory's content: 1 to [`MAX_CONTENT_CHARS`] characters, not only whitespace.
fn check_content(field: &str, content: &str) -> Result<(), ApiError> {
    check_not_blank(field, content, MAX_CONTENT_CHARS)
}

fn check_not_blank(field: &str, text: &str, max_chars: usize) -> Result<(), ApiError> {
    check_text(field, text, 1, max_chars)?;
    if text.trim().is_empty() {
        return Err(invalid(field, "must not be blank"));
    }
    Ok(())
}

fn check_confidence(field: &str, confidence: Option<f64>) -> Result<Option<f64>, ApiError> {
    match confidence {
        Some(c) if !(0.0..=1.0).contains(&c) => Err(invalid(field, "must be between 0 and 1")),
        other => Ok(other),
    }
}

/// Tags: at most `MAX_TAGS`, each 1–50 characters without control characters; repeats dropped.
pub fn check_tags(field: &str, tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(invalid(field, format!("at most {MAX_TAGS} tags")));
    }
    let mut kept: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.into_iter().enumerate() {
        let tag = tag.trim().to_string();
        check_text(&format!("{field}[{i}]"), &tag, 1, MAX_TAG_CHARS)?;
        if tag.chars().any(char::is_control) {
            return Err(invalid(&format!("{field}[{i}]"), "must not contain control characters"));
        }
        if !kept.contains(&tag) {
            kept.push(tag);
        }
    }
    Ok(kept)
}

/// An instant as ISO 8601 / RFC 3339 text or epoch milliseconds.
pub fn parse_instant(field: &str, value: &Value) -> Result<DateTime<Utc>, ApiError> {
    let parsed = match value {
        Value::String(text) => DateTime::parse_from_rfc3339(text.trim()).ok().map(|t| t.with_timezone(&Utc)),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
            .and_then(DateTime::from_timestamp_millis),
        _ => None,
    };
    parsed.filter(|t| (1970..=9999).contains(&chrono::Datelike::year(t))).ok_or_else(|| {
        invalid(field, "must be an ISO 8601 time (e.g. 2026-01-31T12:00:00Z) or epoch milliseconds")
    })
}

fn optional_instant(field: &str, value: Option<Value>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => parse_instant(field, &value).map(Some),
    }
}

/// `POST /api/v1/memories`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateBody {
    /// 1 to 10,000 characters.
    pub content: String,
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "preference")]
    pub memory_type: MemoryType,
    #[schema(value_type = String, example = "user_global")]
    pub scope: MemoryScope,
    pub source_url: Option<String>,
    pub source_platform: Option<String>,
    /// ISO 8601 or epoch milliseconds.
    #[schema(value_type = Option<String>)]
    pub source_timestamp: Option<Value>,
    pub source_conversation_id: Option<String>,
    /// 0 to 1.
    pub confidence: Option<f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Embed the content now (default true).
    #[serde(default = "yes")]
    pub generate_embedding: bool,
    /// A vector computed by the client (of this server's model's length).
    pub embedding: Option<Vec<f32>>,
}

fn yes() -> bool {
    true
}

impl CreateBody {
    /// The memory to store, and whether to embed it.
    pub fn into_new(self) -> Result<(NewMemory, bool, Option<Vec<f32>>), ApiError> {
        check_content("content", &self.content)?;
        let new = NewMemory {
            id: None,
            content: self.content,
            memory_type: self.memory_type,
            scope: self.scope,
            source_url: check_optional("sourceUrl", self.source_url, MAX_URL_CHARS)?,
            source_platform: check_optional("sourcePlatform", self.source_platform, MAX_PLATFORM_CHARS)?,
            source_timestamp: optional_instant("sourceTimestamp", self.source_timestamp)?,
            source_conversation_id: check_optional(
                "sourceConversationId",
                self.source_conversation_id,
                MAX_CONVERSATION_ID_CHARS,
            )?,
            confidence: check_confidence("confidence", self.confidence)?,
            tags: check_tags("tags", self.tags)?,
            created_at: None,
            provenance: None,
            embedding: None,
        };
        Ok((new, self.generate_embedding, self.embedding))
    }
}

/// `PUT /api/v1/memories/{id}`: every field optional; `null` clears an optional field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateBody {
    pub content: Option<String>,
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    #[schema(value_type = Option<String>)]
    pub scope: Option<MemoryScope>,
    #[serde(default, deserialize_with = "present")]
    pub source_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub source_platform: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub source_timestamp: Option<Option<Value>>,
    #[serde(default, deserialize_with = "present")]
    pub source_conversation_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    pub confidence: Option<Option<f64>>,
    pub tags: Option<Vec<String>>,
    pub embedding: Option<Vec<f32>>,
}

/// A field that is present, even as `null`, becomes `Some(..)`.
fn present<'de, T: Deserialize<'de>, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

impl UpdateBody {
    pub fn into_patch(self) -> Result<(MemoryPatch, Option<Vec<f32>>), ApiError> {
        if let Some(content) = &self.content {
            check_content("content", content)?;
        }
        let optional =
            |field: &str, value: Option<Option<String>>, max| -> Result<Option<Option<String>>, ApiError> {
                value.map(|v| check_optional(field, v, max)).transpose()
            };
        let patch = MemoryPatch {
            content: self.content,
            memory_type: self.memory_type,
            scope: self.scope,
            source_url: optional("sourceUrl", self.source_url, MAX_URL_CHARS)?,
            source_platform: optional("sourcePlatform", self.source_platform, MAX_PLATFORM_CHARS)?,
            source_timestamp: self
                .source_timestamp
                .map(|v| optional_instant("sourceTimestamp", v))
                .transpose()?,
            source_conversation_id: optional(
                "sourceConversationId",
                self.source_conversation_id,
                MAX_CONVERSATION_ID_CHARS,
            )?,
            confidence: self.confidence.map(|c| check_confidence("confidence", c)).transpose()?,
            tags: self.tags.map(|t| check_tags("tags", t)).transpose()?,
            provenance: None,
            embedding: None,
        };
        Ok((patch, self.embedding))
    }
}

/// The filter of a search body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FilterBody {
    #[serde(rename = "type")]
    #[schema(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    #[schema(value_type = Option<String>)]
    pub scope: Option<MemoryScope>,
    /// Every one of these tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// At least one of these tags.
    #[serde(default)]
    pub tags_any: Vec<String>,
    pub platform: Option<String>,
    #[schema(value_type = Option<String>)]
    pub start_date: Option<Value>,
    #[schema(value_type = Option<String>)]
    pub end_date: Option<Value>,
}

impl FilterBody {
    pub fn into_filter(self) -> Result<MemoryFilter, ApiError> {
        Ok(MemoryFilter {
            memory_type: self.memory_type,
            scope: self.scope,
            platform: check_optional("filter.platform", self.platform, MAX_PLATFORM_CHARS)?,
            tags_all: check_tags("filter.tags", self.tags)?,
            tags_any: check_tags("filter.tagsAny", self.tags_any)?,
            start: optional_instant("filter.startDate", self.start_date)?,
            end: optional_instant("filter.endDate", self.end_date)?,
        })
    }
}

/// `GET /api/v1/memories` query parameters. Tags are comma-separated.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// 1 to 200 (larger values are capped); default 50.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
    /// `nextCursor` of the previous page (instead of `offset`).
    pub cursor: Option<String>,
    #[serde(rename = "type")]
    #[param(value_type = Option<String>)]
    pub memory_type: Option<MemoryType>,
    #[param(value_type = Option<String>)]
    pub scope: Option<MemoryScope>,
    pub platform: Option<String>,
    /// Memories with every one of these tags.
    pub tags: Option<String>,
    /// Memories with at least one of these tags.
    pub tags_any: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
}

fn comma_list(text: Option<String>) -> Vec<String> {
    text.map(|t| t.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string).collect())
        .unwrap_or_default()
}

impl ListParams {
    pub fn filter(&mut self) -> Result<MemoryFilter, ApiError> {
        let instant = |field: &str, v: Option<String>| optional_instant(field, v.map(Value::String));
        Ok(MemoryFilter {
            memory_type: self.memory_type,
            scope: self.scope,
            platform: check_optional("platform", self.platform.take(), MAX_PLATFORM_CHARS)?,
            tags_all: check_tags("tags", comma_list(self.tags.take()))?,
            tags_any: check_tags("tagsAny", comma_list(self.tags_any.take()))?,
            start: instant("startDate", self.start_date.take())?,
            end: instant("endDate", self.end_date.take())?,
        })
    }
}

/// `POST /api/v1/memories/search`.
#[derive(Debug, Deserialize, ToSchema)]
#[schema(as = MemorySearchBody)]
#[serde(rename_all = "camelCase")]
pub struct SearchBody {
    pub query: Option<String>,
    pub embedding: Option<Vec<f32>>,
    /// 1 to 100; default 20.
    pub limit: Option<i64>,
    pub filter: Option<FilterBody>,
    /// `hybrid` (default), `semantic` or `keyword`.
    #[schema(value_type = Option<String>)]
    pub mode: Option<services::memories::SearchMode>,
    /// Send each hit's vector too.
    #[serde(default)]
    pub include_embedding: bool,
}

/// `POST /api/v1/memories/ingest`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestBody {
    pub conversation_text: String,
    pub context: Option<IngestContextBody>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestContextBody {
    pub url: Option<String>,
    pub platform: Option<String>,
    pub conversation_id: Option<String>,
}

impl IngestBody {
    /// The `ingest_conversation` job payload.
    pub fn into_payload(self) -> Result<IngestPayload, ApiError> {
        check_not_blank("conversationText", &self.conversation_text, MAX_CONVERSATION_CHARS)?;
        let context = self.context.unwrap_or_default();
        Ok(IngestPayload {
            conversation_text: self.conversation_text,
            url: check_optional("context.url", context.url, MAX_URL_CHARS)?,
            platform: check_optional("context.platform", context.platform, MAX_PLATFORM_CHARS)?,
            conversation_id: check_optional(
                "context.conversationId",
                context.conversation_id,
                MAX_CONVERSATION_ID_CHARS,
            )?,
        })
    }
}

/// `POST /api/v1/memories/import`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportBody {
    pub memories: Vec<ImportItemBody>,
    #[serde(default)]
    pub deduplicate_on_import: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportItemBody {
    /// The client's id, kept (importing it again skips it).
    pub id: Option<String>,
    pub content: String,
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub memory_type: MemoryType,
    #[schema(value_type = Option<String>)]
    pub scope: Option<MemoryScope>,
    pub source_url: Option<String>,
    pub source_platform: Option<String>,
    #[schema(value_type = Option<String>)]
    pub source_timestamp: Option<Value>,
    pub source_conversation_id: Option<String>,
    pub confidence: Option<f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    /// When the client created it; kept.
    #[schema(value_type = Option<String>)]
    pub created_at: Option<Value>,
    pub embedding: Option<Vec<f32>>,
}

impl ImportBody {
    /// The checked items, each with an id (the client's, or a fresh one), and vectors
    /// checked by `check_vector`.
    pub fn into_items(
        self,
        check_vector: impl Fn(Vec<f32>) -> Result<Vec<f32>, String>,
    ) -> Result<(Vec<ImportItem>, bool), ApiError> {
        if self.memories.is_empty() || self.memories.len() > MAX_IMPORT_ITEMS {
            return Err(invalid("memories", format!("must hold 1 to {MAX_IMPORT_ITEMS} items")));
        }
        let mut items = Vec::with_capacity(self.memories.len());
        for (i, item) in self.memories.into_iter().enumerate() {
            let field = |name: &str| format!("memories[{i}].{name}");
            if let Some(id) = &item.id {
                check_text(&field("id"), id, 1, MAX_CLIENT_ID_CHARS)?;
                if id.chars().any(|c| c.is_control() || c.is_whitespace() || c == '/') {
                    return Err(invalid(
                        &field("id"),
                        "must not contain spaces, slashes or control characters",
                    ));
                }
            }
            check_content(&field("content"), &item.content)?;
            let embedding = item
                .embedding
                .map(|v| check_vector(v).map_err(|message| invalid(&field("embedding"), message)))
                .transpose()?;
            items.push(ImportItem {
                id: item.id.unwrap_or_else(storage::sql::memories::new_memory_id),
                content: item.content,
                memory_type: item.memory_type,
                scope: item.scope.unwrap_or(MemoryScope::UserGlobal),
                source_url: check_optional(&field("sourceUrl"), item.source_url, MAX_URL_CHARS)?,
                source_platform: check_optional(
                    &field("sourcePlatform"),
                    item.source_platform,
                    MAX_PLATFORM_CHARS,
                )?,
                source_timestamp: optional_instant(&field("sourceTimestamp"), item.source_timestamp)?,
                source_conversation_id: check_optional(
                    &field("sourceConversationId"),
                    item.source_conversation_id,
                    MAX_CONVERSATION_ID_CHARS,
                )?,
                confidence: check_confidence(&field("confidence"), item.confidence)?,
                tags: check_tags(&field("tags"), item.tags)?,
                created_at: optional_instant(&field("createdAt"), item.created_at)?,
                embedding,
            });
        }
        Ok((items, self.deduplicate_on_import))
    }
}

/// `GET /api/v1/memories/sync/updates`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct UpdatesParams {
    /// Changes strictly after this time (ISO 8601).
    pub updated_after: Option<String>,
    /// The `cursor` of an earlier answer (takes precedence).
    pub cursor: Option<String>,
    /// 1 to 1,000; default 500.
    pub limit: Option<i64>,
}

/// `GET /api/v1/memories/export`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase")]
pub struct ExportParams {
    /// Include each memory's vector.
    #[serde(default)]
    pub include_embeddings: bool,
}
