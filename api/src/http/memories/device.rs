//! Changes a device sends over the sync WebSocket (`MEMORY_CREATED`, `MEMORY_UPDATED`,
//! `MEMORY_DELETED`), applied like the REST routes would: the same checks, the same events
//! to the user's other devices. A created memory keeps the device's id, so a resent message
//! does not duplicate it.

use serde_json::{Value, json};
use services::memories::{encode_cursor, memory_json};

use super::input::{CreateBody, UpdateBody, invalid, parse_body};
use super::{check_vector, memories, not_found};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// Applies one device message; the answer's fields go into its `SYNC_ACK`.
pub(crate) async fn apply_device_change(
    state: &AppState,
    caller: &Caller,
    message: &Value,
) -> Result<Value, ApiError> {
    let owner = &caller.user.id;
    let service = memories(state);
    let memory = message.get("memory").cloned().unwrap_or(Value::Null);
    let id = message
        .get("id")
        .or_else(|| memory.get("id"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .filter(|id| !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control));
    match message.get("type").and_then(Value::as_str) {
        Some("MEMORY_CREATED") => {
            let body = bytes_of(&memory)?;
            let (mut new, embed, vector) = parse_body::<CreateBody>(&body)?.into_new()?;
            new.id = id;
            new.embedding = check_vector(state, vector)?;
            let created = service.create(owner, new, embed).await?;
            Ok(json!({"memory": memory_json(&created), "cursor": encode_cursor(created.seq)}))
        }
        Some("MEMORY_UPDATED") => {
            let id = id.ok_or_else(|| invalid("id", "the memory's id is required"))?;
            let mut fields = memory.clone();
            if let Some(object) = fields.as_object_mut() {
                object.remove("id");
            }
            let (mut patch, vector) = parse_body::<UpdateBody>(&bytes_of(&fields)?)?.into_patch()?;
            patch.embedding = check_vector(state, vector)?;
            let updated = service.update(owner, &id, patch).await?.ok_or_else(|| not_found(&id))?;
            Ok(json!({"memory": memory_json(&updated), "cursor": encode_cursor(updated.seq)}))
        }
        Some("MEMORY_DELETED") => {
            let id = id.ok_or_else(|| invalid("id", "the memory's id is required"))?;
            if !service.delete(owner, &id).await? {
                return Err(not_found(&id));
            }
            Ok(json!({"id": id}))
        }
        _ => Err(invalid("type", "must be MEMORY_CREATED, MEMORY_UPDATED or MEMORY_DELETED")),
    }
}

fn bytes_of(value: &Value) -> Result<axum::body::Bytes, ApiError> {
    if !value.is_object() {
        return Err(invalid("memory", "an object is required"));
    }
    Ok(serde_json::to_vec(value).map_err(ApiError::internal)?.into())
}
