//! Blob sync upkeep: `tombstone_gc` purges tombstones (and their kept versions) older than
//! the retention, so deleted paths stop appearing in sync indexes once every client has had
//! time to see the delete; `blob_repair` settles writes whose process died between the blob
//! store and the index. Both are scheduled at start-up (`ensure_upkeep_schedules`), with the
//! sweep of the memory vector backlog.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use services::blob_sync::BlobSync;

use crate::context::JobContext;
use crate::error::JobError;
use crate::kind::{Access, Kind, Policy};

pub use storage::ids::SYSTEM_OWNER;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TombstoneGcPayload {
    /// Tombstones younger than this are kept (default `TOMBSTONE_RETENTION_DAYS`; at least 1,
    /// so clients that synced within the last day never miss a delete).
    pub retention_days: Option<u32>,
}

pub struct TombstoneGc {
    pub sync: Arc<BlobSync>,
    pub default_retention_days: u32,
}

#[async_trait]
impl Kind for TombstoneGc {
    type Payload = TombstoneGcPayload;
    const NAME: &'static str = "tombstone_gc";
    const ACCESS: Access = Access::Admin;

    fn policy(&self) -> Policy {
        Policy { timeout: Duration::from_secs(600), ..Policy::default() }
    }

    async fn run(&self, payload: TombstoneGcPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let days = payload.retention_days.unwrap_or(self.default_retention_days).max(1);
        let before = Utc::now() - chrono::Duration::days(i64::from(days));
        let purged =
            self.sync.purge_tombstones(before, None).await.map_err(|e| JobError::Failed(e.to_string()))?;
        ctx.info(format!("purged {purged} tombstones last changed before {before}"));
        Ok(json!({"purged": purged, "before": before}))
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobRepairPayload {
    /// Writes begun longer ago than this and never settled are settled from the store.
    #[serde(default = "default_older_than_secs")]
    pub older_than_secs: u32,
}

fn default_older_than_secs() -> u32 {
    60
}

pub struct BlobRepair(pub Arc<BlobSync>);

#[async_trait]
impl Kind for BlobRepair {
    type Payload = BlobRepairPayload;
    const NAME: &'static str = "blob_repair";
    const ACCESS: Access = Access::Admin;

    fn policy(&self) -> Policy {
        Policy { timeout: Duration::from_secs(600), ..Policy::default() }
    }

    async fn run(&self, payload: BlobRepairPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let before = Utc::now() - chrono::Duration::seconds(i64::from(payload.older_than_secs));
        let repaired = self.0.repair_stale(before).await.map_err(|e| JobError::Failed(e.to_string()))?;
        ctx.info(format!("settled {repaired} blob writes left unfinished before {before}"));
        Ok(json!({"repaired": repaired}))
    }
}

/// Schedules `tombstone_gc` daily, `blob_repair` every ten minutes and a sweep of the memory
/// vector backlog every five, once per deployment.
pub async fn ensure_upkeep_schedules(engine: &crate::engine::JobEngine) -> anyhow::Result<()> {
    let existing = engine.schedules.list(Some(SYSTEM_OWNER)).await?;
    let schedules = [
        (TombstoneGc::NAME, "17 3 * * *"),
        (BlobRepair::NAME, "*/10 * * * *"),
        (super::IndexMemoryVectors::NAME, "*/5 * * * *"),
    ];
    for (kind, cron) in schedules {
        if !existing.iter().any(|s| s.kind == kind) {
            let requester = crate::engine::Requester::Engram;
            engine.create_schedule(requester, SYSTEM_OWNER, kind, json!({}), cron, "UTC", false).await?;
        }
    }
    Ok(())
}
