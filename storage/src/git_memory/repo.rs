//! A user's memory repository on disk (git2): created empty or cloned over https with a
//! token, files written and staged, one commit per session, a file's change history, and
//! sync with the remote (fetch, fast-forward or merge, push — never a force push). Tokens go
//! to libgit2 through a credentials callback only: they never reach `.git/config`, a remote
//! URL or an error message. Everything here blocks; async callers use `spawn_blocking`.

use std::cell::Cell;
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use git2::{
    Cred, CredentialType, Delta, DiffOptions, FetchOptions, Oid, PushOptions, RemoteCallbacks, Repository,
    Signature, build::RepoBuilder,
};

/// Longest relative path of a memory file.
pub const MAX_FILE_PATH: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error("the remote refused the credentials")]
    Unauthorized,
    #[error("the repository is larger than the {limit_mb} MB limit")]
    TooLarge { limit_mb: u64 },
    #[error("branch {0} does not exist on the remote")]
    NoSuchBranch(String),
    #[error("invalid path {0:?}")]
    InvalidPath(String),
    #[error("the remote could not be reached or refused the operation: {0}")]
    Remote(String),
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("file system: {0}")]
    Io(#[from] std::io::Error),
}

/// A remote's credentials: the token is the password (GitHub accepts any user name).
#[derive(Clone)]
pub struct RemoteAuth {
    pub token: Option<String>,
    /// Most bytes a clone or fetch may transfer.
    pub max_bytes: u64,
}

/// A staged change waiting for a commit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StagedChange {
    pub path: String,
    /// `added`, `modified` or `deleted`.
    pub change: &'static str,
}

/// One commit that changed a file.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileRevision {
    pub commit: String,
    pub date: DateTime<Utc>,
    pub message: String,
    pub lines_added: usize,
    pub lines_removed: usize,
}

/// What a sync did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncOutcome {
    /// Local and remote now hold the same commit; `pulled`/`pushed` say which way it moved.
    InStep { pulled: bool, pushed: bool },
    /// Both sides changed the same lines: nothing was merged or pushed.
    Conflict { paths: Vec<String> },
    /// Staged changes wait for a commit; the remote's new commits were fetched only.
    StagedChangesPending,
}

pub struct MemoryRepo {
    repo: Repository,
    branch: String,
}

fn signature() -> Result<Signature<'static>, git2::Error> {
    Signature::now("Engram", "engram@localhost")
}

/// Callbacks carrying the token (offered once: a refused token is not retried forever) and
/// aborting transfers over the size limit.
fn callbacks<'a>(auth: &'a RemoteAuth, too_large: &'a Cell<bool>) -> RemoteCallbacks<'a> {
    let offered = Cell::new(false);
    let mut callbacks = RemoteCallbacks::new();
    callbacks.credentials(move |_url, _user, allowed| match &auth.token {
        Some(token) if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && !offered.replace(true) => {
            Cred::userpass_plaintext("x-access-token", token)
        }
        _ => Err(git2::Error::from_str("credentials refused")),
    });
    callbacks.transfer_progress(move |progress| {
        let over = progress.received_bytes() as u64 > auth.max_bytes;
        too_large.set(over);
        !over
    });
    callbacks
}

/// Maps a network error to what the caller can act on, with nothing from the URL in it.
fn remote_error(error: git2::Error, too_large: &Cell<bool>, auth: &RemoteAuth) -> RepoError {
    if too_large.get() {
        return RepoError::TooLarge { limit_mb: auth.max_bytes / (1024 * 1024) };
    }
    let message = error.message().to_string();
    if error.class() == git2::ErrorClass::Http && message.contains("401")
        || message.contains("credentials refused")
        || message.contains("authentication")
    {
        return RepoError::Unauthorized;
    }
    let message = match &auth.token {
        Some(token) if !token.is_empty() => message.replace(token.as_str(), "****"),
        _ => message,
    };
    RepoError::Remote(message)
}

/// Checks a path relative to a repo's root: no absolute paths, `..`, `.git`, empty parts or
/// control characters.
pub fn checked_path(path: &str) -> Result<&str, RepoError> {
    let invalid = || RepoError::InvalidPath(path.chars().take(MAX_FILE_PATH).collect());
    if path.is_empty()
        || path.len() > MAX_FILE_PATH
        || path.chars().any(char::is_control)
        || path.contains('\\')
    {
        return Err(invalid());
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) if part != ".git" => {}
            _ => return Err(invalid()),
        }
    }
    if path.ends_with('/') || path.contains("//") {
        return Err(invalid());
    }
    Ok(path)
}

impl MemoryRepo {
    /// Creates a repo at `root` holding `files` in one first commit on `branch`.
    pub fn create(root: &Path, branch: &str, files: &[(String, String)]) -> Result<Self, RepoError> {
        std::fs::create_dir_all(root)?;
        let mut options = git2::RepositoryInitOptions::new();
        options.initial_head(branch);
        let repo = Repository::init_opts(root, &options)?;
        let memory = Self { repo, branch: branch.to_string() };
        for (path, contents) in files {
            memory.write_file(path, contents)?;
        }
        memory.commit_staged("Initialize memory repository")?;
        Ok(memory)
    }

    /// Clones `url`'s `branch` into `root` (which must not exist yet).
    pub fn clone_remote(root: &Path, url: &str, branch: &str, auth: &RemoteAuth) -> Result<Self, RepoError> {
        let too_large = Cell::new(false);
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(callbacks(auth, &too_large));
        let cloned = RepoBuilder::new().branch(branch).fetch_options(fetch).clone(url, root);
        match cloned {
            Ok(repo) => {
                // The URL stays in the record, not in `.git/config`.
                repo.remote_delete("origin")?;
                Ok(Self { repo, branch: branch.to_string() })
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(root);
                if e.code() == git2::ErrorCode::NotFound && e.message().contains(branch) {
                    return Err(RepoError::NoSuchBranch(branch.to_string()));
                }
                Err(remote_error(e, &too_large, auth))
            }
        }
    }

    pub fn open(root: &Path, branch: &str) -> Result<Self, RepoError> {
        Ok(Self { repo: Repository::open(root)?, branch: branch.to_string() })
    }

    pub fn root(&self) -> &Path {
        self.repo.workdir().expect("memory repos have a work tree")
    }

    /// `path` under the work tree, refusing one that leads outside it through a symbolic
    /// link (a cloned repo may hold links to anywhere).
    fn absolute(&self, path: &str) -> Result<PathBuf, RepoError> {
        let absolute = self.root().join(checked_path(path)?);
        let root = self.root().canonicalize()?;
        let mut existing = absolute.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(&root);
        }
        let inside = existing.canonicalize()?.starts_with(&root)
            && !std::fs::symlink_metadata(&absolute).is_ok_and(|m| m.file_type().is_symlink());
        if !inside {
            return Err(RepoError::InvalidPath(path.to_string()));
        }
        Ok(absolute)
    }

    pub fn read_file(&self, path: &str) -> Result<Option<String>, RepoError> {
        match std::fs::read_to_string(self.absolute(path)?) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `contents` to `path` in the work tree and stages it.
    pub fn write_file(&self, path: &str, contents: &str) -> Result<(), RepoError> {
        let absolute = self.absolute(path)?;
        if let Some(dir) = absolute.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let partial = absolute.with_extension("engram-partial");
        std::fs::write(&partial, contents)?;
        std::fs::rename(&partial, &absolute)?;
        let mut index = self.repo.index()?;
        index.add_path(Path::new(path))?;
        index.write()?;
        Ok(())
    }

    /// Every markdown file of the work tree outside `sessions/`, as (path, text), sorted.
    pub fn markdown_files(&self) -> Result<Vec<(String, String)>, RepoError> {
        let mut files = Vec::new();
        let mut pending = vec![self.root().to_path_buf()];
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let name = entry.file_name();
                if name == ".git" || name == "sessions" && dir == self.root() {
                    continue;
                }
                let kind = entry.file_type()?;
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() && entry.path().extension().is_some_and(|e| e == "md") {
                    let relative =
                        entry.path().strip_prefix(self.root()).unwrap().to_string_lossy().into_owned();
                    files.push((relative, std::fs::read_to_string(entry.path())?));
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Changes staged since the last commit.
    pub fn staged_changes(&self) -> Result<Vec<StagedChange>, RepoError> {
        let head_tree = self.repo.head().ok().and_then(|h| h.peel_to_tree().ok());
        let index = self.repo.index()?;
        let diff = self.repo.diff_tree_to_index(head_tree.as_ref(), Some(&index), None)?;
        Ok(diff
            .deltas()
            .filter_map(|delta| {
                let change = match delta.status() {
                    Delta::Added => "added",
                    Delta::Deleted => "deleted",
                    Delta::Modified | Delta::Renamed | Delta::Copied | Delta::Typechange => "modified",
                    _ => return None,
                };
                let path = delta.new_file().path().or(delta.old_file().path())?;
                Some(StagedChange { path: path.to_string_lossy().into_owned(), change })
            })
            .collect())
    }

    /// Commits what is staged; `None` when nothing is.
    pub fn commit_staged(&self, message: &str) -> Result<Option<String>, RepoError> {
        let head = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        if head.is_some() && self.staged_changes()?.is_empty() {
            return Ok(None);
        }
        let mut index = self.repo.index()?;
        let tree = self.repo.find_tree(index.write_tree()?)?;
        let signature = signature()?;
        let parents: Vec<&git2::Commit> = head.iter().collect();
        let reference = format!("refs/heads/{}", self.branch);
        let oid = self.repo.commit(Some(&reference), &signature, &signature, message, &tree, &parents)?;
        Ok(Some(oid.to_string()))
    }

    /// Drops staged changes, bringing the work tree back to the last commit.
    pub fn discard_staged(&self) -> Result<(), RepoError> {
        let head = self.repo.head()?.peel_to_commit()?;
        self.repo.reset(head.as_object(), git2::ResetType::Hard, None)?;
        Ok(())
    }

    /// The last commit: (id, message, time).
    pub fn head(&self) -> Result<(String, String, DateTime<Utc>), RepoError> {
        let commit = self.repo.head()?.peel_to_commit()?;
        let date = DateTime::from_timestamp(commit.time().seconds(), 0).unwrap_or_default();
        Ok((commit.id().to_string(), commit.message().unwrap_or("").trim_end().to_string(), date))
    }

    /// The newest `limit` commits that changed `path`, newest first.
    pub fn history(&self, path: &str, limit: usize) -> Result<Vec<FileRevision>, RepoError> {
        checked_path(path)?;
        let mut walk = self.repo.revwalk()?;
        if walk.push_head().is_err() {
            return Ok(Vec::new());
        }
        let mut revisions = Vec::new();
        for oid in walk {
            if revisions.len() >= limit {
                break;
            }
            let commit = self.repo.find_commit(oid?)?;
            let parent_tree = commit.parent(0).ok().map(|p| p.tree()).transpose()?;
            let mut options = DiffOptions::new();
            options.pathspec(path).disable_pathspec_match(true);
            let diff = self.repo.diff_tree_to_tree(
                parent_tree.as_ref(),
                Some(&commit.tree()?),
                Some(&mut options),
            )?;
            if diff.deltas().len() == 0 {
                continue;
            }
            let stats = diff.stats()?;
            revisions.push(FileRevision {
                commit: commit.id().to_string(),
                date: DateTime::from_timestamp(commit.time().seconds(), 0).unwrap_or_default(),
                message: commit.message().unwrap_or("").trim_end().to_string(),
                lines_added: stats.insertions(),
                lines_removed: stats.deletions(),
            });
        }
        Ok(revisions)
    }

    /// Brings the local branch and the remote's in step: fetch, then fast-forward or merge
    /// (a conflict stops here and changes nothing), then push without force.
    pub fn sync(&self, url: &str, auth: &RemoteAuth) -> Result<SyncOutcome, RepoError> {
        let too_large = Cell::new(false);
        let mut remote = self.repo.remote_anonymous(url)?;
        let tracking = format!("refs/engram/remote/{}", self.branch);
        let mut fetch = FetchOptions::new();
        fetch.remote_callbacks(callbacks(auth, &too_large));
        let refspec = format!("+refs/heads/{}:{tracking}", self.branch);
        remote
            .fetch(&[refspec.as_str()], Some(&mut fetch), None)
            .map_err(|e| remote_error(e, &too_large, auth))?;
        let local = self.repo.head()?.peel_to_commit()?.id();
        let theirs = self.repo.refname_to_id(&tracking).ok();
        let mut pulled = false;
        if let Some(theirs) =
            theirs.filter(|t| *t != local && !self.repo.graph_descendant_of(local, *t).unwrap_or(false))
        {
            if !self.staged_changes()?.is_empty() {
                return Ok(SyncOutcome::StagedChangesPending);
            }
            if self.repo.graph_descendant_of(theirs, local)? {
                self.move_to(theirs)?;
            } else if let Some(paths) = self.merge(local, theirs)? {
                return Ok(SyncOutcome::Conflict { paths });
            }
            pulled = true;
        }
        let now = self.repo.head()?.peel_to_commit()?.id();
        let pushed = theirs != Some(now);
        if pushed {
            self.push(&mut remote, auth)?;
        }
        Ok(SyncOutcome::InStep { pulled, pushed })
    }

    /// Points the branch at `target` and checks it out.
    fn move_to(&self, target: Oid) -> Result<(), RepoError> {
        let commit = self.repo.find_commit(target)?;
        self.repo.checkout_tree(commit.as_object(), Some(git2::build::CheckoutBuilder::new().force()))?;
        self.repo.reference(&format!("refs/heads/{}", self.branch), target, true, "sync: fast-forward")?;
        self.repo.set_head(&format!("refs/heads/{}", self.branch))?;
        Ok(())
    }

    /// Merges `theirs` into `ours` in memory; on a clean merge commits and checks it out,
    /// else returns the conflicting paths and leaves everything as it was.
    fn merge(&self, ours: Oid, theirs: Oid) -> Result<Option<Vec<String>>, RepoError> {
        let (ours_commit, theirs_commit) = (self.repo.find_commit(ours)?, self.repo.find_commit(theirs)?);
        let mut merged = self.repo.merge_commits(&ours_commit, &theirs_commit, None)?;
        if merged.has_conflicts() {
            let mut paths: Vec<String> = merged
                .conflicts()?
                .filter_map(|c| c.ok())
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
                .collect();
            paths.sort();
            paths.dedup();
            return Ok(Some(paths));
        }
        let tree = self.repo.find_tree(merged.write_tree_to(&self.repo)?)?;
        let signature = signature()?;
        let message = "Merge remote changes";
        let oid = self.repo.commit(
            None,
            &signature,
            &signature,
            message,
            &tree,
            &[&ours_commit, &theirs_commit],
        )?;
        self.move_to(oid)?;
        Ok(None)
    }

    fn push(&self, remote: &mut git2::Remote<'_>, auth: &RemoteAuth) -> Result<(), RepoError> {
        let too_large = Cell::new(false);
        let rejected = std::cell::RefCell::new(None);
        {
            let mut callbacks = callbacks(auth, &too_large);
            callbacks.push_update_reference(|reference, status| {
                if let Some(status) = status {
                    *rejected.borrow_mut() = Some(format!("{reference}: {status}"));
                }
                Ok(())
            });
            let mut options = PushOptions::new();
            options.remote_callbacks(callbacks);
            let refspec = format!("refs/heads/{0}:refs/heads/{0}", self.branch);
            remote
                .push(&[refspec.as_str()], Some(&mut options))
                .map_err(|e| remote_error(e, &too_large, auth))?;
        }
        match rejected.into_inner() {
            Some(why) => Err(RepoError::Remote(format!("push rejected: {why}"))),
            None => Ok(()),
        }
    }
}
