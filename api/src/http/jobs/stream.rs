//! `GET /api/v1/jobs/{id}/logs/stream`: a job's log lines over SSE. `id:` is the line's
//! sequence number; a client reconnecting with `Last-Event-ID` gets what it missed from the
//! table, then the live lines, with no gap and no duplicate; `event: end` carries the final
//! status and closes the stream.
//!
//! No gap: the stream subscribes to the job's topic before it reads the table, and the log
//! writer stores a line before it publishes it, so every line is in the table read or
//! arrives live. A live line that skips ahead (an event lost on the bus) is filled in from
//! the table; one already sent is dropped.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use jobs::events::{JobEvent, job_topic};
use storage::sql::{JobStatus, LogLine};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;

/// How often a stream re-reads the job when no event came, in case an `end` was lost.
const POLL: Duration = Duration::from_secs(2);
const PAGE: u32 = 500;

/// Stream a job's log lines (SSE)
#[utoipa::path(get, path = "/api/v1/jobs/{id}/logs/stream", tag = "jobs", responses(
    (status = 200, description = "`event: log` per line (`id:` = seq), `progress`, `status`, then `end`",
     content_type = "text/event-stream"),
    (status = 404, description = "No such job")))]
pub async fn stream(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    caller.require("jobs:read")?;
    super::shared::find_job(&state, &caller, &id).await?;
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(0);
    let live = state.backends.events.subscribe(&job_topic(&id)).await?;
    let (sender, receiver) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(e) = follow(&state, &id, after, live, &sender).await {
            tracing::warn!(job_id = %id, error = %e, "log stream stopped");
        }
    });
    let events = ReceiverStream::new(receiver).map(Ok);
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn send(sender: &mpsc::Sender<Event>, event: Event) -> anyhow::Result<()> {
    sender.send(event).await.map_err(|_| anyhow::anyhow!("the client went away"))
}

fn log_event(line: &LogLine) -> Event {
    Event::default().id(line.seq.to_string()).event("log").json_data(line).expect("log lines serialise")
}

/// Sends every stored line after `*last`, advancing it.
async fn replay(
    state: &AppState,
    id: &str,
    last: &mut i64,
    sender: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    loop {
        let page = state.engine.jobs.logs(id, *last, PAGE).await?;
        for line in &page {
            send(sender, log_event(line)).await?;
            *last = line.seq;
        }
        if page.len() < PAGE as usize {
            return Ok(());
        }
    }
}

async fn end(
    state: &AppState,
    id: &str,
    status: JobStatus,
    last: &mut i64,
    sender: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    replay(state, id, last, sender).await?;
    let event = Event::default().event("end").json_data(serde_json::json!({"status": status}))?;
    send(sender, event).await
}

/// The job as stored now (its owner was checked when the stream opened).
async fn current(state: &AppState, id: &str) -> anyhow::Result<storage::sql::Job> {
    state.engine.jobs.get(id).await?.ok_or_else(|| anyhow::anyhow!("job {id} vanished"))
}

async fn follow(
    state: &AppState,
    id: &str,
    after: i64,
    mut live: storage::events::EventStream,
    sender: &mpsc::Sender<Event>,
) -> anyhow::Result<()> {
    let mut last = after;
    replay(state, id, &mut last, sender).await?;
    let job = current(state, id).await?;
    if job.status.is_final() {
        return end(state, id, job.status, &mut last, sender).await;
    }
    loop {
        let event = match tokio::time::timeout(POLL, live.next()).await {
            Ok(Some(event)) => event,
            Ok(None) => anyhow::bail!("the event bus closed the subscription"),
            Err(_) => {
                // Quiet for a while: make sure an `end` was not lost.
                let job = current(state, id).await?;
                if job.status.is_final() {
                    return end(state, id, job.status, &mut last, sender).await;
                }
                continue;
            }
        };
        let Ok(event) = serde_json::from_value::<JobEvent>(event.payload) else { continue };
        match event {
            JobEvent::Log(line) if line.seq <= last => {}
            JobEvent::Log(line) => {
                if line.seq > last + 1 {
                    replay(state, id, &mut last, sender).await?;
                }
                if line.seq > last {
                    send(sender, log_event(&line)).await?;
                    last = line.seq;
                }
            }
            JobEvent::Progress { progress, message } => {
                let data = serde_json::json!({"progress": progress, "message": message});
                send(sender, Event::default().event("progress").json_data(data)?).await?;
            }
            JobEvent::Status { status } => {
                let data = serde_json::json!({"status": status});
                send(sender, Event::default().event("status").json_data(data)?).await?;
            }
            JobEvent::End { status } => return end(state, id, status, &mut last, sender).await,
        }
    }
}
