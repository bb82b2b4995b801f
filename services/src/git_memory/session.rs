//! The write path of git memory: a session processed into staged file edits, the staged
//! edits committed as `Session <id>` (then indexed and pushed), and sync with the remote.
//! Each runs under the repo's writer lease and is idempotent, as job handlers must be.

use chrono::{NaiveDate, Utc};
use serde::Serialize;
use storage::git_memory::index::FileChange;
use storage::git_memory::repo::{MemoryRepo, SyncOutcome};
use storage::sql::RepoStatus;

use super::writer::{self, Extraction};
use super::{GitMemory, GitMemoryError, GitMemoryResult, blocking, layout};

/// Longest session input accepted.
pub const MAX_SESSION_INPUT: usize = 256 * 1024;

/// What processing a session staged.
#[derive(Debug, Clone, Serialize)]
pub struct Processed {
    pub session_id: String,
    pub staged_files: Vec<String>,
    pub entities: Vec<String>,
    /// False when the session had been processed already (a retried job).
    pub newly_processed: bool,
}

/// What committing a session did.
#[derive(Debug, Clone, Serialize)]
pub struct Committed {
    pub session_id: String,
    pub commit: String,
    pub files: Vec<String>,
    /// How the push to the remote went, when there is one.
    pub sync: Option<String>,
}

/// A sync's outcome as the API reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Synced {
    pub status: &'static str,
    pub pulled: bool,
    pub pushed: bool,
    pub conflicts: Vec<String>,
    pub message: Option<String>,
}

pub fn check_session_id(session_id: &str) -> GitMemoryResult<()> {
    if layout::is_valid_id(session_id) {
        Ok(())
    } else {
        Err(GitMemoryError::Invalid(format!(
            "session_id: {:?} is not a valid id (1-{} letters, digits, '-', '_' or '.', not starting with '.')",
            session_id.chars().take(80).collect::<String>(),
            layout::MAX_ID_LEN
        )))
    }
}

pub fn check_session_input(input: &str) -> GitMemoryResult<()> {
    if input.trim().is_empty() {
        return Err(GitMemoryError::Invalid("memory_input: must not be empty".into()));
    }
    if input.len() > MAX_SESSION_INPUT {
        return Err(GitMemoryError::Invalid(format!("memory_input: longer than {MAX_SESSION_INPUT} bytes")));
    }
    Ok(())
}

/// `session_date` as `YYYY-MM-DD`, today when absent.
pub fn parse_session_date(date: Option<&str>) -> GitMemoryResult<NaiveDate> {
    match date {
        None => Ok(Utc::now().date_naive()),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            GitMemoryError::Invalid(format!("session_date: {text:?} is not a date (YYYY-MM-DD)"))
        }),
    }
}

impl GitMemory {
    /// Turns a session into staged edits; a session already archived is not applied twice.
    pub async fn process_session(
        &self,
        user_id: &str,
        session_id: &str,
        input: &str,
        date: NaiveDate,
        extract: impl AsyncFnOnce(&str, &[writer::IndexEntry]) -> GitMemoryResult<Extraction>,
    ) -> GitMemoryResult<Processed> {
        check_session_id(session_id)?;
        check_session_input(input)?;
        let (record, dir) = self.open(user_id).await?;
        self.with_writer(user_id, async {
            let archive = layout::session_file(date, session_id);
            let (dir2, branch, archive2) = (dir.clone(), record.branch.clone(), archive.clone());
            let (archived, index_text) = blocking(move || {
                let repo = MemoryRepo::open(&dir2, &branch)?;
                Ok((
                    repo.read_file(&archive2)?.is_some(),
                    repo.read_file(layout::INDEX_FILE)?.unwrap_or_default(),
                ))
            })
            .await?;
            if archived {
                return Ok(Processed {
                    session_id: session_id.to_string(),
                    staged_files: Vec::new(),
                    entities: Vec::new(),
                    newly_processed: false,
                });
            }
            let known = writer::parse_index(&index_text);
            let extraction = extract(input, &known).await?;
            let entities = extraction.entities.iter().map(|e| e.name.clone()).collect();
            let (input, session_id2, branch) =
                (input.to_string(), session_id.to_string(), record.branch.clone());
            let staged_files = blocking(move || {
                let repo = MemoryRepo::open(&dir, &branch)?;
                let edits = writer::session_edits(&extraction, &input, &session_id2, date, |path| {
                    repo.read_file(path).ok().flatten()
                });
                let mut written = Vec::new();
                for (path, contents) in edits {
                    repo.write_file(&path, &contents)?;
                    written.push(path);
                }
                Ok(written)
            })
            .await?;
            Ok(Processed {
                session_id: session_id.to_string(),
                staged_files,
                entities,
                newly_processed: true,
            })
        })
        .await
    }

    /// Whether `commit_session` has something to do: staged edits, or a last commit that is
    /// this session's already (a repeated commit answers it again).
    pub async fn check_commit_ready(&self, user_id: &str, session_id: &str) -> GitMemoryResult<()> {
        check_session_id(session_id)?;
        let (record, dir) = self.open(user_id).await?;
        let message = format!("Session {session_id}");
        blocking(move || {
            let repo = MemoryRepo::open(&dir, &record.branch)?;
            if repo.staged_changes()?.is_empty() && repo.head()?.1 != message {
                return Err(GitMemoryError::Conflict(format!(
                    "nothing is staged for session {}; process it first",
                    message.trim_start_matches("Session ")
                )));
            }
            Ok(())
        })
        .await
    }

    /// Commits the staged edits as `Session <id>`, indexes the changed files and pushes.
    /// When nothing is staged and the last commit is this session's, it was committed before.
    pub async fn commit_session(&self, user_id: &str, session_id: &str) -> GitMemoryResult<Committed> {
        check_session_id(session_id)?;
        let (record, dir) = self.open(user_id).await?;
        let message = format!("Session {session_id}");
        let committed = self
            .with_writer(user_id, async {
                let (branch, message) = (record.branch.clone(), message.clone());
                let (commit, changed) = blocking(move || {
                    let repo = MemoryRepo::open(&dir, &branch)?;
                    let staged = repo.staged_changes()?;
                    let commit = match repo.commit_staged(&message)? {
                        Some(commit) => commit,
                        None => match repo.head()? {
                            (id, last, _) if last == message => id,
                            _ => {
                                return Err(GitMemoryError::Invalid(format!(
                                    "nothing is staged for session {}; process it first",
                                    message.trim_start_matches("Session ")
                                )));
                            }
                        },
                    };
                    let mut changed = Vec::new();
                    for change in staged {
                        let text =
                            if change.change == "deleted" { None } else { repo.read_file(&change.path)? };
                        changed.push((change.path, text));
                    }
                    Ok((commit, changed))
                })
                .await?;
                let index = self.index(user_id).await?;
                let updates: Vec<FileChange> = changed
                    .iter()
                    .filter(|(path, _)| path.ends_with(".md"))
                    .map(|(path, text)| match text {
                        Some(markdown) => FileChange::Upsert { file: path, markdown },
                        None => FileChange::Remove { file: path },
                    })
                    .collect();
                index.apply(&updates)?;
                self.note_index_written(user_id);
                Ok(Committed {
                    session_id: session_id.to_string(),
                    commit,
                    files: changed.into_iter().map(|(path, _)| path).collect(),
                    sync: None,
                })
            })
            .await?;
        if record.repo_url.is_none() {
            return Ok(committed);
        }
        let synced = self.sync(user_id).await?;
        Ok(Committed { sync: Some(synced.status.to_string()), ..committed })
    }

    /// Fetches, merges (a conflict is reported and changes nothing) and pushes; records the
    /// outcome on the repo's record.
    pub async fn sync(&self, user_id: &str) -> GitMemoryResult<Synced> {
        let (record, dir) = self.open(user_id).await?;
        let Some(url) = record.repo_url.clone() else {
            return Ok(Synced {
                status: "active",
                pulled: false,
                pushed: false,
                conflicts: vec![],
                message: None,
            });
        };
        let auth = self.auth(&record)?;
        let outcome = self
            .with_writer(user_id, async {
                let branch = record.branch.clone();
                let outcome = blocking(move || Ok(MemoryRepo::open(&dir, &branch)?.sync(&url, &auth)?)).await;
                if let Ok(SyncOutcome::InStep { pulled: true, .. }) = outcome {
                    self.rebuild_index(user_id).await?;
                }
                outcome
            })
            .await;
        let now = Utc::now();
        let (status, synced) = match outcome {
            Ok(SyncOutcome::InStep { pulled, pushed }) => (
                RepoStatus::Active,
                Synced { status: "active", pulled, pushed, conflicts: vec![], message: None },
            ),
            Ok(SyncOutcome::StagedChangesPending) => (
                RepoStatus::Active,
                Synced {
                    status: "active",
                    pulled: false,
                    pushed: false,
                    conflicts: vec![],
                    message: Some("staged changes wait for a commit; synced nothing".into()),
                },
            ),
            Ok(SyncOutcome::Conflict { paths }) => {
                let message = format!(
                    "the remote changed the same lines of {}; nothing was overwritten",
                    paths.join(", ")
                );
                (
                    RepoStatus::Conflict,
                    Synced {
                        status: "conflict",
                        pulled: false,
                        pushed: false,
                        conflicts: paths,
                        message: Some(message),
                    },
                )
            }
            Err(e @ (GitMemoryError::Busy(_) | GitMemoryError::Internal(_))) => return Err(e),
            Err(e) => (
                RepoStatus::Error,
                Synced {
                    status: "error",
                    pulled: false,
                    pushed: false,
                    conflicts: vec![],
                    message: Some(e.to_string()),
                },
            ),
        };
        self.store
            .record_sync(
                user_id,
                status,
                synced.message.as_deref().filter(|_| status != RepoStatus::Active),
                now,
            )
            .await?;
        Ok(synced)
    }
}

/// The cron expression closest to "every `minutes` minutes": `*/N` within the hour below 60,
/// every `N/60` hours for whole hours below a day, else daily.
pub fn sync_cron(minutes: u64) -> String {
    match minutes {
        0..=1 => "* * * * *".to_string(),
        2..=59 => format!("*/{minutes} * * * *"),
        60 => "0 * * * *".to_string(),
        m if m % 60 == 0 && m < 24 * 60 => format!("0 */{} * * *", m / 60),
        _ => "0 0 * * *".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::sync_cron;

    #[test]
    fn sync_intervals_become_cron_expressions() {
        assert_eq!(sync_cron(5), "*/5 * * * *");
        assert_eq!(sync_cron(60), "0 * * * *");
        assert_eq!(sync_cron(180), "0 */3 * * *");
        assert_eq!(sync_cron(10_080), "0 0 * * *");
    }
}
