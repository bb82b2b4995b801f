//! Job workers, in-process and `engram-worker` (whose flags override these): how many jobs
//! run at once, heartbeats, when a silent worker's jobs are re-queued, the drain on shutdown.

use super::{ConfigError, RawConfig, parse_number};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    ("ENGRAM_WORKER_CONCURRENCY", "jobs one process runs at once"),
    ("ENGRAM_WORKER_HEARTBEAT_SECS", "seconds between worker heartbeats"),
    ("ENGRAM_WORKER_STALE_SECS", "seconds without a heartbeat before a worker's jobs are re-queued"),
    ("ENGRAM_WORKER_DRAIN_SECS", "seconds running jobs get to finish on shutdown"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerConfig {
    pub concurrency: u64,
    pub heartbeat_secs: u64,
    pub stale_after_secs: u64,
    pub drain_secs: u64,
}

impl Default for WorkerConfig {
    /// Worker settings when nothing is configured.
    fn default() -> Self {
        Self { concurrency: 4, heartbeat_secs: 5, stale_after_secs: 30, drain_secs: 30 }
    }
}

impl WorkerConfig {
    pub(super) fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let d = Self::default();
        Ok(Self {
            concurrency: parse_number(raw, "ENGRAM_WORKER_CONCURRENCY", d.concurrency, 1, 1024)?,
            heartbeat_secs: parse_number(raw, "ENGRAM_WORKER_HEARTBEAT_SECS", d.heartbeat_secs, 1, 300)?,
            stale_after_secs: parse_number(raw, "ENGRAM_WORKER_STALE_SECS", d.stale_after_secs, 2, 3600)?,
            drain_secs: parse_number(raw, "ENGRAM_WORKER_DRAIN_SECS", d.drain_secs, 0, 3600)?,
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("ENGRAM_WORKER_CONCURRENCY", Some(self.concurrency.to_string())),
            ("ENGRAM_WORKER_HEARTBEAT_SECS", Some(self.heartbeat_secs.to_string())),
            ("ENGRAM_WORKER_STALE_SECS", Some(self.stale_after_secs.to_string())),
            ("ENGRAM_WORKER_DRAIN_SECS", Some(self.drain_secs.to_string())),
        ]
    }
}
