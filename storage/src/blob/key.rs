//! `BlobKey`: the only form in which a path reaches a blob store.

use std::fmt;

use crate::error::StoreError;

/// Longest key accepted, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest segment between two `/`, in bytes (leaves room under the 255-byte file name limit).
pub const MAX_SEGMENT_BYTES: usize = 200;

/// A relative, normalised object key: UTF-8, at most 1,024 bytes, segments separated by `/`,
/// none empty, `.` or `..`, no control characters, no leading `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    pub fn parse(raw: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| Err(StoreError::InvalidKey(why.to_string()));
        if raw.is_empty() {
            return invalid("the path is empty");
        }
        if raw.len() > MAX_KEY_BYTES {
            return invalid("the path is longer than 1024 bytes");
        }
        if raw.starts_with('/') {
            return invalid("the path starts with '/'");
        }
        if raw.chars().any(char::is_control) {
            return invalid("the path contains a control character");
        }
        for segment in raw.split('/') {
            match segment {
                "" => return invalid("the path has an empty segment ('//' or a trailing '/')"),
                "." | ".." => return invalid("the path has a '.' or '..' segment"),
                s if s.len() > MAX_SEGMENT_BYTES => {
                    return invalid("a path segment is longer than 200 bytes");
                }
                _ => {}
            }
        }
        Ok(Self(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in ["a", "notes/2024/jan.md", "ünïcödé/файл.txt", "a..b/c.", ".hidden/x"] {
            assert_eq!(BlobKey::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_unsafe_paths() {
        let long_segment = "x".repeat(201);
        let long_key = ["y"; 600].join("/");
        for bad in [
            "",
            "/etc/passwd",
            "a/../b",
            "..",
            "a/./b",
            "a//b",
            "a/",
            "a\0b",
            "a\nb",
            "tab\there",
            long_segment.as_str(),
            long_key.as_str(),
        ] {
            assert!(BlobKey::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
