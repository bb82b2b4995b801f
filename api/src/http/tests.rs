//! The platform layers around routes made for the test: extractor rejections, timeouts and
//! route families render errors in the right shape.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::error::{ApiError, AppJson, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

#[derive(Deserialize)]
struct Payload {
    #[allow(dead_code)]
    count: u32,
}

async fn state(extra: &[(&str, &str)]) -> AppState {
    let dir = tempfile::tempdir().unwrap().keep();
    let extra: Vec<_> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let config = storage::testing::config_in(&dir, &extra);
    let backends = storage::Backends::connect(&config).await.unwrap();
    let queue = jobs::QueueBackend::connect(&config, &backends.database).await.unwrap();
    let services = services::Services::new(&config, &backends, "a secret of the unit tests").unwrap();
    let job_system = jobs::JobSystem::connect(&backends, &queue, &services, &config.jobs).await.unwrap();
    AppState::new(config, backends, queue, job_system, b"a secret of the unit tests")
}

fn test_routes() -> Router<AppState> {
    let fastapi = Router::new()
        .route(
            "/fastapi/item",
            get(|| async { Err::<(), _>(ApiError::new(ErrorCode::PreconditionFailed, "etag changed")) }),
        )
        .layer(middleware::map_response_with_state(ErrorFamily::FastApi, reshape_errors));
    let aibrain = Router::new()
        .route("/aibrain/echo", post(|AppJson(_): AppJson<Payload>| async { Json(json!({"success": true})) }))
        .layer(middleware::map_response_with_state(ErrorFamily::AiBrain, reshape_errors));
    Router::new()
        .route(
            "/echo",
            post(|AppJson(payload): AppJson<Payload>| async move { Json(json!({"count": payload.count})) }),
        )
        .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(30)).await }))
        .merge(fastapi)
        .merge(aibrain)
}

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri).header("content-type", "application/json").body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn bad_json_bodies_get_json_errors_naming_the_problem() {
    let state = state(&[]).await;
    let app = super::with_platform_layers(test_routes(), state);
    let (status, body) = call(&app, post_json("/echo", r#"{"count": 3}"#)).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"count": 3})));

    let (status, body) = call(&app, post_json("/echo", r#"{"count": "three"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["error"]["code"], "unprocessable");
    assert!(body["error"]["message"].as_str().unwrap().contains("count"), "{body}");

    let (status, body) = call(&app, post_json("/echo", "{not json")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")));

    let plain = Request::post("/echo").body(Body::from(r#"{"count": 1}"#)).unwrap();
    let (status, body) = call(&app, plain).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(body["error"]["code"], "unsupported_media_type");
}

#[tokio::test]
async fn slow_requests_time_out_with_408() {
    let state = state(&[("ENGRAM_REQUEST_TIMEOUT_SECS", "1")]).await;
    let app = super::with_platform_layers(test_routes(), state);
    let (status, body) = call(&app, Request::get("/slow").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(body["error"]["code"], "timeout");
}

#[tokio::test]
async fn route_families_render_their_own_error_shape() {
    let state = state(&[]).await;
    let app = super::with_platform_layers(test_routes(), state);
    let (status, body) = call(&app, Request::get("/fastapi/item").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body["detail"], "etag changed");
    assert_eq!(body["error"]["code"], "precondition_failed");

    let (status, body) = call(&app, Request::delete("/fastapi/item").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["detail"], "method not allowed on this path", "bare 405s take the family shape");

    let (status, body) = call(&app, post_json("/aibrain/echo", r#"{"count": -1}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "UNPROCESSABLE");
    assert!(body["error"].as_str().unwrap().contains("count"), "{body}");

    let (status, body) = call(&app, Request::get("/elsewhere").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
}
