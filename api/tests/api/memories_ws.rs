//! `GET /api/v1/sync`, AIBrain's WebSocket of live memory changes: both ways of
//! authenticating and every way of being refused, the client messages, the size limit, and
//! the fan-out of a user's changes to each of its sockets on every API process (and to no
//! other user's), over Redis.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::common;
use crate::common::{ADMIN_KEY, Stack, TestApp, spawn_app};

/// Longest wait for anything the server should do.
const WAIT: Duration = Duration::from_secs(10);
const PASSWORD: &str = "correct horse battery";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

on_both_databases!(
    the_query_token_form_connects_and_answers_every_message,
    the_auth_message_form_connects,
    no_auth_message_within_five_seconds_closes_with_1008,
    bad_credentials_close_with_1008,
    a_message_over_one_mebibyte_closes_with_1009,
    a_request_that_is_no_upgrade_gets_an_aibrain_error,
    a_revoked_keys_socket_closes_at_the_next_heartbeat,
);

/// The socket address of `/api/v1/sync` on the server at `base`, with `?token=` if given.
fn sync_url(base: &str, token: Option<&str>) -> String {
    let url = format!("{}/api/v1/sync", base.replacen("http://", "ws://", 1));
    match token {
        Some(token) => reqwest::Url::parse_with_params(&url, [("token", token)]).unwrap().to_string(),
        None => url,
    }
}

async fn connect(url: &str) -> Socket {
    let (socket, response) =
        timeout(WAIT, connect_async(url)).await.expect("the upgrade is answered in time").expect("upgraded");
    assert_eq!(response.status().as_u16(), 101);
    socket
}

async fn send(socket: &mut Socket, message: Message) {
    timeout(WAIT, socket.send(message)).await.expect("sent in time").expect("sent");
}

async fn send_json(socket: &mut Socket, value: Value) {
    send(socket, Message::text(value.to_string())).await;
}

/// The `SYNC_ACK` of a change and the change's own event, in whichever order they come.
async fn ack_and_event(socket: &mut Socket) -> (Value, Value) {
    let (first, second) = (receive(socket).await, receive(socket).await);
    if first["type"] == "SYNC_ACK" { (first, second) } else { (second, first) }
}

/// The next text message, as JSON (control frames skipped).
async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = timeout(WAIT, socket.next())
            .await
            .expect("a message in time")
            .expect("the socket is open")
            .expect("a readable frame");
        match message {
            Message::Text(text) => return serde_json::from_str(&text).expect("a JSON message"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The server's close frame, which must come next: its code and reason.
async fn closed(socket: &mut Socket) -> (u16, String) {
    closed_within(socket, WAIT).await
}

/// The server's close frame, which must come next and `within` this: its code and reason.
async fn closed_within(socket: &mut Socket, within: Duration) -> (u16, String) {
    let deadline = Instant::now() + within;
    loop {
        match timeout_at(deadline, socket.next()).await.expect("a close in time") {
            Some(Ok(Message::Close(Some(frame)))) => return (frame.code.into(), frame.reason.to_string()),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// The `CONNECTED` message that must come next, for `user_id`.
async fn connected(socket: &mut Socket, user_id: &str) {
    let hello = receive(socket).await;
    assert_eq!((&hello["type"], &hello["userId"]), (&json!("CONNECTED"), &json!(user_id)), "{hello}");
    let timestamp = hello["timestamp"].as_str().expect("a timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(), "{hello}");
}

/// Connects with `?token=` and waits for `CONNECTED`.
async fn connect_as(base: &str, token: &str, user_id: &str) -> Socket {
    let mut socket = connect(&sync_url(base, Some(token))).await;
    connected(&mut socket, user_id).await;
    socket
}

/// Registers an account on the server at `base`: its id and access token.
async fn register(base: &str, email: &str) -> (String, String) {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let body: Value = response.json().await.unwrap();
    (body["user"]["id"].as_str().unwrap().to_string(), body["token"].as_str().unwrap().to_string())
}

/// A new API key of the session's user, holding `scopes`: its id and secret.
async fn api_key(app: &TestApp, token: &str, scopes: &[&str]) -> (String, String) {
    let response = app
        .client
        .post(app.at("/api/v1/api-keys"))
        .bearer_auth(token)
        .json(&json!({"name": "socket", "scopes": scopes}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let key: Value = response.json().await.unwrap();
    (key["id"].as_str().unwrap().to_string(), key["secret"].as_str().unwrap().to_string())
}

async fn the_query_token_form_connects_and_answers_every_message(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (user_id, token) = register(&app.url, "query@example.com").await;
    let mut socket = connect_as(&app.url, &token, &user_id).await;

    send_json(&mut socket, json!({"type": "PING"})).await;
    let pong = receive(&mut socket).await;
    assert_eq!(pong["type"], "PONG", "{pong}");
    assert!(chrono::DateTime::parse_from_rfc3339(pong["timestamp"].as_str().unwrap()).is_ok(), "{pong}");

    // A device's changes are applied like REST calls: acknowledged, and heard as events.
    let memory = json!({"id": "device-1", "content": "from the phone", "type": "fact", "scope": "user_global",
        "generateEmbedding": false});
    send_json(&mut socket, json!({"type": "MEMORY_CREATED", "messageId": "m-1", "memory": memory})).await;
    let (ack, event) = ack_and_event(&mut socket).await;
    assert_eq!((&ack["messageId"], &ack["success"]), (&json!("m-1"), &json!(true)), "{ack}");
    assert_eq!(ack["memory"]["id"], "device-1", "the device's id is kept: {ack}");
    assert_eq!((&event["type"], &event["id"]), (&json!("MEMORY_CREATED"), &json!("device-1")), "{event}");
    assert_eq!(event["cursor"], ack["cursor"]);

    let bad = json!({"type": "MEMORY_CREATED", "messageId": "m-bad", "memory": {"content": "", "type": "fact", "scope": "site"}});
    send_json(&mut socket, bad).await;
    let ack = receive(&mut socket).await;
    assert_eq!((&ack["messageId"], &ack["success"]), (&json!("m-bad"), &json!(false)), "{ack}");
    assert!(ack["error"].as_str().unwrap().starts_with("content:"), "{ack}");

    let update = json!({"type": "MEMORY_UPDATED", "messageId": "m-2", "id": "device-1", "memory": {"content": "changed on the phone"}});
    send_json(&mut socket, update).await;
    let (ack, event) = ack_and_event(&mut socket).await;
    assert_eq!(ack["memory"]["content"], "changed on the phone", "{ack}");
    assert_eq!(event["type"], "MEMORY_UPDATED");
    send_json(&mut socket, json!({"type": "MEMORY_DELETED", "messageId": "m-3", "id": "nope"})).await;
    let ack = receive(&mut socket).await;
    assert_eq!((&ack["messageId"], &ack["success"]), (&json!("m-3"), &json!(false)), "{ack}");
    send_json(&mut socket, json!({"type": "MEMORY_DELETED", "messageId": "m-4", "id": "device-1"})).await;
    let (ack, event) = ack_and_event(&mut socket).await;
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!((&event["type"], &event["memory"]), (&json!("MEMORY_DELETED"), &Value::Null), "{event}");
    let gone = reqwest::Client::new()
        .get(format!("{}/api/v1/memories/device-1", app.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);

    // Whatever the client sends wrong, it hears why and the connection stays.
    send_json(&mut socket, json!({"type": "NOPE", "messageId": "m-2"})).await;
    let unknown = receive(&mut socket).await;
    assert_eq!((&unknown["type"], &unknown["messageId"]), (&json!("ERROR"), &json!("m-2")), "{unknown}");
    assert!(unknown["error"].as_str().unwrap().contains("unknown message type"), "{unknown}");
    send(&mut socket, Message::text("{not json")).await;
    let invalid = receive(&mut socket).await;
    assert_eq!(invalid["type"], "ERROR");
    assert!(invalid["error"].as_str().unwrap().contains("invalid JSON"), "{invalid}");
    for wrong in [Message::text("[1, 2]"), Message::text("{}"), Message::binary(vec![1, 2, 3])] {
        send(&mut socket, wrong).await;
        let reply = receive(&mut socket).await;
        assert!(reply["type"] == "ERROR" && reply["error"].is_string(), "{reply}");
    }
    send_json(&mut socket, json!({"type": "PING"})).await;
    assert_eq!(receive(&mut socket).await["type"], "PONG", "the connection is still open");

    // The static API_KEY (an administrator) connects too.
    connect_as(&app.url, ADMIN_KEY, "admin").await;
}

async fn the_auth_message_form_connects(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (user_id, token) = register(&app.url, "message@example.com").await;
    let mut socket = connect(&sync_url(&app.url, None)).await;
    send_json(&mut socket, json!({"type": "AUTH", "token": token})).await;
    connected(&mut socket, &user_id).await;
    // The same credentials again: connected still.
    send_json(&mut socket, json!({"type": "AUTH", "token": token})).await;
    connected(&mut socket, &user_id).await;
    send_json(&mut socket, json!({"type": "PING"})).await;
    assert_eq!(receive(&mut socket).await["type"], "PONG");

    // An API key with memories:read, in either form.
    let (_, key) = api_key(&app, &token, &["memories:read"]).await;
    let mut socket = connect(&sync_url(&app.url, None)).await;
    send_json(&mut socket, json!({"type": "AUTH", "token": key})).await;
    connected(&mut socket, &user_id).await;
    connect_as(&app.url, &key, &user_id).await;
}

async fn no_auth_message_within_five_seconds_closes_with_1008(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let started = Instant::now();
    let mut socket = connect(&sync_url(&app.url, None)).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1008, "{reason}");
    assert!(reason.contains("authentication"), "{reason}");
    assert!(started.elapsed() >= Duration::from_millis(4500), "closed after {:?}", started.elapsed());
}

async fn bad_credentials_close_with_1008(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (user_id, token) = register(&app.url, "refused@example.com").await;
    let (_, other_token) = register(&app.url, "other@example.com").await;

    let mut socket = connect(&sync_url(&app.url, Some("ey.not.a-token"))).await;
    assert_eq!(closed(&mut socket).await.0, 1008, "a bad query token");

    let mut socket = connect(&sync_url(&app.url, None)).await;
    send_json(&mut socket, json!({"type": "AUTH", "token": "ek_not-a-key"})).await;
    assert_eq!(closed(&mut socket).await.0, 1008, "a bad AUTH token");

    let mut socket = connect(&sync_url(&app.url, None)).await;
    send_json(&mut socket, json!({"type": "PING"})).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1008, "a first message that is not AUTH");
    assert!(reason.contains("AUTH"), "{reason}");

    let (_, key) = api_key(&app, &token, &["jobs:read"]).await;
    let mut socket = connect(&sync_url(&app.url, Some(&key))).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1008, "an API key without memories:read");
    assert!(reason.contains("memories:read"), "{reason}");

    let mut socket = connect_as(&app.url, &token, &user_id).await;
    send_json(&mut socket, json!({"type": "AUTH", "token": other_token})).await;
    assert_eq!(closed(&mut socket).await.0, 1008, "an AUTH naming another user");
}

async fn a_message_over_one_mebibyte_closes_with_1009(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (user_id, token) = register(&app.url, "big@example.com").await;
    let mut socket = connect_as(&app.url, &token, &user_id).await;
    // Under the limit: answered.
    send_json(&mut socket, json!({"type": "PING", "padding": "x".repeat(900 * 1024)})).await;
    assert_eq!(receive(&mut socket).await["type"], "PONG");
    send(&mut socket, Message::text("x".repeat((1 << 20) + 1))).await;
    let (code, reason) = closed(&mut socket).await;
    assert_eq!(code, 1009, "{reason}");
}

/// A plain GET is refused as any protected route's request: 401 without a valid credential
/// (header or `?token=`), 400 with one.
async fn a_request_that_is_no_upgrade_gets_an_aibrain_error(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (_, token) = register(&app.url, "plain-get@example.com").await;
    let refusals = [
        (app.client.get(app.at("/api/v1/sync")), 401, "UNAUTHORIZED"),
        (app.client.get(app.at("/api/v1/sync?token=not-a-token")), 401, "UNAUTHORIZED"),
        (app.client.get(app.at("/api/v1/sync")).bearer_auth("not-a-token"), 401, "UNAUTHORIZED"),
        (app.client.get(app.at("/api/v1/sync")).bearer_auth(&token), 400, "BAD_REQUEST"),
        (app.client.get(app.at(&format!("/api/v1/sync?token={token}"))), 400, "BAD_REQUEST"),
    ];
    for (request, status, code) in refusals {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        let body: Value = response.json().await.unwrap();
        assert_eq!((&body["success"], &body["code"]), (&json!(false), &json!(code)), "{body}");
        assert!(body["error"].is_string(), "{body}");
    }
    let response = app.client.post(app.at("/api/v1/sync")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(response.json::<Value>().await.unwrap()["success"], false);
}

/// Credentials are checked again at every heartbeat (30 s), as each HTTP request checks them.
async fn a_revoked_keys_socket_closes_at_the_next_heartbeat(stack: Stack) {
    let Some(app) = spawn_app(stack, &[]).await else { return };
    let (user_id, token) = register(&app.url, "revoked@example.com").await;
    let (key_id, key) = api_key(&app, &token, &["memories:read"]).await;
    let mut socket = connect_as(&app.url, &key, &user_id).await;
    let mut kept = connect_as(&app.url, &token, &user_id).await;
    let revoke = app.client.delete(app.at(&format!("/api/v1/api-keys/{key_id}"))).bearer_auth(&token);
    assert_eq!(revoke.send().await.unwrap().status().as_u16(), 204);
    let (code, reason) = closed_within(&mut socket, Duration::from_secs(45)).await;
    assert_eq!(code, 1008, "{reason}");
    // The session's socket, checked at the same heartbeat, stays.
    send_json(&mut kept, json!({"type": "PING"})).await;
    assert_eq!(receive(&mut kept).await["type"], "PONG");
}

/// Another `engram-api` process on `app`'s backends: the process (killed when dropped) and
/// its base URL.
async fn api_process(app: &TestApp) -> (tokio::process::Child, String) {
    let port = common::free_port();
    let mut env = app.env.clone();
    env.push(("ENGRAM_BIND".to_string(), format!("127.0.0.1:{port}")));
    // Its warnings and errors show in the test's output; nothing blocks on an unread pipe.
    env.push(("LOG_LEVEL".to_string(), "warn".to_string()));
    let child = common::engram_api(&["--no-worker"], &env)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("engram-api starts");
    let url = format!("http://127.0.0.1:{port}");
    common::wait_until_up(&format!("{url}/health"), Duration::from_secs(60)).await;
    (child, url)
}

/// Two users on the scale-out stack, with two more API processes: user A has a socket on
/// each of them (one per form of authentication), user B one on the second.
struct FanOut {
    app: TestApp,
    _processes: [tokio::process::Child; 2],
    a_token: String,
    b_token: String,
    a_sockets: [Socket; 2],
    b_socket: Socket,
    a_id: String,
    b_id: String,
}

async fn fan_out() -> Option<FanOut> {
    let app = spawn_app(Stack::ScaleOut, &[]).await?;
    let (a_id, a_token) = register(&app.url, "a@example.com").await;
    let (b_id, b_token) = register(&app.url, "b@example.com").await;
    let (first, first_url) = api_process(&app).await;
    let (second, second_url) = api_process(&app).await;
    let on_first = connect_as(&first_url, &a_token, &a_id).await;
    let mut on_second = connect(&sync_url(&second_url, None)).await;
    send_json(&mut on_second, json!({"type": "AUTH", "token": a_token})).await;
    connected(&mut on_second, &a_id).await;
    let b_socket = connect_as(&second_url, &b_token, &b_id).await;
    Some(FanOut {
        app,
        _processes: [first, second],
        a_token,
        b_token,
        a_sockets: [on_first, on_second],
        b_socket,
        a_id,
        b_id,
    })
}

/// Publishes `payload` on a user's change topic straight into Redis, as the event bus of any
/// process does; answers how many subscriptions got it.
async fn publish(app: &TestApp, user_id: &str, payload: &Value) -> i64 {
    let var = |name: &str| app.env.iter().find(|(k, _)| k == name).expect("scale-out env").1.clone();
    let mut redis =
        redis::Client::open(var("REDIS_URL")).unwrap().get_connection_manager().await.expect("Redis answers");
    let channel = format!("{}:events:memories:{user_id}", var("ENGRAM_REDIS_PREFIX"));
    timeout(WAIT, redis::cmd("PUBLISH").arg(channel).arg(payload.to_string()).query_async(&mut redis))
        .await
        .expect("published in time")
        .expect("published")
}

fn change_event(id: &str, content: &str) -> Value {
    json!({"type": "MEMORY_CREATED", "memory": {"id": id, "content": content}, "id": id,
           "cursor": "c-1", "timestamp": "2026-02-01T12:00:00.000Z"})
}

/// Each of A's sockets gets A's change verbatim; B's socket gets B's change next, not A's.
#[tokio::test]
async fn a_published_change_reaches_every_socket_of_its_user_on_every_process_and_no_other() {
    // Bound by name, or the processes would be killed with the rest of the temporary.
    let Some(FanOut { app, _processes, a_id, b_id, mut a_sockets, mut b_socket, .. }) = fan_out().await
    else {
        return;
    };
    let for_a = change_event("m-a", "A's change");
    assert_eq!(publish(&app, &a_id, &for_a).await, 2, "one subscription per socket of A's");
    for socket in &mut a_sockets {
        assert_eq!(receive(socket).await, for_a);
    }
    let for_b = change_event("m-b", "B's change");
    assert_eq!(publish(&app, &b_id, &for_b).await, 1);
    assert_eq!(receive(&mut b_socket).await, for_b, "B hears only its own changes");
    for socket in &mut a_sockets {
        assert_quiet(socket, Duration::from_millis(300)).await;
    }
}

/// A memory created through the REST API of a third process reaches both of A's sockets;
/// B's socket hears B's memory next, not A's.
#[tokio::test]
async fn a_memory_created_through_rest_reaches_every_socket_of_its_user() {
    let Some(FanOut { app, _processes, a_token, b_token, mut a_sockets, mut b_socket, .. }) = fan_out().await
    else {
        return;
    };
    let create = |token: &str, content: &str| {
        app.client
            .post(app.at("/api/v1/memories"))
            .bearer_auth(token)
            .json(&json!({"content": content, "type": "fact", "scope": "user_global"}))
            .send()
    };
    let response = create(&a_token, "A prefers tea").await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "{}", response.text().await.unwrap());
    for socket in &mut a_sockets {
        let event = receive(socket).await;
        assert_eq!(event["type"], "MEMORY_CREATED", "{event}");
        assert_eq!(event["memory"]["content"], "A prefers tea", "{event}");
    }
    let response = create(&b_token, "B prefers coffee").await.unwrap();
    assert_eq!(response.status().as_u16(), 201);
    let event = receive(&mut b_socket).await;
    assert_eq!(event["memory"]["content"], "B prefers coffee", "B hears only its own changes: {event}");
}

/// Nothing arrives on `socket` within `quiet` (control frames aside).
async fn assert_quiet(socket: &mut Socket, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        match timeout_at(deadline, socket.next()).await {
            Err(_) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(other) => panic!("expected nothing, got {other:?}"),
        }
    }
}
