//! The job kinds Engram runs, each a thin `Kind` over a service of `services`: what its
//! payload is, its policy and who may submit it. The trait and registry live in `crate::kind`.

mod evals;
mod git_memory;
mod memories;
mod noop;
mod tombstone_gc;

pub use evals::{AgentRun, AgentRunPayload};
pub use git_memory::{
    CommitSession, CommitSessionPayload, ProcessSession, ProcessSessionPayload, RebuildIndex, RepoSync,
    UserPayload, ensure_sync_schedule,
};
pub use memories::{
    IMPORT_QUIET, ImportError, ImportMemories, ImportPayload, ImportStart, IndexMemoryVectors,
    IndexVectorsPayload, IngestConversation, IngestPayload, import_items_key, start_import,
};
pub use noop::{EFFECTS_NAMESPACE, Noop, NoopPayload};
pub use tombstone_gc::{
    BlobRepair, BlobRepairPayload, SYSTEM_OWNER, TombstoneGc, TombstoneGcPayload, ensure_upkeep_schedules,
};
