//! A scenario: the turns that give an agent facts to remember (said by the user, or left in a
//! file the agent must read, and corrected later), the deep-dive prompts sent until the agent
//! compacts its context, and the probes asked before and after, each with its expected answer
//! and the rubric dimension it tests. Built-in scenarios ship in `scenarios/`; uploaded ones
//! are checked here, and every error names its field (`turns[3].file`).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{Dimension, FieldError};

/// The largest scenario document accepted, in bytes.
pub const MAX_SCENARIO_BYTES: usize = 1024 * 1024;
pub const MAX_TURNS: usize = 200;
pub const MAX_DEEP_DIVE: usize = 20;
pub const MAX_PROBES: usize = 100;
/// The longest turn or deep-dive prompt, in characters.
pub const MAX_TEXT_CHARS: usize = 20_000;
/// The longest file a tool-fact turn writes, in characters.
pub const MAX_FILE_CHARS: usize = 100_000;
pub const MAX_QUESTION_CHARS: usize = 2_000;
pub const MAX_EXPECTED_CHARS: usize = 1_000;
/// Key facts and stale answers per probe, and the characters of each.
pub const MAX_KEYS: usize = 10;
pub const MAX_KEY_CHARS: usize = 200;
const MAX_NAME_CHARS: usize = 64;
const MAX_DESCRIPTION_CHARS: usize = 2_000;
const MAX_PATH_CHARS: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Lowercase letters, digits and `-`.
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Sent in order before the baseline probes.
    pub turns: Vec<Turn>,
    /// Sent in turn, round and round, until the agent compacts or the budget ends.
    pub deep_dive: Vec<String>,
    pub probes: Vec<Probe>,
}

/// One user turn before the baseline probes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Turn {
    /// The user states fact `fact` (an id the probes and corrections refer to).
    Fact { fact: String, text: String },
    /// Fact `fact` is in `file` (written into the agent's checkout before the run), which
    /// the turn asks the agent to read; `text` defaults to [`Turn::default_read_text`].
    ToolFact {
        fact: String,
        file: String,
        content: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// Work that states no fact.
    Filler { text: String },
    /// Replaces the earlier fact `fact`.
    Correction { fact: String, text: String },
}

impl Turn {
    /// What a tool-fact turn says when the scenario gives no text: a `READ:` line (which the
    /// stand-in model turns into the CLI's own read tool) and the request in words.
    pub fn default_read_text(file: &str) -> String {
        format!("READ: {file}\nRead the file {file} in the working directory and remember what it says.")
    }

    /// The message this turn sends.
    pub fn message(&self) -> String {
        match self {
            Turn::Fact { text, .. } | Turn::Filler { text } | Turn::Correction { text, .. } => text.clone(),
            Turn::ToolFact { file, text, .. } => {
                text.clone().unwrap_or_else(|| Turn::default_read_text(file))
            }
        }
    }
}

/// A question asked before and after compaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    pub id: String,
    pub dimension: Dimension,
    pub question: String,
    pub expected: String,
    /// What a right answer must contain; empty means `[expected]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_facts: Vec<String>,
    /// Answers that were right before a correction: naming one is the stale fact kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale: Vec<String>,
    /// The facts (ids) the question is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub about: Vec<String>,
}

impl Probe {
    /// The key facts a right answer holds.
    pub fn keys(&self) -> Vec<&str> {
        if self.key_facts.is_empty() {
            vec![self.expected.as_str()]
        } else {
            self.key_facts.iter().map(String::as_str).collect()
        }
    }
}

impl Scenario {
    /// Parses and checks an uploaded scenario document.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FieldError> {
        if bytes.len() > MAX_SCENARIO_BYTES {
            return Err(FieldError::new("scenario", format!("is over {MAX_SCENARIO_BYTES} bytes")));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        let scenario: Scenario = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "scenario".to_string() } else { path };
            FieldError::new(field, e.into_inner().to_string())
        })?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Checks every bound and reference; the first fault found is named.
    pub fn check(&self) -> Result<(), FieldError> {
        check_slug("name", &self.name, MAX_NAME_CHARS)?;
        check_len("description", &self.description, MAX_DESCRIPTION_CHARS, true)?;
        check_count("turns", self.turns.len(), MAX_TURNS)?;
        let mut facts = HashSet::new();
        for (i, turn) in self.turns.iter().enumerate() {
            let at = |field: &str| format!("turns[{i}].{field}");
            match turn {
                Turn::Fact { fact, text } => {
                    check_new_fact(&at("fact"), fact, &mut facts)?;
                    check_len(&at("text"), text, MAX_TEXT_CHARS, false)?;
                }
                Turn::ToolFact { fact, file, content, text } => {
                    check_new_fact(&at("fact"), fact, &mut facts)?;
                    check_path(&at("file"), file)?;
                    check_len(&at("content"), content, MAX_FILE_CHARS, false)?;
                    if let Some(text) = text {
                        check_len(&at("text"), text, MAX_TEXT_CHARS, false)?;
                    }
                }
                Turn::Filler { text } => check_len(&at("text"), text, MAX_TEXT_CHARS, false)?,
                Turn::Correction { fact, text } => {
                    if !facts.contains(fact.as_str()) {
                        return Err(FieldError::new(
                            at("fact"),
                            format!("no earlier turn states fact {fact:?}"),
                        ));
                    }
                    check_len(&at("text"), text, MAX_TEXT_CHARS, false)?;
                }
            }
        }
        check_count("deep_dive", self.deep_dive.len(), MAX_DEEP_DIVE)?;
        for (i, prompt) in self.deep_dive.iter().enumerate() {
            check_len(&format!("deep_dive[{i}]"), prompt, MAX_TEXT_CHARS, false)?;
        }
        check_count("probes", self.probes.len(), MAX_PROBES)?;
        let mut probe_ids = HashSet::new();
        for (i, probe) in self.probes.iter().enumerate() {
            let at = |field: &str| format!("probes[{i}].{field}");
            check_slug(&at("id"), &probe.id, MAX_NAME_CHARS)?;
            if !probe_ids.insert(probe.id.as_str()) {
                return Err(FieldError::new(at("id"), format!("{:?} names two probes", probe.id)));
            }
            check_len(&at("question"), &probe.question, MAX_QUESTION_CHARS, false)?;
            check_len(&at("expected"), &probe.expected, MAX_EXPECTED_CHARS, false)?;
            for (field, keys) in [("key_facts", &probe.key_facts), ("stale", &probe.stale)] {
                if keys.len() > MAX_KEYS {
                    return Err(FieldError::new(at(field), format!("holds more than {MAX_KEYS}")));
                }
                for (k, key) in keys.iter().enumerate() {
                    check_len(&format!("probes[{i}].{field}[{k}]"), key, MAX_KEY_CHARS, false)?;
                }
            }
            for (k, fact) in probe.about.iter().enumerate() {
                if !facts.contains(fact.as_str()) {
                    return Err(FieldError::new(
                        format!("probes[{i}].about[{k}]"),
                        format!("no turn states fact {fact:?}"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The rubric dimensions the probes test, in the rubric's order.
    pub fn dimensions(&self) -> Vec<Dimension> {
        Dimension::ALL.into_iter().filter(|d| self.probes.iter().any(|p| p.dimension == *d)).collect()
    }

    /// The files tool-fact turns need in the agent's checkout: `(path, content)`.
    pub fn files(&self) -> Vec<(&str, &str)> {
        self.turns
            .iter()
            .filter_map(|turn| match turn {
                Turn::ToolFact { file, content, .. } => Some((file.as_str(), content.as_str())),
                _ => None,
            })
            .collect()
    }
}

fn check_len(field: &str, value: &str, max_chars: usize, may_be_empty: bool) -> Result<(), FieldError> {
    if !may_be_empty && value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max_chars {
        return Err(FieldError::new(field, format!("is over {max_chars} characters")));
    }
    Ok(())
}

fn check_count(field: &str, count: usize, max: usize) -> Result<(), FieldError> {
    if count == 0 || count > max {
        return Err(FieldError::new(field, format!("must hold 1 to {max} entries, not {count}")));
    }
    Ok(())
}

/// A name or id: 1 to `max` lowercase letters, digits, `-` and `_`.
fn check_slug(field: &str, value: &str, max: usize) -> Result<(), FieldError> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok { Ok(()) } else { Err(FieldError::new(field, format!("must be 1 to {max} of a-z, 0-9, - and _"))) }
}

fn check_new_fact<'a>(field: &str, fact: &'a str, facts: &mut HashSet<&'a str>) -> Result<(), FieldError> {
    check_slug(field, fact, MAX_NAME_CHARS)?;
    if !facts.insert(fact) {
        return Err(FieldError::new(
            field,
            format!("fact {fact:?} is stated twice (a correction replaces one)"),
        ));
    }
    Ok(())
}

/// A relative path inside the checkout: segments of letters, digits, `.`, `_` and `-`, none
/// of them `.` or `..`, and nothing under `.git`.
fn check_path(field: &str, path: &str) -> Result<(), FieldError> {
    let segments_ok = path.split('/').all(|segment| {
        !segment.is_empty()
            && segment != "."
            && segment != ".."
            && segment.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    });
    if path.len() > MAX_PATH_CHARS || !segments_ok || path.split('/').next() == Some(".git") {
        return Err(FieldError::new(
            field,
            format!(
                "must be a relative path of at most {MAX_PATH_CHARS} characters (letters, digits, \
                 '.', '_', '-' between '/'), outside .git"
            ),
        ));
    }
    Ok(())
}

/// The scenarios Engram ships, as `(name, document)`.
const BUILTIN: &[(&str, &str)] = &[
    ("project-handover", include_str!("scenarios/project-handover.json")),
    ("release-notes", include_str!("scenarios/release-notes.json")),
    ("tool-output-facts", include_str!("scenarios/tool-output-facts.json")),
];

/// The names of the built-in scenarios.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(name, _)| *name).collect()
}

/// A built-in scenario by name.
pub fn builtin(name: &str) -> Option<Scenario> {
    let (_, document) = BUILTIN.iter().find(|(builtin, _)| *builtin == name)?;
    // Checked by the tests below: a shipped scenario always parses.
    Scenario::from_json(document.as_bytes()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> serde_json::Value {
        serde_json::json!({
            "name": "tiny",
            "turns": [
                {"kind": "fact", "fact": "train", "text": "The release train is Halibut."},
                {"kind": "tool_fact", "fact": "db", "file": "notes/db.txt", "content": "The database is Ostrich."},
                {"kind": "correction", "fact": "train", "text": "Correction: the release train is Marlin now."}
            ],
            "deep_dive": ["Walk me through the build scripts again."],
            "probes": [
                {"id": "train", "dimension": "SF", "question": "Which release train?", "expected": "Marlin",
                 "stale": ["Halibut"], "about": ["train"]},
                {"id": "db", "dimension": "AR", "question": "Which database?", "expected": "Ostrich"}
            ]
        })
    }

    fn parse(value: &serde_json::Value) -> Result<Scenario, FieldError> {
        Scenario::from_json(value.to_string().as_bytes())
    }

    #[test]
    fn every_builtin_scenario_parses_and_names_itself() {
        assert_eq!(builtin_names().len(), BUILTIN.len());
        for (name, document) in BUILTIN {
            let scenario = Scenario::from_json(document.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(scenario.name, *name);
            assert!(builtin(name).is_some());
        }
        assert!(builtin("no-such-scenario").is_none());
    }

    #[test]
    fn a_scenario_lists_its_files_dimensions_and_messages() {
        let scenario = parse(&minimal()).unwrap();
        assert_eq!(scenario.files(), [("notes/db.txt", "The database is Ostrich.")]);
        assert_eq!(scenario.dimensions(), [Dimension::AccurateRetrieval, Dimension::SelectiveForgetting]);
        assert!(scenario.turns[1].message().starts_with("READ: notes/db.txt\n"));
        assert_eq!(scenario.probes[1].keys(), ["Ostrich"]);
    }

    #[test]
    fn faults_are_named_by_field() {
        use serde_json::json;
        let cases = [
            ("unknown field", "/colour", json!("blue"), "colour"),
            ("bad kind", "/turns/0/kind", json!("poem"), "turns[0].kind"),
            ("unknown turn field", "/turns/0/mood", json!("calm"), "turns[0]"),
            ("bad dimension", "/probes/1/dimension", json!("XX"), "probes[1].dimension"),
            ("bad name", "/name", json!("Not A Slug"), "name"),
            ("empty text", "/turns/0/text", json!(" "), "turns[0].text"),
            ("escaping file", "/turns/1/file", json!("../etc/passwd"), "turns[1].file"),
            ("absolute file", "/turns/1/file", json!("/etc/passwd"), "turns[1].file"),
            ("file in .git", "/turns/1/file", json!(".git/config"), "turns[1].file"),
            ("correction first", "/turns/2/fact", json!("nothing"), "turns[2].fact"),
            ("fact twice", "/turns/1/fact", json!("train"), "turns[1].fact"),
            ("no probes", "/probes", json!([]), "probes"),
            ("no deep dive", "/deep_dive", json!([]), "deep_dive"),
            ("probe twice", "/probes/1/id", json!("train"), "probes[1].id"),
            ("unknown about", "/probes/0/about/0", json!("x"), "probes[0].about[0]"),
            ("too many keys", "/probes/0/key_facts", json!(vec!["k"; MAX_KEYS + 1]), "probes[0].key_facts"),
            (
                "long question",
                "/probes/0/question",
                json!("q".repeat(MAX_QUESTION_CHARS + 1)),
                "probes[0].question",
            ),
        ];
        for (what, pointer, new, field) in cases {
            let mut value = minimal();
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            match value.pointer_mut(parent).unwrap() {
                serde_json::Value::Object(map) => {
                    map.insert(key.to_string(), new);
                }
                serde_json::Value::Array(items) => items[key.parse::<usize>().unwrap()] = new,
                other => panic!("{pointer}: {other}"),
            }
            let error = parse(&value).expect_err(what);
            assert_eq!(error.field, field, "{what}: {error}");
        }
        assert_eq!(Scenario::from_json(b"not json").unwrap_err().field, "scenario");
        let huge = vec![b' '; MAX_SCENARIO_BYTES + 1];
        assert!(Scenario::from_json(&huge).unwrap_err().message.contains("bytes"));
    }
}
