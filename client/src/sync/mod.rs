//! `engram sync`: two-way sync of a local directory with the caller's blob namespace on an
//! Engram server, by the memory proxy's client protocol. Each round lists the server's index,
//! walks the directory and settles every path by [`plan::decide`]; conditional writes keep
//! either side from overwriting a version it has not seen, and conflicts keep both versions.

pub mod local;
pub mod plan;
pub mod remote;
mod round;
pub mod state;

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use self::remote::{Remote, RemoteError};
use self::state::State;

/// Exit code of a round that finished but could not sync some paths.
pub const EXIT_PARTIAL: u8 = 3;
/// Exit code when syncing could not go on: refused token, unreachable server, local I/O.
pub const EXIT_FATAL: u8 = 1;

/// What to sync with where.
#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub server: String,
    pub token: String,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub uploaded: usize,
    pub downloaded: usize,
    /// Local files deleted because the server's were.
    pub deleted_here: usize,
    /// Server files deleted because the local ones were.
    pub deleted_on_server: usize,
    pub conflicts: usize,
    /// Paths that could not be synced this round (each reported on stderr).
    pub failed: usize,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} uploaded, {} downloaded, {} deleted here, {} deleted on the server, {} conflicts, {} failed",
            self.uploaded,
            self.downloaded,
            self.deleted_here,
            self.deleted_on_server,
            self.conflicts,
            self.failed
        )
    }
}

/// Why a round stopped before settling every path.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{0:#}")]
    Local(#[from] anyhow::Error),
}

impl SyncError {
    /// A network error: worth retrying later, unlike a refused token or a local failure.
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Remote(RemoteError::Network { .. }))
    }
}

/// A directory and a server, with the state between rounds.
pub struct Syncer {
    root: PathBuf,
    remote: Remote,
    state: State,
    warned: HashSet<String>,
}

impl Syncer {
    /// Checks the token, creates the directory if needed and loads its state. A state from
    /// another server or user is set aside: every path is then compared afresh (differing
    /// files become conflict copies; nothing is deleted on either side).
    pub async fn open(options: Options) -> Result<Self, SyncError> {
        let remote = Remote::new(&options.server, &options.token)?;
        std::fs::create_dir_all(&options.dir)
            .with_context(|| format!("cannot create {}", options.dir.display()))?;
        let root = options.dir;
        let user = remote.whoami().await?;
        let server = remote.server();
        let state = match State::load(&root)? {
            Some(state) if state.server != server => {
                eprintln!(
                    "engram: {} was synced with {}; starting afresh with {server}",
                    root.display(),
                    state.server
                );
                State::new(server, user)
            }
            Some(state) if user.is_some() && state.user.is_some() && state.user != user => {
                eprintln!("engram: {} was synced as another user; starting afresh", root.display());
                State::new(server, user)
            }
            Some(mut state) => {
                state.user = user.or(state.user);
                state
            }
            None => State::new(server, user),
        };
        Ok(Syncer { root, remote, state, warned: HashSet::new() })
    }

    /// The state as the last round left it.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// One round: list the server's index, then settle every path against it.
    pub async fn round(&mut self) -> Result<Summary, SyncError> {
        let index = self.remote.index().await?;
        self.apply(index).await
    }

    /// Prints `message` on stderr, once per process for each distinct message.
    fn warn_once(&mut self, message: String) {
        if !self.warned.contains(&message) {
            eprintln!("engram: {message}");
            self.warned.insert(message);
        }
    }
}

/// One round and exit: 0 when everything is in sync, [`EXIT_PARTIAL`] when some paths could
/// not be synced, [`EXIT_FATAL`] when the round could not run.
pub async fn once(options: Options) -> ExitCode {
    let result = match Syncer::open(options).await {
        Ok(mut syncer) => syncer.round().await,
        Err(e) => Err(e),
    };
    match result {
        Ok(summary) => {
            println!("engram sync: {summary}");
            if summary.failed > 0 { ExitCode::from(EXIT_PARTIAL) } else { ExitCode::SUCCESS }
        }
        Err(e) => fatal(&e),
    }
}

/// A round every `interval` until `shutdown` resolves (then exit 0). Network errors are
/// reported and retried next time; a refused token or a local failure ends with
/// [`EXIT_FATAL`].
pub async fn watch(options: Options, interval: Duration, shutdown: impl Future<Output = ()>) -> ExitCode {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut syncer = None;
    loop {
        let attempt = async {
            let syncer = match &mut syncer {
                Some(syncer) => syncer,
                None => syncer.insert(Syncer::open(options.clone()).await?),
            };
            syncer.round().await
        };
        tokio::select! {
            _ = &mut shutdown => return ExitCode::SUCCESS,
            result = attempt => match result {
                Ok(summary) => println!("engram sync: {summary}"),
                Err(e) if e.is_transient() => eprintln!("engram: {e}; retrying in {}s", interval.as_secs()),
                Err(e) => return fatal(&e),
            },
        }
        tokio::select! {
            _ = &mut shutdown => return ExitCode::SUCCESS,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

fn fatal(error: &SyncError) -> ExitCode {
    match error {
        SyncError::Remote(RemoteError::Auth { .. }) => {
            eprintln!("engram: {error}; pass a valid --token (or ENGRAM_TOKEN) with the blobs:rw scope")
        }
        _ => eprintln!("engram: {error}"),
    }
    ExitCode::from(EXIT_FATAL)
}
