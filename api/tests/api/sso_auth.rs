//! SSO gateway headers over HTTP: believed only with `SSO_ENABLED=true` and from a trusted
//! proxy address or with the gateway's shared secret; ignored otherwise.

use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

const GATEWAY: [(&str, &str); 5] = [
    ("X-User-ID", "u-42"),
    ("X-User-Email", "Pat@Example.com"),
    ("X-Org-ID", "org-7"),
    ("X-Team-ID", "team-3"),
    ("X-User-Role", "admin"),
];

async fn me_as_gateway(app: &TestApp, extra: &[(&str, &str)]) -> (u16, Value) {
    let mut request = app.client.get(app.at("/api/v1/auth/me"));
    for (name, value) in GATEWAY.iter().chain(extra) {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn headers_are_ignored_while_sso_is_off() {
    let app = spawn_app(Stack::Embedded, &[("SSO_TRUSTED_PROXIES", "127.0.0.1")]).await.unwrap();
    assert_eq!(me_as_gateway(&app, &[]).await.0, 401);
}

#[tokio::test]
async fn headers_from_a_trusted_proxy_name_the_caller() {
    let env = [("SSO_ENABLED", "true"), ("SSO_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.0/8")];
    let app = spawn_app(Stack::Embedded, &env).await.unwrap();
    let (status, who) = me_as_gateway(&app, &[]).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["user"]["id"], "sso:u-42", "gateway ids live apart from local ones");
    assert_eq!(who["user"]["email"], "pat@example.com");
    let anonymous =
        app.client.get(app.at("/api/v1/auth/me")).header("X-User-Email", "x@y.z").send().await.unwrap();
    assert_eq!(anonymous.status(), 401, "no X-User-ID, no caller");
}

#[tokio::test]
async fn headers_from_elsewhere_need_the_shared_secret() {
    let env = [
        ("SSO_ENABLED", "true"),
        ("SSO_TRUSTED_PROXIES", "10.9.9.9"),
        ("SSO_SHARED_SECRET", "gateway-secret"),
    ];
    let app = spawn_app(Stack::Embedded, &env).await.unwrap();
    assert_eq!(me_as_gateway(&app, &[]).await.0, 401, "127.0.0.1 is not the trusted proxy");
    assert_eq!(me_as_gateway(&app, &[("X-SSO-Secret", "wrong")]).await.0, 401);
    let (status, who) = me_as_gateway(&app, &[("X-SSO-Secret", "gateway-secret")]).await;
    assert_eq!((status, &who["user"]["id"]), (200, &json!("sso:u-42")), "{who}");
}

#[tokio::test]
async fn a_bearer_token_wins_over_gateway_headers() {
    let env = [("SSO_ENABLED", "true"), ("SSO_TRUSTED_PROXIES", "127.0.0.1")];
    let app = spawn_app(Stack::Embedded, &env).await.unwrap();
    let body = json!({"email": "local@example.com", "password": "correct horse battery"});
    let (status, registered) = app.post_json("/api/v1/auth/register", &body).await;
    assert_eq!(status, 201);
    let response = app
        .client
        .get(app.at("/api/v1/auth/me"))
        .bearer_auth(registered["token"].as_str().unwrap())
        .header("X-User-ID", "someone-else")
        .send()
        .await
        .unwrap();
    let who: Value = response.json().await.unwrap();
    assert_eq!(who["user"]["email"], "local@example.com");
    let forged =
        app.client.get(app.at("/api/v1/auth/me")).bearer_auth("forged").header("X-User-ID", "u").send();
    assert_eq!(forged.await.unwrap().status(), 401, "a bad token is not rescued by headers");
}
