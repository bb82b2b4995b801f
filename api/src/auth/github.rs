//! GitHub token checks for `/auth/github`: `GET {GITHUB_API_URL}/user` with the caller's
//! token says whose it is. The base URL is configurable, so GitHub Enterprise works and tests
//! run a local stand-in that speaks the same HTTP.

use std::time::Duration;

use serde::Deserialize;

/// The part of GitHub's `GET /user` answer Engram reads.
#[derive(Debug, Clone, Deserialize)]
pub struct GitHubUser {
    pub login: String,
    pub name: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum GitHubError {
    #[error("Invalid GitHub token")]
    InvalidToken,
    #[error("GitHub could not be reached: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct GitHub {
    client: reqwest::Client,
    user_url: String,
}

impl GitHub {
    pub fn new(api_url: &str) -> Self {
        crate::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("engram/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("an HTTP client builds");
        Self { client, user_url: format!("{}/user", api_url.trim_end_matches('/')) }
    }

    /// Whose token this is; `InvalidToken` when GitHub refuses it.
    pub async fn user(&self, token: &str) -> Result<GitHubUser, GitHubError> {
        let response = self
            .client
            .get(&self.user_url)
            .bearer_auth(token)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .send()
            .await
            .map_err(|e| GitHubError::Unavailable(e.to_string()))?;
        match response.status().as_u16() {
            200 => {
                response.json().await.map_err(|e| GitHubError::Unavailable(format!("unreadable answer: {e}")))
            }
            401 => Err(GitHubError::InvalidToken),
            403 if response.headers().get("x-ratelimit-remaining").is_some_and(|v| v == "0") => {
                Err(GitHubError::Unavailable("GitHub's rate limit is exhausted".into()))
            }
            403 => Err(GitHubError::InvalidToken),
            status => Err(GitHubError::Unavailable(format!("GitHub answered {status}"))),
        }
    }
}
