//! Test harness: an Engram application on port 0 with a data dir of its own, in-process or
//! as the real `engram-api` binary, on the embedded default or on the scale-out services.
#![allow(dead_code)]

pub(crate) mod git_http;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use api::Application;
use storage::testing;
use tokio::sync::oneshot;

/// Which backends an app runs on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stack {
    /// SQLite, files, in-process event bus.
    Embedded,
    /// PostgreSQL for records and the queue; files and the in-process bus otherwise.
    Postgres,
    /// PostgreSQL, Redis (queue and bus), S3 from `scripts/services.sh`.
    ScaleOut,
}

/// The environment that selects `stack`, or `None` when its services are not configured.
pub(crate) async fn stack_env(stack: Stack) -> Option<Vec<(String, String)>> {
    match stack {
        Stack::Embedded => Some(Vec::new()),
        Stack::Postgres => Some(vec![("DATABASE_URL".to_string(), testing::fresh_postgres_url().await?)]),
        Stack::ScaleOut => {
            let mut env = vec![
                ("DATABASE_URL".to_string(), testing::fresh_postgres_url().await?),
                ("REDIS_URL".to_string(), testing::redis_url()?),
                ("ENGRAM_REDIS_PREFIX".to_string(), format!("test-{}", ulid::Ulid::generate())),
            ];
            env.extend(testing::s3_env()?);
            Some(env)
        }
    }
}

/// The static `API_KEY` test apps run with unless a test sets its own: an administrator.
pub(crate) const ADMIN_KEY: &str = "engram-test-admin-key";

pub(crate) struct TestApp {
    pub url: String,
    /// Sends no credentials.
    pub client: reqwest::Client,
    /// Sends the app's static `API_KEY` (an administrator); the request helpers use it.
    pub admin: reqwest::Client,
    pub data_dir: PathBuf,
    pub env: Vec<(String, String)>,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestApp {
    pub(crate) fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.admin.get(self.at(path)).send().await.expect("the server answers")
    }

    /// A connection of the test's own to the app's database.
    pub(crate) async fn open_database(&self) -> storage::sql::Database {
        let raw = storage::config::RawConfig::layered(self.env.clone(), [], []);
        let config = storage::config::Config::from_raw(&raw).unwrap();
        storage::sql::Database::connect(&config.backends.database).await.unwrap()
    }

    pub(crate) async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = self.get(path).await;
        assert!(response.status().is_success(), "GET {path}: {}", response.status());
        response.json().await.expect("a JSON body")
    }

    pub(crate) async fn post_json(&self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let response = self.admin.post(self.at(path)).json(body).send().await.expect("the server answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Submits a job and returns its id.
    pub(crate) async fn submit(&self, body: serde_json::Value) -> String {
        let (status, reply) = self.post_json("/api/v1/jobs", &body).await;
        assert_eq!(status, 202, "{reply}");
        reply["job_id"].as_str().expect("a job id").to_string()
    }

    /// Polls the job until `done(job)` holds, or panics after `within`.
    pub(crate) async fn wait_for_job(
        &self,
        id: &str,
        within: Duration,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let job = self.get_json(&format!("/api/v1/jobs/{id}")).await;
            if done(&job) {
                return job;
            }
            assert!(started.elapsed() < within, "job {id} did not get there within {within:?}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for a final status (succeeded, dead or cancelled).
    pub(crate) async fn wait_final(&self, id: &str, within: Duration) -> serde_json::Value {
        self.wait_for_job(id, within, |job| {
            matches!(job["status"].as_str(), Some("succeeded" | "dead" | "cancelled"))
        })
        .await
    }

    /// Fires the shutdown signal and waits for the server to finish.
    pub(crate) async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.server).await.expect("the server task does not panic")
    }
}

/// Builds and serves an in-process app on `stack` plus `extra` variables; `None` when the
/// stack's services are not configured (and not required).
pub(crate) async fn spawn_app(stack: Stack, extra: &[(&str, &str)]) -> Option<TestApp> {
    spawn_app_with(stack, extra, true).await
}

/// Like `spawn_app`; without an in-process worker unless `worker`. `TestApp::env` holds the
/// variables (data dir included) that point another process at the same backends.
pub(crate) async fn spawn_app_with(stack: Stack, extra: &[(&str, &str)], worker: bool) -> Option<TestApp> {
    let mut env = stack_env(stack).await?;
    // Tests log in and register many times from one address; a test of the limits sets its own.
    // Upkeep schedules firing mid-test would add jobs to listings; a test of them turns them on.
    for (key, value) in [
        ("API_KEY", ADMIN_KEY),
        ("LOGIN_RATE_LIMIT", "10000"),
        ("REGISTER_RATE_LIMIT", "10000"),
        ("SYSTEM_SCHEDULES", "false"),
        // The engine's own tests drive it with the test kind (noop), as an administrator.
        ("ENGRAM_ENABLE_TEST_KINDS", "true"),
    ] {
        env.push((key.to_string(), value.to_string()));
    }
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let data_dir = tempfile::tempdir().unwrap().keep();
    env.push(("ENGRAM_DATA_DIR".to_string(), data_dir.display().to_string()));
    Some(serve(env, data_dir, worker).await)
}

/// Builds and serves an in-process app on `env` (which names its data dir).
async fn serve(env: Vec<(String, String)>, data_dir: PathBuf, worker: bool) -> TestApp {
    let admin = admin_client(&env.iter().rev().find(|(k, _)| k == "API_KEY").expect("an API_KEY").1);
    let config = testing::config_in(&data_dir, &env);
    let app = Application::build(config).await.expect("the app builds");
    let app = if worker {
        app.with_worker(jobs::WorkerOptions {
            heartbeat: Duration::from_millis(500),
            stale_after: Duration::from_secs(3),
            drain: Duration::from_secs(5),
            ..Default::default()
        })
    } else {
        app.without_worker()
    };
    let url = format!("http://{}", app.local_addr());
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp { url, client: reqwest::Client::new(), admin, data_dir, env, shutdown: Some(tx), server }
}

/// A client that sends `Authorization: Bearer <key>` with every request.
pub(crate) fn admin_client(key: &str) -> reqwest::Client {
    api::install_tls_provider();
    let mut headers = reqwest::header::HeaderMap::new();
    let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}")).expect("a header value");
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder().default_headers(headers).build().expect("a client")
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A process with exactly `env` (plus PATH/HOME), output piped, killed when dropped.
fn command(program: &std::path::Path, args: &[&str], env: &[(String, String)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::var("HOME").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The real `engram-api` binary.
pub(crate) fn engram_api(args: &[&str], env: &[(String, String)]) -> tokio::process::Command {
    command(std::path::Path::new(env!("CARGO_BIN_EXE_engram-api")), args, env)
}

/// The real `engram-worker` binary (built beside `engram-api` by `cargo test --workspace`),
/// its output discarded.
pub(crate) fn engram_worker(args: &[&str], env: &[(String, String)]) -> tokio::process::Command {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_engram-api")).with_file_name("engram-worker");
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    let mut command = command(&path, args, env);
    command.stdout(Stdio::null()).stderr(Stdio::null());
    command
}

/// The path of the `engram` client binary, built beside `engram-api` by
/// `cargo test --workspace` (the `client` crate's own tests need it).
pub(crate) fn engram_client_binary() -> PathBuf {
    let path = std::path::Path::new(env!("CARGO_BIN_EXE_engram-api")).with_file_name("engram");
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` first", path.display());
    path
}

/// Polls `url` until it answers (any status) or `deadline` passes.
pub(crate) async fn wait_until_up(url: &str, deadline: Duration) -> reqwest::Response {
    let started = Instant::now();
    api::install_tls_provider();
    let client = reqwest::Client::new();
    loop {
        if let Ok(response) = client.get(url).send().await {
            return response;
        }
        assert!(started.elapsed() < deadline, "{url} did not answer within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs each named `async fn(Stack)` case as a test on SQLite (`sqlite::case`) and on
/// PostgreSQL (`postgres::case`).
#[macro_export]
macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::Embedded).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::Postgres).await })*
        }
    };
}

/// Runs each named `async fn(Stack)` case as a test on SQLite (`sqlite::case`), PostgreSQL
/// (`postgres::case`) and PostgreSQL + Redis + S3 (`postgres_redis::case`).
#[macro_export]
macro_rules! on_every_stack {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::Embedded).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::Postgres).await })*
        }
        mod postgres_redis {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::ScaleOut).await })*
        }
    };
}
