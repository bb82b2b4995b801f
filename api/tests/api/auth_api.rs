//! Accounts and sessions over HTTP in AIBrain's shapes, on SQLite and on PostgreSQL:
//! register → login → me → refresh → rotate → reuse detected → logout.

use serde_json::{Value, json};

use crate::common::{Stack, TestApp, spawn_app};

macro_rules! on_both_databases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::Embedded, super::$case).await })*
        }
        mod postgres {
            $(#[tokio::test] async fn $case() { super::run(super::Stack::Postgres, super::$case).await })*
        }
    };
}

on_both_databases!(
    register_login_and_me,
    bad_registrations_change_nothing,
    refresh_tokens_rotate_and_reuse_revokes_the_session,
    refresh_by_access_token_as_the_original,
    logout_ends_the_session,
    bad_tokens_get_401_in_aibrain_shape,
    api_keys_are_created_used_and_revoked,
    the_static_api_key_acts_as_an_admin,
);

const STATIC_KEY: &str = "the-seeds-admin-key-of-this-test";

async fn run<F: std::future::Future<Output = ()>>(stack: Stack, case: impl FnOnce(TestApp) -> F) {
    let Some(app) = spawn_app(stack, &[("API_KEY", STATIC_KEY)]).await else { return };
    case(app).await;
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app.client.request(method, app.at(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

const PASSWORD: &str = "correct horse battery";

async fn post(app: &TestApp, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut request = app.client.post(app.at(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn me(app: &TestApp, token: &str) -> (u16, Value) {
    let response = app.client.get(app.at("/api/v1/auth/me")).bearer_auth(token).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn register(app: &TestApp, email: &str) -> Value {
    let (status, body) =
        post(app, "/api/v1/auth/register", None, Some(json!({"email": email, "password": PASSWORD}))).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn register_login_and_me(app: TestApp) {
    let registered = register(&app, "Alice@Example.com").await;
    assert_eq!(registered["success"], true);
    assert_eq!(registered["user"]["email"], "alice@example.com", "emails are stored lower-cased");
    assert!(registered["user"]["createdAt"].is_string() && registered["user"]["id"].is_string());
    assert_eq!(registered["expiresIn"], 3600);
    assert!(registered["refreshToken"].as_str().unwrap().starts_with("rt_"));
    assert!(!registered.to_string().contains(PASSWORD), "the password is never echoed");

    let (status, wrong) = post(
        &app,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": "alice@example.com", "password": "not the password"})),
    )
    .await;
    assert_eq!(
        (status, wrong),
        (401, json!({"success": false, "error": "Invalid credentials", "code": "UNAUTHORIZED"}))
    );
    let (status, unknown) = post(
        &app,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": "nobody@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, &unknown["error"]),
        (401, &json!("Invalid credentials")),
        "no hint that the account is missing"
    );

    let (status, login) = post(
        &app,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": " ALICE@example.com ", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["user"]["id"], registered["user"]["id"]);
    let (status, who) = me(&app, login["token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{who}");
    assert_eq!((&who["success"], &who["user"]["email"]), (&json!(true), &json!("alice@example.com")));
    assert_eq!(who["user"]["settings"], json!({}));
}

async fn bad_registrations_change_nothing(app: TestApp) {
    register(&app, "taken@example.com").await;
    let (status, again) = post(
        &app,
        "/api/v1/auth/register",
        None,
        Some(json!({"email": "TAKEN@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        (status, &again["success"], &again["code"]),
        (409, &json!(false), &json!("CONFLICT")),
        "{again}"
    );
    for (body, field) in [
        (json!({"email": "short@example.com", "password": "1234567"}), "password"),
        (json!({"email": "long@example.com", "password": "x".repeat(101)}), "password"),
        (json!({"email": "not-an-email", "password": PASSWORD}), "email"),
        (json!({"email": "a b@example.com", "password": PASSWORD}), "email"),
    ] {
        let (status, reply) = post(&app, "/api/v1/auth/register", None, Some(body.clone())).await;
        assert_eq!(status, 400, "{body} → {reply}");
        assert!(reply["error"].as_str().unwrap().starts_with(field), "{reply}");
        let email = body["email"].as_str().unwrap();
        let (status, _) =
            post(&app, "/api/v1/auth/login", None, Some(json!({"email": email, "password": PASSWORD}))).await;
        assert_eq!(status, 401, "{email} was not registered");
    }
    let (status, reply) =
        post(&app, "/api/v1/auth/register", None, Some(json!({"email": "x@example.com"}))).await;
    assert_eq!((status, &reply["success"]), (422, &json!(false)), "{reply}");
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_session(app: TestApp) {
    let first = register(&app, "rotate@example.com").await;
    let refresh = |token: &str| {
        let body = json!({"refreshToken": token});
        let app = &app;
        async move { post(app, "/api/v1/auth/refresh", None, Some(body)).await }
    };
    let (status, second) = refresh(first["refreshToken"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["refreshToken"], first["refreshToken"]);
    assert_eq!(second["user"]["id"], first["user"]["id"]);
    assert_eq!(me(&app, second["token"].as_str().unwrap()).await.0, 200);
    let (status, third) = refresh(second["refreshToken"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{third}");

    // An attacker replays the first refresh token: the whole session ends.
    let (status, reused) = refresh(first["refreshToken"].as_str().unwrap()).await;
    assert_eq!((status, &reused["success"]), (401, &json!(false)), "{reused}");
    assert_eq!(me(&app, third["token"].as_str().unwrap()).await.0, 401, "access tokens of the session end");
    assert_eq!(
        refresh(third["refreshToken"].as_str().unwrap()).await.0,
        401,
        "so does the newest refresh token"
    );
    let (status, other) = post(
        &app,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": "rotate@example.com", "password": PASSWORD})),
    )
    .await;
    assert_eq!(status, 200, "a fresh login still works: {other}");
    assert_eq!(refresh("rt_never-issued").await.0, 401);
}

async fn refresh_by_access_token_as_the_original(app: TestApp) {
    let registered = register(&app, "bearer@example.com").await;
    let token = registered["token"].as_str().unwrap();
    let (status, refreshed) = post(&app, "/api/v1/auth/refresh", Some(token), None).await;
    assert_eq!(status, 200, "{refreshed}");
    assert_eq!(
        (&refreshed["success"], &refreshed["user"]["email"]),
        (&json!(true), &json!("bearer@example.com"))
    );
    assert!(refreshed.get("refreshToken").is_none(), "the refresh token stays as it was");
    assert_eq!(me(&app, refreshed["token"].as_str().unwrap()).await.0, 200);
    assert_eq!(post(&app, "/api/v1/auth/refresh", None, None).await.0, 401);
}

async fn logout_ends_the_session(app: TestApp) {
    let registered = register(&app, "bye@example.com").await;
    let token = registered["token"].as_str().unwrap();
    let (status, reply) = post(&app, "/api/v1/auth/logout", Some(token), None).await;
    assert_eq!((status, reply), (200, json!({"success": true, "message": "Logged out"})));
    assert_eq!(me(&app, token).await.0, 401, "the access token is revoked, not just forgotten");
    let body = json!({"refreshToken": registered["refreshToken"]});
    assert_eq!(post(&app, "/api/v1/auth/refresh", None, Some(body)).await.0, 401);
    assert_eq!(post(&app, "/api/v1/auth/logout", Some(token), None).await.0, 401);
}

async fn bad_tokens_get_401_in_aibrain_shape(app: TestApp) {
    let registered = register(&app, "victim@example.com").await;
    let token = registered["token"].as_str().unwrap().to_string();
    let response = app.client.get(app.at("/api/v1/auth/me")).send().await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!((&body["success"], &body["code"]), (&json!(false), &json!("UNAUTHORIZED")), "{body}");
    let (header, claims, _signature) = {
        let mut parts = token.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    for bad in [
        "garbage".to_string(),
        format!("{header}.{claims}."),
        format!("{header}.{claims}.AAAA"),
        format!("{token}x"),
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}."),
    ] {
        let (status, body) = me(&app, &bad).await;
        assert_eq!((status, &body["success"]), (401, &json!(false)), "{bad}: {body}");
        assert!(!body.to_string().contains("victim"), "no data with a bad token");
    }
}

async fn api_keys_are_created_used_and_revoked(app: TestApp) {
    use reqwest::Method;
    let owner = register(&app, "keys@example.com").await;
    let token = owner["token"].as_str().unwrap();
    let body = json!({"name": "laptop sync", "scopes": ["memories:read", "blobs:rw", "blobs:rw"]});
    let (status, created) = send(&app, Method::POST, "/api/v1/api-keys", token, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("ek_") && secret.len() > 40, "{secret}");
    assert_eq!(created["scopes"], json!(["blobs:rw", "memories:read"]));

    let (status, who) = me(&app, &secret).await;
    assert_eq!((status, &who["user"]["id"]), (200, &owner["user"]["id"]), "the key acts as its owner");
    let (status, listed) = send(&app, Method::GET, "/api/v1/api-keys", token, None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 1);
    assert!(listed["keys"][0]["last_used_at"].is_string(), "use is recorded: {listed}");
    assert!(!listed.to_string().contains(&secret[3..]), "the secret is shown once only");

    let widen = json!({"name": "wider", "scopes": ["jobs:rw"]});
    assert_eq!(send(&app, Method::POST, "/api/v1/api-keys", &secret, Some(widen)).await.0, 403);
    for bad in [
        json!({"name": "x", "scopes": ["blobs:admin"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": " ", "scopes": ["blobs:rw"]}),
        json!({"name": "x".repeat(101), "scopes": ["blobs:rw"]}),
    ] {
        let (status, reply) = send(&app, Method::POST, "/api/v1/api-keys", token, Some(bad.clone())).await;
        assert_eq!(status, 422, "{bad} → {reply}");
    }

    let stranger = register(&app, "stranger@example.com").await;
    let path = format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap());
    let (status, _) = send(&app, Method::DELETE, &path, stranger["token"].as_str().unwrap(), None).await;
    assert_eq!(status, 404, "another user's key is not theirs to see");
    assert_eq!(me(&app, &secret).await.0, 200, "and it still works");
    assert_eq!(send(&app, Method::DELETE, &path, token, None).await.0, 204);
    assert_eq!(me(&app, &secret).await.0, 401, "a revoked key stops at once");
    assert_eq!(send(&app, Method::DELETE, &path, token, None).await.0, 404);
    assert_eq!(me(&app, "ek_made-up").await.0, 401);
}

async fn the_static_api_key_acts_as_an_admin(app: TestApp) {
    use reqwest::Method;
    let (status, who) = me(&app, STATIC_KEY).await;
    assert_eq!((status, &who["user"]["id"]), (200, &json!("admin")), "{who}");
    let (status, _) = me(&app, &format!("{STATIC_KEY}x")).await;
    assert_eq!(status, 401);
    let body = json!({"name": "k", "scopes": ["blobs:rw"]});
    assert_eq!(send(&app, Method::POST, "/api/v1/api-keys", STATIC_KEY, Some(body)).await.0, 403);
}

#[tokio::test]
async fn sqlite_registration_by_invitation() {
    registration_by_invitation(Stack::Embedded).await;
}

#[tokio::test]
async fn postgres_registration_by_invitation() {
    registration_by_invitation(Stack::Postgres).await;
}

#[tokio::test]
async fn sqlite_closed_registration() {
    closed_registration(Stack::Embedded).await;
}

#[tokio::test]
async fn postgres_closed_registration() {
    closed_registration(Stack::Postgres).await;
}

/// `ENGRAM_REGISTRATION=invite`: an account takes an administrator's invitation, each
/// invitation admits one account (the one email it names, if it names one), a failed
/// registration gives it back, and only administrators issue, list and revoke them.
async fn registration_by_invitation(stack: Stack) {
    let env = [("API_KEY", STATIC_KEY), ("ENGRAM_REGISTRATION", "invite")];
    let Some(app) = spawn_app(stack, &env).await else { return };
    let sign_up = |email: &str, code: Option<&str>| {
        let mut body = json!({"email": email, "password": PASSWORD});
        if let Some(code) = code {
            body["inviteCode"] = json!(code);
        }
        post(&app, "/api/v1/auth/register", None, Some(body))
    };
    let (status, refused) = sign_up("uninvited@example.com", None).await;
    assert_eq!((status, refused["success"].as_bool()), (403, Some(false)), "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("invitation"), "{refused}");
    assert_eq!(sign_up("guess@example.com", Some("inv_guessed")).await.0, 403);

    let (status, invite) = post(&app, "/api/v1/auth/invites", Some(STATIC_KEY), Some(json!({}))).await;
    assert_eq!(status, 201, "{invite}");
    let code = invite["code"].as_str().unwrap().to_string();
    let (status, first) = sign_up("Invited@Example.com", Some(&code)).await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(sign_up("second@example.com", Some(&code)).await.0, 403, "an invitation admits one account");

    let for_ada = json!({"email": "ada@example.com", "expiresInHours": 1});
    let (_, named) = post(&app, "/api/v1/auth/invites", Some(STATIC_KEY), Some(for_ada)).await;
    let named_code = named["code"].as_str().unwrap();
    assert_eq!(sign_up("grace@example.com", Some(named_code)).await.0, 403, "it names another address");
    assert_eq!(sign_up("invited@example.com", Some(named_code)).await.0, 403, "the address is not ada's");
    assert_eq!(sign_up("ada@example.com", Some(named_code)).await.0, 201);

    let (_, spare) = post(&app, "/api/v1/auth/invites", Some(STATIC_KEY), Some(json!({}))).await;
    let spare_code = spare["code"].as_str().unwrap();
    let (status, taken) = sign_up("invited@example.com", Some(spare_code)).await;
    assert_eq!(status, 409, "the email is registered: {taken}");
    assert_eq!(sign_up("late@example.com", Some(spare_code)).await.0, 201, "a failed sign-up gives it back");

    let user = first["token"].as_str().unwrap();
    assert_eq!(post(&app, "/api/v1/auth/invites", Some(user), Some(json!({}))).await.0, 403);
    let (status, listed) = send(&app, reqwest::Method::GET, "/api/v1/auth/invites", STATIC_KEY, None).await;
    assert_eq!(status, 200, "{listed}");
    let invites = listed["invites"].as_array().unwrap();
    assert_eq!(invites.len(), 3);
    assert!(invites.iter().all(|i| i["usedAt"].is_string() && i.get("code").is_none()), "{listed}");
    let (_, unused) = post(&app, "/api/v1/auth/invites", Some(STATIC_KEY), Some(json!({}))).await;
    let path = format!("/api/v1/auth/invites/{}", unused["invite"]["id"].as_str().unwrap());
    assert_eq!(send(&app, reqwest::Method::DELETE, &path, user, None).await.0, 403);
    assert_eq!(send(&app, reqwest::Method::DELETE, &path, STATIC_KEY, None).await.0, 204);
    assert_eq!(send(&app, reqwest::Method::DELETE, &path, STATIC_KEY, None).await.0, 404);
    assert_eq!(sign_up("revoked@example.com", unused["code"].as_str()).await.0, 403);
    let too_long = json!({"expiresInHours": 721});
    assert_eq!(post(&app, "/api/v1/auth/invites", Some(STATIC_KEY), Some(too_long)).await.0, 400);
}

/// `ENGRAM_REGISTRATION=closed`: nobody registers, invitation or not; an account that exists
/// (made before the server closed) still logs in.
async fn closed_registration(stack: Stack) {
    let Some(app) = spawn_app(stack, &[("ENGRAM_REGISTRATION", "closed")]).await else { return };
    let body = json!({"email": "late@example.com", "password": PASSWORD, "inviteCode": "inv_anything"});
    let (status, refused) = post(&app, "/api/v1/auth/register", None, Some(body)).await;
    assert_eq!((status, refused["code"].as_str()), (403, Some("FORBIDDEN")), "{refused}");
    let early = storage::sql::NewUser {
        id: storage::ids::new_id(),
        email: Some("early@example.com".into()),
        password_hash: Some(api::auth::password::hash(PASSWORD.into()).await.unwrap()),
        display_name: String::new(),
        role: storage::sql::Role::User,
        github_login: None,
    };
    app.open_database().await.identity_store().create_user(early).await.unwrap().unwrap();
    let login = json!({"email": "early@example.com", "password": PASSWORD});
    let (status, _) = post(&app, "/api/v1/auth/login", None, Some(login)).await;
    assert_eq!(status, 200, "the account made before still logs in");
}
