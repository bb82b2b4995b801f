//! DiffMem's `/auth/github` token exchange against a local stand-in of GitHub's `GET /user`
//! (GitHub.com cannot be reached from here), on SQLite and on PostgreSQL.

use axum::http::HeaderMap;
use axum::routing::get;
use serde_json::{Value, json};

use crate::common;
use crate::common::{Stack, TestApp, spawn_app};

/// GitHub's `GET /user`: one good token, one revoked, one over its rate limit.
async fn github_stand_in() -> String {
    async fn user(headers: HeaderMap) -> (axum::http::StatusCode, HeaderMap, axum::Json<Value>) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
        let mut out = HeaderMap::new();
        match auth {
            "Bearer gho_good" => (
                axum::http::StatusCode::OK,
                out,
                axum::Json(json!({"login": "OctoCat", "id": 583231, "name": "The Octocat", "email": null})),
            ),
            "Bearer gho_limited" => {
                out.insert("x-ratelimit-remaining", "0".parse().unwrap());
                (
                    axum::http::StatusCode::FORBIDDEN,
                    out,
                    axum::Json(json!({"message": "API rate limit exceeded"})),
                )
            }
            _ => {
                (axum::http::StatusCode::UNAUTHORIZED, out, axum::Json(json!({"message": "Bad credentials"})))
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, axum::Router::new().route("/user", get(user))).await });
    url
}

async fn exchange(app: &TestApp, token: &str) -> (u16, Value) {
    let response =
        app.client.post(app.at("/auth/github")).query(&[("github_token", token)]).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn me(app: &TestApp, token: &str) -> Value {
    let response = app.client.get(app.at("/api/v1/auth/me")).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn exchanges_create_then_find_the_account(stack: Stack) {
    let github = github_stand_in().await;
    let Some(app) = spawn_app(stack, &[("GITHUB_API_URL", github.as_str())]).await else { return };
    let (status, first) = exchange(&app, "gho_good").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!((&first["token_type"], &first["expires_in"]), (&json!("bearer"), &json!(3600)));
    let user = me(&app, first["access_token"].as_str().unwrap()).await;
    let (_, second) = exchange(&app, "gho_good").await;
    assert_eq!(me(&app, second["access_token"].as_str().unwrap()).await["user"]["id"], user["user"]["id"]);

    let (status, bad) = exchange(&app, "gho_revoked").await;
    assert_eq!(status, 401, "{bad}");
    assert_eq!(bad["detail"], "Invalid GitHub token");
    let (status, limited) = exchange(&app, "gho_limited").await;
    assert_eq!(status, 503, "a rate limit is not a bad token: {limited}");
    let response = app.client.post(app.at("/auth/github")).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("github_token"), "{body}");
}

/// Where registration is not open, GitHub sign-in reaches only accounts that exist.
async fn github_sign_up_follows_the_registration_mode(stack: Stack) {
    let github = github_stand_in().await;
    for mode in ["invite", "closed"] {
        let env = [("GITHUB_API_URL", github.as_str()), ("ENGRAM_REGISTRATION", mode)];
        let Some(app) = spawn_app(stack, &env).await else { return };
        let (status, refused) = exchange(&app, "gho_good").await;
        assert_eq!(status, 403, "{mode}: {refused}");
        assert!(refused["detail"].as_str().unwrap().contains("existing accounts only"), "{refused}");
        let existing = storage::sql::NewUser {
            id: storage::ids::new_id(),
            email: None,
            password_hash: None,
            display_name: "The Octocat".into(),
            role: storage::sql::Role::User,
            github_login: Some("octocat".into()),
        };
        app.open_database().await.identity_store().create_user(existing).await.unwrap().unwrap();
        let (status, signed_in) = exchange(&app, "gho_good").await;
        assert_eq!(status, 200, "{mode}: an existing account signs in: {signed_in}");
    }
}

async fn an_unreachable_github_is_503(stack: Stack) {
    let closed = format!("http://127.0.0.1:{}", common::free_port());
    let Some(app) = spawn_app(stack, &[("GITHUB_API_URL", closed.as_str())]).await else { return };
    let (status, body) = exchange(&app, "gho_good").await;
    assert_eq!(status, 503, "{body}");
    assert!(!body["detail"].as_str().unwrap().contains("127.0.0.1"), "nothing internal: {body}");
}

#[tokio::test]
async fn sqlite_exchanges_create_then_find_the_account() {
    exchanges_create_then_find_the_account(Stack::Embedded).await;
}

#[tokio::test]
async fn postgres_exchanges_create_then_find_the_account() {
    exchanges_create_then_find_the_account(Stack::Postgres).await;
}

#[tokio::test]
async fn sqlite_github_sign_up_follows_the_registration_mode() {
    github_sign_up_follows_the_registration_mode(Stack::Embedded).await;
}

#[tokio::test]
async fn postgres_github_sign_up_follows_the_registration_mode() {
    github_sign_up_follows_the_registration_mode(Stack::Postgres).await;
}

#[tokio::test]
async fn sqlite_an_unreachable_github_is_503() {
    an_unreachable_github_is_503(Stack::Embedded).await;
}

#[tokio::test]
async fn postgres_an_unreachable_github_is_503() {
    an_unreachable_github_is_503(Stack::Postgres).await;
}
