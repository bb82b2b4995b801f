//! Judging a run: each probe's expected answer beside what the agent answered before its
//! context was compacted (the baseline) and after. The LLM judge asks a model for a score per
//! rubric dimension with a rationale; offline, the deterministic judge matches each answer
//! against the probe's key facts. A judge that cannot give a score leaves the run unscored
//! with the reason: never a default number.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::Dimension;
use super::scenario::Probe;
use crate::llm::{ChatMessage, ChatRequest, LlmClient};

/// A run of answer words names a key fact without digits when it is at most one edit
/// (Levenshtein) per this many characters away; a fact with digits must appear exactly.
const CHARS_PER_EDIT: usize = 5;
/// A right answer that also names a stale fact hedges between old and new: it counts half.
const HEDGED: f64 = 0.5;
/// Calls to the LLM judge before the run is left unscored (each may ask once for a repair).
const LLM_ATTEMPTS: u32 = 3;
/// The longest answer quoted to the LLM judge, in characters.
const MAX_ANSWER_CHARS: usize = 4_000;

/// What the agent answered to one probe, before and after compaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeAnswers {
    pub probe_id: String,
    pub pre: String,
    pub post: String,
}

/// How well each answer to one probe matches its key facts (0 to 1), by the deterministic rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeScore {
    pub probe_id: String,
    pub dimension: Dimension,
    pub pre: f64,
    pub post: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeType {
    Llm,
    Deterministic,
}

impl JudgeType {
    pub fn as_str(self) -> &'static str {
        match self {
            JudgeType::Llm => "llm",
            JudgeType::Deterministic => "deterministic",
        }
    }
}

/// A judge's scores for a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// One score (0 to 1) per dimension of the rubric.
    pub scores: BTreeMap<Dimension, f64>,
    pub rationale: String,
    pub judge_type: JudgeType,
    pub judge_model: Option<String>,
    /// Each probe's answers matched against its key facts (whichever judge scored the run).
    pub probes: Vec<ProbeScore>,
}

/// What a judge made of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Judgement {
    Scored(Verdict),
    /// No score could be given (the judge failed, or an answer is missing); `reason` says why.
    Unscored {
        reason: String,
    },
}

/// Lowercase words of letters and digits.
fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn near(text: &str, wanted: &str) -> bool {
    let longest = text.chars().count().max(wanted.chars().count());
    strsim::levenshtein(text, wanted) * CHARS_PER_EDIT <= longest
}

/// Whether `answer` names `fact`: its words in a row, or (for a fact without digits) a run of
/// as many words close enough to it.
fn names(answer: &[String], fact: &str) -> bool {
    let fact = words(fact);
    if fact.is_empty() || answer.len() < fact.len() {
        return false;
    }
    let fuzzy = !fact.iter().any(|w| w.chars().any(|c| c.is_ascii_digit()));
    let wanted = fact.join(" ");
    answer
        .windows(fact.len())
        .any(|window| window == fact.as_slice() || (fuzzy && near(&window.join(" "), &wanted)))
}

/// How well `answer` answers `probe`, from 0 to 1: the share of its key facts named, halved
/// when the answer also names a stale fact; 1 for the expected answer itself.
pub fn answer_score(probe: &Probe, answer: &str) -> f64 {
    let answer = words(answer);
    if answer.is_empty() {
        return 0.0;
    }
    if answer == words(&probe.expected) {
        return 1.0;
    }
    let keys = probe.keys();
    let named = keys.iter().filter(|key| names(&answer, key)).count();
    let score = named as f64 / keys.len() as f64;
    if score > 0.0 && probe.stale.iter().any(|stale| names(&answer, stale)) { score * HEDGED } else { score }
}

/// Pairs each probe with its answers; the error names the first probe without answers.
fn paired<'a>(
    probes: &'a [Probe],
    answers: &'a [ProbeAnswers],
) -> Result<Vec<(&'a Probe, &'a ProbeAnswers)>, String> {
    probes
        .iter()
        .map(|probe| {
            answers
                .iter()
                .find(|a| a.probe_id == probe.id)
                .map(|a| (probe, a))
                .ok_or_else(|| format!("probe {} has no answers", probe.id))
        })
        .collect()
}

/// Scores each probe's answers by [`answer_score`].
pub fn probe_scores(probes: &[Probe], answers: &[ProbeAnswers]) -> Result<Vec<ProbeScore>, String> {
    Ok(paired(probes, answers)?
        .into_iter()
        .map(|(probe, answers)| ProbeScore {
            probe_id: probe.id.clone(),
            dimension: probe.dimension,
            pre: answer_score(probe, &answers.pre),
            post: answer_score(probe, &answers.post),
        })
        .collect())
}

/// The rubric dimensions no probe tests; a run can be scored only when this is empty.
pub fn untested(rubric: &[Dimension], probes: &[Probe]) -> Vec<Dimension> {
    rubric.iter().copied().filter(|d| !probes.iter().any(|p| p.dimension == *d)).collect()
}

/// The offline judge: a dimension's score is the mean match of its probes' answers after
/// compaction; the rationale gives each probe's match before and after, and each dimension's
/// retention (after relative to before).
pub fn judge_deterministically(
    rubric: &[Dimension],
    probes: &[Probe],
    answers: &[ProbeAnswers],
) -> Judgement {
    let scored = match probe_scores(probes, answers) {
        Ok(scored) => scored,
        Err(reason) => return Judgement::Unscored { reason },
    };
    let missing = untested(rubric, probes);
    if !missing.is_empty() {
        return Judgement::Unscored { reason: format!("no probe tests {}", codes(&missing)) };
    }
    let mut scores = BTreeMap::new();
    let mut rationale = String::new();
    for &dimension in rubric {
        let of: Vec<&ProbeScore> = scored.iter().filter(|p| p.dimension == dimension).collect();
        let pre: f64 = of.iter().map(|p| p.pre).sum();
        let post: f64 = of.iter().map(|p| p.post).sum();
        scores.insert(dimension, post / of.len() as f64);
        let retention =
            if pre > 0.0 { format!("{:.0} %", (post / pre).min(1.0) * 100.0) } else { "n/a".into() };
        let _ = writeln!(rationale, "{dimension}: retention {retention} over {} probe(s)", of.len());
        for probe in of {
            let _ =
                writeln!(rationale, "  {}: before {:.2}, after {:.2}", probe.probe_id, probe.pre, probe.post);
        }
    }
    Judgement::Scored(Verdict {
        scores,
        rationale: rationale.trim_end().to_string(),
        judge_type: JudgeType::Deterministic,
        judge_model: None,
        probes: scored,
    })
}

fn codes(dimensions: &[Dimension]) -> String {
    dimensions.iter().map(|d| d.code()).collect::<Vec<_>>().join(", ")
}

/// The judge's reply, before its scores are checked against the rubric.
#[derive(Debug, Deserialize)]
struct LlmReply {
    scores: BTreeMap<String, f64>,
    rationale: String,
}

/// The judge's scores when the reply gives every rubric dimension a number from 0 to 1.
fn checked_scores(rubric: &[Dimension], reply: &LlmReply) -> Result<BTreeMap<Dimension, f64>, String> {
    rubric
        .iter()
        .map(|&dimension| match reply.scores.get(dimension.code()) {
            Some(&score) if (0.0..=1.0).contains(&score) => Ok((dimension, score)),
            Some(score) => Err(format!("the judge scored {dimension} {score}, outside 0 to 1")),
            None => Err(format!("the judge gave no score for {dimension}")),
        })
        .collect()
}

fn clipped(answer: &str) -> String {
    if answer.chars().count() <= MAX_ANSWER_CHARS {
        answer.to_string()
    } else {
        format!("{}… (cut)", answer.chars().take(MAX_ANSWER_CHARS).collect::<String>())
    }
}

/// The judge's instructions: the rubric, then each question with its expected answer and the
/// two answers, then the scale and the JSON wanted.
fn llm_prompt(rubric: &[Dimension], pairs: &[(&Probe, &ProbeAnswers)]) -> String {
    let mut prompt = String::from(
        "# AI Agent Memory-Break Evaluation\nYou are evaluating an AI agent's performance before and \
         after a memory compression event: it answered the same questions before its context was \
         compacted and after.\n\n## Rubric Dimensions:\n",
    );
    for dimension in rubric {
        let _ = writeln!(prompt, "- **{dimension}**: {}", dimension.description());
    }
    prompt.push_str("\n## Questions and Answers:\n");
    for (i, (probe, answers)) in pairs.iter().enumerate() {
        let _ = write!(
            prompt,
            "### Question {} ({}): {}\n**Expected answer**: {}\n**Pre-compression answer**: {}\n\
             **Post-compression answer**: {}\n\n",
            i + 1,
            probe.dimension,
            probe.question,
            probe.expected,
            clipped(&answers.pre),
            clipped(&answers.post),
        );
    }
    let example: Vec<String> = rubric.iter().map(|d| format!("\"{d}\": 0.0")).collect();
    let _ = write!(
        prompt,
        "## Instructions:\nScore each dimension by the questions tagged with it: how well the \
         post-compression answers keep what the expected answers hold, compared with the \
         pre-compression answers. Give a number between 0.0 and 1.0 for each dimension: 0.0 = \
         complete failure, 0.3 = poor, 0.5 = moderate, 0.7 = good, 1.0 = excellent, maintains \
         quality.\nReply with JSON only: {{\"scores\": {{{}}}, \"rationale\": \"why, per dimension\"}}",
        example.join(", ")
    );
    prompt
}

/// The LLM judge: any OpenAI-compatible endpoint (the client's model is the judge model).
pub struct LlmJudge {
    client: LlmClient,
}

impl LlmJudge {
    pub fn new(client: LlmClient) -> Self {
        Self { client }
    }

    pub fn model(&self) -> &str {
        self.client.model()
    }

    /// Asks the judge up to three times for a score per rubric dimension; unscored, with the
    /// last failure, if no reply gives every dimension a number from 0 to 1.
    pub async fn judge(&self, rubric: &[Dimension], probes: &[Probe], answers: &[ProbeAnswers]) -> Judgement {
        let pairs = match paired(probes, answers) {
            Ok(pairs) => pairs,
            Err(reason) => return Judgement::Unscored { reason },
        };
        let missing = untested(rubric, probes);
        if !missing.is_empty() {
            return Judgement::Unscored { reason: format!("no probe tests {}", codes(&missing)) };
        }
        let matched = match probe_scores(probes, answers) {
            Ok(matched) => matched,
            Err(reason) => return Judgement::Unscored { reason },
        };
        let request = ChatRequest::new([
            ChatMessage::system("You are a strict, fair evaluator of AI agents. You reply with JSON only."),
            ChatMessage::user(llm_prompt(rubric, &pairs)),
        ])
        .with_temperature(0.1)
        .with_max_tokens(2_000);
        let mut failure = String::new();
        for attempt in 1..=LLM_ATTEMPTS {
            let outcome = match self.client.chat_json::<LlmReply>(request.clone()).await {
                Ok(reply) => checked_scores(rubric, &reply).map(|scores| (scores, reply.rationale)),
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok((scores, rationale)) => {
                    return Judgement::Scored(Verdict {
                        scores,
                        rationale,
                        judge_type: JudgeType::Llm,
                        judge_model: Some(self.client.model().to_string()),
                        probes: matched,
                    });
                }
                Err(why) => {
                    tracing::warn!(attempt, error = %why, "the judge's reply could not be used");
                    failure = why;
                }
            }
        }
        Judgement::Unscored { reason: format!("the judge failed {LLM_ATTEMPTS} times; last: {failure}") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(id: &str, dimension: Dimension, expected: &str) -> Probe {
        Probe {
            id: id.into(),
            dimension,
            question: format!("{id}?"),
            expected: expected.into(),
            key_facts: Vec::new(),
            stale: Vec::new(),
            about: Vec::new(),
        }
    }

    fn answers(id: &str, pre: &str, post: &str) -> ProbeAnswers {
        ProbeAnswers { probe_id: id.into(), pre: pre.into(), post: post.into() }
    }

    #[test]
    fn answers_match_their_key_facts_exactly_or_nearly() {
        let codename = probe("codename", Dimension::AccurateRetrieval, "Bluefin");
        assert_eq!(answer_score(&codename, "bluefin."), 1.0);
        assert_eq!(answer_score(&codename, "The codename is Bluefin, I believe."), 1.0);
        assert_eq!(answer_score(&codename, "It's Bluefinn"), 1.0, "one letter off still names it");
        assert_eq!(answer_score(&codename, "I don't remember the codename."), 0.0);
        assert_eq!(answer_score(&codename, ""), 0.0);

        let port = probe("port", Dimension::AccurateRetrieval, "7443");
        assert_eq!(answer_score(&port, "Port 7443."), 1.0);
        assert_eq!(answer_score(&port, "Port 7444."), 0.0, "numbers must be exact");
        assert_eq!(answer_score(&port, "Port 74430."), 0.0, "whole words only");

        let version = Probe {
            key_facts: vec!["7".into(), "2".into()],
            ..probe("v", Dimension::TestTimeLearning, "minor 7, patch 2")
        };
        assert_eq!(answer_score(&version, "minor 7, patch 2"), 1.0);
        assert_eq!(answer_score(&version, "The minor number is 7."), 0.5);

        let owner = Probe {
            key_facts: vec!["Tomás".into()],
            stale: vec!["Priya".into()],
            ..probe("owner", Dimension::SelectiveForgetting, "Tomás Ferreira")
        };
        assert_eq!(answer_score(&owner, "Tomas Ferreira now."), 1.0, "without the accent");
        assert_eq!(answer_score(&owner, "Priya Raman."), 0.0);
        assert_eq!(answer_score(&owner, "Tomás, or maybe still Priya."), 0.5, "hedged");
    }

    #[test]
    fn the_deterministic_judge_scores_what_survived_compaction() {
        let probes = vec![
            probe("codename", Dimension::AccurateRetrieval, "Bluefin"),
            probe("port", Dimension::AccurateRetrieval, "7443"),
            probe("region", Dimension::LongRangeUnderstanding, "Frankfurt"),
        ];
        let given = vec![
            answers("codename", "Bluefin", "Bluefin"),
            answers("port", "7443", "I no longer know."),
            answers("region", "Frankfurt", "Frankfurt"),
        ];
        let rubric = [Dimension::AccurateRetrieval, Dimension::LongRangeUnderstanding];
        let Judgement::Scored(verdict) = judge_deterministically(&rubric, &probes, &given) else {
            panic!("scored");
        };
        assert_eq!(verdict.scores[&Dimension::AccurateRetrieval], 0.5);
        assert_eq!(verdict.scores[&Dimension::LongRangeUnderstanding], 1.0);
        assert!(verdict.rationale.contains("AR: retention 50 %"), "{}", verdict.rationale);
        assert!(verdict.rationale.contains("port: before 1.00, after 0.00"), "{}", verdict.rationale);
        assert_eq!(verdict.judge_type, JudgeType::Deterministic);

        let unscored = judge_deterministically(&[Dimension::SelectiveForgetting], &probes, &given);
        assert_eq!(unscored, Judgement::Unscored { reason: "no probe tests SF".into() });
        let unscored = judge_deterministically(&rubric, &probes, &given[..2]);
        assert_eq!(unscored, Judgement::Unscored { reason: "probe region has no answers".into() });
    }

    #[test]
    fn llm_replies_must_score_every_dimension_within_bounds() {
        let rubric = [Dimension::AccurateRetrieval, Dimension::SelectiveForgetting];
        let reply = |scores: serde_json::Value| LlmReply {
            scores: serde_json::from_value(scores).unwrap(),
            rationale: "because".into(),
        };
        let good =
            checked_scores(&rubric, &reply(serde_json::json!({"AR": 0.9, "SF": 0.25, "TTL": 0.1}))).unwrap();
        assert_eq!(good.len(), 2);
        assert_eq!(good[&Dimension::SelectiveForgetting], 0.25);
        let missing = checked_scores(&rubric, &reply(serde_json::json!({"AR": 0.9}))).unwrap_err();
        assert_eq!(missing, "the judge gave no score for SF");
        let outside = checked_scores(&rubric, &reply(serde_json::json!({"AR": 1.5, "SF": 0.5}))).unwrap_err();
        assert!(outside.contains("outside 0 to 1"), "{outside}");
    }

    #[test]
    fn the_llm_prompt_shows_expected_and_both_answers() {
        let probes = [probe("codename", Dimension::AccurateRetrieval, "Bluefin")];
        let given = [answers("codename", "Bluefin it is", "no idea")];
        let prompt = llm_prompt(&[Dimension::AccurateRetrieval], &paired(&probes, &given).unwrap());
        assert!(prompt.contains("**Expected answer**: Bluefin"));
        assert!(prompt.contains("**Pre-compression answer**: Bluefin it is"));
        assert!(prompt.contains("**Post-compression answer**: no idea"));
        assert!(prompt.contains("{\"scores\": {\"AR\": 0.0}"));
        assert!(clipped(&"x".repeat(MAX_ANSWER_CHARS + 10)).ends_with("… (cut)"));
    }
}
