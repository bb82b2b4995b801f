//! Git memory jobs: `process_session` (a session into staged edits, optionally committed at
//! once), `commit_session`, `repo_sync` and `rebuild_index`. Bad input and repos that are not
//! set up fail permanently; a busy repo or an unreachable remote is retried.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::context::JobContext;
use crate::engine::{JobEngine, Requester};
use crate::error::JobError;
use crate::kind::{Access, Kind, Policy};
use services::git_memory::session::{parse_session_date, sync_cron};
use services::git_memory::{GitMemory, GitMemoryError};

/// Makes sure `user_id`'s repo has its `repo_sync` schedule (one per repo, owned by the user).
pub async fn ensure_sync_schedule(
    engine: &JobEngine,
    user_id: &str,
    interval_minutes: u64,
) -> anyhow::Result<()> {
    let payload = serde_json::to_value(UserPayload { user_id: user_id.to_string() })?;
    let existing = engine.schedules.list(Some(user_id)).await?;
    if existing.iter().any(|s| s.kind == RepoSync::NAME && s.payload == payload) {
        return Ok(());
    }
    let cron = sync_cron(interval_minutes);
    engine.create_schedule(Requester::Engram, user_id, RepoSync::NAME, payload, &cron, "UTC", false).await?;
    Ok(())
}

fn job_error(e: GitMemoryError) -> JobError {
    match e {
        GitMemoryError::Invalid(_)
        | GitMemoryError::NotSetUp(_)
        | GitMemoryError::Conflict(_)
        | GitMemoryError::TooLarge(_) => JobError::Permanent(e.to_string()),
        other => JobError::Failed(other.to_string()),
    }
}

fn git_policy(timeout_secs: u64) -> Policy {
    Policy { timeout: Duration::from_secs(timeout_secs), max_attempts: 3, ..Policy::default() }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSessionPayload {
    pub user_id: String,
    pub session_id: String,
    pub memory_input: String,
    /// `YYYY-MM-DD`; today when absent.
    #[serde(default)]
    pub session_date: Option<String>,
    /// Commit at once (`/memory/process-and-commit`).
    #[serde(default)]
    pub commit: bool,
}

pub struct ProcessSession(pub Arc<GitMemory>);

#[async_trait]
impl Kind for ProcessSession {
    type Payload = ProcessSessionPayload;
    const NAME: &'static str = "process_session";
    const ACCESS: Access = Access::Tenant;

    fn acts_for<'a>(&self, payload: &'a ProcessSessionPayload) -> Option<&'a str> {
        Some(&payload.user_id)
    }

    fn policy(&self) -> Policy {
        git_policy(600)
    }

    async fn run(&self, payload: ProcessSessionPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let memory = &self.0;
        let date = parse_session_date(payload.session_date.as_deref()).map_err(job_error)?;
        ctx.progress(10, "extracting entities").await?;
        let processed = memory
            .process_session(
                &payload.user_id,
                &payload.session_id,
                &payload.memory_input,
                date,
                async |input, known| memory.extract(input, known).await,
            )
            .await
            .map_err(job_error)?;
        if processed.newly_processed {
            ctx.info(format!(
                "staged {} files; entities: {}",
                processed.staged_files.len(),
                processed.entities.join(", ")
            ));
        } else {
            ctx.info(format!("session {} was processed before; nothing new staged", payload.session_id));
        }
        let mut result = json!({
            "status": "processed",
            "user_id": payload.user_id,
            "session_id": payload.session_id,
            "staged_files": processed.staged_files,
            "entities": processed.entities,
        });
        // A session processed and committed before (a retry, a repeated onboarding) has
        // nothing left to commit.
        let committed_before = payload.commit
            && !processed.newly_processed
            && memory.check_commit_ready(&payload.user_id, &payload.session_id).await.is_err();
        if committed_before {
            ctx.info(format!("session {} was committed before", payload.session_id));
        } else if payload.commit {
            ctx.progress(70, "committing").await?;
            let committed =
                memory.commit_session(&payload.user_id, &payload.session_id).await.map_err(job_error)?;
            ctx.info(format!("committed {} as Session {}", committed.commit, payload.session_id));
            result["status"] = json!("committed");
            result["commit"] = json!(committed.commit);
            result["sync"] = json!(committed.sync);
        }
        Ok(result)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitSessionPayload {
    pub user_id: String,
    pub session_id: String,
}

pub struct CommitSession(pub Arc<GitMemory>);

#[async_trait]
impl Kind for CommitSession {
    type Payload = CommitSessionPayload;
    const NAME: &'static str = "commit_session";
    const ACCESS: Access = Access::Tenant;

    fn acts_for<'a>(&self, payload: &'a CommitSessionPayload) -> Option<&'a str> {
        Some(&payload.user_id)
    }

    fn policy(&self) -> Policy {
        git_policy(300)
    }

    async fn run(&self, payload: CommitSessionPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let committed =
            self.0.commit_session(&payload.user_id, &payload.session_id).await.map_err(job_error)?;
        ctx.info(format!("committed {} ({} files)", committed.commit, committed.files.len()));
        Ok(json!({
            "status": "committed",
            "user_id": payload.user_id,
            "session_id": payload.session_id,
            "commit": committed.commit,
            "files": committed.files,
            "sync": committed.sync,
        }))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPayload {
    pub user_id: String,
}

pub struct RepoSync(pub Arc<GitMemory>);

#[async_trait]
impl Kind for RepoSync {
    type Payload = UserPayload;
    const NAME: &'static str = "repo_sync";
    const ACCESS: Access = Access::Tenant;

    fn acts_for<'a>(&self, payload: &'a UserPayload) -> Option<&'a str> {
        Some(&payload.user_id)
    }

    fn policy(&self) -> Policy {
        git_policy(300)
    }

    async fn run(&self, payload: UserPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let synced = self.0.sync(&payload.user_id).await.map_err(job_error)?;
        match &synced.message {
            Some(message) if synced.status != "active" => ctx.warn(message.clone()),
            _ => ctx.info(format!("in step (pulled: {}, pushed: {})", synced.pulled, synced.pushed)),
        }
        let result = json!({"user_id": payload.user_id, "sync": synced});
        if synced.status == "error" {
            return Err(JobError::Failed(synced.message.unwrap_or_default()));
        }
        Ok(result)
    }
}

pub struct RebuildIndex(pub Arc<GitMemory>);

#[async_trait]
impl Kind for RebuildIndex {
    type Payload = UserPayload;
    const NAME: &'static str = "rebuild_index";
    const ACCESS: Access = Access::Tenant;

    fn acts_for<'a>(&self, payload: &'a UserPayload) -> Option<&'a str> {
        Some(&payload.user_id)
    }

    fn policy(&self) -> Policy {
        git_policy(600)
    }

    async fn run(&self, payload: UserPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let memory = &self.0;
        let stats = memory
            .with_writer(&payload.user_id, memory.rebuild_index(&payload.user_id))
            .await
            .map_err(job_error)?;
        ctx.info(format!("indexed {} blocks", stats.total_blocks));
        Ok(json!({"status": "rebuilt", "user_id": payload.user_id, "index_stats": stats}))
    }
}
