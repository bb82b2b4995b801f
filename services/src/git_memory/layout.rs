//! Where things live in a memory repo (DiffMem's layout) and which names are acceptable:
//! `<user>.md`, `index.md`, `memories/{people,contexts,events}/*.md`, `timeline/YYYY-MM.md`
//! and `sessions/<date>_<id>.txt`.

use chrono::NaiveDate;

/// Longest user id or session id.
pub const MAX_ID_LEN: usize = 64;

/// What kind of entity a memory file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntityKind {
    Person,
    Context,
    Event,
}

impl EntityKind {
    pub fn directory(self) -> &'static str {
        match self {
            EntityKind::Person => "memories/people",
            EntityKind::Context => "memories/contexts",
            EntityKind::Event => "memories/events",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Person => "person",
            EntityKind::Context => "context",
            EntityKind::Event => "event",
        }
    }
}

/// Whether `id` is usable as a user id or session id: 1–64 letters, digits, `-`, `_` or `.`,
/// not starting with `.` (so never `..`, a hidden file or a path).
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

pub fn user_file(user_id: &str) -> String {
    format!("{user_id}.md")
}

pub const INDEX_FILE: &str = "index.md";

pub fn timeline_file(date: NaiveDate) -> String {
    format!("timeline/{}.md", date.format("%Y-%m"))
}

pub fn session_file(date: NaiveDate, session_id: &str) -> String {
    format!("sessions/{}_{session_id}.txt", date.format("%Y-%m-%d"))
}

/// `Mom` → `mom`, `Project Apollo` → `project-apollo`; `None` when nothing usable is left.
pub fn slug(name: &str) -> Option<String> {
    let mut slug = String::new();
    for c in name.trim().chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_end_matches('-').chars().take(48).collect();
    (!slug.is_empty()).then_some(slug)
}

pub fn entity_file(kind: EntityKind, slug: &str) -> String {
    format!("{}/{slug}.md", kind.directory())
}

/// What a new repo starts with: the user's entity file and an empty index.
pub fn initial_files(user_id: &str) -> Vec<(String, String)> {
    vec![
        (
            user_file(user_id),
            format!(
                "# {user_id}\n\n/START\n### {user_id} [Strength: High] [ALWAYS_LOAD]\nThe user whose memory this is.\n/END\n"
            ),
        ),
        (INDEX_FILE.to_string(), "# Index\n\n".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_refuse_paths_and_odd_characters() {
        for ok in ["alex", "user-1", "01J2ABC", "a.b_c"] {
            assert!(is_valid_id(ok), "{ok}");
        }
        for bad in ["", "..", "../etc", "a/b", ".hidden", "a b", "x\0", "é", &"a".repeat(65)] {
            assert!(!is_valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn slugs_are_lower_case_words_joined_by_dashes() {
        assert_eq!(slug("Mom").as_deref(), Some("mom"));
        assert_eq!(slug("  Project  Apollo! ").as_deref(), Some("project-apollo"));
        assert_eq!(slug("../../etc").as_deref(), Some("etc"));
        assert_eq!(slug("!!!"), None);
    }
}
