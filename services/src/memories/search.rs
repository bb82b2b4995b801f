//! Search in three modes: `semantic` (cosine over the vectors), `keyword` (BM25 / full-text)
//! and `hybrid`, which fuses both candidate lists by a weighted sum of the cosine and the
//! keyword rank (divided by the best rank of the search and scaled by the share of the
//! query's terms the memory holds). Rank fusion throws the scores away; an even weighting let
//! one shared word ("code", "car") outrank the memory that answers. On our evaluation set
//! (`api/tests/api/memories_search_eval.rs`, 34 queries) MRR was 0.926 at a semantic weight of
//! 0.5, 0.941 at 0.7, 0.971 at 0.9 and 0.95, and 0.956 at 1.0 (semantic alone).

use std::collections::HashMap;

use serde::Serialize;
use storage::sql::memories::keyword_terms;
use storage::sql::{Memory, MemoryFilter, ScoredMemory};

use super::{Memories, MemoriesError};

/// The semantic share of a hybrid score; the keyword share is the rest.
pub const SEMANTIC_WEIGHT: f64 = 0.9;

/// Candidates each mode contributes to a hybrid ranking, per result asked for.
const CANDIDATES_PER_RESULT: i64 = 4;
const MIN_CANDIDATES: i64 = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Semantic,
    Keyword,
    #[default]
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Semantic => "semantic",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    pub query: Option<String>,
    /// A query vector the client computed (checked with `Memories::check_vector`).
    pub embedding: Option<Vec<f32>>,
    pub mode: SearchMode,
    pub filter: MemoryFilter,
    pub limit: i64,
}

/// How a hit scored: each part that took part, and the score it was ranked by.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ScoreParts {
    /// Cosine similarity to the query vector.
    pub semantic: Option<f64>,
    /// The keyword rank (BM25 or `ts_rank`), divided by the best keyword rank of the search.
    pub keyword: Option<f64>,
    /// What the hits are ordered by.
    pub score: f64,
}

#[derive(Debug, Clone)]
pub struct SearchHit {
    pub memory: Memory,
    pub scores: ScoreParts,
}

impl Memories {
    /// Searches `owner`'s live memories; counts one access of each hit.
    pub async fn search(&self, owner: &str, request: SearchRequest) -> Result<Vec<SearchHit>, MemoriesError> {
        let text = request.query.as_deref().map(str::trim).filter(|q| !q.is_empty());
        let wants_semantic = request.mode != SearchMode::Keyword;
        let wants_keyword = request.mode != SearchMode::Semantic && text.is_some();
        let vector: Option<Vec<f32>> = match (&request.embedding, text) {
            _ if !wants_semantic => None,
            (Some(vector), _) => Some(vector.clone()),
            (None, Some(text)) if request.mode == SearchMode::Semantic || self.embedder().is_some() => {
                Some(self.embed_query(text).await?.to_vec())
            }
            _ => None,
        };
        let pool = if request.mode == SearchMode::Hybrid {
            (request.limit * CANDIDATES_PER_RESULT).max(MIN_CANDIDATES)
        } else {
            request.limit
        };
        let semantic = match &vector {
            Some(vector) => self.store.semantic(owner, vector, &request.filter, pool).await?,
            None => Vec::new(),
        };
        let keyword = match text.filter(|_| wants_keyword) {
            Some(text) => {
                let terms = keyword_terms(text);
                let mut hits = self.store.keyword(owner, &terms, &request.filter, pool).await?;
                // A memory holding one word of a long question is a weak keyword match,
                // whatever its rank: scale each by the share of the query's terms it holds.
                for hit in &mut hits {
                    hit.score *= coverage(&terms, &hit.memory.content);
                }
                hits
            }
            None => Vec::new(),
        };
        let mut hits = fuse(semantic, keyword, vector.is_some(), pool);
        hits.truncate(usize::try_from(request.limit).unwrap_or(0));
        let ids: Vec<String> = hits.iter().map(|h| h.memory.id.clone()).collect();
        self.store.record_access(owner, &ids).await?;
        for hit in &mut hits {
            hit.memory.access_count += 1;
        }
        Ok(hits)
    }
}

/// The share of `terms` that `content` holds, a term counting when a word of the content
/// shares its stem (its first letters, enough to match "usual" and "usually").
fn coverage(terms: &[String], content: &str) -> f64 {
    if terms.is_empty() {
        return 0.0;
    }
    let words = keyword_terms_all(content);
    let held = terms
        .iter()
        .filter(|term| {
            let stem: String = term.chars().take(term.chars().count().saturating_sub(2).max(4)).collect();
            words.iter().any(|word| word.starts_with(&stem) || term.starts_with(word.as_str()))
        })
        .count();
    held as f64 / terms.len() as f64
}

/// Every lowercase word of `content` (stop words kept: a query's terms never are one).
fn keyword_terms_all(content: &str) -> Vec<String> {
    content.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// Ranks the union of both candidate lists. A candidate missing from one list gets that
/// list's lowest score when the list was full (it ranked below all of it), else nothing.
fn fuse(
    semantic: Vec<ScoredMemory>,
    keyword: Vec<ScoredMemory>,
    had_vector: bool,
    pool: i64,
) -> Vec<SearchHit> {
    let full = |list: &[ScoredMemory]| list.len() as i64 >= pool;
    let semantic_floor =
        if full(&semantic) { semantic.last().map_or(0.0, |h| h.score.max(0.0)) } else { 0.0 };
    let best_keyword = keyword.iter().map(|h| h.score).fold(0.0f64, f64::max);
    let keyword_norm = |score: f64| if best_keyword > 0.0 { score / best_keyword } else { 0.0 };
    let keyword_floor =
        if full(&keyword) { keyword.last().map_or(0.0, |h| keyword_norm(h.score)) } else { 0.0 };
    let semantic_only = keyword.is_empty();
    let keyword_only = !had_vector;

    let mut merged: HashMap<String, (Memory, Option<f64>, Option<f64>)> = HashMap::new();
    for hit in semantic {
        merged.insert(hit.memory.id.clone(), (hit.memory, Some(hit.score), None));
    }
    for hit in keyword {
        let normalised = keyword_norm(hit.score);
        merged.entry(hit.memory.id.clone()).or_insert((hit.memory, None, None)).2 = Some(normalised);
    }
    let mut hits: Vec<SearchHit> = merged
        .into_values()
        .map(|(memory, semantic, keyword)| {
            let score = if semantic_only {
                semantic.unwrap_or(0.0)
            } else if keyword_only {
                keyword.unwrap_or(0.0)
            } else {
                SEMANTIC_WEIGHT * semantic.unwrap_or(semantic_floor).max(0.0)
                    + (1.0 - SEMANTIC_WEIGHT) * keyword.unwrap_or(keyword_floor)
            };
            SearchHit { memory, scores: ScoreParts { semantic, keyword, score } }
        })
        .collect();
    hits.sort_by(|a, b| {
        b.scores.score.total_cmp(&a.scores.score).then_with(|| a.memory.id.cmp(&b.memory.id))
    });
    hits
}
