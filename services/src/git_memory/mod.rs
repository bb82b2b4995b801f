//! Git memory (DiffMem) as a service: memory repos set up per user id (created empty or
//! cloned with a token), their tantivy block indexes (persisted beside them, reopened
//! fresh when another process committed, rebuilt on a cold start), the writer lease that
//! lets one process at a time change a repo, and the status of each repo. Sessions, sync
//! and context assembly are in the submodules.

pub mod context;
pub mod layout;
pub mod planner;
pub mod session;
pub mod similar;
pub mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::Utc;
use serde::Serialize;
use storage::Config;
use storage::git_memory::index::{BlockIndex, IndexStats};
use storage::git_memory::repo::{MemoryRepo, RemoteAuth, RepoError, StagedChange};
use storage::git_memory::seal::TokenSealer;
use storage::sql::{MemoryRepoRecord, MemoryRepoStore, RepoStatus};

use crate::embed::LocalEmbedder;
use crate::llm::LlmClient;

/// Longest accepted repo URL and branch name.
const MAX_URL_LEN: usize = 2000;
const MAX_BRANCH_LEN: usize = 100;
/// How long a caller waits for another process to finish writing the same repo.
const LEASE_WAIT: Duration = Duration::from_secs(30);
/// A lease outlives a crashed holder by at most this long.
const LEASE_TTL: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum GitMemoryError {
    #[error("{0}")]
    Invalid(String),
    #[error("no memory repository is set up for user {0}; call POST /repos/setup first")]
    NotSetUp(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the git remote refused the token")]
    RemoteUnauthorized,
    #[error("{0}")]
    TooLarge(String),
    #[error("another writer holds the memory repository of {0}; try again")]
    Busy(String),
    #[error("{0}")]
    Remote(String),
    #[error("{0}")]
    Internal(String),
}

impl From<RepoError> for GitMemoryError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Unauthorized => GitMemoryError::RemoteUnauthorized,
            RepoError::TooLarge { .. } => GitMemoryError::TooLarge(e.to_string()),
            RepoError::NoSuchBranch(_) | RepoError::InvalidPath(_) => GitMemoryError::Invalid(e.to_string()),
            RepoError::Remote(_) => GitMemoryError::Remote(e.to_string()),
            RepoError::Git(_) | RepoError::Io(_) => GitMemoryError::Internal(e.to_string()),
        }
    }
}

impl From<storage::StoreError> for GitMemoryError {
    fn from(e: storage::StoreError) -> Self {
        match e {
            storage::StoreError::InvalidKey(why) => GitMemoryError::Invalid(why),
            other => GitMemoryError::Internal(other.to_string()),
        }
    }
}

pub type GitMemoryResult<T> = Result<T, GitMemoryError>;

/// What `/repos/setup` asks for.
#[derive(Debug, Clone)]
pub struct SetupRequest {
    pub user_id: String,
    pub repo_url: Option<String>,
    pub branch: String,
    /// A token for the remote; else the caller's exchanged GitHub token, if any.
    pub token: Option<String>,
    /// The account whose exchanged GitHub token may be used.
    pub caller_id: String,
}

/// `/repos/status/{user_id}`.
#[derive(Debug, Clone, Serialize)]
pub struct RepoStatusReport {
    pub repo_url: Option<String>,
    pub user_id: String,
    pub branch: String,
    pub last_sync: Option<chrono::DateTime<Utc>>,
    pub status: &'static str,
    pub last_error: Option<String>,
    pub memory_files_count: usize,
    pub index_stats: IndexStats,
    pub staged_changes: Vec<StagedChange>,
    pub head_commit: Option<String>,
}

/// An index with the state of its files when it was last loaded.
struct LoadedIndex {
    index: Arc<BlockIndex>,
    seen: Option<(SystemTime, u64)>,
}

pub struct GitMemory {
    repos_dir: PathBuf,
    indexes_dir: PathBuf,
    max_repo_bytes: u64,
    allowed_schemes: Vec<String>,
    store: Arc<dyn MemoryRepoStore>,
    sealer: TokenSealer,
    indexes: Mutex<HashMap<String, LoadedIndex>>,
    /// Names this process in leases.
    holder: String,
    /// Writes sessions and plans searches when configured; rules do otherwise.
    llm: Option<Arc<LlmClient>>,
    /// Ranks entities by meaning for `wide` contexts, when the model is installed.
    embedder: Option<Arc<LocalEmbedder>>,
    description_vectors: similar::VectorCache,
}

fn meta_state(dir: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(dir.join("meta.json")).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn internal(e: impl std::fmt::Display) -> GitMemoryError {
    GitMemoryError::Internal(e.to_string())
}

/// Runs blocking repo work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> GitMemoryResult<T> + Send + 'static,
) -> GitMemoryResult<T> {
    storage::blocking::spawn_blocking_in_span(work).await.map_err(internal)?
}

impl GitMemory {
    pub fn new(
        config: &Config,
        store: Arc<dyn MemoryRepoStore>,
        secret: &str,
        llm: Option<Arc<LlmClient>>,
        embedder: Option<Arc<LocalEmbedder>>,
    ) -> Self {
        Self {
            llm,
            embedder,
            description_vectors: Default::default(),
            repos_dir: config.git_memory.repo_cache_dir.clone(),
            indexes_dir: config.data_dir.join("indexes").join("memory"),
            max_repo_bytes: config.git_memory.max_repo_size_mb * 1024 * 1024,
            allowed_schemes: config.git_memory.repo_url_schemes.clone(),
            store,
            sealer: TokenSealer::new(secret),
            indexes: Mutex::new(HashMap::new()),
            holder: format!("{}-{}", std::process::id(), storage::ids::new_id()),
        }
    }

    pub fn check_user_id(user_id: &str) -> GitMemoryResult<()> {
        if layout::is_valid_id(user_id) {
            Ok(())
        } else {
            Err(GitMemoryError::Invalid(format!(
                "user_id: {:?} is not a valid id (1-{} letters, digits, '-', '_' or '.', not starting with '.')",
                user_id.chars().take(80).collect::<String>(),
                layout::MAX_ID_LEN
            )))
        }
    }

    fn repo_dir(&self, user_id: &str) -> PathBuf {
        self.repos_dir.join(user_id)
    }

    fn index_dir(&self, user_id: &str) -> PathBuf {
        self.indexes_dir.join(user_id)
    }

    /// Keeps a GitHub token exchanged at `/auth/github` (sealed) for later clones and syncs.
    pub async fn remember_github_token(&self, user_id: &str, token: &str) -> GitMemoryResult<()> {
        Ok(self.store.put_github_token(user_id, &self.sealer.seal(token)).await?)
    }

    fn check_url(&self, url: &str) -> GitMemoryResult<()> {
        let invalid = |why: &str| GitMemoryError::Invalid(format!("repo_url: {why}"));
        if url.len() > MAX_URL_LEN {
            return Err(invalid("longer than 2,000 characters"));
        }
        let parsed = url::Url::parse(url).map_err(|_| invalid("not a URL"))?;
        if !self.allowed_schemes.iter().any(|s| s == parsed.scheme()) {
            return Err(invalid(&format!(
                "scheme {} is not allowed (allowed: {})",
                parsed.scheme(),
                self.allowed_schemes.join(", ")
            )));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(invalid("names no host"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(invalid("must not carry credentials; send the token separately"));
        }
        Ok(())
    }

    fn check_branch(branch: &str) -> GitMemoryResult<()> {
        if branch.is_empty()
            || branch.len() > MAX_BRANCH_LEN
            || !git2::Reference::is_valid_name(&format!("refs/heads/{branch}"))
        {
            return Err(GitMemoryError::Invalid(format!("branch: {branch:?} is not a valid branch name")));
        }
        Ok(())
    }

    /// Holds the writer lease of `user_id`'s repo while `work` runs.
    pub async fn with_writer<T>(
        &self,
        user_id: &str,
        work: impl std::future::Future<Output = GitMemoryResult<T>>,
    ) -> GitMemoryResult<T> {
        let name = format!("gitmem:{user_id}");
        // One holder per acquisition: two tasks of this process are two writers.
        let holder = format!("{}:{}", self.holder, storage::ids::new_id());
        let started = std::time::Instant::now();
        loop {
            let until = Utc::now() + chrono::Duration::from_std(LEASE_TTL).unwrap_or_default();
            if self.store.try_lease(&name, &holder, until).await? {
                break;
            }
            if started.elapsed() > LEASE_WAIT {
                return Err(GitMemoryError::Busy(user_id.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let outcome = work.await;
        if let Err(e) = self.store.release_lease(&name, &holder).await {
            tracing::warn!(user_id, error = %e, "releasing a memory repo lease failed; it expires by itself");
        }
        outcome
    }

    /// Sets up `request.user_id`'s memory repo: cloned from `repo_url`, or created empty.
    /// Setting up again with the same remote and branch is a no-op that may refresh the token.
    pub async fn setup(&self, request: SetupRequest) -> GitMemoryResult<RepoStatusReport> {
        Self::check_user_id(&request.user_id)?;
        Self::check_branch(&request.branch)?;
        if let Some(url) = &request.repo_url {
            self.check_url(url)?;
        }
        let token = match &request.token {
            Some(token) => Some(token.clone()),
            None => match self.store.github_token(&request.caller_id).await? {
                Some(sealed) => Some(self.sealer.open(&sealed).map_err(internal)?),
                None => None,
            },
        };
        let user_id = request.user_id.clone();
        self.with_writer(&user_id, async {
            let existing = self.store.get(&request.user_id).await?;
            let dir = self.repo_dir(&request.user_id);
            if let Some(existing) = existing.filter(|_| dir.exists()) {
                if existing.repo_url != request.repo_url || existing.branch != request.branch {
                    return Err(GitMemoryError::Conflict(format!(
                        "user {} already has a memory repository with another remote or branch",
                        request.user_id
                    )));
                }
                if request.token.is_some() {
                    let record = MemoryRepoRecord {
                        sealed_token: token.as_deref().map(|t| self.sealer.seal(t)),
                        ..existing
                    };
                    self.store.put(&record).await?;
                }
                return Ok(());
            }
            self.create_repo(&request, token.clone()).await?;
            let now = Utc::now();
            self.store
                .put(&MemoryRepoRecord {
                    user_id: request.user_id.clone(),
                    repo_url: request.repo_url.clone(),
                    branch: request.branch.clone(),
                    sealed_token: token.as_deref().map(|t| self.sealer.seal(t)),
                    status: RepoStatus::Active,
                    last_sync: request.repo_url.as_ref().map(|_| now),
                    last_error: None,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
            self.rebuild_index(&request.user_id).await?;
            Ok(())
        })
        .await?;
        self.status(&user_id).await
    }

    /// Clones or creates into a scratch directory, then renames it into place, so a failed
    /// setup leaves nothing behind.
    async fn create_repo(&self, request: &SetupRequest, token: Option<String>) -> GitMemoryResult<()> {
        let dir = self.repo_dir(&request.user_id);
        let scratch = self.repos_dir.join(format!(".setup-{}", storage::ids::new_id()));
        let (url, branch, user_id) =
            (request.repo_url.clone(), request.branch.clone(), request.user_id.clone());
        let auth = RemoteAuth { token, max_bytes: self.max_repo_bytes };
        let max_bytes = self.max_repo_bytes;
        blocking(move || {
            std::fs::create_dir_all(scratch.parent().unwrap()).map_err(internal)?;
            let made = match &url {
                Some(url) => MemoryRepo::clone_remote(&scratch, url, &branch, &auth).map(|_| ()),
                None => MemoryRepo::create(&scratch, &branch, &layout::initial_files(&user_id)).map(|_| ()),
            };
            if let Err(e) = made {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e.into());
            }
            if directory_size(&scratch) > max_bytes {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(RepoError::TooLarge { limit_mb: max_bytes / (1024 * 1024) }.into());
            }
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(internal)?;
            }
            std::fs::rename(&scratch, &dir).map_err(internal)
        })
        .await
    }

    pub async fn record(&self, user_id: &str) -> GitMemoryResult<MemoryRepoRecord> {
        Self::check_user_id(user_id)?;
        match self.store.get(user_id).await? {
            Some(record) if self.repo_dir(user_id).exists() => Ok(record),
            _ => Err(GitMemoryError::NotSetUp(user_id.to_string())),
        }
    }

    /// Opens the repo of a user who has one.
    pub async fn open(&self, user_id: &str) -> GitMemoryResult<(MemoryRepoRecord, PathBuf)> {
        let record = self.record(user_id).await?;
        Ok((record, self.repo_dir(user_id)))
    }

    pub async fn status(&self, user_id: &str) -> GitMemoryResult<RepoStatusReport> {
        let (record, dir) = self.open(user_id).await?;
        let index = self.index(user_id).await?;
        let branch = record.branch.clone();
        let (files, staged, head) = blocking(move || {
            let repo = MemoryRepo::open(&dir, &branch)?;
            let head = repo.head().ok().map(|(id, _, _)| id);
            Ok((repo.markdown_files()?.len(), repo.staged_changes()?, head))
        })
        .await?;
        Ok(RepoStatusReport {
            repo_url: record.repo_url,
            user_id: record.user_id,
            branch: record.branch,
            last_sync: record.last_sync,
            status: record.status.as_str(),
            last_error: record.last_error,
            memory_files_count: files,
            index_stats: index.stats()?,
            staged_changes: staged,
            head_commit: head,
        })
    }

    /// The user's block index, reloaded when another process committed to it since, and
    /// rebuilt from the repo when there is none yet (a cold start).
    pub async fn index(&self, user_id: &str) -> GitMemoryResult<Arc<BlockIndex>> {
        let dir = self.index_dir(user_id);
        let current = meta_state(&dir);
        let cached = {
            let mut indexes = self.indexes.lock().unwrap();
            match indexes.get_mut(user_id) {
                Some(loaded) if current.is_some() => {
                    if loaded.seen != current {
                        loaded.index.reload()?;
                        loaded.seen = current;
                    }
                    Some(loaded.index.clone())
                }
                _ => None,
            }
        };
        if let Some(index) = cached {
            return Ok(index);
        }
        let cold = current.is_none();
        let index = Arc::new(BlockIndex::open(&dir)?);
        if cold {
            let (record, repo_dir) = self.open(user_id).await?;
            let files =
                blocking(move || Ok(MemoryRepo::open(&repo_dir, &record.branch)?.markdown_files()?)).await?;
            index.rebuild(files.iter().map(|(p, t)| (p.as_str(), t.as_str())))?;
        }
        self.indexes
            .lock()
            .unwrap()
            .insert(user_id.to_string(), LoadedIndex { index: index.clone(), seen: meta_state(&dir) });
        Ok(index)
    }

    /// Re-indexes every markdown file of the repo's work tree.
    pub async fn rebuild_index(&self, user_id: &str) -> GitMemoryResult<IndexStats> {
        let (record, repo_dir) = self.open(user_id).await?;
        let files =
            blocking(move || Ok(MemoryRepo::open(&repo_dir, &record.branch)?.markdown_files()?)).await?;
        let index = self.index(user_id).await?;
        let stats = index.rebuild(files.iter().map(|(p, t)| (p.as_str(), t.as_str())))?;
        self.note_index_written(user_id);
        Ok(stats)
    }

    /// Records that this process wrote the index, so it is not reloaded for nothing.
    fn note_index_written(&self, user_id: &str) {
        let seen = meta_state(&self.index_dir(user_id));
        if let Some(loaded) = self.indexes.lock().unwrap().get_mut(user_id) {
            loaded.seen = seen;
        }
    }

    fn auth(&self, record: &MemoryRepoRecord) -> GitMemoryResult<RemoteAuth> {
        let token = match &record.sealed_token {
            Some(sealed) => Some(self.sealer.open(sealed).map_err(internal)?),
            None => None,
        };
        Ok(RemoteAuth { token, max_bytes: self.max_repo_bytes })
    }
}

fn directory_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(_) => total += entry.metadata().map(|m| m.len()).unwrap_or(0),
                Err(_) => {}
            }
        }
    }
    total
}
