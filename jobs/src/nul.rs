//! NUL characters (U+0000): PostgreSQL stores them neither in text nor in JSON. Engram refuses
//! them in what clients submit and replaces them (with U+FFFD) in what handlers produce, the
//! same on every backend, so one odd byte never fails a statement that records many jobs.

use serde_json::Value;

const REPLACEMENT: &str = "\u{FFFD}";

/// The path (`payload.a[2]`) of the first string or key holding a NUL, under `root`.
pub fn find_nul(value: &Value, root: &str) -> Option<String> {
    match value {
        Value::String(text) => text.contains('\0').then(|| root.to_string()),
        Value::Array(items) => {
            items.iter().enumerate().find_map(|(i, item)| find_nul(item, &format!("{root}[{i}]")))
        }
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let path = format!("{root}.{key}");
            if key.contains('\0') { Some(path) } else { find_nul(item, &path) }
        }),
        _ => None,
    }
}

/// `text` with every NUL replaced.
pub fn scrub_text(text: String) -> String {
    if text.contains('\0') { text.replace('\0', REPLACEMENT) } else { text }
}

/// `value` with every NUL in its strings and keys replaced.
pub fn scrub(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(scrub_text(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(scrub).collect()),
        Value::Object(fields) => {
            fields.into_iter().map(|(key, item)| (scrub_text(key), scrub(item))).collect()
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finds_and_scrubs_nul_in_strings_and_keys() {
        assert_eq!(find_nul(&json!({"a": [1, "ok", "b\u{0}"]}), "payload"), Some("payload.a[2]".into()));
        assert_eq!(find_nul(&json!({"k\u{0}": 1}), "payload"), Some("payload.k\u{0}".into()));
        assert_eq!(find_nul(&json!({"a": ["fine", {"b": null}]}), "payload"), None);
        assert_eq!(scrub(json!({"k\u{0}": ["x\u{0}y", 2]})), json!({"k\u{FFFD}": ["x\u{FFFD}y", 2]}));
        assert_eq!(scrub_text("plain".into()), "plain");
    }
}
