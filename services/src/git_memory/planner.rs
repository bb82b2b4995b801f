//! The LLM's part in git memory, when one is configured: it writes a session's
//! `Extraction` and plans the queries of an orchestrated search. Without an LLM the rules in
//! `writer` and `context` do both. A failed LLM call fails the session job (it is retried
//! and reported, never answered as a success); a failed plan falls back to the rules.

use serde::Deserialize;

use super::context::{ChatTurn, plan_queries_by_rules};
use super::writer::{self, Extraction, IndexEntry};
use super::{GitMemory, GitMemoryError, GitMemoryResult, layout};
use crate::llm::{ChatMessage, ChatRequest};

/// Most entities one session may touch, and most queries one plan may run.
const MAX_ENTITIES: usize = 30;
const MAX_QUERIES: usize = 5;

const WRITER_PROMPT: &str = "You maintain a personal memory repository of markdown entity files. \
Read the session and answer only JSON: {\"entities\": [{\"name\": str, \"kind\": \"person\"|\"context\"|\"event\", \
\"description\": one line saying who or what it is, \"note\": what this session adds about it, in the user's words \
where possible, \"strength\": \"High\"|\"Medium\"|\"Low\" (how important)}], \"summary\": one or two sentences for the \
timeline}. Reuse the names of known entities when the session speaks of them.";

const PLANNER_PROMPT: &str = "You plan searches over a personal memory repository (BM25 over markdown blocks). \
Given a conversation and the known entities, answer only JSON: {\"queries\": [up to 5 short keyword queries that \
would find what the assistant needs to remember to answer the latest user turn]}.";

#[derive(Deserialize)]
struct Plan {
    queries: Vec<String>,
}

fn known_list(known: &[IndexEntry]) -> String {
    known
        .iter()
        .take(200)
        .map(|e| format!("- {} ({}): {}", e.name, e.kind.as_str(), e.description))
        .collect::<Vec<_>>()
        .join("\n")
}

impl GitMemory {
    /// What a session says: from the LLM when configured, else by rules.
    pub async fn extract(&self, input: &str, known: &[IndexEntry]) -> GitMemoryResult<Extraction> {
        let Some(llm) = &self.llm else { return Ok(writer::extract_by_rules(input, known)) };
        let request = ChatRequest::new([
            ChatMessage::system(WRITER_PROMPT),
            ChatMessage::user(format!("Known entities:\n{}\n\nSession:\n{input}", known_list(known))),
        ])
        .with_temperature(0.0)
        .with_json(true);
        let mut extraction: Extraction = llm
            .chat_json(request)
            .await
            .map_err(|e| GitMemoryError::Remote(format!("the LLM failed: {e}")))?;
        extraction.entities.retain(|e| layout::slug(&e.name).is_some() && !e.note.trim().is_empty());
        extraction.entities.truncate(MAX_ENTITIES);
        Ok(extraction)
    }

    /// The queries of an orchestrated search and who planned them (`llm` or `rules`).
    pub async fn plan_queries(
        &self,
        conversation: &[ChatTurn],
        known: &[IndexEntry],
    ) -> (Vec<String>, &'static str) {
        let Some(llm) = &self.llm else { return (plan_queries_by_rules(conversation, known), "rules") };
        let transcript: String = conversation
            .iter()
            .rev()
            .take(10)
            .rev()
            .map(|t| format!("{}: {}\n", t.role, t.content))
            .collect();
        let request = ChatRequest::new([
            ChatMessage::system(PLANNER_PROMPT),
            ChatMessage::user(format!(
                "Known entities:\n{}\n\nConversation:\n{transcript}",
                known_list(known)
            )),
        ])
        .with_temperature(0.0)
        .with_json(true);
        match llm.chat_json::<Plan>(request).await {
            Ok(plan) => {
                let queries: Vec<String> = plan
                    .queries
                    .into_iter()
                    .map(|q| q.trim().chars().take(500).collect::<String>())
                    .filter(|q| !q.is_empty())
                    .take(MAX_QUERIES)
                    .collect();
                if queries.is_empty() {
                    (plan_queries_by_rules(conversation, known), "rules")
                } else {
                    (queries, "llm")
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the LLM could not plan a search; planning by rules");
                (plan_queries_by_rules(conversation, known), "rules")
            }
        }
    }
}
