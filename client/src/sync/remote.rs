//! The server side of the sync protocol over HTTP: the paged `/sync` index and conditional
//! `GET`/`PUT`/`DELETE` on `/blob/{path}`, each path segment percent-encoded.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, ETAG, HeaderValue};
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};
use serde::{Deserialize, Serialize};

/// Listings restarted after a 410 (cursor expired) before giving up.
const MAX_LISTING_RESTARTS: usize = 3;

/// Where the server's index stood when listed; passed back as `since` to page on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Cursor {
    Number(i64),
    Text(String),
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cursor::Number(n) => write!(f, "{n}"),
            Cursor::Text(s) => f.write_str(s),
        }
    }
}

/// The server's whole index: each path's live md5, or `None` for a tombstone.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub files: BTreeMap<String, Option<String>>,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Deserialize)]
struct Page {
    files: BTreeMap<String, Entry>,
    #[serde(default)]
    cursor: Option<Cursor>,
    #[serde(default)]
    has_more: bool,
}

#[derive(Debug, Deserialize)]
struct Entry {
    md5: String,
    #[serde(default)]
    is_deleted: bool,
}

#[derive(Debug, Deserialize)]
struct Written {
    md5: String,
}

/// A request that did not do what was asked. `Auth` and `Network` end the round; the others
/// concern one path.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("the server refused the token ({status}): {detail}")]
    Auth { status: u16, detail: String },
    #[error("cannot reach the server at {url}: {cause}")]
    Network { url: String, cause: String },
    /// 412: the server holds another version than the one named.
    #[error("the server holds another version")]
    Precondition,
    /// 410: the `since` cursor is older than the server keeps tombstones.
    #[error("the index cursor has expired")]
    CursorExpired,
    #[error("the server answered {status}: {detail}")]
    Rejected { status: u16, detail: String },
}

impl RemoteError {
    /// Whether the round cannot go on (the server is unreachable or refuses us).
    pub fn is_fatal(&self) -> bool {
        matches!(self, RemoteError::Auth { .. } | RemoteError::Network { .. })
    }
}

/// A client for one server and token.
#[derive(Debug, Clone)]
pub struct Remote {
    client: Client,
    base: Url,
    authorization: HeaderValue,
    page_limit: Option<u32>,
}

impl Remote {
    /// `server` is the base URL (`http://host:8000`, optionally with a path prefix).
    pub fn new(server: &str, token: &str) -> anyhow::Result<Self> {
        let base =
            Url::parse(server).map_err(|e| anyhow::anyhow!("--server {server:?} is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            anyhow::bail!("--server {server:?} must be an http:// or https:// URL");
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| anyhow::anyhow!("the token holds characters an HTTP header cannot carry"))?;
        authorization.set_sensitive(true);
        crate::install_tls_provider();
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(300))
            .user_agent(concat!("engram-sync/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Remote { client, base, authorization, page_limit: None })
    }

    /// Asks for at most `limit` index entries per page (the server's default otherwise).
    pub fn with_page_limit(mut self, limit: u32) -> Self {
        self.page_limit = Some(limit);
        self
    }

    /// The server's base URL, without a trailing slash.
    pub fn server(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_string()
    }

    /// The id of the user the token acts for, or `None` when the server has no
    /// `/api/v1/auth/me` (a plain memory-proxy server).
    pub async fn whoami(&self) -> Result<Option<String>, RemoteError> {
        let response = self.send(self.request(Method::GET, self.url(&["api", "v1", "auth", "me"]))).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body: serde_json::Value = expect_json(response).await?;
        Ok(body["user"]["id"].as_str().map(str::to_string))
    }

    /// The whole index, paged with `since`/`cursor` until the server has no more.
    pub async fn index(&self) -> Result<Index, RemoteError> {
        for _ in 0..MAX_LISTING_RESTARTS {
            match self.full_listing().await {
                Err(RemoteError::CursorExpired) => continue,
                other => return other,
            }
        }
        Err(RemoteError::Rejected {
            status: 410,
            detail: "the index cursor kept expiring while listing".to_string(),
        })
    }

    async fn full_listing(&self) -> Result<Index, RemoteError> {
        let mut index = Index::default();
        let mut since: Option<Cursor> = None;
        loop {
            let page = self.page(since.as_ref()).await?;
            for (path, entry) in page.files {
                index.files.insert(path, (!entry.is_deleted).then_some(entry.md5));
            }
            if page.cursor.is_some() {
                index.cursor = page.cursor.clone();
            }
            if !page.has_more {
                return Ok(index);
            }
            if page.cursor.is_none() || page.cursor == since {
                return Err(RemoteError::Rejected {
                    status: 200,
                    detail: "the index says it has more but its cursor did not move".to_string(),
                });
            }
            since = page.cursor;
        }
    }

    async fn page(&self, since: Option<&Cursor>) -> Result<Page, RemoteError> {
        let mut url = self.url(&["sync"]);
        if let Some(since) = since {
            url.query_pairs_mut().append_pair("since", &since.to_string());
        }
        if let Some(limit) = self.page_limit {
            url.query_pairs_mut().append_pair("limit", &limit.to_string());
        }
        let response = self.send(self.request(Method::GET, url)).await?;
        if response.status() == StatusCode::GONE {
            return Err(RemoteError::CursorExpired);
        }
        expect_json(response).await
    }

    /// The live content of `path`, or `None` when it is absent or tombstoned.
    pub async fn get(&self, path: &str) -> Result<Option<Vec<u8>>, RemoteError> {
        let url = self.blob_url(path);
        let response = self.send(self.request(Method::GET, url.clone())).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let response = check(response).await?;
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string());
        let body = response.bytes().await.map_err(|source| network(&url, source))?.to_vec();
        // Checked both ways: the transfer, and that this is a file (not some other answer).
        let md5 = crate::md5_hex(&body);
        match etag {
            Some(etag) if etag.eq_ignore_ascii_case(&md5) => Ok(Some(body)),
            Some(etag) => Err(RemoteError::Rejected {
                status: 200,
                detail: format!("the content's md5 is {md5} but its ETag says {etag}"),
            }),
            None => Err(RemoteError::Rejected {
                status: 200,
                detail: "the file came without an ETag".to_string(),
            }),
        }
    }

    /// Writes `body` to `path` if the server's live version is `if_match` (or, with `None`,
    /// if it has no live file); returns the md5 the server stored. `X-Content-MD5` lets the
    /// server check that the body arrived whole.
    pub async fn put(
        &self,
        path: &str,
        body: Vec<u8>,
        if_match: Option<&str>,
    ) -> Result<String, RemoteError> {
        let request = self
            .request(Method::PUT, self.blob_url(path))
            .header("Content-MD5", if_match.unwrap_or("new"))
            .header("X-Content-MD5", crate::md5_hex(&body))
            .header("Content-Type", "application/octet-stream")
            .body(body);
        let written: Written = expect_json(self.send(request).await?).await?;
        Ok(written.md5)
    }

    /// Tombstones `path` if its live version is `if_match`; `false` when it was already gone.
    pub async fn delete(&self, path: &str, if_match: &str) -> Result<bool, RemoteError> {
        let request = self.request(Method::DELETE, self.blob_url(path)).header("If-Match", if_match);
        let response = self.send(request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(response).await?;
        Ok(true)
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.path_segments_mut().expect("checked in new").pop_if_empty().extend(segments);
        url
    }

    fn blob_url(&self, path: &str) -> Url {
        let mut url = self.url(&["blob"]);
        url.path_segments_mut().expect("checked in new").extend(path.split('/'));
        url
    }

    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.client.request(method, url).header(AUTHORIZATION, self.authorization.clone())
    }

    async fn send(&self, request: RequestBuilder) -> Result<Response, RemoteError> {
        let (client, request) = request.build_split();
        let request = request.map_err(|source| network(&self.base, source))?;
        let url = request.url().clone();
        client.execute(request).await.map_err(|source| network(&url, source))
    }
}

/// A transport failure, told by its innermost cause ("Connection refused", "timed out").
fn network(url: &Url, error: reqwest::Error) -> RemoteError {
    let mut url = url.clone();
    url.set_query(None);
    let mut cause: &dyn std::error::Error = &error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    let cause = if error.is_timeout() { "timed out".to_string() } else { cause.to_string() };
    RemoteError::Network { url: url.to_string(), cause }
}

/// The response if it is a success; otherwise the error its status and `detail` describe.
async fn check(response: Response) -> Result<Response, RemoteError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let detail = detail(response).await;
    Err(match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
            RemoteError::Auth { status: status.as_u16(), detail }
        }
        StatusCode::PRECONDITION_FAILED => RemoteError::Precondition,
        StatusCode::GONE => RemoteError::CursorExpired,
        _ => RemoteError::Rejected { status: status.as_u16(), detail },
    })
}

async fn expect_json<T: serde::de::DeserializeOwned>(response: Response) -> Result<T, RemoteError> {
    let response = check(response).await?;
    let url = response.url().clone();
    let bytes = response.bytes().await.map_err(|source| network(&url, source))?;
    serde_json::from_slice(&bytes).map_err(|e| RemoteError::Rejected {
        status: 200,
        detail: format!("unexpected reply from {}: {e}", url.path()),
    })
}

/// The error message of a reply: `{"detail": …}`, `{"error": {"message": …}}`, or its text.
async fn detail(response: Response) -> String {
    let text = response.text().await.unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let message = json["detail"]
        .as_str()
        .or_else(|| json["error"]["message"].as_str())
        .or_else(|| json["error"].as_str());
    match message {
        Some(message) => message.to_string(),
        None if text.trim().is_empty() => "no details".to_string(),
        None => text.trim().chars().take(200).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_urls_encode_each_segment() {
        let remote = Remote::new("http://127.0.0.1:8000/prefix/", "t").unwrap();
        let url = remote.blob_url("notes/ü ber/a#b?c%d.md");
        assert_eq!(url.as_str(), "http://127.0.0.1:8000/prefix/blob/notes/%C3%BC%20ber/a%23b%3Fc%25d.md");
        let remote = Remote::new("http://127.0.0.1:8000", "t").unwrap();
        assert_eq!(remote.url(&["sync"]).as_str(), "http://127.0.0.1:8000/sync");
        assert_eq!(remote.server(), "http://127.0.0.1:8000");
    }

    #[test]
    fn bad_servers_and_tokens_are_refused() {
        assert!(Remote::new("ftp://host", "t").is_err());
        assert!(Remote::new("not a url", "t").is_err());
        assert!(Remote::new("http://host", "bad\ntoken").is_err());
    }

    #[test]
    fn cursors_round_trip_as_numbers_or_text() {
        let number: Cursor = serde_json::from_str("42").unwrap();
        assert_eq!((number.to_string(), serde_json::to_string(&number).unwrap()), ("42".into(), "42".into()));
        let text: Cursor = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(text.to_string(), "abc");
    }
}
