//! The session writer: what a session says about which entities (an `Extraction`, from the
//! LLM when one is configured, else from deterministic rules), and the file edits that
//! record it — entity files, the timeline, `index.md` and the raw session archive.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::layout::{self, EntityKind};

/// One entity a session speaks of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityNote {
    pub name: String,
    pub kind: EntityKind,
    /// One line saying who or what this is (kept in the entity's ALWAYS_LOAD block).
    pub description: String,
    /// What this session adds about it.
    pub note: String,
    /// `High`, `Medium` or `Low`.
    #[serde(default = "default_strength")]
    pub strength: String,
}

fn default_strength() -> String {
    "Medium".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extraction {
    pub entities: Vec<EntityNote>,
    /// One or two sentences for the timeline.
    pub summary: String,
}

/// An entity already in the repo, as listed in `index.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    pub kind: EntityKind,
    pub path: String,
    pub mentions: u32,
    pub last: String,
    pub description: String,
}

const KIN: &[&str] = &[
    "mom",
    "mother",
    "dad",
    "father",
    "sister",
    "brother",
    "wife",
    "husband",
    "partner",
    "son",
    "daughter",
    "grandma",
    "grandmother",
    "grandpa",
    "grandfather",
    "aunt",
    "uncle",
    "cousin",
    "boss",
    "manager",
    "girlfriend",
    "boyfriend",
    "therapist",
    "doctor",
    "coach",
    "mentor",
    "roommate",
];

const CONTEXTS: &[(&str, &[&str])] = &[
    (
        "health",
        &[
            "run", "ran", "running", "jog", "gym", "workout", "exercise", "fitness", "diet", "sleep",
            "weight", "yoga", "health", "swim",
        ],
    ),
    (
        "work",
        &[
            "work",
            "job",
            "project",
            "meeting",
            "office",
            "promotion",
            "career",
            "deadline",
            "client",
            "colleague",
            "interview",
        ],
    ),
    ("family", &["family", "mom", "mother", "dad", "father", "sister", "brother", "kids", "parents"]),
    (
        "relationships",
        &[
            "relationship",
            "date",
            "dating",
            "wife",
            "husband",
            "partner",
            "girlfriend",
            "boyfriend",
            "friend",
            "friends",
        ],
    ),
    ("finance", &["money", "budget", "savings", "salary", "rent", "invest", "investment", "debt", "bank"]),
    (
        "learning",
        &["learn", "learning", "study", "course", "book", "reading", "class", "language", "practice"],
    ),
    ("goals", &["goal", "goals", "plan", "resolution", "habit", "habits", "target"]),
];

const EVENTS: &[&str] = &[
    "birthday",
    "wedding",
    "anniversary",
    "funeral",
    "graduation",
    "trip",
    "vacation",
    "holiday",
    "conference",
    "marathon",
    "concert",
    "party",
    "move",
    "surgery",
];

/// Capitalised words that are not names.
const NOT_NAMES: &[&str] = &[
    "I",
    "The",
    "A",
    "An",
    "We",
    "My",
    "Our",
    "He",
    "She",
    "They",
    "It",
    "This",
    "That",
    "Today",
    "Yesterday",
    "Tomorrow",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
    "Great",
    "Had",
    "Went",
    "But",
    "And",
    "Then",
    "Also",
    "Mom",
    "Dad",
    "OK",
    "Hi",
];

fn sentences(text: &str) -> Vec<&str> {
    text.split(['.', '!', '?', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect()
}

fn words(sentence: &str) -> impl Iterator<Item = &str> {
    sentence.split(|c: char| !c.is_alphanumeric() && c != '\'').filter(|w| !w.is_empty())
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{}…", cut.trim_end())
}

/// The deterministic writer used without an LLM: known entities named again, family roles,
/// capitalised names, topic words and event words, each with the sentences that mention it.
pub fn extract_by_rules(input: &str, known: &[IndexEntry]) -> Extraction {
    let sentences = sentences(input);
    let mut found: BTreeMap<(EntityKind, String), (String, Vec<usize>)> = BTreeMap::new();
    let mut mention = |kind: EntityKind, name: &str, at: usize| {
        if let Some(slug) = layout::slug(name) {
            let entry = found.entry((kind, slug)).or_insert_with(|| (name.to_string(), Vec::new()));
            if !entry.1.contains(&at) {
                entry.1.push(at);
            }
        }
    };
    for (at, sentence) in sentences.iter().enumerate() {
        let lower: Vec<String> = words(sentence).map(str::to_lowercase).collect();
        for entry in known {
            let name = entry.name.to_lowercase();
            let name_words: Vec<&str> = name.split_whitespace().collect();
            if !name_words.is_empty() && lower.windows(name_words.len()).any(|w| w == name_words.as_slice()) {
                mention(entry.kind, &entry.name, at);
            }
        }
        for word in &lower {
            if KIN.contains(&word.as_str()) {
                mention(EntityKind::Person, word, at);
            }
            if EVENTS.contains(&word.as_str()) {
                mention(EntityKind::Event, word, at);
            }
        }
        for (topic, cues) in CONTEXTS {
            if lower.iter().any(|w| cues.contains(&w.as_str())) {
                mention(EntityKind::Context, topic, at);
            }
        }
        for (position, word) in words(sentence).enumerate() {
            let capitalised = word.chars().next().is_some_and(char::is_uppercase)
                && word.chars().skip(1).all(|c| c.is_lowercase() || c == '\'')
                && word.len() > 1;
            if position > 0 && capitalised && !NOT_NAMES.contains(&word) {
                mention(EntityKind::Person, word.trim_end_matches("'s"), at);
            }
        }
    }
    let entities = found
        .into_iter()
        .map(|((kind, _), (name, at))| {
            let said: Vec<&str> = at.iter().map(|&i| sentences[i]).collect();
            let known_description =
                known.iter().find(|k| k.name.eq_ignore_ascii_case(&name)).map(|k| k.description.clone());
            EntityNote {
                description: known_description.unwrap_or_else(|| truncate(said[0], 200)),
                note: said.iter().map(|s| format!("{s}.")).collect::<Vec<_>>().join(" "),
                strength: if at.len() > 1 { "High" } else { "Medium" }.to_string(),
                name,
                kind,
            }
        })
        .collect();
    let summary =
        truncate(&sentences.iter().take(2).map(|s| format!("{s}.")).collect::<Vec<_>>().join(" "), 300);
    Extraction { entities, summary }
}

/// Parses `index.md` lines `- [name](path) | kind | mentions N | last YYYY-MM-DD | description`.
pub fn parse_index(markdown: &str) -> Vec<IndexEntry> {
    markdown
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("- [")?;
            let (name, rest) = rest.split_once("](")?;
            let (path, rest) = rest.split_once(')')?;
            let mut fields = rest.split(" | ").map(str::trim).skip(1);
            let kind = match fields.next()? {
                "person" => EntityKind::Person,
                "context" => EntityKind::Context,
                "event" => EntityKind::Event,
                _ => return None,
            };
            let mentions = fields.next()?.strip_prefix("mentions ")?.parse().ok()?;
            let last = fields.next()?.strip_prefix("last ")?.to_string();
            let description = fields.collect::<Vec<_>>().join(" | ");
            Some(IndexEntry {
                name: name.to_string(),
                kind,
                path: path.to_string(),
                mentions,
                last,
                description,
            })
        })
        .collect()
}

/// `index.md` with the most mentioned (then most recent) entities first.
pub fn render_index(entries: &mut [IndexEntry]) -> String {
    entries.sort_by(|a, b| b.mentions.cmp(&a.mentions).then(b.last.cmp(&a.last)).then(a.name.cmp(&b.name)));
    let mut out = String::from("# Index\n\n");
    for e in entries.iter() {
        let description = e.description.replace('\n', " ");
        out.push_str(&format!(
            "- [{}]({}) | {} | mentions {} | last {} | {}\n",
            e.name,
            e.path,
            e.kind.as_str(),
            e.mentions,
            e.last,
            description
        ));
    }
    out
}

fn strength_of(value: &str) -> &'static str {
    match value.to_ascii_lowercase().as_str() {
        "high" => "High",
        "low" => "Low",
        _ => "Medium",
    }
}

/// A session's edits: (path, new full contents) for every file it changes, given a reader
/// of the files as they are now.
pub fn session_edits(
    extraction: &Extraction,
    input: &str,
    session_id: &str,
    date: NaiveDate,
    read: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let day = date.format("%Y-%m-%d").to_string();
    let mut edits = Vec::new();
    let mut index = parse_index(&read(layout::INDEX_FILE).unwrap_or_default());
    let mut touched = Vec::new();
    for entity in &extraction.entities {
        let Some(slug) = layout::slug(&entity.name) else { continue };
        let path = layout::entity_file(entity.kind, &slug);
        if touched.contains(&path) {
            continue;
        }
        touched.push(path.clone());
        let description = truncate(entity.description.trim(), 300);
        let mut text = read(&path).unwrap_or_else(|| {
            format!(
                "# {}\n\n/START\n### {} [Strength: High] [ALWAYS_LOAD]\nKind: {}\n{}\n/END\n",
                entity.name,
                entity.name,
                entity.kind.as_str(),
                description
            )
        });
        text.push_str(&format!(
            "\n/START\n### {day} — session {session_id} [Strength: {}]\n{}\n/END\n",
            strength_of(&entity.strength),
            entity.note.trim()
        ));
        edits.push((path.clone(), text));
        match index.iter_mut().find(|e| e.path == path) {
            Some(entry) => {
                entry.mentions += 1;
                entry.last = entry.last.clone().max(day.clone());
            }
            None => index.push(IndexEntry {
                name: entity.name.clone(),
                kind: entity.kind,
                path,
                mentions: 1,
                last: day.clone(),
                description,
            }),
        }
    }
    let timeline = layout::timeline_file(date);
    let mut timeline_text =
        read(&timeline).unwrap_or_else(|| format!("# Timeline {}\n", date.format("%Y-%m")));
    let names: Vec<&str> = extraction.entities.iter().map(|e| e.name.as_str()).collect();
    timeline_text.push_str(&format!(
        "\n/START\n### {day} — session {session_id}\n{}\nEntities: {}\n/END\n",
        extraction.summary.trim(),
        if names.is_empty() { "none".to_string() } else { names.join(", ") }
    ));
    edits.push((timeline, timeline_text));
    edits.push((layout::INDEX_FILE.to_string(), render_index(&mut index)));
    edits.push((layout::session_file(date, session_id), input.to_string()));
    edits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_find_family_topics_names_and_events() {
        let extraction = extract_by_rules(
            "Had coffee with mom today. Great conversation about family. Went running with Sarah before her birthday.",
            &[],
        );
        let names: Vec<(&str, EntityKind)> =
            extraction.entities.iter().map(|e| (e.name.as_str(), e.kind)).collect();
        for expected in [
            ("mom", EntityKind::Person),
            ("Sarah", EntityKind::Person),
            ("family", EntityKind::Context),
            ("health", EntityKind::Context),
            ("birthday", EntityKind::Event),
        ] {
            assert!(names.contains(&expected), "{expected:?} missing from {names:?}");
        }
        let mom = extraction.entities.iter().find(|e| e.name == "mom").unwrap();
        assert_eq!(mom.note, "Had coffee with mom today.");
    }

    #[test]
    fn edits_create_then_append_and_keep_the_index_in_order() {
        let date = NaiveDate::from_ymd_opt(2024, 1, 15).unwrap();
        let first = extract_by_rules("Had coffee with mom today.", &[]);
        let edits = session_edits(&first, "Had coffee with mom today.", "s1", date, |_| None);
        let files: BTreeMap<String, String> = edits.into_iter().collect();
        let mom = &files["memories/people/mom.md"];
        assert!(mom.contains("[ALWAYS_LOAD]") && mom.contains("### 2024-01-15 — session s1"));
        assert!(files.contains_key("sessions/2024-01-15_s1.txt"));
        assert!(files["timeline/2024-01.md"].contains("Entities: mom"));
        let index = parse_index(&files["index.md"]);
        assert_eq!(index[0].mentions, 1);

        let known = parse_index(&files["index.md"]);
        let second = extract_by_rules("Called Mom again.", &known);
        let edits = session_edits(&second, "Called Mom again.", "s2", date, |p| files.get(p).cloned());
        let again: BTreeMap<String, String> = edits.into_iter().collect();
        assert!(again["memories/people/mom.md"].contains("session s1"));
        assert!(again["memories/people/mom.md"].contains("session s2"));
        assert_eq!(parse_index(&again["index.md"])[0].mentions, 2);
    }
}
