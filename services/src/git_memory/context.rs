//! The read path of git memory: block search, orchestrated search (queries planned from a
//! conversation) and context at four depths — `basic` (the user file, core blocks of the top
//! entities of `index.md`, the last 30 days of timeline), `wide` (core blocks of the entities
//! the conversation is about), `deep` (their whole files) and `temporal` (deep plus each
//! file's git history).

use std::collections::BTreeMap;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use storage::git_memory::blocks::parse_blocks;
use storage::git_memory::index::Hit;
use storage::git_memory::repo::{FileRevision, MemoryRepo};

use super::{GitMemory, GitMemoryError, GitMemoryResult, blocking, layout, writer};

/// Entities whose core blocks `basic` loads from the top of `index.md`.
const BASIC_ENTITIES: usize = 10;
/// Entities `wide`, `deep` and `temporal` load for a conversation.
const CONVERSATION_ENTITIES: usize = 10;
/// Days of timeline in `basic`.
const TIMELINE_DAYS: i64 = 30;
/// Most days of timeline one request may ask for.
pub const MAX_TIMELINE_DAYS: i64 = 3660;
/// Characters of timeline kept in `basic` (the newest entries win).
const TIMELINE_BUDGET: usize = 6000;
/// Commits of history per file in `temporal`.
const HISTORY_PER_FILE: usize = 20;
/// Longest conversation accepted, in characters over all turns.
pub const MAX_CONVERSATION: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Depth {
    Basic,
    Wide,
    Deep,
    Temporal,
}

/// One message of a conversation as DiffMem's clients send it (`role`, `content`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntityContext {
    pub path: String,
    pub entity: String,
    /// The core blocks (basic, wide) or the whole file (deep, temporal).
    pub content: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<FileRevision>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AssembledContext {
    pub user_id: String,
    pub depth: Depth,
    /// Everything below as one markdown text, ready for a prompt.
    pub context: String,
    pub user_entity: String,
    pub entities: Vec<EntityContext>,
    pub recent_timeline: Vec<String>,
    /// Roughly four characters a token.
    pub token_estimate: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct OrchestratedResults {
    pub queries: Vec<String>,
    pub results: Vec<Hit>,
}

pub fn check_conversation(conversation: &[ChatTurn]) -> GitMemoryResult<()> {
    if conversation.is_empty() {
        return Err(GitMemoryError::Invalid("conversation: must hold at least one turn".into()));
    }
    if conversation.iter().map(|t| t.content.len()).sum::<usize>() > MAX_CONVERSATION {
        return Err(GitMemoryError::Invalid(format!(
            "conversation: longer than {MAX_CONVERSATION} characters"
        )));
    }
    Ok(())
}

/// The text searches are made of: the user's turns, the latest first (all turns if none).
pub(super) fn conversation_text(conversation: &[ChatTurn]) -> String {
    let user: Vec<&str> =
        conversation.iter().rev().filter(|t| t.role == "user").map(|t| t.content.as_str()).collect();
    if user.is_empty() {
        conversation.iter().map(|t| t.content.as_str()).collect::<Vec<_>>().join("\n")
    } else {
        user.join("\n")
    }
}

/// The query planner used without an LLM: the conversation's latest user turn as one query,
/// each earlier user turn as another, and each known entity named in it as a third kind.
pub fn plan_queries_by_rules(conversation: &[ChatTurn], known: &[writer::IndexEntry]) -> Vec<String> {
    let mut queries: Vec<String> = Vec::new();
    for turn in conversation.iter().rev().filter(|t| t.role == "user").take(3) {
        let text = turn.content.trim();
        if !text.is_empty() && !queries.iter().any(|q| q == text) {
            queries.push(text.chars().take(500).collect());
        }
    }
    let lower = conversation_text(conversation).to_lowercase();
    for entry in known {
        if lower.contains(&entry.name.to_lowercase()) {
            queries.push(format!("{} {}", entry.name, entry.description).chars().take(500).collect());
        }
    }
    if queries.is_empty() {
        queries.push(conversation_text(conversation).chars().take(500).collect());
    }
    queries
}

impl GitMemory {
    pub async fn search(&self, user_id: &str, query: &str, k: usize) -> GitMemoryResult<Vec<Hit>> {
        self.record(user_id).await?;
        let index = self.index(user_id).await?;
        let query = query.to_string();
        blocking(move || Ok(index.search(&query, k)?)).await
    }

    /// Runs each planned query and merges the hits: a block found by several queries counts
    /// once with its best score.
    pub async fn orchestrated_search(
        &self,
        user_id: &str,
        queries: Vec<String>,
        k: usize,
    ) -> GitMemoryResult<OrchestratedResults> {
        let index = self.index(user_id).await?;
        let planned = queries.clone();
        let results = blocking(move || {
            let mut best: BTreeMap<(String, u64), Hit> = BTreeMap::new();
            for query in &planned {
                for hit in index.search(query, k)? {
                    let key = (hit.file.clone(), hit.ordinal);
                    match best.get(&key) {
                        Some(existing) if existing.score >= hit.score => {}
                        _ => {
                            best.insert(key, hit);
                        }
                    }
                }
            }
            let mut hits: Vec<Hit> = best.into_values().collect();
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
            hits.truncate(k);
            Ok(hits)
        })
        .await?;
        Ok(OrchestratedResults { queries, results })
    }

    /// The user's own entity file (`<user_id>.md`).
    pub async fn user_entity(&self, user_id: &str) -> GitMemoryResult<String> {
        let (record, dir) = self.open(user_id).await?;
        let file = layout::user_file(user_id);
        blocking(move || Ok(MemoryRepo::open(&dir, &record.branch)?.read_file(&file)?.unwrap_or_default()))
            .await
    }

    /// Timeline entries of the last `days` (1 to `MAX_TIMELINE_DAYS`), newest first.
    pub async fn recent_timeline(&self, user_id: &str, days: i64) -> GitMemoryResult<Vec<String>> {
        if !(1..=MAX_TIMELINE_DAYS).contains(&days) {
            return Err(GitMemoryError::Invalid(format!("days_back: must be from 1 to {MAX_TIMELINE_DAYS}")));
        }
        let (record, dir) = self.open(user_id).await?;
        let today = Utc::now().date_naive();
        blocking(move || recent_timeline(&MemoryRepo::open(&dir, &record.branch)?, today, days)).await
    }

    /// The entities of `index.md` for a planner or writer.
    pub async fn known_entities(&self, user_id: &str) -> GitMemoryResult<Vec<writer::IndexEntry>> {
        let (record, dir) = self.open(user_id).await?;
        let text =
            blocking(move || Ok(MemoryRepo::open(&dir, &record.branch)?.read_file(layout::INDEX_FILE)?))
                .await?;
        Ok(writer::parse_index(&text.unwrap_or_default()))
    }

    /// Entity files the conversation is about, best first: files of the blocks a search
    /// with the conversation finds, then entities of `index.md` whose description is
    /// similar in meaning (the embedding model, when installed).
    async fn conversation_entities(
        &self,
        user_id: &str,
        conversation: &[ChatTurn],
    ) -> GitMemoryResult<Vec<String>> {
        let similar = self.similar_entities(user_id, conversation).await?;
        let user_file = layout::user_file(user_id);
        let mut files: Vec<String> = Vec::new();
        for hit in self.search(user_id, &conversation_text(conversation), 50).await? {
            if hit.file != user_file
                && !hit.file.starts_with("timeline/")
                && hit.file != layout::INDEX_FILE
                && !files.contains(&hit.file)
            {
                files.push(hit.file);
            }
        }
        for path in similar {
            if !files.contains(&path) {
                files.push(path);
            }
        }
        files.truncate(CONVERSATION_ENTITIES);
        Ok(files)
    }

    /// Context for a conversation at `depth`.
    pub async fn context(
        &self,
        user_id: &str,
        conversation: &[ChatTurn],
        depth: Depth,
    ) -> GitMemoryResult<AssembledContext> {
        check_conversation(conversation)?;
        let (record, dir) = self.open(user_id).await?;
        let index = self.index(user_id).await?;
        let user_file = layout::user_file(user_id);
        let files = match depth {
            Depth::Basic => {
                let known = self.known_entities(user_id).await?;
                known.into_iter().take(BASIC_ENTITIES).map(|e| e.path).collect()
            }
            _ => self.conversation_entities(user_id, conversation).await?,
        };
        let today = Utc::now().date_naive();
        let user = user_id.to_string();
        blocking(move || {
            let repo = MemoryRepo::open(&dir, &record.branch)?;
            let user_entity = repo.read_file(&user_file)?.unwrap_or_default();
            let mut entities = Vec::new();
            for path in files {
                // `index.md` is the user's text (or a remote's): a path in it that is not a
                // plain file of the repo is passed over, not followed.
                if storage::git_memory::repo::checked_path(&path).is_err() {
                    continue;
                }
                let whole = matches!(depth, Depth::Deep | Depth::Temporal);
                let content = if whole {
                    match repo.read_file(&path) {
                        Ok(Some(text)) => text,
                        Ok(None) | Err(storage::git_memory::repo::RepoError::InvalidPath(_)) => continue,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    let blocks = index.always_load_blocks(&path)?;
                    if blocks.is_empty() {
                        continue;
                    }
                    blocks.into_iter().map(|b| b.text).collect::<Vec<_>>().join("\n\n")
                };
                let history =
                    (depth == Depth::Temporal).then(|| repo.history(&path, HISTORY_PER_FILE)).transpose()?;
                entities.push(EntityContext {
                    entity: storage::git_memory::index::entity_of(&path).to_string(),
                    path,
                    content,
                    history,
                });
            }
            let recent_timeline = if depth == Depth::Basic {
                recent_timeline(&repo, today, TIMELINE_DAYS)?
            } else {
                Vec::new()
            };
            let context = render(&user_entity, &entities, &recent_timeline);
            Ok(AssembledContext {
                user_id: user,
                depth,
                token_estimate: context.len().div_ceil(4),
                context,
                user_entity,
                entities,
                recent_timeline,
            })
        })
        .await
    }
}

/// Timeline entries of the last `days`, newest first, within `TIMELINE_BUDGET`.
fn recent_timeline(repo: &MemoryRepo, today: NaiveDate, days: i64) -> GitMemoryResult<Vec<String>> {
    let since = today - chrono::Duration::days(days);
    let mut entries: Vec<(String, String)> = Vec::new();
    let mut month = today;
    loop {
        if let Some(text) = repo.read_file(&layout::timeline_file(month))? {
            for block in parse_blocks(&text) {
                let date = block.heading.as_deref().and_then(|h| h.get(..10)).unwrap_or("").to_string();
                if NaiveDate::parse_from_str(&date, "%Y-%m-%d").is_ok_and(|d| d >= since && d <= today) {
                    entries.push((date, block.text));
                }
            }
        }
        if month.format("%Y-%m").to_string() <= since.format("%Y-%m").to_string() {
            break;
        }
        month = month.with_day0(0).unwrap() - chrono::Duration::days(1);
    }
    entries.sort_by(|a, b| b.0.cmp(&a.0));
    let mut kept = Vec::new();
    let mut used = 0;
    for (_, text) in entries {
        if used + text.len() > TIMELINE_BUDGET {
            break;
        }
        used += text.len();
        kept.push(text);
    }
    Ok(kept)
}

use chrono::Datelike;

fn render(user_entity: &str, entities: &[EntityContext], timeline: &[String]) -> String {
    let mut out = String::new();
    out.push_str("## User\n\n");
    out.push_str(user_entity.trim());
    for entity in entities {
        out.push_str(&format!("\n\n## {} ({})\n\n{}", entity.entity, entity.path, entity.content.trim()));
        if let Some(history) = &entity.history {
            out.push_str("\n\nHistory:");
            for revision in history {
                out.push_str(&format!(
                    "\n- {} {} (+{} -{}) {}",
                    revision.date.format("%Y-%m-%d"),
                    &revision.commit[..8.min(revision.commit.len())],
                    revision.lines_added,
                    revision.lines_removed,
                    revision.message
                ));
            }
        }
    }
    if !timeline.is_empty() {
        out.push_str("\n\n## Recent timeline\n");
        for entry in timeline {
            out.push('\n');
            out.push_str(entry.trim());
            out.push('\n');
        }
    }
    out
}
