//! API key scopes: `<area>:<access>`, where `rw` includes `read`. A key holds only the scopes
//! it was created with; the routes of each service say which one they need.

/// Every scope a key may hold.
pub const KNOWN: [&str; 10] = [
    "blobs:read",
    "blobs:rw",
    "federation:read",
    "federation:pull",
    "federation:push",
    "memories:read",
    "memories:rw",
    "jobs:read",
    "jobs:rw",
    "evals:rw",
];

/// Older scope names and the scope each grants: keys made before a rename keep working.
const GRANTS_ALSO: [(&str, &str); 1] = [("federation:read", "federation:pull")];

pub fn is_known(scope: &str) -> bool {
    KNOWN.contains(&scope)
}

/// Whether `held` grants `wanted`.
pub fn grants(held: &[String], wanted: &str) -> bool {
    held.iter().any(|scope| {
        scope == wanted
            || wanted.strip_suffix(":read").is_some_and(|area| scope.strip_suffix(":rw") == Some(area))
            || GRANTS_ALSO.contains(&(scope.as_str(), wanted))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_includes_read_and_nothing_else() {
        let held = vec!["blobs:rw".to_string(), "memories:read".to_string()];
        assert!(grants(&held, "blobs:rw") && grants(&held, "blobs:read") && grants(&held, "memories:read"));
        assert!(!grants(&held, "memories:rw"), "read does not include write");
        assert!(!grants(&held, "federation:push") && !grants(&held, "jobs:read"));
        assert!(!grants(&[], "blobs:read"));
        assert!(is_known("federation:push") && !is_known("blobs:admin"));
    }

    #[test]
    fn federation_read_keys_may_pull_but_not_push() {
        let old = vec!["federation:read".to_string()];
        assert!(grants(&old, "federation:pull") && grants(&old, "federation:read"));
        assert!(!grants(&old, "federation:push"));
        let pull = vec!["federation:pull".to_string()];
        assert!(grants(&pull, "federation:pull") && !grants(&pull, "federation:push"));
        assert!(!grants(&["federation:push".to_string()], "federation:pull"), "push does not include pull");
        assert!(is_known("federation:pull") && is_known("federation:read"));
    }
}
