//! What the benchmark examples share: where the release binaries are, the admin key their
//! deployments run with, a client that sends it, and a release `engram-api` with an account
//! of its own to drive.
#![allow(dead_code)]

/// The static admin key the benchmarks' deployments run with.
pub(crate) const ADMIN_KEY: &str = "engram-bench-admin-key";

/// A binary built beside this example (`target/release/<name>`).
pub(crate) fn bin(name: &str) -> std::path::PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().parent().unwrap().join(name)
}

/// A client that authenticates every request with `ADMIN_KEY`.
pub(crate) fn admin_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {ADMIN_KEY}")).unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).build().unwrap()
}

/// A release `engram-api` in a data dir of its own, and a fresh account's client.
pub(crate) struct Deployment {
    pub url: String,
    /// The account's access token (also sent by `client`).
    pub token: String,
    pub client: reqwest::Client,
    _api: tokio::process::Child,
    _dir: tempfile::TempDir,
}

/// Starts `engram-api` (on `database_url`, else the embedded default) with `env` added, waits
/// until it answers, and registers a fresh account: its own data, even in a database that
/// outlives the run.
pub(crate) async fn start(database_url: Option<&str>, env: &[(&str, &str)]) -> Deployment {
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}");
    let mut command = tokio::process::Command::new(bin("engram-api"));
    command
        .env_remove("DATABASE_URL")
        .env("ENGRAM_DATA_DIR", dir.path())
        .env("ENGRAM_BIND", format!("127.0.0.1:{port}"))
        .env("REGISTER_RATE_LIMIT", "1000")
        .env("LOG_LEVEL", "warn")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true);
    if let Some(database_url) = database_url {
        command.env("DATABASE_URL", database_url);
    }
    let mut api = command.spawn().expect("engram-api starts");
    let anonymous = reqwest::Client::new();
    while anonymous.get(format!("{url}/health")).send().await.is_err() {
        if let Some(status) = api.try_wait().unwrap() {
            panic!("engram-api exited before answering ({status}); its error is above");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let email = format!("bench-{}@example.com", ulid::Ulid::generate().to_string().to_lowercase());
    let registered: serde_json::Value = anonymous
        .post(format!("{url}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": email, "password": "benchmark password"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = registered["token"].as_str().expect("registered").to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    let client = reqwest::Client::builder().default_headers(headers).build().unwrap();
    Deployment { url, token, client, _api: api, _dir: dir }
}
