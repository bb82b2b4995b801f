//! Fact extraction: the candidate memories a conversation holds, found by the configured LLM
//! ([`llm_facts`]) or, without one, by first-person sentence patterns ([`rule_based_facts`]).
//! [`extract_facts`] picks between them, keeps the confident ones and drops duplicates.
//!
//! A conversation is split into turns on lines starting with `User:`, `Assistant:`, `Human:`
//! or `AI:` (any case); text without such lines is one user turn. `turn_start` and `turn_end`
//! are 0-based indexes into those turns. Contents are third-person statements such as
//! "User prefers dark mode".

mod patterns;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;
use storage::sql::MemoryType;
use storage::sql::memories::normalized_content;

use crate::llm::{ChatMessage, ChatRequest, LlmClient, LlmError};

pub use rules::rule_based_facts;

/// Lowest confidence [`extract_facts`] keeps.
pub const MIN_CONFIDENCE: f64 = 0.5;
/// Longest content a fact may have, in characters.
pub const MAX_CONTENT_CHARS: usize = 10_000;
/// Most tags one fact keeps.
pub const MAX_TAGS: usize = 5;
/// Longest transcript sent to the LLM, in characters; later turns are left out (and logged).
const MAX_TRANSCRIPT_CHARS: usize = 60_000;

/// One memory a conversation suggests, before it is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateFact {
    pub content: String,
    pub memory_type: MemoryType,
    /// 0 to 1.
    pub confidence: f64,
    /// Lowercase keywords, at most [`MAX_TAGS`].
    pub tags: Vec<String>,
    /// The first and last turn (0-based) the fact comes from.
    pub turn_start: usize,
    pub turn_end: usize,
}

/// Who speaks a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaker {
    User,
    Assistant,
    /// Text before the first `User:`/`Assistant:` line of a conversation that has them.
    Other,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptTurn {
    pub speaker: Speaker,
    pub text: String,
}

/// The turns of `conversation_text`: a new turn starts at each line beginning with `User:`,
/// `Human:`, `Assistant:` or `AI:` (any case); other lines continue the current turn. Text
/// with no such line is one user turn; blank turns are dropped.
pub fn split_turns(conversation_text: &str) -> Vec<TranscriptTurn> {
    let mut turns: Vec<TranscriptTurn> = Vec::new();
    let mut current = TranscriptTurn { speaker: Speaker::Other, text: String::new() };
    for line in conversation_text.lines() {
        match speaker_line(line) {
            Some((speaker, rest)) => {
                push_turn(
                    &mut turns,
                    std::mem::replace(&mut current, TranscriptTurn { speaker, text: rest.to_string() }),
                );
            }
            None => {
                if !current.text.is_empty() {
                    current.text.push('\n');
                }
                current.text.push_str(line);
            }
        }
    }
    push_turn(&mut turns, current);
    if let [only] = turns.as_mut_slice()
        && only.speaker == Speaker::Other
    {
        only.speaker = Speaker::User;
    }
    turns
}

fn push_turn(turns: &mut Vec<TranscriptTurn>, mut turn: TranscriptTurn) {
    turn.text = turn.text.trim().to_string();
    if !turn.text.is_empty() {
        turns.push(turn);
    }
}

/// The speaker and the rest of a line that starts a turn.
fn speaker_line(line: &str) -> Option<(Speaker, &str)> {
    let trimmed = line.trim_start();
    let (label, rest) = trimmed.split_once(':')?;
    let speaker = match label.trim().to_ascii_lowercase().as_str() {
        "user" | "human" => Speaker::User,
        "assistant" | "ai" => Speaker::Assistant,
        _ => return None,
    };
    Some((speaker, rest.trim()))
}

const SYSTEM_PROMPT: &str = "You extract long-term memories about the user from a conversation between the \
user and an AI assistant. Keep only what will still be true and useful in later conversations: the user's \
preferences, facts about the user, tasks the user means to do and projects the user works on. Skip greetings, \
questions, one-off requests and anything the assistant said that the user did not confirm. Answer only JSON: \
{\"facts\": [{\"content\": a standalone statement in the third person starting with \"User\" (like \"User \
prefers dark mode\"), \"type\": \"preference\"|\"fact\"|\"task\"|\"project\"|\"meta\", \"confidence\": 0 to 1, \
how sure and how lasting it is, \"tags\": up to 5 lowercase keywords, \"turn_start\": the number of the first \
turn it comes from, \"turn_end\": the number of the last}]}. Turns are numbered from 0 in square brackets. \
Answer {\"facts\": []} when there is nothing worth remembering.";

#[derive(Deserialize)]
struct Reply {
    facts: Vec<Value>,
}

/// One fact as the model wrote it; anything that does not fit drops the fact, not the reply.
#[derive(Deserialize)]
struct WireFact {
    content: String,
    #[serde(rename = "type")]
    memory_type: String,
    confidence: Option<f64>,
    #[serde(default)]
    tags: Vec<Value>,
    turn_start: Option<usize>,
    turn_end: Option<usize>,
}

/// Confidence of a model's fact that does not say.
const DEFAULT_LLM_CONFIDENCE: f64 = 0.7;

/// The facts the LLM finds in the conversation. Items that do not validate (unknown type,
/// empty or over-long content, turns out of range) are dropped; confidences are clamped to
/// 0..=1. Fails only when the model cannot be reached or answers no usable JSON.
pub async fn llm_facts(llm: &LlmClient, conversation_text: &str) -> Result<Vec<CandidateFact>, LlmError> {
    let turns = split_turns(conversation_text);
    if turns.is_empty() {
        return Ok(Vec::new());
    }
    let transcript = transcript(&turns);
    let request = ChatRequest::new([
        ChatMessage::system(SYSTEM_PROMPT),
        ChatMessage::user(format!("Conversation:\n{transcript}")),
    ])
    .with_temperature(0.0)
    .with_json(true);
    let reply: Reply = llm.chat_json(request).await?;
    let offered = reply.facts.len();
    let facts: Vec<CandidateFact> =
        reply.facts.into_iter().filter_map(|item| validate(item, turns.len())).collect();
    if facts.len() < offered {
        tracing::debug!(offered, kept = facts.len(), "dropped LLM facts that did not validate");
    }
    Ok(facts)
}

/// The numbered turns, as many whole ones as fit in [`MAX_TRANSCRIPT_CHARS`] (at least one).
fn transcript(turns: &[TranscriptTurn]) -> String {
    let mut out = String::new();
    for (index, turn) in turns.iter().enumerate() {
        let label = match turn.speaker {
            Speaker::User => "User",
            Speaker::Assistant => "Assistant",
            Speaker::Other => "Context",
        };
        let line = format!("[{index}] {label}: {}\n", turn.text);
        if index > 0 && out.len() + line.len() > MAX_TRANSCRIPT_CHARS {
            tracing::warn!(
                turns = turns.len(),
                sent = index,
                "conversation too long; later turns not sent to the LLM"
            );
            break;
        }
        out.push_str(&line);
    }
    out
}

fn validate(item: Value, turn_count: usize) -> Option<CandidateFact> {
    let fact: WireFact = serde_json::from_value(item).ok()?;
    let memory_type = MemoryType::parse(fact.memory_type.trim().to_ascii_lowercase().as_str())?;
    let content = fact.content.trim();
    if content.is_empty() || content.chars().count() > MAX_CONTENT_CHARS {
        return None;
    }
    let confidence = fact.confidence.unwrap_or(DEFAULT_LLM_CONFIDENCE);
    if !confidence.is_finite() {
        return None;
    }
    let last = turn_count.checked_sub(1)?;
    let turn_start = fact.turn_start.unwrap_or(0);
    let turn_end = fact.turn_end.unwrap_or(last.max(turn_start));
    if turn_start > turn_end || turn_end > last {
        return None;
    }
    let tags = clean_tags(fact.tags.iter().filter_map(Value::as_str));
    Some(CandidateFact {
        content: content.to_string(),
        memory_type,
        confidence: confidence.clamp(0.0, 1.0),
        tags,
        turn_start,
        turn_end,
    })
}

/// Lowercased, trimmed, non-empty, unique tags, at most [`MAX_TAGS`].
pub(crate) fn clean_tags<'a>(tags: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tag in tags {
        let tag = tag.trim().to_lowercase();
        if !tag.is_empty() && tag.chars().count() <= 100 && !out.contains(&tag) {
            out.push(tag);
        }
        if out.len() == MAX_TAGS {
            break;
        }
    }
    out
}

/// The facts worth storing from a conversation: from the LLM when one is given (its
/// failure is returned, not papered over), else by rules. Keeps confidence >=
/// [`MIN_CONFIDENCE`] and one fact per normalised content (the most confident, where the
/// first of them appeared).
pub async fn extract_facts(
    llm: Option<&LlmClient>,
    conversation_text: &str,
) -> Result<Vec<CandidateFact>, LlmError> {
    let facts = match llm {
        Some(llm) => llm_facts(llm, conversation_text).await?,
        None => rule_based_facts(conversation_text),
    };
    Ok(confident_and_unique(facts))
}

fn confident_and_unique(facts: Vec<CandidateFact>) -> Vec<CandidateFact> {
    let mut kept: Vec<CandidateFact> = Vec::new();
    let mut positions: HashMap<String, usize> = HashMap::new();
    for fact in facts.into_iter().filter(|fact| fact.confidence >= MIN_CONFIDENCE) {
        let key = normalized_content(&fact.content);
        match positions.get(&key) {
            Some(&at) if kept[at].confidence >= fact.confidence => {}
            Some(&at) => kept[at] = fact,
            None => {
                positions.insert(key, kept.len());
                kept.push(fact);
            }
        }
    }
    kept
}
