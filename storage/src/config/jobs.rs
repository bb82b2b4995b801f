//! Job settings that protect tenants from each other (the test-only kinds, the per-owner caps
//! on queued and running jobs) and the bound on how long a due job may wait for a worker.

use super::{ConfigError, RawConfig, parse_bool, parse_number};

/// Keys this part reads, with what each is for.
pub(super) const KEYS: &[(&str, &str)] = &[
    (
        "ENGRAM_ENABLE_TEST_KINDS",
        "register the job kinds that exist for tests and benchmarks (noop), for administrators only",
    ),
    (
        "ENGRAM_JOBS_MAX_QUEUED_PER_OWNER",
        "jobs one owner may have waiting (queued or awaiting a retry) before submissions get 429; 0 = no cap",
    ),
    (
        "ENGRAM_JOBS_MAX_RUNNING_PER_OWNER",
        "jobs of one owner running at once over every worker; 0 = no cap (default: one less than ENGRAM_WORKER_CONCURRENCY)",
    ),
    (
        "ENGRAM_JOBS_STALL_AFTER_SECS",
        "a due job waiting longer for a worker of its kind is pushed to the queue again (once) and turns /health degraded",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobsConfig {
    pub test_kinds: bool,
    /// 0: no cap.
    pub max_queued_per_owner: u64,
    /// 0: no cap.
    pub max_running_per_owner: u64,
    /// Seconds a due job may wait for a worker before it is re-pushed and reported.
    pub stall_after_secs: u64,
}

impl JobsConfig {
    /// How long a due job may wait for a worker before it is re-pushed and reported.
    pub fn stall_after(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.stall_after_secs)
    }

    pub(super) fn from_raw(raw: &RawConfig, worker_concurrency: u64) -> Result<Self, ConfigError> {
        let running_default = worker_concurrency.saturating_sub(1).max(1);
        Ok(Self {
            test_kinds: parse_bool(raw, "ENGRAM_ENABLE_TEST_KINDS", false)?,
            max_queued_per_owner: parse_number(
                raw,
                "ENGRAM_JOBS_MAX_QUEUED_PER_OWNER",
                10_000,
                0,
                100_000_000,
            )?,
            max_running_per_owner: parse_number(
                raw,
                "ENGRAM_JOBS_MAX_RUNNING_PER_OWNER",
                running_default,
                0,
                1_000_000,
            )?,
            stall_after_secs: parse_number(raw, "ENGRAM_JOBS_STALL_AFTER_SECS", 60, 5, 86_400)?,
        })
    }

    pub(super) fn describe(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("ENGRAM_ENABLE_TEST_KINDS", Some(self.test_kinds.to_string())),
            ("ENGRAM_JOBS_MAX_QUEUED_PER_OWNER", Some(self.max_queued_per_owner.to_string())),
            ("ENGRAM_JOBS_MAX_RUNNING_PER_OWNER", Some(self.max_running_per_owner.to_string())),
            ("ENGRAM_JOBS_STALL_AFTER_SECS", Some(self.stall_after_secs.to_string())),
        ]
    }
}
