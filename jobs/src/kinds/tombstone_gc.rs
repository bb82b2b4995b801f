//! `tombstone_gc`: purges blob-index tombstones older than the retention, so deleted paths
//! stop appearing in sync indexes once every client has had time to see the delete.

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{JobError, Kind, Policy};
use crate::context::JobContext;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TombstoneGcPayload {
    /// Tombstones younger than this are kept (default 30 days).
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    30
}

pub struct TombstoneGc;

#[async_trait]
impl Kind for TombstoneGc {
    type Payload = TombstoneGcPayload;
    const NAME: &'static str = "tombstone_gc";

    fn policy(&self) -> Policy {
        Policy { timeout: Duration::from_secs(600), ..Policy::default() }
    }

    async fn run(&self, payload: TombstoneGcPayload, ctx: &JobContext) -> Result<Value, JobError> {
        let before = Utc::now() - chrono::Duration::days(i64::from(payload.retention_days));
        let purged = ctx
            .backends()
            .database
            .blob_index()
            .purge_tombstones(before)
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        ctx.info(format!("purged {purged} tombstones last changed before {before}"));
        Ok(json!({"purged": purged, "before": before}))
    }
}
