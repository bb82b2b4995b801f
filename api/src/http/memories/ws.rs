//! `GET /api/v1/sync`: AIBrain's WebSocket of live memory changes. This module owns the
//! connection: authentication, the messages both ways, forwarding the user's change events,
//! the heartbeat and every way the connection closes.
//!
//! Authentication, either form of AIBrain's clients:
//! - `?token=<access token or API key>` in the query (the README's form);
//! - no token in the query: the first message must be `{"type": "AUTH", "token": "..."}`
//!   within 5 s.
//!
//! Tokens are checked as HTTP bearer credentials are, and need the `memories:read` scope. A
//! missing, late, invalid or insufficient credential closes the connection with 1008 (policy
//! violation) and a reason; a request that is no WebSocket upgrade gets an HTTP error in
//! AIBrain's shape.
//!
//! Once authenticated the server subscribes to the user's change topic (`memories:<user id>`),
//! then sends `{"type": "CONNECTED", "userId", "timestamp"}`, and from then on every event
//! of that topic, verbatim, as one text frame: every connection of the user sees every change,
//! whichever process made it. Client messages:
//! - `{"type": "PING"}` → `{"type": "PONG", "timestamp"}`;
//! - `{"type": "MEMORY_CREATED" | "MEMORY_UPDATED" | "MEMORY_DELETED", "messageId", ...}` →
//!   `{"type": "SYNC_ACK", "messageId", "success", "error"?}` (needs `memories:rw`);
//! - `{"type": "AUTH", "token"}` again → `CONNECTED` if it names the same user (the connection
//!   is checked with these credentials from then on), else 1008;
//! - anything else → `{"type": "ERROR", "error", "messageId"?}`, and the connection stays.
//!
//! Messages over 1 MiB close the connection with 1009. Every 30 s the server drops the
//! connection if it did not answer the previous ping, checks its credentials again (expired
//! or revoked: 1008, as an HTTP request would get 401) and pings. When the change feed ends
//! the server closes with 1011, so the client reconnects and catches up through
//! `GET /api/v1/memories/sync/updates`. (A subscriber that lags is not told: the event bus
//! drops what it missed and goes on.)

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::middleware;
use axum::response::Response;
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use services::memories::changes_topic;
use storage::events::{Event, EventStream};
use tokio::time::{Instant, MissedTickBehavior, timeout, timeout_at};
use utoipa::IntoParams;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, AppQuery, ErrorCode, ErrorFamily, reshape_errors};
use crate::state::AppState;

/// The scope a connection needs.
const READ_SCOPE: &str = "memories:read";
/// The scope a device's change needs.
const WRITE_SCOPE: &str = "memories:rw";
/// How long a connection without a query token has to send its `AUTH` message.
const AUTH_WINDOW: Duration = Duration::from_secs(5);
/// How often the server pings; a connection silent for a whole period after a ping is dead.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// Longest a frame may take to go out before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest client message (and frame).
const MAX_MESSAGE: usize = 1 << 20;
/// Longest close reason a close frame carries, in bytes.
const MAX_CLOSE_REASON: usize = 123;
/// Longest wait for the client's answer to our close frame.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upgrade))
        .layer(middleware::map_response_with_state(ErrorFamily::AiBrain, reshape_errors))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SyncQuery {
    /// An access token or API key; without it the first message must be `AUTH`.
    token: Option<String>,
}

/// Live memory changes (WebSocket)
#[utoipa::path(get, path = "/api/v1/sync", tag = "memories", params(SyncQuery), responses(
    (status = 101, description = "Switched to WebSocket: `CONNECTED` after authentication (query `token` \
      or a first `AUTH` message within 5 s, else close 1008), then every change event of the user; \
      `PING` → `PONG`; `MEMORY_CREATED`/`MEMORY_UPDATED`/`MEMORY_DELETED` → `SYNC_ACK`"),
    (status = 400, description = "Not a WebSocket upgrade request (with a valid credential)"),
    (status = 401, description = "Not a WebSocket upgrade request, and no valid credential")))]
pub async fn upgrade(
    State(state): State<AppState>,
    AppQuery(query): AppQuery<SyncQuery>,
    caller: Result<Caller, ApiError>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => {
            // A plain GET is answered as every protected route is: first who asks, then what.
            let token = query.token.as_deref().filter(|token| !token.trim().is_empty());
            let known = match token {
                Some(token) => matches!(state.auth.caller(token).await, Ok(Some(_))),
                None => caller.is_ok(),
            };
            return Err(match known {
                true => ApiError::new(ErrorCode::BadRequest, rejection.body_text()),
                false => ApiError::new(ErrorCode::Unauthorized, "Missing or invalid access token"),
            });
        }
    };
    let token = query.token.filter(|token| !token.trim().is_empty());
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_failed_upgrade(|error| tracing::debug!(%error, "WebSocket upgrade failed"))
        .on_upgrade(move |socket| connection(socket, state, token)))
}

/// Why the server ends a connection: a close code and a reason (at most 123 bytes).
struct Closing {
    code: u16,
    reason: String,
}

impl Closing {
    fn new(code: u16, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into() }
    }
}

/// How a step of the connection ended, when it did not go on.
enum Ended {
    /// The server closes, for this reason.
    Close(Closing),
    /// The client went away (or stopped answering): nothing more to send.
    Gone,
}

impl From<Closing> for Ended {
    fn from(closing: Closing) -> Self {
        Ended::Close(closing)
    }
}

/// One connection, from the upgrade to the close.
async fn connection(mut socket: WebSocket, state: AppState, query_token: Option<String>) {
    match open(&mut socket, &state, query_token).await {
        Ok((token, caller, events)) => {
            let session =
                Session { socket: &mut socket, state: &state, token, caller, events, silent: false };
            let ended = session.run().await;
            if let Ended::Close(closing) = ended {
                close(socket, closing).await;
            }
        }
        Err(Ended::Close(closing)) => close(socket, closing).await,
        Err(Ended::Gone) => {}
    }
}

/// Authenticates, subscribes to the user's changes, then says `CONNECTED`.
async fn open(
    socket: &mut WebSocket,
    state: &AppState,
    query_token: Option<String>,
) -> Result<(String, Caller, EventStream), Ended> {
    let token = match query_token {
        Some(token) => token,
        None => auth_message(socket).await?,
    };
    let caller = authenticate(state, &token).await?;
    // Subscribed before CONNECTED goes out, so no change made after it is missed.
    let events = state.backends.events.subscribe(&changes_topic(&caller.user.id)).await.map_err(|e| {
        tracing::warn!(error = %e, "WebSocket sync: subscribing to memory changes failed");
        Closing::new(close_code::ERROR, "the change feed is unavailable; try again")
    })?;
    send_json(socket, connected(&caller)).await?;
    Ok((token, caller, events))
}

/// The token of the client's first message, which must be `AUTH`, within `AUTH_WINDOW`.
async fn auth_message(socket: &mut WebSocket) -> Result<String, Ended> {
    let deadline = Instant::now() + AUTH_WINDOW;
    loop {
        let message = match timeout_at(deadline, socket.recv()).await {
            Err(_) => return Err(Closing::new(close_code::POLICY, "authentication timeout").into()),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Err(Ended::Gone),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(message))) => message,
        };
        let token = match message {
            Message::Text(text) => serde_json::from_str::<Value>(&text).ok().and_then(|value| {
                (value["type"] == "AUTH").then(|| value["token"].as_str().map(str::to_string)).flatten()
            }),
            _ => None,
        };
        return token.filter(|token| !token.trim().is_empty()).ok_or_else(|| {
            Closing::new(close_code::POLICY, "the first message must be AUTH with a token").into()
        });
    }
}

/// The caller `token` proves, with the scope a connection needs.
async fn authenticate(state: &AppState, token: &str) -> Result<Caller, Closing> {
    match state.auth.caller(token).await {
        Ok(Some(caller)) => match caller.require(READ_SCOPE) {
            Ok(()) => Ok(caller),
            Err(refused) => Err(Closing::new(close_code::POLICY, refused.message)),
        },
        Ok(None) => Err(Closing::new(close_code::POLICY, "invalid or expired token")),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "WebSocket sync: checking a token failed");
            Err(Closing::new(close_code::ERROR, "authentication is unavailable; try again"))
        }
    }
}

/// An authenticated connection: forwards the user's changes and answers the client.
struct Session<'a> {
    socket: &'a mut WebSocket,
    state: &'a AppState,
    /// The credentials the connection is checked with at every heartbeat.
    token: String,
    caller: Caller,
    events: EventStream,
    /// Whether the client has been silent since the last ping.
    silent: bool,
}

impl Session<'_> {
    async fn run(mut self) -> Ended {
        let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let step = tokio::select! {
                incoming = self.socket.recv() => {
                    self.silent = false;
                    self.incoming(incoming).await
                }
                event = self.events.next() => self.forward(event).await,
                _ = heartbeat.tick() => self.heartbeat().await,
            };
            if let Err(ended) = step {
                return ended;
            }
        }
    }

    /// Sends one change event, verbatim; the feed's end closes with 1011.
    async fn forward(&mut self, event: Option<Event>) -> Result<(), Ended> {
        match event {
            Some(event) => send(self.socket, Message::Text(event.payload.to_string().into())).await,
            None => {
                Err(Closing::new(close_code::ERROR, "the change feed ended; reconnect to catch up").into())
            }
        }
    }

    /// Drops a client that did not answer the last ping, closes when the server drains or the
    /// credentials expired or were revoked (as an HTTP request with them would get 401), and
    /// pings.
    async fn heartbeat(&mut self) -> Result<(), Ended> {
        if self.silent {
            tracing::debug!(user_id = %self.caller.user.id, "WebSocket sync: no answer to a ping");
            return Err(Ended::Gone);
        }
        if self.state.is_draining() {
            return Err(Closing::new(close_code::AWAY, "the server is shutting down").into());
        }
        self.caller = authenticate(self.state, &self.token).await?;
        self.silent = true;
        send(self.socket, Message::Ping(Default::default())).await
    }

    async fn incoming(&mut self, incoming: Option<Result<Message, axum::Error>>) -> Result<(), Ended> {
        match incoming {
            None | Some(Ok(Message::Close(_))) => Err(Ended::Gone),
            Some(Err(error)) if too_big(&error) => {
                Err(Closing::new(close_code::SIZE, "message too big: the limit is 1 MiB").into())
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "WebSocket sync: reading failed");
                Err(Ended::Gone)
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
            Some(Ok(Message::Binary(_))) => {
                send_json(self.socket, error_reply("binary frames are not supported; send JSON text", None))
                    .await
            }
            Some(Ok(Message::Text(text))) => {
                let reply = match serde_json::from_str::<Value>(&text) {
                    Ok(Value::Object(message)) => self.answer(message).await?,
                    Ok(_) => error_reply("a message must be a JSON object with a type", None),
                    Err(e) => error_reply(&format!("invalid JSON: {e}"), None),
                };
                send_json(self.socket, reply).await
            }
        }
    }

    /// The reply to one client message.
    async fn answer(&mut self, message: Map<String, Value>) -> Result<Value, Ended> {
        let message_id = message.get("messageId").cloned();
        let kind = message.get("type").and_then(Value::as_str).unwrap_or_default();
        Ok(match kind {
            "PING" => json!({"type": "PONG", "timestamp": now()}),
            "AUTH" => {
                let token = message.get("token").and_then(Value::as_str).unwrap_or_default();
                self.reauthenticate(token).await?
            }
            "MEMORY_CREATED" | "MEMORY_UPDATED" | "MEMORY_DELETED" => {
                let message = Value::Object(message);
                let applied = match self.caller.require(WRITE_SCOPE) {
                    Ok(()) => apply_device_change(self.state, &self.caller, &message).await,
                    Err(refused) => Err(refused),
                };
                sync_ack(message_id.unwrap_or(Value::Null), applied)
            }
            "" => error_reply("a message must have a type", message_id),
            other => error_reply(&format!("unknown message type {other:?}"), message_id),
        })
    }

    /// A later `AUTH`: fresh credentials of the same user, which the heartbeat checks from now
    /// on (so a client may renew them without reconnecting); another user's close the socket.
    async fn reauthenticate(&mut self, token: &str) -> Result<Value, Ended> {
        let caller = authenticate(self.state, token).await?;
        if caller.user.id != self.caller.user.id {
            return Err(Closing::new(close_code::POLICY, "this connection belongs to another user").into());
        }
        self.token = token.to_string();
        self.caller = caller;
        Ok(connected(&self.caller))
    }
}

/// Applies a change a device made (offline, say) to the user's memories.
///
/// Not supported yet: once the memory service exists this becomes
/// `crate::http::memories::apply_device_change(state, caller, message).await`; the fields of
/// the object it answers are added to the `SYNC_ACK`.
async fn apply_device_change(state: &AppState, caller: &Caller, message: &Value) -> Result<Value, ApiError> {
    crate::http::memories::apply_device_change(state, caller, message).await
}

/// The answer to a device's change: what the change's application answered (an object's
/// fields), or why it failed.
fn sync_ack(message_id: Value, applied: Result<Value, ApiError>) -> Value {
    let success = applied.is_ok();
    let mut ack = match applied {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => Map::new(),
        Err(error) => Map::from_iter([("error".to_string(), json!(error.message))]),
    };
    ack.insert("type".to_string(), json!("SYNC_ACK"));
    ack.insert("messageId".to_string(), message_id);
    ack.insert("success".to_string(), json!(success));
    Value::Object(ack)
}

fn connected(caller: &Caller) -> Value {
    json!({"type": "CONNECTED", "userId": caller.user.id, "timestamp": now()})
}

fn error_reply(error: &str, message_id: Option<Value>) -> Value {
    let mut reply = json!({"type": "ERROR", "error": error});
    if let Some(id) = message_id {
        reply["messageId"] = id;
    }
    reply
}

/// Now, as JavaScript's `toISOString` writes it.
fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whether reading failed because the client's message was over `MAX_MESSAGE`. axum hides
/// tungstenite's error type, so its message is what tells.
fn too_big(error: &axum::Error) -> bool {
    let text = error.to_string();
    text.contains("Space limit exceeded") || text.contains("Message too long")
}

async fn send_json(socket: &mut WebSocket, value: Value) -> Result<(), Ended> {
    send(socket, Message::Text(value.to_string().into())).await
}

/// Sends one frame; a client that cannot take it within `SEND_TIMEOUT` is gone.
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), Ended> {
    match timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(Ended::Gone),
    }
}

/// Sends the close frame, then waits briefly for the client's, so the close is clean.
async fn close(mut socket: WebSocket, closing: Closing) {
    let mut reason = closing.reason;
    while reason.len() > MAX_CLOSE_REASON {
        reason.pop();
    }
    let frame = CloseFrame { code: closing.code, reason: reason.into() };
    if send(&mut socket, Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = timeout(CLOSE_WAIT, async { while let Some(Ok(_)) = socket.recv().await {} }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_ack_keeps_its_own_fields_over_the_answers() {
        let answered = json!({"type": "X", "success": false, "memory": {"id": "m1"}});
        let ack = sync_ack(json!("c-1"), Ok(answered));
        assert_eq!(
            ack,
            json!({"type": "SYNC_ACK", "messageId": "c-1", "success": true, "memory": {"id": "m1"}})
        );
        let refused = sync_ack(Value::Null, Err(ApiError::new(ErrorCode::Forbidden, "no")));
        assert_eq!(refused, json!({"type": "SYNC_ACK", "messageId": null, "success": false, "error": "no"}));
    }
}
