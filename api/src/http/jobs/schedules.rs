//! The schedules API: recurring jobs from cron expressions in a time zone. Like jobs, a
//! schedule belongs to its creator (scopes `jobs:read`, `jobs:rw`); administrators see all.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use storage::sql::Schedule;
use utoipa::ToSchema;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::shared::empty_object;
use crate::auth::Caller;
use crate::error::{ApiError, AppJson};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create)).routes(routes!(get_one, update, delete))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    #[schema(value_type = Vec<Object>)]
    schedules: Vec<Schedule>,
}

/// The caller's schedules (every tenant's for an administrator)
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules", responses((status = 200, body = ScheduleList)))]
pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<ScheduleList>, ApiError> {
    caller.require("jobs:read")?;
    Ok(Json(ScheduleList { schedules: state.engine.schedules.list(caller.listing_owner()).await? }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    kind: String,
    #[serde(default = "empty_object")]
    payload: Value,
    /// Five fields (`minute hour day month weekday`), or six/seven with seconds.
    cron: String,
    /// IANA zone; UTC by default.
    timezone: Option<String>,
    #[serde(default)]
    paused: bool,
}

/// Create a schedule
#[utoipa::path(post, path = "/api/v1/schedules", tag = "schedules", request_body = CreateSchedule, responses(
    (status = 201, description = "Created", body = Object),
    (status = 422, description = "Unknown kind, bad payload, cron or time zone")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    AppJson(request): AppJson<CreateSchedule>,
) -> Result<(StatusCode, Json<Schedule>), ApiError> {
    caller.require("jobs:rw")?;
    let timezone = request.timezone.as_deref().unwrap_or("UTC");
    let schedule = state
        .engine
        .create_schedule(
            caller.requester(),
            &caller.user.id,
            &request.kind,
            request.payload,
            &request.cron,
            timezone,
            request.paused,
        )
        .await?;
    Ok((StatusCode::CREATED, Json(schedule)))
}

/// The schedule `id` when the caller may see it; 404 alike for missing and another tenant's.
async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<Schedule, ApiError> {
    let schedule = state.engine.schedules.get(id).await?.filter(|s| caller.owns(&s.owner));
    schedule.ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))
}

/// One schedule
#[utoipa::path(get, path = "/api/v1/schedules/{id}", tag = "schedules", responses(
    (status = 200, body = Object), (status = 404, description = "No such schedule")))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require("jobs:read")?;
    Ok(Json(find(&state, &caller, &id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    kind: Option<String>,
    payload: Option<Value>,
    cron: Option<String>,
    timezone: Option<String>,
    paused: Option<bool>,
}

/// Change a schedule (pause or resume it with `paused`)
#[utoipa::path(patch, path = "/api/v1/schedules/{id}", tag = "schedules", request_body = UpdateSchedule, responses(
    (status = 200, body = Object), (status = 404, description = "No such schedule"),
    (status = 422, description = "Unknown kind, bad payload, cron or time zone")))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    AppJson(request): AppJson<UpdateSchedule>,
) -> Result<Json<Schedule>, ApiError> {
    caller.require("jobs:rw")?;
    let mut schedule = find(&state, &caller, &id).await?;
    schedule.kind = request.kind.unwrap_or(schedule.kind);
    schedule.payload = request.payload.unwrap_or(schedule.payload);
    schedule.cron = request.cron.unwrap_or(schedule.cron);
    schedule.timezone = request.timezone.unwrap_or(schedule.timezone);
    schedule.paused = request.paused.unwrap_or(schedule.paused);
    let updated = state.engine.update_schedule(caller.requester(), schedule).await?;
    updated.map(Json).ok_or_else(|| ApiError::not_found(format!("no schedule {id}")))
}

/// Delete a schedule
#[utoipa::path(delete, path = "/api/v1/schedules/{id}", tag = "schedules", responses(
    (status = 204, description = "Deleted"), (status = 404, description = "No such schedule")))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require("jobs:rw")?;
    find(&state, &caller, &id).await?;
    if state.engine.schedules.delete(&id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no schedule {id}")))
    }
}
