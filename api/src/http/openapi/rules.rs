//! The checks handlers make on their input, said in JSON Schema so the document accepts what
//! the server accepts and refuses what it refuses: lengths, ranges, patterns and the closed
//! sets of names (scopes, memory types, depths; job kinds are added per server, see
//! `for_this_server`). Each rule is merged into the schema of one
//! property of a component, or of one parameter of an operation. Values come from the
//! constants the handlers check against, so the two cannot drift apart silently.

use serde_json::{Value, json};

use services::git_memory::session::MAX_SESSION_INPUT;
use services::memories::MAX_TAGS;

use crate::auth::password::{MAX_PASSWORD, MIN_PASSWORD};
use crate::http::memories::input::{
    MAX_CLIENT_ID_CHARS, MAX_CONTENT_CHARS, MAX_CONVERSATION_CHARS, MAX_CONVERSATION_ID_CHARS,
    MAX_IMPORT_ITEMS, MAX_PLATFORM_CHARS, MAX_SEARCH_LIMIT, MAX_TAG_CHARS, MAX_URL_CHARS,
};

/// No control characters (Rust's `char::is_control`: C0, DEL and C1).
const PRINTABLE: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Something besides whitespace, and no NUL (handlers refuse blank text, and stored text
/// cannot hold U+0000).
const NOT_BLANK: &str = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$";
/// No NUL character.
const NO_NUL: &str = "^[^\\u0000]*$";
/// What registration takes for an email (`auth::Credentials::check`): a local part, `@`, a
/// domain with a dot, no whitespace or control characters.
const EMAIL: &str = "^[^@\\s\\u0000-\\u001f\\u007f-\\u009f]+@[^\\s\\u0000-\\u001f\\u007f-\\u009f]*\\.[^\\s\\u0000-\\u001f\\u007f-\\u009f]*$";
/// A printable name with something besides whitespace (API key names).
const NAME: &str = "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$";
/// Comma-separated tags (`GET /api/v1/memories?tags=`): at most 20, each at most 50 printable
/// characters.
const TAG_LIST: &str =
    "^[^,\\u0000-\\u001f\\u007f-\\u009f]{0,50}(,[^,\\u0000-\\u001f\\u007f-\\u009f]{0,50}){0,19}$";
/// `YYYY-MM-DD` (days up to 28, so every match is a date).
const DATE: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$";
/// A blob path (`storage::blob::BlobKey`): segments of 1 to 200 characters separated by `/`,
/// none `.` or `..`, no control characters; at most 1,024 bytes in all.
const BLOB_PATH: &str = "^([^/.\\u0000-\\u001f\\u007f-\\u009f][^/\\u0000-\\u001f\\u007f-\\u009f]{0,199}|\\.[^/.\\u0000-\\u001f\\u007f-\\u009f][^/\\u0000-\\u001f\\u007f-\\u009f]{0,198}|\\.\\.[^/\\u0000-\\u001f\\u007f-\\u009f]{1,198})(/([^/.\\u0000-\\u001f\\u007f-\\u009f][^/\\u0000-\\u001f\\u007f-\\u009f]{0,199}|\\.[^/.\\u0000-\\u001f\\u007f-\\u009f][^/\\u0000-\\u001f\\u007f-\\u009f]{0,198}|\\.\\.[^/\\u0000-\\u001f\\u007f-\\u009f]{1,198}))*$";

/// An instant as the memories routes take it (`memories::input::parse_instant`): RFC 3339 with
/// a year the server keeps (1971–9998 here, so any offset stays within 1970–9999 in UTC).
const INSTANT: &str = "^(197[1-9]|19[89][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$";
/// Latest epoch milliseconds the memories routes take (9999-12-31T23:59:59.999Z).
const MAX_EPOCH_MILLIS: i64 = 253_402_300_799_999;

const MEMORY_TYPES: &[&str] = &["preference", "fact", "task", "project", "meta"];
const MEMORY_SCOPES: &[&str] = &["user_global", "session", "site", "conversation"];
const SEARCH_MODES: &[&str] = &["semantic", "keyword", "hybrid"];
const DEPTHS: &[&str] = &["basic", "wide", "deep", "temporal"];
const JOB_STATUSES: &[&str] = &["queued", "running", "succeeded", "failed", "dead", "cancelled"];

fn text(min: usize, max: usize, pattern: &str) -> Value {
    json!({"minLength": min, "maxLength": max, "pattern": pattern})
}

fn one_of(values: &[&str]) -> Value {
    json!({"enum": values})
}

fn range(min: i64, max: i64) -> Value {
    json!({"minimum": min, "maximum": max})
}

fn turns() -> Value {
    json!({"minItems": 1, "items": {
        "type": "object",
        "required": ["role", "content"],
        "properties": {"role": {"type": "string"}, "content": {"type": "string"}}
    }})
}

fn tags() -> Value {
    json!({"maxItems": MAX_TAGS, "items": {"type": "string", "maxLength": MAX_TAG_CHARS, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f][^\\u0000-\\u001f\\u007f-\\u009f]*$"}})
}

/// Optional text the handler keeps only without control characters.
fn optional_text(max: usize) -> Value {
    json!({"maxLength": max, "pattern": PRINTABLE})
}

/// A time in a body: RFC 3339 text or epoch milliseconds.
fn instant() -> Value {
    json!({"type": ["string", "integer", "null"], "pattern": INSTANT, "minimum": 0, "maximum": MAX_EPOCH_MILLIS})
}

/// A client's vector: 1 to 4,096 finite numbers, not all (nearly) zero; its length is the
/// model's, which the served document adds (`for_this_server`).
pub(super) fn embedding() -> Value {
    let number = json!({"type": "number", "minimum": -1e18, "maximum": 1e18});
    json!({
        "minItems": 1,
        "maxItems": 4096,
        "items": number,
        "contains": {"type": "number", "anyOf": [{"minimum": 1e-3}, {"maximum": -1e-3}]}
    })
}

/// A property no longer supported: only `null` (or leaving it out) is accepted.
fn unsupported() -> Value {
    json!({"type": "null"})
}

/// `(component, property, rule)`.
pub(super) fn property_rules() -> Vec<(&'static str, &'static str, Value)> {
    let memory_fields = |component: &'static str| {
        vec![
            (component, "content", text(1, MAX_CONTENT_CHARS, NOT_BLANK)),
            (component, "type", one_of(MEMORY_TYPES)),
            (component, "scope", one_of(MEMORY_SCOPES)),
            (component, "confidence", range(0, 1)),
            (component, "tags", tags()),
            (component, "sourceUrl", optional_text(MAX_URL_CHARS)),
            (component, "sourcePlatform", optional_text(MAX_PLATFORM_CHARS)),
            (component, "sourceConversationId", optional_text(MAX_CONVERSATION_ID_CHARS)),
            (component, "sourceTimestamp", instant()),
            (component, "embedding", embedding()),
        ]
    };
    let mut rules = vec![
        ("Credentials", "email", json!({"maxLength": 254, "pattern": EMAIL})),
        ("Credentials", "password", text(MIN_PASSWORD, MAX_PASSWORD, NO_NUL)),
        ("Registration", "inviteCode", json!({"minLength": 1, "maxLength": 128})),
        ("CreateInvite", "email", json!({"maxLength": 254, "pattern": "@"})),
        ("CreateInvite", "expiresInHours", range(1, 30 * 24)),
        ("CreateKey", "name", json!({"maxLength": 100, "pattern": NAME})),
        ("CreateKey", "scopes", json!({"minItems": 1, "items": one_of(&crate::auth::scopes::KNOWN)})),
        ("SubmitRequest", "idempotency_key", text(1, 200, NO_NUL)),
        ("BatchRequest", "jobs", json!({"minItems": 1, "maxItems": super::super::jobs::MAX_BATCH})),
        // git memory
        ("SearchBody", "k", range(1, storage::git_memory::index::MAX_K as i64)),
        ("SearchBody", "query", json!({"maxLength": super::super::git_memory::MAX_QUERY})),
        ("PathSearchBody", "k", range(1, storage::git_memory::index::MAX_K as i64)),
        ("PathSearchBody", "query", json!({"maxLength": super::super::git_memory::MAX_QUERY})),
        ("OrchestratedBody", "k", range(1, storage::git_memory::index::MAX_K as i64)),
        ("OrchestratedBody", "conversation", turns()),
        ("PathOrchestratedBody", "k", range(1, storage::git_memory::index::MAX_K as i64)),
        ("PathOrchestratedBody", "conversation", turns()),
        ("ContextBody", "conversation", turns()),
        ("ContextBody", "depth", one_of(DEPTHS)),
        ("PathContextBody", "conversation", turns()),
        ("PathContextBody", "depth", one_of(DEPTHS)),
        ("SessionBody", "memory_input", text(1, MAX_SESSION_INPUT, NOT_BLANK)),
        ("SessionBody", "session_date", json!({"pattern": DATE})),
        ("PathSessionBody", "memory_input", text(1, MAX_SESSION_INPUT, NOT_BLANK)),
        ("PathSessionBody", "session_date", json!({"pattern": DATE})),
        ("PathSessionBody", "callback_url", unsupported()),
        ("PathCommitBody", "callback_url", unsupported()),
        ("OnboardBody", "user_info", text(1, MAX_SESSION_INPUT, NOT_BLANK)),
        ("OnboardBody", "template", unsupported()),
        ("SetupBody", "github_token", json!({"minLength": 1, "maxLength": 1000})),
        // blob sync
        ("BatchBody", "operations", json!({"minItems": 1, "maxItems": super::super::blob_sync::MAX_BATCH})),
        // semantic memories
        ("IngestBody", "conversationText", text(1, MAX_CONVERSATION_CHARS, NOT_BLANK)),
        ("IngestContextBody", "url", optional_text(MAX_URL_CHARS)),
        ("IngestContextBody", "platform", optional_text(MAX_PLATFORM_CHARS)),
        ("IngestContextBody", "conversationId", optional_text(MAX_CONVERSATION_ID_CHARS)),
        ("ImportBody", "memories", json!({"minItems": 1, "maxItems": MAX_IMPORT_ITEMS})),
        (
            "ImportItemBody",
            "id",
            json!({"minLength": 1, "maxLength": MAX_CLIENT_ID_CHARS, "pattern": PRINTABLE}),
        ),
        ("ImportItemBody", "createdAt", instant()),
        ("MemorySearchBody", "embedding", embedding()),
        ("MemorySearchBody", "mode", one_of(SEARCH_MODES)),
        ("MemorySearchBody", "limit", range(1, MAX_SEARCH_LIMIT)),
        ("FilterBody", "type", one_of(MEMORY_TYPES)),
        ("FilterBody", "scope", one_of(MEMORY_SCOPES)),
    ];
    for component in ["CreateBody", "UpdateBody", "ImportItemBody"] {
        rules.extend(memory_fields(component));
    }
    rules
}

/// What the derive cannot say about whole components and bodies.
pub(super) fn fix_components(document: &mut Value) {
    // `#[serde(deny_unknown_fields)]` on the variants of a batch operation.
    if let Some(variants) =
        document.pointer_mut("/components/schemas/BatchOperation/oneOf").and_then(Value::as_array_mut)
    {
        for variant in variants {
            variant["additionalProperties"] = json!(false);
        }
    }
    // An empty body is an empty file.
    if let Some(body) = document.pointer_mut("/paths/~1blob~1{path}/put/requestBody") {
        body["required"] = json!(false);
    }
    // agmem's push: the handler parses the body itself (`services::federation::summary::parse_push`).
    if let Some(body) = document.pointer_mut("/paths/~1push/post/requestBody/content/application~1json") {
        body["schema"] = json!({
            "type": "object",
            "required": ["summary"],
            "properties": {"summary": {
                "type": "object",
                "required": ["agent_id", "timestamp"],
                "properties": {
                    "agent_id": {"type": "string", "minLength": 1, "maxLength": services::federation::summary::MAX_NAME_CHARS},
                    "timestamp": {"type": "string", "description": "ISO 8601"},
                    "topic_counts": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
                    "fact_hashes": {"type": "array", "items": {"type": "string"}},
                    "metadata": {"type": "object"}
                }
            }}
        });
    }
}

/// `(method, path, parameter, rule)`.
pub(super) fn parameter_rules() -> Vec<(&'static str, &'static str, &'static str, Value)> {
    let page = range(1, 1000);
    let mut rules = vec![
        ("get", "/api/v1/jobs", "status", one_of(JOB_STATUSES)),
        ("get", "/api/v1/jobs", "limit", page.clone()),
        ("get", "/api/v1/jobs/{id}/logs", "limit", page.clone()),
        ("get", "/api/v1/memories", "limit", json!({"minimum": 1})),
        ("get", "/api/v1/memories", "offset", json!({"minimum": 0})),
        ("get", "/api/v1/memories", "type", one_of(MEMORY_TYPES)),
        ("get", "/api/v1/memories", "scope", one_of(MEMORY_SCOPES)),
        ("get", "/api/v1/memories", "platform", optional_text(MAX_PLATFORM_CHARS)),
        ("get", "/api/v1/memories", "tags", json!({"pattern": TAG_LIST})),
        ("get", "/api/v1/memories", "tagsAny", json!({"pattern": TAG_LIST})),
        ("get", "/api/v1/memories", "startDate", json!({"pattern": INSTANT})),
        ("get", "/api/v1/memories", "endDate", json!({"pattern": INSTANT})),
        ("get", "/api/v1/memories", "cursor", json!({"pattern": "^[0-9]{1,15}\\."})),
        ("get", "/api/v1/memories/sync/updates", "limit", page),
        ("get", "/api/v1/memories/sync/updates", "cursor", json!({"pattern": "^m1\\.[0-9]{1,18}$"})),
        ("get", "/api/v1/memories/sync/updates", "updatedAfter", json!({"pattern": INSTANT})),
        ("get", "/memory/{user_id}/recent-timeline", "days_back", range(1, 3660)),
        ("get", "/pull", "since", json!({"pattern": "^[0-9]{0,18}$"})),
        ("get", "/sync", "since", json!({"minimum": 0})),
        ("get", "/sync", "limit", range(1, 10_000)),
        ("post", "/auth/github", "github_token", json!({"minLength": 1, "maxLength": 1000})),
    ];
    for method in ["get", "put", "delete"] {
        rules.push((method, "/blob/{path}", "path", json!({"maxLength": 1024, "pattern": BLOB_PATH})));
    }
    rules
}

/// Parameters the handlers read that no extractor declares: `(method, path, parameter)`.
pub(super) fn extra_parameters() -> Vec<(&'static str, &'static str, Value)> {
    vec![(
        "put",
        "/blob/{path}",
        json!({
            "in": "header",
            "name": "Content-MD5",
            "required": true,
            "description": "`new` to create the file, or the MD5 of the version it replaces (32 hex digits)",
            "schema": {"type": "string", "pattern": "^(new|[0-9a-f]{32})$"}
        }),
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_closed_sets_are_what_the_server_parses() {
        for name in MEMORY_TYPES {
            assert!(serde_json::from_value::<storage::sql::MemoryType>(json!(name)).is_ok(), "{name}");
        }
        for name in MEMORY_SCOPES {
            assert!(serde_json::from_value::<storage::sql::MemoryScope>(json!(name)).is_ok(), "{name}");
        }
        for name in SEARCH_MODES {
            assert!(serde_json::from_value::<services::memories::SearchMode>(json!(name)).is_ok(), "{name}");
        }
        for name in DEPTHS {
            assert!(
                serde_json::from_value::<services::git_memory::context::Depth>(json!(name)).is_ok(),
                "{name}"
            );
        }
        for name in JOB_STATUSES {
            assert!(storage::sql::JobStatus::parse(name).is_some(), "{name}");
        }
    }
}
