//! Agents a dead worker left running. A run's directory holds `agent.json`, the process group
//! of its agent and the pid of the worker that started it, for as long as the session lives.
//! When a worker starts it kills each recorded group whose worker is gone and whose leader
//! still works in that run's checkout (so a reused pid is never taken for an agent).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The file in a run's directory that names its live agent.
pub const AGENT_FILE: &str = "agent.json";

#[derive(Debug, Serialize, Deserialize)]
struct AgentRecord {
    pgid: u32,
    worker_pid: u32,
}

/// Records that this process started the agent leading `pgid` in `run_dir`.
pub fn record(run_dir: &Path, pgid: u32) -> std::io::Result<()> {
    let record = AgentRecord { pgid, worker_pid: std::process::id() };
    std::fs::write(run_dir.join(AGENT_FILE), serde_json::to_vec(&record)?)
}

/// Forgets the agent of `run_dir` (its session ended).
pub fn forget(run_dir: &Path) {
    let _ = std::fs::remove_file(run_dir.join(AGENT_FILE));
}

fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Kills the agents under `runs_dir` (`<task>/<agent>/agent.json`) whose worker is gone;
/// returns how many.
pub fn reap(runs_dir: &Path) -> usize {
    let run_dirs = std::fs::read_dir(runs_dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|task| std::fs::read_dir(task.path()).into_iter().flatten().flatten())
        .map(|run| run.path());
    run_dirs.filter(|dir| reap_one(dir.as_path())).count()
}

fn reap_one(run_dir: &Path) -> bool {
    let Ok(bytes) = std::fs::read(run_dir.join(AGENT_FILE)) else { return false };
    let Ok(record) = serde_json::from_slice::<AgentRecord>(&bytes) else { return false };
    if record.worker_pid == std::process::id() || alive(record.worker_pid) {
        return false;
    }
    let checkout = run_dir.join("checkout");
    let works_there =
        std::fs::read_link(format!("/proc/{}/cwd", record.pgid)).is_ok_and(|cwd| cwd == checkout);
    forget(run_dir);
    if !works_there {
        return false;
    }
    let Ok(pgid) = i32::try_from(record.pgid) else { return false };
    tracing::warn!(pgid, dir = %run_dir.display(), "killing an agent a dead worker left running");
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::Signal::SIGKILL).is_ok()
}
