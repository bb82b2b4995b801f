//! Ingest: a conversation becomes memories. Candidate facts are extracted (the LLM, or the
//! rule-based extractor offline), each is compared with the owner's nearest memories, and
//! one of three decisions is taken: skip it as a duplicate, update (supersede) the memory it
//! revises, or add it. Every decision is reported.

use serde::Serialize;
use serde_json::json;
use storage::sql::memories::{content_key, keyword_terms};
use storage::sql::{Memory, MemoryFilter, MemoryPatch, MemoryScope, NewMemory};

use super::extract::{CandidateFact, extract_facts};
use super::{Memories, MemoriesError};
use crate::llm::LlmClient;

/// At or above this cosine similarity a candidate says what a stored memory says.
pub const DUPLICATE_SIMILARITY: f64 = 0.92;
/// At or above this (and below the duplicate bar) a candidate about the same subject as a
/// stored memory of the same type revises it.
pub const REVISION_SIMILARITY: f64 = 0.65;
/// Without vectors: the share of search terms two statements must have in common.
const DUPLICATE_TERM_OVERLAP: f64 = 0.9;
const REVISION_TERM_OVERLAP: f64 = 0.4;

/// Where the conversation came from (AIBrain's `context`).
#[derive(Debug, Clone, Default)]
pub struct IngestContext {
    pub url: Option<String>,
    pub platform: Option<String>,
    pub conversation_id: Option<String>,
    pub job_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Updated,
    Skipped,
}

/// What became of one candidate fact.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub action: Action,
    pub content: String,
    #[serde(rename = "type")]
    pub memory_type: &'static str,
    pub confidence: f64,
    /// The memory added or updated, or the one it duplicates.
    pub memory_id: String,
    /// Similarity to the nearest stored memory, when there was one.
    pub similarity: Option<f64>,
    pub reason: String,
    #[serde(skip)]
    pub memory: Option<Memory>,
}

impl Memories {
    /// Extracts facts from `conversation` and stores them for `owner`, deciding per fact.
    pub async fn ingest(
        &self,
        owner: &str,
        conversation: &str,
        context: &IngestContext,
        llm: Option<&LlmClient>,
    ) -> Result<Vec<Decision>, MemoriesError> {
        let facts =
            extract_facts(llm, conversation).await.map_err(|e| MemoriesError::Extraction(e.to_string()))?;
        let vectors = match self.embedder() {
            Some(_) if !facts.is_empty() => {
                Some(self.embed(facts.iter().map(|f| f.content.clone()).collect()).await?)
            }
            _ => None,
        };
        let mut decisions = Vec::with_capacity(facts.len());
        for (index, fact) in facts.into_iter().enumerate() {
            let vector = vectors.as_ref().map(|v| v[index].clone());
            decisions.push(self.decide(owner, fact, vector, context).await?);
        }
        Ok(decisions)
    }

    async fn decide(
        &self,
        owner: &str,
        fact: CandidateFact,
        vector: Option<Vec<f32>>,
        context: &IngestContext,
    ) -> Result<Decision, MemoriesError> {
        let decision = |action, memory: &Memory, similarity: Option<f64>, reason: String| Decision {
            action,
            content: fact.content.clone(),
            memory_type: fact.memory_type.as_str(),
            confidence: fact.confidence,
            memory_id: memory.id.clone(),
            similarity,
            reason,
            memory: Some(memory.clone()),
        };
        let nearest = self.nearest(owner, &fact.content, vector.as_deref()).await?;
        if let Some((memory, similarity)) = &nearest {
            let exact = content_key(&memory.content) == content_key(&fact.content);
            let duplicate_bar = if vector.is_some() { DUPLICATE_SIMILARITY } else { DUPLICATE_TERM_OVERLAP };
            if exact || *similarity >= duplicate_bar {
                return Ok(decision(
                    Action::Skipped,
                    memory,
                    Some(*similarity),
                    "duplicate of a stored memory".into(),
                ));
            }
            let revision_bar = if vector.is_some() { REVISION_SIMILARITY } else { REVISION_TERM_OVERLAP };
            if *similarity >= revision_bar
                && memory.memory_type == fact.memory_type
                && same_subject(&memory.content, &fact.content)
            {
                let patch = MemoryPatch {
                    content: Some(fact.content.clone()),
                    confidence: Some(Some(fact.confidence)),
                    tags: Some(merge_tags(&memory.tags, &fact.tags)),
                    provenance: Some(Some(provenance(&fact, context))),
                    source_conversation_id: context.conversation_id.clone().map(Some),
                    embedding: vector.clone(),
                    ..Default::default()
                };
                if let Some(updated) = self.update(owner, &memory.id, patch).await? {
                    let reason = format!("revises a stored memory (\"{}\")", memory.content);
                    return Ok(decision(Action::Updated, &updated, Some(*similarity), reason));
                }
            }
        }
        let new = NewMemory {
            id: None,
            content: fact.content.clone(),
            memory_type: fact.memory_type,
            scope: MemoryScope::UserGlobal,
            source_url: context.url.clone(),
            source_platform: context.platform.clone(),
            source_timestamp: Some(chrono::Utc::now()),
            source_conversation_id: context.conversation_id.clone(),
            confidence: Some(fact.confidence),
            tags: fact.tags.clone(),
            created_at: None,
            provenance: Some(provenance(&fact, context)),
            embedding: vector,
        };
        let created = self.create(owner, new, false).await?;
        Ok(decision(Action::Added, &created, nearest.map(|(_, s)| s), "new".into()))
    }

    /// The owner's stored memory closest to `content`: by cosine with a vector, else by the
    /// share of search terms in common among the keyword hits.
    async fn nearest(
        &self,
        owner: &str,
        content: &str,
        vector: Option<&[f32]>,
    ) -> Result<Option<(Memory, f64)>, MemoriesError> {
        let filter = MemoryFilter::default();
        if let Some(vector) = vector {
            let hits = self.store.semantic(owner, vector, &filter, 1).await?;
            return Ok(hits.into_iter().next().map(|h| (h.memory, h.score)));
        }
        let terms = keyword_terms(content);
        let hits = self.store.keyword(owner, &terms, &filter, 5).await?;
        Ok(hits
            .into_iter()
            .map(|h| {
                let overlap = term_overlap(&terms, &keyword_terms(&h.memory.content));
                (h.memory, overlap)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1)))
    }
}

/// Shared terms over the terms of the longer statement.
fn term_overlap(a: &[String], b: &[String]) -> f64 {
    let shared = a.iter().filter(|t| b.contains(t)).count();
    let longer = a.len().max(b.len());
    if longer == 0 { 0.0 } else { shared as f64 / longer as f64 }
}

/// Whether two statements are about the same thing: their first search term (the verb or
/// noun that carries the statement, after stop words: "live", "favourite", "prefer", "work")
/// is the same and they are not word for word the same.
fn same_subject(a: &str, b: &str) -> bool {
    let (a, b) = (keyword_terms(a), keyword_terms(b));
    match (a.first(), b.first()) {
        (Some(x), Some(y)) => stem(x) == stem(y) && a != b,
        _ => false,
    }
}

/// A crude stem, enough to match "lives"/"live"/"living" and "prefers"/"preferred".
fn stem(word: &str) -> &str {
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(root) = word.strip_suffix(suffix)
            && root.len() >= 3
        {
            return root.trim_end_matches('e');
        }
    }
    word.trim_end_matches('e')
}

fn merge_tags(old: &[String], new: &[String]) -> Vec<String> {
    let mut tags = old.to_vec();
    for tag in new {
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    tags.truncate(super::MAX_TAGS);
    tags
}

fn provenance(fact: &CandidateFact, context: &IngestContext) -> serde_json::Value {
    json!({
        "source": "ingest",
        "conversationId": context.conversation_id,
        "turnStart": fact.turn_start,
        "turnEnd": fact.turn_end,
        "jobId": context.job_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_on_the_leading_term() {
        assert!(same_subject("I live in Berlin", "I live in Munich"));
        assert!(same_subject("User lives in Berlin", "I'm living in Munich now"));
        assert!(same_subject("My favourite colour is blue", "My favourite colour is green"));
        assert!(!same_subject("I live in Berlin", "I work in Berlin"));
        assert!(!same_subject("I live in Berlin", "i live in berlin"));
    }

    #[test]
    fn overlap_is_shared_over_the_longer() {
        let t = |s: &str| keyword_terms(s);
        assert_eq!(term_overlap(&t("dark mode editor"), &t("dark mode")), 2.0 / 3.0);
        assert_eq!(term_overlap(&[], &[]), 0.0);
    }
}
