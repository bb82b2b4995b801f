//! The real `engram-api` binary: start-up on each stack, fast one-line failures, the
//! `config` command, graceful shutdown, and the docs pages rendered by headless Chromium.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::common::{Stack, engram_api, free_port, stack_env, wait_until_up};

fn base_env(data_dir: &std::path::Path, port: u16) -> Vec<(String, String)> {
    vec![
        ("ENGRAM_DATA_DIR".into(), data_dir.display().to_string()),
        ("ENGRAM_BIND".into(), format!("127.0.0.1:{port}")),
    ]
}

/// Starts the binary on `stack`, checks `/health`, then stops it with SIGTERM.
async fn serves_health_then_stops_on_sigterm(stack: Stack) {
    let Some(stack_env) = stack_env(stack).await else { return };
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = base_env(data_dir.path(), port);
    env.extend(stack_env);
    let mut child = engram_api(&[], &env).spawn().unwrap();
    let response = wait_until_up(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        [&body["database"], &body["queue"], &body["blob_store"]].map(|v| v.as_str().unwrap().to_string()),
        ["ok", "ok", "ok"].map(String::from),
        "{body}"
    );
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}");
}

#[tokio::test]
async fn embedded_default_serves_health() {
    serves_health_then_stops_on_sigterm(Stack::Embedded).await;
}

#[tokio::test]
async fn scale_out_stack_serves_health() {
    serves_health_then_stops_on_sigterm(Stack::ScaleOut).await;
}

/// Runs the binary expecting it to fail fast; returns (exit code, stderr lines).
async fn failing_start(env: Vec<(String, String)>) -> (i32, Vec<String>) {
    let data_dir = tempfile::tempdir().unwrap();
    let mut all = base_env(data_dir.path(), free_port());
    all.extend(env);
    let started = Instant::now();
    let output = tokio::time::timeout(Duration::from_secs(10), engram_api(&[], &all).output())
        .await
        .expect("exits within 10 s")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    let stderr = String::from_utf8_lossy(&output.stderr).lines().map(str::to_string).collect();
    (output.status.code().expect("exited, not killed"), stderr)
}

#[tokio::test]
async fn unreachable_postgres_fails_fast_with_one_line() {
    let port = free_port();
    let (code, stderr) =
        failing_start(vec![("DATABASE_URL".into(), format!("postgres://engram:pw@127.0.0.1:{port}/engram"))])
            .await;
    assert_eq!(code, 1);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("cannot connect to PostgreSQL"), "{stderr:?}");
    assert!(!stderr[0].contains(":pw@"), "the password is masked: {stderr:?}");
}

#[tokio::test]
async fn malformed_database_url_is_a_config_error() {
    for url in ["postgres://", "mysql://db/engram", "::not a url::"] {
        let (code, stderr) = failing_start(vec![("DATABASE_URL".into(), url.into())]).await;
        assert_eq!(code, 2, "{url}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].contains("DATABASE_URL"), "{stderr:?}");
    }
}

#[tokio::test]
async fn bad_s3_credentials_fail_fast_with_one_line() {
    let Some(mut s3) = storage::testing::s3_env() else { return };
    for (key, value) in s3.iter_mut() {
        if key == "AWS_ACCESS_KEY_ID" {
            *value = "AKIANOTAREALKEY00000".into();
        }
    }
    let (code, stderr) = failing_start(s3).await;
    assert_eq!(code, 1);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("cannot use S3 bucket"), "{stderr:?}");
}

#[tokio::test]
async fn unreachable_redis_fails_fast_with_one_line() {
    let (code, stderr) =
        failing_start(vec![("REDIS_URL".into(), format!("redis://127.0.0.1:{}", free_port()))]).await;
    assert_eq!(code, 1);
    assert_eq!(stderr.len(), 1, "{stderr:?}");
    assert!(stderr[0].contains("cannot connect to Redis"), "{stderr:?}");
}

#[tokio::test]
async fn invalid_config_exits_2_naming_the_variable() {
    for (key, value) in [
        ("ENGRAM_BIND", "nowhere"),
        ("LOG_FORMAT", "yaml"),
        ("MAX_REPO_SIZE_MB", "lots"),
        ("LOG_LEVEL", "info,["),
    ] {
        let (code, stderr) = failing_start(vec![(key.into(), value.into())]).await;
        assert_eq!(code, 2, "{key}: {stderr:?}");
        assert_eq!(stderr.len(), 1, "{stderr:?}");
        assert!(stderr[0].contains(key), "{stderr:?}");
        assert!(!stderr[0].contains("panicked") && !stderr[0].contains("backtrace"), "{stderr:?}");
    }
}

#[tokio::test]
async fn config_command_prints_the_effective_config_with_secrets_masked() {
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", "postgres://engram:s3cr3t-pw@db.internal:5432/engram"),
        ("JWT_SECRET", "jwt-secret-value"),
        ("OPENAI_API_KEY", "sk-test-value"),
        ("ENGRAM_BIND", "0.0.0.0:9000"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .to_vec();
    let output = engram_api(&["config"], &env).output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    for secret in ["s3cr3t-pw", "jwt-secret-value", "sk-test-value"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
    assert!(
        text.contains("DATABASE_URL = postgres://engram:****@db.internal:5432/engram  # environment"),
        "{text}"
    );
    assert!(text.contains("ENGRAM_BIND = 0.0.0.0:9000  # environment"), "{text}");
    assert!(text.contains("MAX_REPO_SIZE_MB = 100  # default"), "{text}");
    assert!(text.contains("REPO_URL_SCHEMES = https  # default"), "{text}");
}

#[tokio::test]
async fn generated_jwt_secret_is_kept_across_restarts() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut secrets = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let mut child = engram_api(&[], &base_env(data_dir.path(), port)).spawn().unwrap();
        wait_until_up(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;
        child.kill().await.unwrap();
        secrets.push(std::fs::read_to_string(data_dir.path().join("jwt_secret")).unwrap());
    }
    assert_eq!(secrets[0], secrets[1]);
    assert_eq!(secrets[0].len(), 64);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(data_dir.path().join("jwt_secret")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Renders a page in headless Chromium with the network closed to everything but this
/// machine, and returns the DOM after scripts ran.
async fn rendered_dom(url: &str) -> String {
    let chromium = storage::testing::service_var("ENGRAM_TEST_CHROMIUM").unwrap_or_default();
    if chromium.is_empty() {
        return String::new();
    }
    let profile = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=15000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    let output =
        tokio::time::timeout(Duration::from_secs(90), output).await.expect("chromium finishes").unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn docs_pages_render_in_headless_chromium() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _child = engram_api(&[], &base_env(data_dir.path(), port)).spawn().unwrap();
    wait_until_up(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;

    let swagger = rendered_dom(&format!("http://127.0.0.1:{port}/docs")).await;
    if swagger.is_empty() {
        return;
    }
    assert!(swagger.contains("swagger-ui"), "Swagger UI mounted");
    assert!(swagger.contains("opblock"), "operations rendered:\n{swagger:.2000}");
    assert!(swagger.contains("/health") && swagger.contains("Engram"), "the spec rendered");

    let redoc = rendered_dom(&format!("http://127.0.0.1:{port}/redoc")).await;
    assert!(
        redoc.contains("Health of the process and every backend"),
        "Redoc rendered the spec:\n{redoc:.2000}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = base_env(data_dir.path(), port);
    env.push(("LOG_FORMAT".into(), "json".into()));
    let mut child = engram_api(&[], &env).spawn().unwrap();
    wait_until_up(&format!("http://127.0.0.1:{port}/health"), Duration::from_secs(30)).await;
    std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    while let Ok(Some(line)) = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap()
    {
        let record: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(record["level"].is_string() && record["timestamp"].is_string(), "{record}");
        seen.push(record["message"].as_str().unwrap_or_default().to_string());
    }
    for expected in ["engram-api listening", "finished processing request", "SIGTERM received, shutting down"]
    {
        assert!(seen.iter().any(|m| m.contains(expected)), "{expected} in {seen:?}");
    }
}

/// Passwords reach neither the logs (at the most verbose level, every dependency included)
/// nor any answer, however a request carrying one goes.
#[tokio::test]
async fn passwords_never_reach_logs_or_answers() {
    const PASSWORD: &str = "pw-that-must-not-leak-7Q";
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut env = base_env(data_dir.path(), port);
    env.extend(
        [("LOG_LEVEL", "trace"), ("LOGIN_MAX_FAILURES", "2")].map(|(k, v)| (k.to_string(), v.to_string())),
    );
    let mut child = engram_api(&[], &env).spawn().unwrap();
    // Read the output as it comes: trace logging fills a pipe left unread, and the server
    // would then block on its next log line.
    let stdout = tokio::spawn(read_all(child.stdout.take().unwrap()));
    let stderr = tokio::spawn(read_all(child.stderr.take().unwrap()));
    let url = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{url}/health"), Duration::from_secs(30)).await;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let bodies = [
        ("/api/v1/auth/register", serde_json::json!({"email": "leak@example.com", "password": PASSWORD})),
        ("/api/v1/auth/register", serde_json::json!({"email": "leak@example.com", "password": PASSWORD})),
        ("/api/v1/auth/register", serde_json::json!({"email": "not-an-email", "password": PASSWORD})),
        (
            "/api/v1/auth/register",
            serde_json::json!({"email": "x@example.com", "password": format!("{PASSWORD}\u{0}")}),
        ),
        ("/api/v1/auth/login", serde_json::json!({"email": "leak@example.com", "password": PASSWORD})),
        (
            "/api/v1/auth/login",
            serde_json::json!({"email": "leak@example.com", "password": format!("{PASSWORD}-wrong")}),
        ),
        (
            "/api/v1/auth/login",
            serde_json::json!({"email": "leak@example.com", "password": format!("{PASSWORD}-wrong")}),
        ),
        ("/api/v1/auth/login", serde_json::json!({"email": "leak@example.com", "password": PASSWORD})),
        ("/api/v1/auth/login", serde_json::json!({"email": ["leak@example.com"], "password": PASSWORD})),
        (
            "/api/v1/auth/login",
            serde_json::json!({"email": "leak@example.com", "password": PASSWORD, "extra": 1}),
        ),
        ("/api/v1/auth/refresh", serde_json::json!({"refreshToken": PASSWORD})),
    ];
    let mut statuses = Vec::new();
    for (path, body) in &bodies {
        let response = client.post(format!("{url}{path}")).json(body).send().await.unwrap();
        statuses.push(response.status().as_u16());
        let text = response.text().await.unwrap();
        assert!(!text.contains(PASSWORD), "{path} answered the password: {text}");
    }
    // A body that is not JSON at all, with the password inside.
    let raw = format!("{{\"email\": \"leak@example.com\", \"password\": \"{PASSWORD}\"");
    let response = client
        .post(format!("{url}/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap();
    statuses.push(response.status().as_u16());
    assert!(!response.text().await.unwrap().contains(PASSWORD));
    assert_eq!(
        statuses,
        [201, 409, 400, 400, 200, 401, 401, 429, 422, 429, 401, 400],
        "each request took its path"
    );

    std::process::Command::new("kill").args(["-TERM", &child.id().unwrap().to_string()]).status().unwrap();
    tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits after SIGTERM").unwrap();
    let logs = format!("{}{}", stdout.await.unwrap(), stderr.await.unwrap());
    assert!(logs.contains("/api/v1/auth/login"), "the requests were logged at all:\n{logs:.3000}");
    assert!(!logs.contains(PASSWORD), "a password reached the logs");
}

async fn read_all(mut pipe: impl tokio::io::AsyncRead + Unpin) -> String {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    pipe.read_to_end(&mut bytes).await.unwrap();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A job's child process (here the test kind's `command`, which an administrator may run once
/// `ENGRAM_ENABLE_TEST_KINDS` is set) sees none of the server's secrets: it prints its
/// environment and working directory into the job's log, and neither the secrets' names nor
/// their values nor the data dir appear; a tenant may not submit the command at all.
#[tokio::test]
async fn a_jobs_child_process_sees_none_of_the_servers_secrets() {
    let data_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let secrets = [
        ("API_KEY", "static-admin-key-of-the-env-test"),
        ("JWT_SECRET", "jwt-secret-of-the-env-test"),
        ("AWS_SECRET_ACCESS_KEY", "aws-secret-of-the-env-test"),
        ("ANTHROPIC_API_KEY", "anthropic-key-of-the-env-test"),
        ("SSO_SHARED_SECRET", "sso-secret-of-the-env-test"),
    ];
    let mut env = base_env(data_dir.path(), port);
    env.extend(secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env.push(("ENGRAM_ENABLE_TEST_KINDS".into(), "true".into()));
    let _server = engram_api(&[], &env).spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{url}/health"), Duration::from_secs(30)).await;
    let admin = common::admin_client(secrets[0].1);

    let register = json!({"email": "tenant@example.com", "password": "a long enough password"});
    let session: Value = reqwest::Client::new()
        .post(format!("{url}/api/v1/auth/register"))
        .json(&register)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tenant = common::admin_client(session["token"].as_str().unwrap());
    let command = json!({"kind": "noop", "payload": {"command": ["sh", "-c", "env; echo \"cwd=$(pwd)\""]}});
    let refused = tenant.post(format!("{url}/api/v1/jobs")).json(&command).send().await.unwrap();
    assert_eq!(refused.status(), 403, "a tenant cannot run a command");

    let submitted: Value =
        admin.post(format!("{url}/api/v1/jobs")).json(&command).send().await.unwrap().json().await.unwrap();
    let id = submitted["job_id"].as_str().expect("an administrator's command job is queued").to_string();
    let started = Instant::now();
    let job = loop {
        let job: Value =
            admin.get(format!("{url}/api/v1/jobs/{id}")).send().await.unwrap().json().await.unwrap();
        if job["status"] == "succeeded" || job["status"] == "dead" {
            break job;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the job did not finish: {job}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(job["status"], "succeeded", "{job}");
    let logs: Value = admin
        .get(format!("{url}/api/v1/jobs/{id}/logs?limit=1000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lines: Vec<&str> =
        logs["lines"].as_array().unwrap().iter().map(|l| l["line"].as_str().unwrap()).collect();
    assert!(lines.iter().any(|l| l.starts_with("PATH=")), "the child printed its environment: {lines:?}");
    let data_dir = data_dir.path().display().to_string();
    for line in &lines {
        for (name, value) in &secrets {
            assert!(!line.contains(value), "{name}'s value reached the child: {line}");
            assert!(!line.starts_with(&format!("{name}=")), "{name} reached the child: {line}");
        }
        assert!(!line.contains(&data_dir), "the child was pointed at the data dir: {line}");
        assert!(!line.starts_with("ENGRAM_") && !line.starts_with("DATABASE_URL="), "{line}");
    }
    let home = lines.iter().find_map(|l| l.strip_prefix("HOME=")).expect("a HOME of its own");
    let cwd = lines.iter().find_map(|l| l.strip_prefix("cwd=")).expect("its working directory");
    assert_eq!(home, cwd, "it starts in its scratch directory, which is also its HOME");
    assert!(!std::path::Path::new(home).exists(), "the scratch directory is removed afterwards");
}
