//! One round: every path in the union of the local walk, the server's index and the state is
//! settled by the decision table, re-deciding when a side turns out to have moved (a 412, a
//! file edited meanwhile) so that no version is overwritten unseen.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::local::{self, Scan};
use super::plan::{self, Action};
use super::remote::{Index, RemoteError};
use super::{Summary, SyncError, Syncer};

/// Decisions one path may take in a round before it is left for the next.
const MAX_ATTEMPTS: usize = 5;

/// The working set of a round.
struct Round {
    index: Index,
    scan: Scan,
    summary: Summary,
    queue: VecDeque<String>,
    queued: HashSet<String>,
}

impl Round {
    fn enqueue(&mut self, path: String) {
        if self.queued.insert(path.clone()) {
            self.queue.push_back(path);
        }
    }

    fn set_local(&mut self, path: &str, md5: Option<String>) {
        match md5 {
            Some(md5) => self.scan.files.insert(path.to_string(), md5),
            None => self.scan.files.remove(path),
        };
    }
}

/// What is known of the server's version of a path: its md5 (`None`: no live file) and, once
/// fetched, its content.
struct Seen {
    md5: Option<String>,
    body: Option<Vec<u8>>,
}

enum PathError {
    Fatal(RemoteError),
    Failed(String),
}

impl From<RemoteError> for PathError {
    fn from(e: RemoteError) -> Self {
        if e.is_fatal() { PathError::Fatal(e) } else { PathError::Failed(e.to_string()) }
    }
}

impl From<std::io::Error> for PathError {
    fn from(e: std::io::Error) -> Self {
        PathError::Failed(format!("local file: {e}"))
    }
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.expect("file work does not panic")
}

impl Syncer {
    /// Settles every path against `index` (as listed by the server), then saves the state.
    pub async fn apply(&mut self, index: Index) -> Result<Summary, SyncError> {
        let root = self.root.clone();
        let scan = blocking(move || local::scan(&root))
            .await
            .with_context(|| format!("cannot read {}", self.root.display()))?;
        for warning in &scan.warnings {
            self.warn_once(warning.clone());
        }
        let mut paths: Vec<String> =
            scan.files.keys().chain(index.files.keys()).chain(self.state.files.keys()).cloned().collect();
        paths.sort();
        paths.dedup();
        let mut round = Round {
            index,
            scan,
            summary: Summary::default(),
            queued: paths.iter().cloned().collect(),
            queue: paths.into(),
        };
        let mut outcome = Ok(());
        while let Some(path) = round.queue.pop_front() {
            if round.scan.is_blocked(&path) {
                continue;
            }
            if let Some(reason) = local::unsafe_reason(&path) {
                self.warn_once(format!("{}: cannot be synced here: {reason}", path.escape_debug()));
                round.summary.failed += 1;
                continue;
            }
            match self.sync_path(&mut round, &path).await {
                Ok(()) => {}
                Err(PathError::Failed(message)) => {
                    self.warn_once(format!("{}: {message}", path.escape_debug()));
                    round.summary.failed += 1;
                }
                Err(PathError::Fatal(e)) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        if outcome.is_ok() {
            self.state.cursor = round.index.cursor.clone();
        }
        // What was settled before a fatal error stays settled.
        self.state.save(&self.root)?;
        outcome?;
        Ok(round.summary)
    }

    async fn sync_path(&mut self, round: &mut Round, path: &str) -> Result<(), PathError> {
        let mut seen = Seen { md5: round.index.files.get(path).cloned().flatten(), body: None };
        for _ in 0..MAX_ATTEMPTS {
            let local = round.scan.files.get(path).cloned();
            let synced = self.state.files.get(path).cloned();
            let action = plan::decide(local.as_deref(), seen.md5.as_deref(), synced.as_deref());
            let settled = match action {
                Action::Record => {
                    self.state.record(path, local);
                    true
                }
                Action::Upload { if_match } => self.upload(round, path, local, if_match, &mut seen).await?,
                Action::DeleteRemote { if_match } => {
                    self.delete_remote(round, path, if_match, &mut seen).await?
                }
                Action::Download => self.download(round, path, local, &mut seen).await?,
                Action::DeleteLocal => self.delete_local(round, path, local).await?,
                Action::Conflict => self.keep_both(round, path, local, &mut seen).await?,
            };
            if settled {
                return Ok(());
            }
        }
        Err(PathError::Failed("it kept changing while being synced; trying again next round".to_string()))
    }

    /// Whether the local file still has the md5 `expected`; if not, the round learns its
    /// new md5 so the path is decided again.
    async fn local_still(
        &self,
        round: &mut Round,
        path: &str,
        expected: &Option<String>,
    ) -> Result<bool, PathError> {
        let (root, rel) = (self.root.clone(), path.to_string());
        let now = blocking(move || local::md5_of(&root, &rel)).await?;
        if &now == expected {
            return Ok(true);
        }
        round.set_local(path, now);
        Ok(false)
    }

    /// The server's current content, or `None` when it turned out not to be the version
    /// `seen` expected (then `seen` is brought up to date for another decision).
    async fn fetch(&self, path: &str, seen: &mut Seen) -> Result<Option<Vec<u8>>, PathError> {
        let body = match seen.body.take() {
            Some(body) => body,
            None => match self.remote.get(path).await? {
                Some(body) => body,
                None => {
                    *seen = Seen { md5: None, body: None };
                    return Ok(None);
                }
            },
        };
        let md5 = crate::md5_hex(&body);
        if seen.md5.as_deref() != Some(md5.as_str()) {
            *seen = Seen { md5: Some(md5), body: Some(body) };
            return Ok(None);
        }
        Ok(Some(body))
    }

    /// After a 412: what the server holds now.
    async fn refetch(&self, path: &str) -> Result<Seen, PathError> {
        let body = self.remote.get(path).await?;
        Ok(Seen { md5: body.as_deref().map(crate::md5_hex), body })
    }

    async fn upload(
        &mut self,
        round: &mut Round,
        path: &str,
        local: Option<String>,
        if_match: Option<String>,
        seen: &mut Seen,
    ) -> Result<bool, PathError> {
        let (root, rel) = (self.root.clone(), path.to_string());
        let body = blocking(move || local::read(&root, &rel)).await?;
        let md5 = body.as_deref().map(crate::md5_hex);
        let Some(body) = body.filter(|_| md5 == local) else {
            round.set_local(path, md5);
            return Ok(false);
        };
        match self.remote.put(path, body, if_match.as_deref()).await {
            Ok(stored) if Some(&stored) == md5.as_ref() => {
                self.state.record(path, Some(stored));
                round.summary.uploaded += 1;
                Ok(true)
            }
            Ok(stored) => {
                Err(PathError::Failed(format!("the server stored md5 {stored}, not {}", md5.unwrap())))
            }
            Err(RemoteError::Precondition) => {
                *seen = self.refetch(path).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_remote(
        &mut self,
        round: &mut Round,
        path: &str,
        if_match: String,
        seen: &mut Seen,
    ) -> Result<bool, PathError> {
        if !self.local_still(round, path, &None).await? {
            return Ok(false);
        }
        match self.remote.delete(path, &if_match).await {
            Ok(existed) => {
                self.state.record(path, None);
                round.summary.deleted_on_server += usize::from(existed);
                Ok(true)
            }
            Err(RemoteError::Precondition) => {
                *seen = self.refetch(path).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn download(
        &mut self,
        round: &mut Round,
        path: &str,
        local: Option<String>,
        seen: &mut Seen,
    ) -> Result<bool, PathError> {
        let Some(body) = self.fetch(path, seen).await? else { return Ok(false) };
        if !self.local_still(round, path, &local).await? {
            seen.body = Some(body);
            return Ok(false);
        }
        self.write(path, body).await?;
        round.set_local(path, seen.md5.clone());
        self.state.record(path, seen.md5.clone());
        round.summary.downloaded += 1;
        Ok(true)
    }

    async fn delete_local(
        &mut self,
        round: &mut Round,
        path: &str,
        local: Option<String>,
    ) -> Result<bool, PathError> {
        if !self.local_still(round, path, &local).await? {
            return Ok(false);
        }
        let (root, rel) = (self.root.clone(), path.to_string());
        blocking(move || local::remove(&root, &rel)).await?;
        round.set_local(path, None);
        self.state.record(path, None);
        round.summary.deleted_here += 1;
        Ok(true)
    }

    /// Both sides changed: the local content moves aside to `name.conflict-<md5>` (a new file,
    /// uploaded later this round) and the server's content takes the name.
    async fn keep_both(
        &mut self,
        round: &mut Round,
        path: &str,
        local: Option<String>,
        seen: &mut Seen,
    ) -> Result<bool, PathError> {
        let Some(body) = self.fetch(path, seen).await? else { return Ok(false) };
        if !self.local_still(round, path, &local).await? {
            seen.body = Some(body);
            return Ok(false);
        }
        let local_md5 = local.expect("a conflict has a local version");
        let (root, rel, md5) = (self.root.clone(), path.to_string(), local_md5.clone());
        let copy = blocking(move || local::move_to_conflict_copy(&root, &rel, &md5)).await?;
        self.write(path, body).await?;
        eprintln!(
            "engram: {}: changed on both sides; the server's version keeps the name, yours is {}",
            path.escape_debug(),
            copy.escape_debug()
        );
        round.set_local(path, seen.md5.clone());
        self.state.record(path, seen.md5.clone());
        round.set_local(&copy, Some(local_md5));
        round.enqueue(copy);
        round.summary.conflicts += 1;
        Ok(true)
    }

    async fn write(&self, path: &str, body: Vec<u8>) -> Result<(), PathError> {
        let (root, rel): (PathBuf, String) = (self.root.clone(), path.to_string());
        blocking(move || local::write_atomic(Path::new(&root), &rel, &body)).await?;
        Ok(())
    }
}
