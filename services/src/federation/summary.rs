//! The body of `POST /push`, read as loose JSON and checked by hand, so each refusal (422)
//! names the field at fault, e.g. `summary.topic_counts.foo: must be a non-negative integer`.
//! Fields the coordinator does not know (agmem also sends `memory_types`) are ignored, as
//! the original's pydantic model did; `topic_counts`, `fact_hashes` and `metadata` may be
//! left out.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use storage::sql::Summary;

use super::InvalidSummary;

/// Longest agent id and topic name, in characters.
pub const MAX_NAME_CHARS: usize = 255;
/// Most fact hashes one push may carry.
pub const MAX_HASHES: usize = 100_000;
/// Most topics one push may carry.
pub const MAX_TOPICS: usize = 100_000;
/// Longest fact hash, in hex digits.
pub const MAX_HASH_DIGITS: usize = 128;
/// Largest topic count: the largest integer every JSON client reads exactly (2^53 - 1).
pub const MAX_COUNT: i64 = 9_007_199_254_740_991;

fn invalid(field: &str, why: impl std::fmt::Display) -> InvalidSummary {
    InvalidSummary(format!("{field}: {why}"))
}

/// The summary a push body holds, validated and normalised (hashes lowercase, once each).
pub fn parse_push(body: &[u8]) -> Result<Summary, InvalidSummary> {
    let body: Value =
        serde_json::from_slice(body).map_err(|e| invalid("body", format!("not valid JSON: {e}")))?;
    let Value::Object(mut body) = body else {
        return Err(invalid("body", "must be a JSON object holding a summary"));
    };
    let Some(summary) = body.remove("summary") else { return Err(invalid("summary", "field required")) };
    let Value::Object(mut summary) = summary else { return Err(invalid("summary", "must be an object")) };
    Ok(Summary {
        agent_id: agent_id(summary.remove("agent_id"))?,
        timestamp: timestamp(summary.remove("timestamp"))?,
        topic_counts: topic_counts(summary.remove("topic_counts"))?,
        fact_hashes: fact_hashes(summary.remove("fact_hashes"))?,
        metadata: metadata(summary.remove("metadata"))?,
    })
}

/// Why `name` cannot be an agent id or a topic, if it cannot.
fn bad_name(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("must not be empty".to_string())
    } else if name.chars().count() > MAX_NAME_CHARS {
        Some(format!("must be at most {MAX_NAME_CHARS} characters"))
    } else if name.contains('\0') {
        Some("must not contain NUL (U+0000)".to_string())
    } else {
        None
    }
}

fn agent_id(value: Option<Value>) -> Result<String, InvalidSummary> {
    const FIELD: &str = "summary.agent_id";
    match value {
        None | Some(Value::Null) => Err(invalid(FIELD, "field required")),
        Some(Value::String(id)) => match bad_name(&id) {
            Some(why) => Err(invalid(FIELD, why)),
            None => Ok(id),
        },
        Some(_) => Err(invalid(FIELD, "must be a string")),
    }
}

/// RFC 3339, or an ISO 8601 date-time without an offset, read as UTC (what Python's
/// `datetime.utcnow().isoformat()` writes, which the original accepted).
fn timestamp(value: Option<Value>) -> Result<DateTime<Utc>, InvalidSummary> {
    const FIELD: &str = "summary.timestamp";
    let text = match value {
        None | Some(Value::Null) => return Err(invalid(FIELD, "field required")),
        Some(Value::String(text)) => text,
        Some(_) => return Err(invalid(FIELD, "must be a string")),
    };
    DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.with_timezone(&Utc))
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%dT%H:%M:%S%.f").map(|at| at.and_utc())
        })
        .map_err(|_| {
            invalid(FIELD, format!("{text:?} is not an RFC 3339 date-time such as 2026-02-01T12:00:00Z"))
        })
}

fn topic_counts(value: Option<Value>) -> Result<BTreeMap<String, i64>, InvalidSummary> {
    const FIELD: &str = "summary.topic_counts";
    let topics: Map<String, Value> = match value {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(topics)) => topics,
        Some(_) => return Err(invalid(FIELD, "must be an object of topic: count")),
    };
    if topics.len() > MAX_TOPICS {
        return Err(invalid(FIELD, format!("at most {MAX_TOPICS} topics per push")));
    }
    topics
        .into_iter()
        .map(|(topic, count)| {
            if let Some(why) = bad_name(&topic) {
                return Err(invalid(FIELD, format!("topic {topic:?}: {why}")));
            }
            match count_of(&count) {
                Some(count) => Ok((topic, count)),
                None => Err(invalid(
                    &format!("{FIELD}.{topic}"),
                    format!("must be a non-negative integer (at most {MAX_COUNT}), not {count}"),
                )),
            }
        })
        .collect()
}

/// A count: a non-negative integer, also when written with a zero fraction (`5.0`).
fn count_of(value: &Value) -> Option<i64> {
    let Value::Number(number) = value else { return None };
    let count = match number.as_i64() {
        Some(count) => count,
        None => {
            let float = number.as_f64()?;
            if float.fract() != 0.0 || !(0.0..=MAX_COUNT as f64).contains(&float) {
                return None;
            }
            float as i64
        }
    };
    (0..=MAX_COUNT).contains(&count).then_some(count)
}

fn fact_hashes(value: Option<Value>) -> Result<Vec<String>, InvalidSummary> {
    const FIELD: &str = "summary.fact_hashes";
    let hashes = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(hashes)) => hashes,
        Some(_) => return Err(invalid(FIELD, "must be an array of hex strings")),
    };
    if hashes.len() > MAX_HASHES {
        return Err(invalid(FIELD, format!("at most {MAX_HASHES} hashes per push, not {}", hashes.len())));
    }
    let mut seen = HashSet::with_capacity(hashes.len());
    let mut out = Vec::with_capacity(hashes.len());
    for (i, hash) in hashes.into_iter().enumerate() {
        let Value::String(mut hash) = hash else {
            return Err(invalid(&format!("{FIELD}[{i}]"), "must be a string of hex digits"));
        };
        if hash.is_empty() || hash.len() > MAX_HASH_DIGITS || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            let shown: String = hash.chars().take(40).collect();
            return Err(invalid(
                &format!("{FIELD}[{i}]"),
                format!("{shown:?} is not 1 to {MAX_HASH_DIGITS} hex digits"),
            ));
        }
        hash.make_ascii_lowercase();
        if seen.insert(hash.clone()) {
            out.push(hash);
        }
    }
    Ok(out)
}

fn metadata(value: Option<Value>) -> Result<Value, InvalidSummary> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(object @ Value::Object(_)) => Ok(object),
        Some(_) => Err(invalid("summary.metadata", "must be an object")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn push(summary: Value) -> Result<Summary, String> {
        parse_push(json!({ "summary": summary }).to_string().as_bytes()).map_err(|e| e.0)
    }

    fn base() -> Value {
        json!({"agent_id": "a", "timestamp": "2026-02-01T12:00:00Z"})
    }

    fn with(field: &str, value: Value) -> Value {
        let mut summary = base();
        summary[field] = value;
        summary
    }

    #[test]
    fn a_full_summary_is_normalised() {
        let summary = push(json!({"agent_id": "agent-123", "timestamp": "2026-02-01T13:00:00.5+01:00",
            "topic_counts": {"user-preferences": 5, "ctx": 3.0}, "fact_hashes": ["ABC123", "abc123", "def456"],
            "metadata": {"version": "0.2.1"}, "memory_types": ["semantic"]}))
        .unwrap();
        assert_eq!(summary.agent_id, "agent-123");
        assert_eq!(summary.timestamp.to_rfc3339(), "2026-02-01T12:00:00.500+00:00");
        assert_eq!(summary.topic_counts, BTreeMap::from([("ctx".into(), 3), ("user-preferences".into(), 5)]));
        assert_eq!(summary.fact_hashes, ["abc123", "def456"]);
        assert_eq!(summary.metadata, json!({"version": "0.2.1"}));

        let bare = push(json!({"agent_id": "a", "timestamp": "2026-02-01T12:00:00.123456"})).unwrap();
        assert_eq!(bare.timestamp.timestamp_millis() % 1000, 123, "no offset: UTC");
        assert!(bare.topic_counts.is_empty() && bare.fact_hashes.is_empty() && bare.metadata == json!({}));
    }

    #[test]
    fn each_refusal_names_its_field() {
        let long = "x".repeat(256);
        let cases = [
            (json!("not an object"), "summary: must be an object"),
            (json!({"timestamp": "2026-02-01T12:00:00Z"}), "summary.agent_id: field required"),
            (with("agent_id", json!("")), "summary.agent_id: must not be empty"),
            (with("agent_id", json!(long)), "summary.agent_id: must be at most 255"),
            (with("agent_id", json!(7)), "summary.agent_id: must be a string"),
            (with("timestamp", json!("yesterday")), "summary.timestamp:"),
            (json!({"agent_id": "a"}), "summary.timestamp: field required"),
            (
                with("topic_counts", json!({"foo": -1})),
                "summary.topic_counts.foo: must be a non-negative integer",
            ),
            (with("topic_counts", json!({"foo": 1.5})), "summary.topic_counts.foo:"),
            (with("topic_counts", json!({"foo": "3"})), "summary.topic_counts.foo:"),
            (with("topic_counts", json!({"foo": true})), "summary.topic_counts.foo:"),
            (with("topic_counts", json!({"": 1})), "summary.topic_counts: topic \"\": must not be empty"),
            (with("topic_counts", json!({long.clone(): 1})), "must be at most 255"),
            (with("topic_counts", json!([1])), "summary.topic_counts: must be an object"),
            (with("fact_hashes", json!(["abc", "xyz"])), "summary.fact_hashes[1]:"),
            (with("fact_hashes", json!([""])), "summary.fact_hashes[0]:"),
            (with("fact_hashes", json!(["a".repeat(129)])), "summary.fact_hashes[0]:"),
            (with("fact_hashes", json!([12])), "summary.fact_hashes[0]: must be a string"),
            (with("fact_hashes", json!("abc")), "summary.fact_hashes: must be an array"),
            (with("metadata", json!([1])), "summary.metadata: must be an object"),
        ];
        for (summary, expected) in cases {
            let message = push(summary.clone()).unwrap_err();
            assert!(message.starts_with(expected) || message.contains(expected), "{summary} → {message}");
        }
        let many: Vec<String> = (0..=MAX_HASHES).map(|i| format!("{i:x}")).collect();
        assert!(
            push(with("fact_hashes", json!(many))).unwrap_err().starts_with("summary.fact_hashes: at most")
        );
        assert!(parse_push(b"{").unwrap_err().0.starts_with("body: not valid JSON"));
        assert_eq!(parse_push(b"{}").unwrap_err().0, "summary: field required");
    }
}
