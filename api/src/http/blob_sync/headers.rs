//! The headers of blob sync: `Content-MD5` as the memory proxy's precondition (`new`, hex, or
//! the standard base64 form), `If-Match` / `If-None-Match` etags, a body digest to verify
//! (`Content-Digest` / `Repr-Digest`, RFC 9530: sha-256, sha-512 or md5; or `X-Content-MD5`),
//! and HTTP dates.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use services::blob_sync::Precondition;
use sha2::{Digest, Sha256, Sha512};
use storage::blob::md5_digest;

use crate::error::{ApiError, ErrorCode};

fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, message)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => {
            value.to_str().map(|v| Some(v.trim())).map_err(|_| bad_request(format!("{name} is not ASCII")))
        }
    }
}

/// An MD5 written as 32 hex digits or as base64 of its 16 bytes, quotes allowed; lowercase hex.
pub fn parse_md5(raw: &str) -> Option<String> {
    let raw = raw.trim().trim_start_matches("W/").trim_matches('"');
    if raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(raw.to_ascii_lowercase());
    }
    match STANDARD.decode(raw) {
        Ok(bytes) if bytes.len() == 16 => Some(hex::encode(bytes)),
        _ => None,
    }
}

/// The write a `PUT` asks for, from its `Content-MD5`.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let Some(raw) = header(headers, "content-md5")? else {
        return Err(bad_request(
            "Content-MD5 is required: `new` to create the file, or the MD5 of the version to replace",
        ));
    };
    parse_precondition(raw)
}

pub fn parse_precondition(raw: &str) -> Result<Precondition, ApiError> {
    if raw.trim().trim_matches('"').eq_ignore_ascii_case("new") {
        return Ok(Precondition::Create);
    }
    parse_md5(raw)
        .map(Precondition::Update)
        .ok_or_else(|| bad_request("Content-MD5 must be `new`, 32 hex digits, or the base64 form of an MD5"))
}

/// The MD5 a `DELETE`'s `If-Match` names, if any.
pub fn if_match(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match header(headers, "if-match")? {
        None => Ok(None),
        Some(raw) => parse_md5(raw).map(Some).ok_or_else(|| bad_request("If-Match must be the file's MD5")),
    }
}

/// Whether `If-None-Match` names `etag` (or is `*`).
pub fn none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers.get_all("if-none-match").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(
        |tag| {
            let tag = tag.trim();
            tag == "*" || parse_md5(tag).is_some_and(|md5| md5 == etag)
        },
    )
}

/// Checks the body against every digest the client sent that Engram knows; 400 on a mismatch.
pub fn verify_body_digest(headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let mismatch = |algorithm: &str| bad_request(format!("the body does not match its {algorithm} digest"));
    if let Some(raw) = header(headers, "x-content-md5")? {
        let expected = parse_md5(raw).ok_or_else(|| bad_request("X-Content-MD5 must be an MD5"))?;
        if expected != hex::encode(md5_digest(body)) {
            return Err(mismatch("MD5"));
        }
    }
    for name in ["content-digest", "repr-digest"] {
        let Some(raw) = header(headers, name)? else { continue };
        for member in raw.split(',') {
            let Some((algorithm, value)) = member.split_once('=') else {
                return Err(bad_request(format!("{name} must be `algorithm=:base64:` pairs")));
            };
            let algorithm = algorithm.trim().to_ascii_lowercase();
            let encoded = value.trim().trim_matches(':');
            let sent = STANDARD
                .decode(encoded)
                .map_err(|_| bad_request(format!("{name}: {algorithm} is not base64")))?;
            let actual: Vec<u8> = match algorithm.as_str() {
                "sha-256" => Sha256::digest(body).to_vec(),
                "sha-512" => Sha512::digest(body).to_vec(),
                "md5" => md5_digest(body).to_vec(),
                _ => continue,
            };
            if sent != actual {
                return Err(mismatch(&algorithm));
            }
        }
    }
    Ok(())
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(at: DateTime<Utc>) -> String {
    at.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const HELLO_MD5: &str = "5d41402abc4b2a76b9719d911017c592";

    #[test]
    fn md5_in_hex_base64_or_quotes() {
        assert_eq!(parse_md5(HELLO_MD5).as_deref(), Some(HELLO_MD5));
        assert_eq!(parse_md5("\"5D41402ABC4B2A76B9719D911017C592\"").as_deref(), Some(HELLO_MD5));
        assert_eq!(parse_md5("XUFAKrxLKna5cZ2REBfFkg==").as_deref(), Some(HELLO_MD5));
        assert_eq!(parse_md5("hello"), None);
        assert_eq!(parse_precondition("NEW").unwrap(), Precondition::Create);
        assert!(parse_precondition("nope").is_err());
    }

    #[test]
    fn body_digests_are_checked() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-digest",
            HeaderValue::from_static("sha-256=:LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ=:"),
        );
        assert!(verify_body_digest(&headers, b"hello").is_ok());
        assert!(verify_body_digest(&headers, b"hellO").is_err());
        headers.insert("x-content-md5", HeaderValue::from_static(HELLO_MD5));
        assert!(verify_body_digest(&headers, b"hello").is_ok());
        headers.insert("content-digest", HeaderValue::from_static("unknown=:AAAA:"));
        assert!(verify_body_digest(&headers, b"hello").is_ok(), "unknown algorithms are ignored");
    }

    #[test]
    fn if_none_match_lists() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "if-none-match",
            HeaderValue::from_static("\"abc\", \"5d41402abc4b2a76b9719d911017c592\""),
        );
        assert!(none_match_hits(&headers, HELLO_MD5));
        assert!(!none_match_hits(&headers, "00000000000000000000000000000000"));
    }
}
