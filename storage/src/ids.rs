//! Record ids: ULIDs that grow monotonically within a process, so ids made in the same
//! millisecond still sort in creation order (cursor paging relies on it).

use std::sync::Mutex;

use ulid::{Generator, Ulid};

static GENERATOR: Mutex<Generator> = Mutex::new(Generator::new());

pub fn new_id() -> String {
    let mut generator = GENERATOR.lock().unwrap_or_else(|p| p.into_inner());
    match generator.generate() {
        Ok(id) => id.to_string(),
        // 2^80 ids in one millisecond: fall back to a fresh random one.
        Err(_) => Ulid::generate().to_string(),
    }
}

/// The owner of the jobs and schedules the platform keeps for itself (upkeep); no user has
/// this id, and the per-owner job caps do not apply to it.
pub const SYSTEM_OWNER: &str = "system";
