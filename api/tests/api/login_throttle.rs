//! Login and registration throttling over HTTP: per-address limits, account lockout after
//! repeated failures (unknown emails alike), `X-Forwarded-For` only from trusted proxies, and
//! in scale-out one count shared by every API process through Redis.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Stack, TestApp, engram_api, free_port, spawn_app, wait_until_up};

const PASSWORD: &str = "correct horse battery";

async fn attempt(
    app_url: &str,
    path: &str,
    email: &str,
    password: &str,
    forwarded: Option<&str>,
) -> (u16, Option<u64>, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{app_url}{path}"))
        .json(&json!({"email": email, "password": password}));
    if let Some(forwarded) = forwarded {
        request = request.header("x-forwarded-for", forwarded);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().parse().unwrap());
    (status, retry_after, response.json().await.unwrap_or(Value::Null))
}

async fn login(app: &TestApp, email: &str, password: &str) -> (u16, Option<u64>, Value) {
    attempt(&app.url, "/api/v1/auth/login", email, password, None).await
}

async fn register(app: &TestApp, email: &str) -> (u16, Option<u64>, Value) {
    attempt(&app.url, "/api/v1/auth/register", email, PASSWORD, None).await
}

macro_rules! on_every_stack {
    ($($case:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::Embedded).await })*
        }
        mod scale_out {
            $(#[tokio::test] async fn $case() { super::$case(super::Stack::ScaleOut).await })*
        }
    };
}

on_every_stack!(
    logins_per_address_are_limited,
    repeated_failures_lock_the_account_for_a_while,
    registrations_per_address_are_limited,
);

async fn logins_per_address_are_limited(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("LOGIN_RATE_LIMIT", "3")]).await else { return };
    assert_eq!(register(&app, "limit@example.com").await.0, 201);
    assert_eq!(login(&app, "limit@example.com", PASSWORD).await.0, 200);
    assert_eq!(login(&app, "limit@example.com", "wrong password").await.0, 401);
    assert_eq!(login(&app, "other@example.com", PASSWORD).await.0, 401);
    let (status, retry_after, body) = login(&app, "limit@example.com", PASSWORD).await;
    assert_eq!(status, 429, "the fourth attempt from one address, right password or not: {body}");
    assert_eq!((body["success"].clone(), body["code"].clone()), (json!(false), json!("RATE_LIMITED")));
    let retry_after = retry_after.expect("Retry-After");
    assert!((1..=900).contains(&retry_after), "within the 15-minute window: {retry_after}");
}

async fn repeated_failures_lock_the_account_for_a_while(stack: Stack) {
    let env = [("LOGIN_MAX_FAILURES", "3"), ("LOGIN_LOCKOUT_SECS", "2")];
    let Some(app) = spawn_app(stack, &env).await else { return };
    assert_eq!(register(&app, "victim@example.com").await.0, 201);
    assert_eq!(register(&app, "bystander@example.com").await.0, 201);
    for _ in 0..3 {
        assert_eq!(login(&app, "victim@example.com", "guess guess guess").await.0, 401);
    }
    let (status, retry_after, body) = login(&app, "Victim@Example.com ", PASSWORD).await;
    assert_eq!(status, 429, "locked: even the right password is refused, whatever the case: {body}");
    assert!(body["error"].as_str().unwrap().contains("account"), "{body}");
    assert!(retry_after.is_some_and(|s| (1..=2).contains(&s)), "{retry_after:?}");
    assert_eq!(login(&app, "bystander@example.com", PASSWORD).await.0, 200, "other accounts are not locked");

    // An email with no account locks the same way, so a lockout reveals nothing.
    for _ in 0..3 {
        assert_eq!(login(&app, "ghost@example.com", "guess guess guess").await.0, 401);
    }
    assert_eq!(login(&app, "ghost@example.com", PASSWORD).await.0, 429);

    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(login(&app, "victim@example.com", PASSWORD).await.0, 200, "the lock ends");
    // A success clears the failures: two more are not yet a lock.
    for _ in 0..2 {
        assert_eq!(login(&app, "victim@example.com", "guess guess guess").await.0, 401);
    }
    assert_eq!(login(&app, "victim@example.com", PASSWORD).await.0, 200);
}

async fn registrations_per_address_are_limited(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("REGISTER_RATE_LIMIT", "2")]).await else { return };
    assert_eq!(register(&app, "one@example.com").await.0, 201);
    assert_eq!(register(&app, "two@example.com").await.0, 201);
    let (status, retry_after, _) = register(&app, "three@example.com").await;
    assert_eq!((status, retry_after.is_some()), (429, true));
    assert_eq!(login(&app, "three@example.com", PASSWORD).await.0, 401, "no account was created");
}

#[tokio::test]
async fn forwarded_for_counts_apart_only_behind_a_trusted_proxy() {
    let trusted = [("LOGIN_RATE_LIMIT", "2"), ("TRUSTED_PROXIES", "127.0.0.1")];
    let app = spawn_app(Stack::Embedded, &trusted).await.unwrap();
    let path = "/api/v1/auth/login";
    for _ in 0..2 {
        assert_eq!(attempt(&app.url, path, "a@example.com", PASSWORD, Some("203.0.113.1")).await.0, 401);
    }
    assert_eq!(attempt(&app.url, path, "a@example.com", PASSWORD, Some("203.0.113.1")).await.0, 429);
    assert_eq!(
        attempt(&app.url, path, "a@example.com", PASSWORD, Some("203.0.113.2")).await.0,
        401,
        "another client"
    );

    let untrusted = spawn_app(Stack::Embedded, &[("LOGIN_RATE_LIMIT", "2")]).await.unwrap();
    for client in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(attempt(&untrusted.url, path, "a@example.com", PASSWORD, Some(client)).await.0, 401);
    }
    let (status, ..) = attempt(&untrusted.url, path, "a@example.com", PASSWORD, Some("203.0.113.3")).await;
    assert_eq!(status, 429, "a header from a client that is not a proxy changes nothing");
}

/// Two API processes on one Redis: attempts at either count against one limit.
#[tokio::test]
async fn scale_out_processes_share_one_count() {
    let Some(app) = spawn_app(Stack::ScaleOut, &[("LOGIN_RATE_LIMIT", "4")]).await else { return };
    let port = free_port();
    let mut env = app.env.clone();
    env.push(("ENGRAM_BIND".to_string(), format!("127.0.0.1:{port}")));
    let _second = engram_api(&["--no-worker"], &env).spawn().unwrap();
    let second = format!("http://127.0.0.1:{port}");
    wait_until_up(&format!("{second}/health"), Duration::from_secs(30)).await;
    let path = "/api/v1/auth/login";
    for url in [&app.url, &second, &app.url, &second] {
        assert_eq!(attempt(url, path, "x@example.com", PASSWORD, None).await.0, 401);
    }
    assert_eq!(attempt(&app.url, path, "x@example.com", PASSWORD, None).await.0, 429);
    assert_eq!(attempt(&second, path, "x@example.com", PASSWORD, None).await.0, 429);
}
