//! The agmem federated coordinator's routes, in its shapes (errors carry FastAPI's
//! `detail`): `POST /push` stores an agent's summary, `GET /pull` answers the merge of each
//! agent's latest summary (or, with `?since=<cursor>`, what changed after an earlier pull),
//! and Engram's `GET /api/v1/federation/agents` lists the agents. Each tenant (the caller's
//! org, else the caller) has a federation of its own, kept in the database. Scopes:
//! `federation:push` to push, `federation:pull` (or the older `federation:read`) to read.
//! Every request counts against `FEDERATION_RATE_LIMIT` per minute per API key (per user for
//! sessions).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Json, middleware};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use services::federation::{Federation, FederationError, Pushed};
use storage::sql::{AgentRecord, PushOutcome};
use utoipa::{IntoParams, ToSchema};

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Caller, Via};
use crate::error::{ApiError, AppQuery, ErrorCode, ErrorFamily, has_json_content_type, reshape_errors};
use crate::state::AppState;

/// The window `FEDERATION_RATE_LIMIT` counts in.
const RATE_WINDOW: Duration = Duration::from_secs(60);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(push))
        .routes(routes!(pull))
        .routes(routes!(agents))
        .layer(middleware::map_response_with_state(ErrorFamily::FastApi, reshape_errors))
}

/// Whose federation the caller works in: its org's, or its own without one.
fn tenant(caller: &Caller) -> String {
    match &caller.user.org_id {
        Some(org) => format!("org:{org}"),
        None => format!("user:{}", caller.user.id),
    }
}

/// The caller's scope, then its share of `FEDERATION_RATE_LIMIT` (429 with `Retry-After`).
async fn admit(state: &AppState, caller: &Caller, scope: &str) -> Result<String, ApiError> {
    caller.require(scope)?;
    let key = match &caller.via {
        Via::ApiKey { id, .. } => format!("federation:key:{id}"),
        _ => format!("federation:user:{}", caller.user.id),
    };
    let count = state.backends.counters.hit(&key, RATE_WINDOW).await?;
    if count.hits > state.config.limits.federation_per_minute {
        return Err(ApiError::rate_limited(
            format!(
                "Too many federation requests: at most {} a minute; try again later",
                state.config.limits.federation_per_minute
            ),
            count.resets_in,
        ));
    }
    Ok(tenant(caller))
}

fn federation(state: &AppState) -> &Federation {
    &state.jobs.services.federation
}

impl From<FederationError> for ApiError {
    fn from(e: FederationError) -> Self {
        match e {
            FederationError::Invalid(why) => ApiError::new(ErrorCode::Unprocessable, why.0),
            FederationError::Store(e) => e.into(),
            FederationError::Internal(why) => ApiError::internal(why),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushReply {
    /// `accepted`, or `ignored` when the agent already has a summary with a later timestamp.
    status: String,
    agent_id: String,
    /// When the coordinator received the push (UTC).
    timestamp: DateTime<Utc>,
    message: String,
}

/// Push an agent's summary
///
/// Body: `{"summary": {agent_id, timestamp (RFC 3339), topic_counts: {topic: count},
/// fact_hashes: [hex], metadata: {…}}}`. The summary replaces the agent's earlier one (an
/// equal timestamp replaces too); a summary older than the stored one is ignored (200,
/// `status: ignored`). At most 100,000 fact hashes per push.
#[utoipa::path(post, path = "/push", tag = "federation", request_body(content = Value, description = "{\"summary\": {agent_id, timestamp, topic_counts, fact_hashes, metadata}}"), responses(
    (status = 200, description = "Stored (`accepted`) or older than the stored summary (`ignored`)", body = PushReply),
    (status = 401, description = "No valid credentials"),
    (status = 403, description = "The API key lacks federation:push"),
    (status = 415, description = "The body is not JSON"),
    (status = 422, description = "An invalid field, named in `detail`"),
    (status = 429, description = "Past FEDERATION_RATE_LIMIT; see Retry-After")))]
pub async fn push(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PushReply>, ApiError> {
    let tenant = admit(&state, &caller, "federation:push").await?;
    if !has_json_content_type(&headers) {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected a JSON body with Content-Type: application/json",
        ));
    }
    let Pushed { agent_id, received, outcome } = federation(&state).push(&tenant, body).await?;
    let reply = match outcome {
        PushOutcome::Accepted { .. } => PushReply {
            status: "accepted".into(),
            message: format!("Summary from {agent_id} stored successfully"),
            agent_id,
            timestamp: received,
        },
        PushOutcome::Ignored { stored } => PushReply {
            status: "ignored".into(),
            message: format!(
                "Summary from {agent_id} ignored: a newer summary (timestamp {}) is already stored",
                stored.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
            ),
            agent_id,
            timestamp: received,
        },
    };
    Ok(Json(reply))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PullParams {
    /// A `cursor` from an earlier pull: answer only what changed after it.
    since: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PullTotals {
    total_facts: i64,
    total_topics: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PullReply {
    /// Per topic, the sum of the agents' latest counts (with `since`: the topics whose sum
    /// changed).
    merged_topic_counts: BTreeMap<String, i64>,
    /// Every fact hash of any agent, sorted (with `since`: those that appeared).
    unique_fact_hashes: Vec<String>,
    contributing_agents: i64,
    /// The latest summary timestamp; null before the first push.
    last_updated: Option<DateTime<Utc>>,
    /// Totals of the whole merge, also with `since`.
    metadata: PullTotals,
    /// Pass as `since` to read what changes next.
    cursor: i64,
    /// With `since`: the cursor it was read from.
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<i64>,
    /// With `since`: topics no agent names any more.
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_topics: Option<Vec<String>>,
    /// With `since`: fact hashes no agent holds any more.
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_fact_hashes: Option<Vec<String>>,
}

/// Pull the merged summaries
///
/// The merge of each agent's latest summary: topic counts summed, fact hashes united. With
/// `since=<cursor>` (from an earlier answer), only what changed after it: topics with their
/// new sums, hashes that appeared, and `removed_topics` / `removed_fact_hashes`.
#[utoipa::path(get, path = "/pull", tag = "federation", params(PullParams), responses(
    (status = 200, description = "The merged view, whole or since the cursor", body = PullReply),
    (status = 401, description = "No valid credentials"),
    (status = 403, description = "The API key lacks federation:pull"),
    (status = 422, description = "`since` is not a cursor"),
    (status = 429, description = "Past FEDERATION_RATE_LIMIT; see Retry-After")))]
pub async fn pull(
    State(state): State<AppState>,
    caller: Caller,
    AppQuery(params): AppQuery<PullParams>,
) -> Result<Json<PullReply>, ApiError> {
    let tenant = admit(&state, &caller, "federation:pull").await?;
    let since = match params.since.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(text) => Some(text.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unprocessable,
                format!("since: {text:?} is not a cursor (a non-negative integer from an earlier pull)"),
            )
        })?),
    };
    let view = federation(&state).pull(&tenant, since).await?;
    let changes = |list: Vec<String>| since.map(|_| list);
    Ok(Json(PullReply {
        merged_topic_counts: view.topic_counts,
        unique_fact_hashes: view.fact_hashes,
        contributing_agents: view.contributing_agents,
        last_updated: view.last_updated,
        metadata: PullTotals { total_facts: view.total_facts, total_topics: view.total_topics },
        cursor: view.cursor,
        since,
        removed_topics: changes(view.removed_topics),
        removed_fact_hashes: changes(view.removed_fact_hashes),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    agent_id: String,
    /// The latest summary's own timestamp.
    timestamp: DateTime<Utc>,
    /// When that summary was received.
    last_push: DateTime<Utc>,
    /// How many topics and fact hashes it holds.
    topics: i64,
    facts: i64,
    metadata: Value,
}

impl From<AgentRecord> for AgentView {
    fn from(a: AgentRecord) -> Self {
        Self {
            agent_id: a.agent_id,
            timestamp: a.timestamp,
            last_push: a.last_push,
            topics: a.topics,
            facts: a.facts,
            metadata: a.metadata,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentsReply {
    agents: Vec<AgentView>,
}

/// The federation's agents
#[utoipa::path(get, path = "/api/v1/federation/agents", tag = "federation", responses(
    (status = 200, description = "Every agent of the caller's federation, by id", body = AgentsReply),
    (status = 401, description = "No valid credentials"),
    (status = 403, description = "The API key lacks federation:pull"),
    (status = 429, description = "Past FEDERATION_RATE_LIMIT; see Retry-After")))]
pub async fn agents(State(state): State<AppState>, caller: Caller) -> Result<Json<AgentsReply>, ApiError> {
    let tenant = admit(&state, &caller, "federation:pull").await?;
    let agents = federation(&state).agents(&tenant).await?;
    Ok(Json(AgentsReply { agents: agents.into_iter().map(AgentView::from).collect() }))
}
