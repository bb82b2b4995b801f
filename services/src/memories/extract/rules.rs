//! The offline extractor: the user's turns split into sentences and clauses, and each clause
//! matched against first-person patterns ("I prefer …", "I work at …", "remind me to …",
//! "I'm building …"). The longest matching pattern decides the type, the confidence and the
//! third-person lead the stored statement starts with ("User prefers …"); the rest of the
//! clause follows with its pronouns turned ("my" → "their"). A hedge ("I think", "kind of")
//! lowers the confidence by 0.3; questions are skipped.

use super::patterns::{
    CLAUSE_ADVERBS, CONTRACTIONS, CONVERSATIONAL, FILLERS, Guard, HEDGE_PENALTY, HEDGES, INTENSIFIERS,
    MAX_CLAUSE_WORDS, MOMENTARY, NOT_TAGS, REFERRING, REQUEST_OPENERS, RULES, Rule, SOFTENERS, TRAITS,
};
use super::{CandidateFact, MAX_CONTENT_CHARS, Speaker, clean_tags, split_turns};

/// A word of a clause: as written (for the statement) and normalised (for matching).
#[derive(Debug, Clone)]
struct Word {
    text: String,
    norm: String,
}

/// Candidate facts from the user's own turns, by pattern. Every match is returned, with its
/// confidence; [`super::extract_facts`] keeps the confident, distinct ones.
pub fn rule_based_facts(conversation_text: &str) -> Vec<CandidateFact> {
    let mut facts = Vec::new();
    for (index, turn) in split_turns(conversation_text).iter().enumerate() {
        if turn.speaker != Speaker::User {
            continue;
        }
        for (sentence, is_question) in sentences(&without_code(&turn.text)) {
            for clause in clauses(words(sentence)) {
                if let Some(fact) = clause_fact(clause, is_question, index) {
                    facts.push(fact);
                }
            }
        }
    }
    facts
}

/// The text with fenced code blocks left out.
fn without_code(text: &str) -> String {
    let mut in_code = false;
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Sentences, each with whether it ends in a question mark. Splits on line breaks, `;`,
/// and `.`/`!`/`?` followed by a space (not after "e.g", "Dr" and the like).
fn sentences(text: &str) -> Vec<(&str, bool)> {
    const ABBREVIATIONS: &[&str] = &["e.g", "i.e", "etc", "mr", "mrs", "ms", "dr", "vs", "st", "approx"];
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let next_is_space = chars.peek().is_none_or(|(_, next)| next.is_whitespace());
        let ends = match c {
            '\n' | ';' => true,
            '.' | '!' | '?' | '…' => {
                let last_word = text[start..at].rsplit(char::is_whitespace).next().unwrap_or("");
                next_is_space && !(c == '.' && ABBREVIATIONS.contains(&last_word.to_lowercase().as_str()))
            }
            _ => false,
        };
        if ends {
            let end = at + c.len_utf8();
            out.push((text[start..end].trim(), c == '?'));
            start = end;
        }
    }
    out.push((text[start..].trim(), false));
    out.retain(|(sentence, _)| !sentence.is_empty());
    out
}

/// The words of a sentence, contractions expanded and curly apostrophes straightened.
fn words(sentence: &str) -> Vec<Word> {
    let mut out = Vec::new();
    for raw in sentence.split_whitespace() {
        let text = raw.replace('’', "'").trim_matches(['*', '_', '`']).to_string();
        if text.is_empty() {
            continue;
        }
        let norm = normalise(&text);
        match CONTRACTIONS.iter().find(|(form, _)| *form == norm) {
            Some((_, expanded)) => {
                let trailing: String = text.chars().rev().take_while(|c| !c.is_alphanumeric()).collect();
                for (i, part) in expanded.iter().enumerate() {
                    let mut text = (*part).to_string();
                    if i + 1 == expanded.len() {
                        text.extend(trailing.chars().rev());
                    }
                    out.push(Word { norm: part.to_lowercase(), text });
                }
            }
            None => out.push(Word { text, norm }),
        }
    }
    out
}

/// Lowercase, without surrounding punctuation (keeping the `+` and `#` of "C++" and "C#").
fn normalise(word: &str) -> String {
    word.trim_start_matches(|c: char| !c.is_alphanumeric())
        .trim_end_matches(|c: char| !(c.is_alphanumeric() || c == '+' || c == '#'))
        .to_lowercase()
}

/// A sentence split where a new statement starts after "and", "but" or a comma: at "I",
/// or at up to two adverbs before it ("…, but honestly I …"), or at "my" when a verb "to be"
/// follows ("my favourite color is green, my favourite food is ramen"). A joining "and" or
/// "but" is dropped.
fn clauses(words: Vec<Word>) -> Vec<Vec<Word>> {
    let mut out = Vec::new();
    let mut from = 0;
    let starts = (1..words.len()).filter(|&at| starts_clause(&words, at));
    for at in starts.chain([words.len()]) {
        let mut clause = &words[from..at];
        if clause.last().is_some_and(|w| matches!(w.norm.as_str(), "and" | "but")) {
            clause = &clause[..clause.len() - 1];
        }
        if !clause.is_empty() {
            out.push(clause.to_vec());
        }
        from = at;
    }
    out
}

fn starts_clause(words: &[Word], at: usize) -> bool {
    let previous = &words[at - 1];
    let after_comma = previous.text.ends_with(',');
    if !after_comma && !matches!(previous.norm.as_str(), "and" | "but") {
        return false;
    }
    let mut next = at;
    while next < words.len() && next - at < 2 && CLAUSE_ADVERBS.contains(&words[next].norm.as_str()) {
        next += 1;
    }
    match words.get(next).map(|w| w.norm.as_str()) {
        Some("i") => true,
        Some("my") => next == at && after_comma && copula_soon(&words[at + 1..]),
        _ => false,
    }
}

/// "is", "are" or "was" within the next four words.
fn copula_soon(words: &[Word]) -> bool {
    words.iter().take(4).any(|w| matches!(w.norm.as_str(), "is" | "are" | "was"))
}

fn clause_fact(mut clause: Vec<Word>, is_question: bool, turn: usize) -> Option<CandidateFact> {
    clause.retain(|word| !word.norm.is_empty());
    if clause.len() > MAX_CLAUSE_WORDS {
        return None;
    }
    let mut rest: &[Word] = &clause;
    if rest.first().is_some_and(is_list_marker) {
        rest = &rest[1..];
    }
    strip_openers(&mut rest, FILLERS);
    let mut hedged = strip_openers(&mut rest, HEDGES);
    strip_openers(&mut rest, FILLERS);
    let unadorned: Vec<Word>;
    if rest.first().is_some_and(|w| w.norm == "i") {
        let softened;
        (unadorned, softened) = without_adverbs(rest);
        hedged |= softened;
        rest = &unadorned;
    }
    let (rule, tail) = best_rule(rest)?;
    let (tail, cut) = without_trailing_request(tail);
    // A question is only kept as a reminder request ("could you remind me to …?") or when
    // the question was a trailing request ("I prefer tabs, what do you think?").
    if is_question && !cut && rule.words[0] != "remind" {
        return None;
    }
    let refers_back = tail.first().is_some_and(|w| REFERRING.contains(&w.norm.as_str()));
    let says_something =
        tail.iter().any(|w| !NOT_TAGS.contains(&w.norm.as_str()) || w.norm.chars().any(char::is_numeric));
    if refers_back || !says_something {
        return None; // "I love it", "I like your idea", "I have to"
    }
    let content = statement(rule, tail);
    if content.chars().count() > MAX_CONTENT_CHARS {
        return None;
    }
    let confidence = if hedged { rule.confidence - HEDGE_PENALTY } else { rule.confidence };
    Some(CandidateFact {
        content,
        memory_type: rule.kind,
        confidence: (confidence.clamp(0.0, 1.0) * 100.0).round() / 100.0,
        tags: clean_tags(tag_words(tail)),
        turn_start: turn,
        turn_end: turn,
    })
}

/// "1.", "2)" and the like opening a list item.
fn is_list_marker(word: &Word) -> bool {
    word.norm.chars().all(|c| c.is_ascii_digit()) && (word.text.ends_with('.') || word.text.ends_with(')'))
}

/// The words before a trailing request to the assistant (", can you …", ", what do you
/// think", "please"), and whether there was a comma-separated one.
fn without_trailing_request(tail: &[Word]) -> (&[Word], bool) {
    let cut = tail
        .windows(2)
        .position(|pair| pair[0].text.ends_with(',') && REQUEST_OPENERS.contains(&pair[1].norm.as_str()));
    let mut kept = match cut {
        Some(at) => &tail[..=at],
        None => tail,
    };
    while kept.last().is_some_and(|w| matches!(w.norm.as_str(), "please" | "thanks" | "thx")) {
        kept = &kept[..kept.len() - 1];
    }
    (kept, cut.is_some())
}

/// Drops any run of the openers from the front of `words`; whether any was dropped.
fn strip_openers(words: &mut &[Word], openers: &[&[&str]]) -> bool {
    let mut stripped = false;
    while let Some(opener) = openers.iter().find(|opener| starts_with(words, opener)) {
        *words = &words[opener.len()..];
        stripped = true;
    }
    stripped
}

fn starts_with(words: &[Word], pattern: &[&str]) -> bool {
    words.len() >= pattern.len() && words.iter().zip(pattern).all(|(word, p)| word.norm == *p)
}

/// "I" and the rest without the adverbs right after "I"; whether one of them hedged.
fn without_adverbs(words: &[Word]) -> (Vec<Word>, bool) {
    let mut rest = &words[1..];
    let mut softened = false;
    loop {
        if let Some(adverb) = SOFTENERS.iter().find(|s| starts_with(rest, s)) {
            rest = &rest[adverb.len()..];
            softened = true;
        } else if rest.len() > 1 && INTENSIFIERS.contains(&rest[0].norm.as_str()) && rest[1].norm != "not" {
            rest = &rest[1..];
        } else {
            break;
        }
    }
    let mut out = vec![words[0].clone()];
    out.extend_from_slice(rest);
    (out, softened)
}

/// The longest rule the clause starts with whose guard accepts what follows, and what follows.
fn best_rule(words: &[Word]) -> Option<(&'static Rule, &[Word])> {
    RULES
        .iter()
        .filter(|rule| starts_with(words, rule.words))
        .filter(|rule| {
            let tail = &words[rule.words.len()..];
            let next = tail.first().map(|w| w.norm.as_str());
            match rule.guard {
                Guard::Any => true,
                Guard::Trait => {
                    let after = tail.get(1).map(|w| w.norm.as_str());
                    next.is_some_and(|n| TRAITS.contains(&n))
                        && !(matches!(next, Some("a" | "an"))
                            && after.is_some_and(|a| MOMENTARY.contains(&a)))
                }
                Guard::NextNotIn(list) => next.is_some_and(|n| !list.contains(&n)),
                Guard::CopulaSoon => next.is_some_and(|n| !CONVERSATIONAL.contains(&n)) && copula_soon(tail),
            }
        })
        .max_by_key(|rule| rule.words.len())
        .map(|rule| (rule, &words[rule.words.len()..]))
}

/// The rule's lead and the rest of the clause in the third person, trailing punctuation cut.
fn statement(rule: &Rule, tail: &[Word]) -> String {
    let mut parts: Vec<String> = vec![rule.lead.to_string()];
    let mut previous = "";
    for (i, word) in tail.iter().enumerate() {
        let text = match word.norm.as_str() {
            "i" => "they".to_string(),
            "me" => "them".to_string(),
            "my" => "their".to_string(),
            "mine" => "theirs".to_string(),
            "myself" => "themselves".to_string(),
            "am" if previous == "i" => "are".to_string(),
            "was" if previous == "i" => "were".to_string(),
            _ if i == 0 && rule.conjugate => third_person(&word.text),
            _ => word.text.clone(),
        };
        previous = &word.norm;
        parts.push(text);
    }
    let content = parts.join(" ");
    content.trim_end_matches(|c: char| ".,;:!?…".contains(c)).trim().to_string()
}

/// A verb in the third person singular ("use" → "uses", "try." → "tries."); other words as
/// they are.
fn third_person(word: &str) -> String {
    let verb = word.trim_end_matches(|c: char| !c.is_alphanumeric());
    let punctuation = &word[verb.len()..];
    if verb.is_empty() || !verb.chars().all(|c| c.is_ascii_lowercase()) {
        return word.to_string();
    }
    let conjugated = match verb {
        "have" => "has".to_string(),
        "do" => "does".to_string(),
        "go" => "goes".to_string(),
        "am" | "are" | "be" => "is".to_string(),
        "can" | "will" | "would" | "should" | "could" | "must" | "might" | "may" => verb.to_string(),
        _ if verb
            .strip_suffix('y')
            .and_then(|stem| stem.chars().last())
            .is_some_and(|c| !"aeiou".contains(c)) =>
        {
            format!("{}ies", &verb[..verb.len() - 1])
        }
        _ if ["s", "sh", "ch", "x", "z", "o"].iter().any(|end| verb.ends_with(end)) => format!("{verb}es"),
        _ => format!("{verb}s"),
    };
    conjugated + punctuation
}

/// Keywords of what follows the pattern: no small words, numbers or "-ing" verbs.
fn tag_words(tail: &[Word]) -> impl Iterator<Item = &str> {
    tail.iter()
        .filter(|w| {
            let norm = w.norm.as_str();
            let gerund = norm.len() >= 5 && norm.ends_with("ing") && w.text.starts_with(char::is_lowercase);
            norm.chars().count() >= 2
                && !NOT_TAGS.contains(&norm)
                && !gerund
                && !norm.chars().all(|c| c.is_numeric())
                && !matches!(norm, "i" | "they")
        })
        .map(|w| w.norm.as_str())
}
