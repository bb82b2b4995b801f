//! The platform routes and the layers every request passes, over HTTP on a real server.

use serde_json::Value;

use crate::common::{Stack, spawn_app};

macro_rules! on_both_stacks {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::Embedded).await })*
        }
        mod scale_out {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::ScaleOut).await })*
        }
    };
}

on_both_stacks!(health_reports_every_backend, ready_answers_until_shutdown);

async fn health_reports_every_backend(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    for check in ["database", "queue", "blob_store", "event_bus"] {
        assert_eq!(body[check], "ok", "{check}: {body}");
    }
    assert_eq!(body["status"], "ok");
    assert_eq!(body["storage"], "connected");
    let expected = match stack {
        Stack::Embedded => ["sqlite", "sqlite", "filesystem", "in-process"],
        Stack::Postgres => ["postgres", "postgres", "filesystem", "postgres"],
        Stack::ScaleOut => ["postgres", "redis", "s3", "redis"],
    };
    let backends = &body["backends"];
    let actual =
        ["database", "queue", "blob_store", "event_bus"].map(|k| backends[k].as_str().unwrap().to_string());
    assert_eq!(actual, expected.map(String::from));
}

async fn ready_answers_until_shutdown(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["status"], "ready");
    let url = app.at("/ready");
    app.stop().await.expect("a clean shutdown");
    assert!(reqwest::get(url).await.is_err(), "the listener is closed after shutdown");
}

#[tokio::test]
async fn health_is_503_when_the_blob_store_is_down() {
    let app = spawn_app(Stack::Embedded, &[]).await.unwrap();
    let blobs = app.data_dir.join("blobs");
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();
    let response = app.get("/health").await;
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["blob_store"].as_str()),
        (Some("degraded"), Some("unavailable"))
    );
    assert_eq!(body["storage"], "disconnected");
    assert_eq!(body["database"], "ok");
    assert!(!body.to_string().contains("Not a directory"), "no internal detail: {body}");
}

async fn assert_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_string();
    assert!(content_type.starts_with("application/json"), "{content_type}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn unknown_paths_and_methods_get_json_errors() {
    let app = spawn_app(Stack::Embedded, &[]).await.unwrap();
    assert_error(app.get("/no/such/route").await, 404, "not_found").await;
    let response = app.client.delete(app.at("/health")).send().await.unwrap();
    assert!(response.headers()["allow"].to_str().unwrap().contains("GET"));
    assert_error(response, 405, "method_not_allowed").await;
    assert_error(app.get("/docs/assets/../../etc/passwd").await, 404, "not_found").await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let app = spawn_app(Stack::Embedded, &[("ENGRAM_BODY_LIMIT_MB", "1")]).await.unwrap();
    let body = vec![b'x'; 1024 * 1024 + 1];
    let response = app.client.post(app.at("/health")).body(body).send().await.unwrap();
    assert_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn request_ids_are_made_or_kept() {
    let app = spawn_app(Stack::Embedded, &[]).await.unwrap();
    let made = app.get("/health").await.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 26, "a ULID: {made}");
    let kept = app.client.get(app.at("/health")).header("x-request-id", "trace-me-42").send().await.unwrap();
    assert_eq!(kept.headers()["x-request-id"], "trace-me-42");
}

#[tokio::test]
async fn cors_allows_only_configured_origins() {
    let app =
        spawn_app(Stack::Embedded, &[("ENGRAM_CORS_ORIGINS", "https://app.example.com")]).await.unwrap();
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.at("/health"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let other = preflight("https://evil.example.com").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let no_cors = spawn_app(Stack::Embedded, &[]).await.unwrap();
    let response = no_cors
        .client
        .get(no_cors.at("/health"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(response.headers().get("access-control-allow-origin").is_none(), "CORS is off by default");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let app = spawn_app(Stack::Embedded, &[]).await.unwrap();
    for _ in 0..3 {
        app.get("/health").await;
    }
    app.get("/missing").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"engram_http_requests_total{method="GET",route="/health",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"engram_http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{text}"
    );
    assert!(text.contains("engram_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains(r#"engram_build_info{version=""#), "{text}");
}

#[tokio::test]
async fn openapi_and_docs_pages_are_served_locally() {
    let app = spawn_app(Stack::Embedded, &[]).await.unwrap();
    let raw_client = reqwest::Client::builder().no_gzip().build().unwrap();
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/health", "/ready", "/metrics"] {
        assert!(spec["paths"][path]["get"].is_object(), "{path} documented");
    }
    for (page, assets) in [
        (
            "/docs",
            vec![
                "/docs/assets/swagger-ui.css",
                "/docs/assets/swagger-ui-bundle.js",
                "/docs/assets/swagger-init.js",
            ],
        ),
        ("/redoc", vec!["/docs/assets/redoc.standalone.js"]),
    ] {
        let html = app.get(page).await.text().await.unwrap();
        assert!(!html.contains("https://"), "{page} loads nothing from the internet");
        for asset in assets {
            assert!(html.contains(asset), "{page} references {asset}");
            let response =
                raw_client.get(app.at(asset)).header("accept-encoding", "gzip").send().await.unwrap();
            assert_eq!(response.status(), 200, "{asset}");
            if asset.ends_with("bundle.js") {
                assert_eq!(response.headers()["content-encoding"], "gzip", "large assets are compressed");
            }
        }
    }
}

#[tokio::test]
async fn dashboard_home_names_the_backends() {
    let app = spawn_app(Stack::Embedded, &[]).await.unwrap();
    let response = app.get("/").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let html = response.text().await.unwrap();
    for expected in ["<td>sqlite</td>", "<td>filesystem</td>", "<td>in-process</td>", "href=\"/docs\""] {
        assert!(html.contains(expected), "{expected} in {html}");
    }
}
