//! The patterns the offline extractor knows: first-person openings with the type,
//! confidence and third-person lead of what they state, and the word lists that say what
//! to skip (fillers, hedges, adverbs) and what never makes a tag.

use storage::sql::MemoryType;

use MemoryType::{Fact, Preference, Project, Task};

/// How much a hedge lowers a pattern's confidence.
pub(super) const HEDGE_PENALTY: f64 = 0.3;
/// Clauses longer than this are pasted text, not statements.
pub(super) const MAX_CLAUSE_WORDS: usize = 60;

/// One pattern: the normalised words a clause starts with.
pub(super) struct Rule {
    pub(super) words: &'static [&'static str],
    pub(super) kind: MemoryType,
    pub(super) confidence: f64,
    /// What the statement starts with, in place of `words`.
    pub(super) lead: &'static str,
    /// Put the first following word in the third person ("always use" → "always uses").
    pub(super) conjugate: bool,
    /// Which following words the pattern accepts.
    pub(super) guard: Guard,
}

#[derive(Clone, Copy)]
pub(super) enum Guard {
    Any,
    /// The next word is one of [`TRAITS`], and not "a bit" or the like.
    Trait,
    /// The next word is none of these.
    NextNotIn(&'static [&'static str]),
    /// "is", "are" or "was" within the next four words ("my sister is a nurse").
    CopulaSoon,
}

const fn rule(words: &'static [&'static str], kind: MemoryType, confidence: f64, lead: &'static str) -> Rule {
    Rule { words, kind, confidence, lead, conjugate: false, guard: Guard::Any }
}

const fn guarded(
    words: &'static [&'static str],
    kind: MemoryType,
    confidence: f64,
    lead: &'static str,
    guard: Guard,
) -> Rule {
    Rule { words, kind, confidence, lead, conjugate: false, guard }
}

const fn habit(words: &'static [&'static str], confidence: f64, lead: &'static str) -> Rule {
    Rule { words, kind: Preference, confidence, lead, conjugate: true, guard: Guard::Any }
}

/// Things "I am …" can be that are worth remembering ("I'm vegetarian").
#[rustfmt::skip]
pub(super) const TRAITS: &[&str] = &[
    "a", "an", "vegetarian", "vegan", "married", "divorced", "single", "engaged", "retired", "pregnant",
    "left-handed", "right-handed", "colorblind", "colourblind", "lactose", "gluten", "deaf", "blind",
    "diabetic", "self-employed", "unemployed", "originally",
];
/// What "I'm a …" is followed by when it is about the moment ("I'm a bit lost").
pub(super) const MOMENTARY: &[&str] = &["bit", "little", "lot", "tad"];
/// What "I have …" is followed by when it is about the moment, not the user.
pub(super) const PASSING: &[&str] =
    &["a", "an", "no", "some", "got", "been", "trouble", "issues", "questions"];
/// What "I have a …" is followed by when it is about the conversation.
#[rustfmt::skip]
pub(super) const PASSING_THINGS: &[&str] = &[
    "question", "problem", "quick", "few", "bug", "doubt", "issue", "suggestion", "request", "favor",
    "feeling", "idea", "follow-up", "couple",
];
/// What "I need to …" and the like are followed by when they are about the conversation.
#[rustfmt::skip]
pub(super) const ASKING: &[&str] = &[
    "know", "ask", "understand", "see", "check", "confirm", "clarify", "try", "say", "mention", "note", "add",
    "explain", "point", "tell", "show",
];
/// What "don't …" is followed by when it is not an instruction about answers.
const NOT_INSTRUCTIONS: &[&str] = &["worry", "forget", "mind", "know", "bother", "get", "be", "let", "think"];
/// Adverbs that may stand between a joining word and "I" ("but honestly I …").
pub(super) const CLAUSE_ADVERBS: &[&str] =
    &["honestly", "also", "actually", "then", "maybe", "probably", "really", "now"];
/// What "my …" is followed by when it is about the conversation, not the user.
pub(super) const CONVERSATIONAL: &[&str] = &[
    "question", "problem", "issue", "code", "guess", "point", "bad", "concern", "error", "output", "answer",
];

pub(super) const RULES: &[Rule] = &[
    // Preferences.
    rule(&["i", "prefer"], Preference, 0.9, "User prefers"),
    rule(&["i", "love"], Preference, 0.9, "User loves"),
    rule(&["i", "adore"], Preference, 0.9, "User loves"),
    rule(&["i", "hate"], Preference, 0.9, "User hates"),
    rule(&["i", "like"], Preference, 0.8, "User likes"),
    rule(&["i", "enjoy"], Preference, 0.8, "User enjoys"),
    rule(&["i", "dislike"], Preference, 0.85, "User dislikes"),
    rule(&["i", "cannot", "stand"], Preference, 0.85, "User cannot stand"),
    rule(&["i", "do", "not", "like"], Preference, 0.85, "User does not like"),
    rule(&["i", "do", "not", "use"], Preference, 0.8, "User does not use"),
    rule(&["i", "use"], Preference, 0.8, "User uses"),
    rule(&["i", "would", "rather"], Preference, 0.8, "User would rather"),
    rule(&["i", "am", "a", "big", "fan", "of"], Preference, 0.9, "User is a big fan of"),
    rule(&["i", "am", "a", "fan", "of"], Preference, 0.85, "User is a fan of"),
    rule(&["i", "am", "not", "a", "fan", "of"], Preference, 0.85, "User is not a fan of"),
    rule(&["i", "tend", "to"], Preference, 0.7, "User tends to"),
    habit(&["i", "always"], 0.8, "User always"),
    habit(&["i", "never"], 0.8, "User never"),
    habit(&["i", "usually"], 0.7, "User usually"),
    habit(&["i", "often"], 0.7, "User often"),
    // Standing instructions to the assistant.
    rule(&["always"], Preference, 0.6, "User wants the assistant to always"),
    guarded(&["never"], Preference, 0.6, "User wants the assistant to never", Guard::NextNotIn(&["mind"])),
    guarded(
        &["do", "not"],
        Preference,
        0.6,
        "User does not want the assistant to",
        Guard::NextNotIn(NOT_INSTRUCTIONS),
    ),
    rule(&["do", "not", "forget", "to"], Task, 0.8, "User needs to"),
    rule(&["my", "favourite"], Preference, 0.9, "User's favourite"),
    rule(&["my", "favorite"], Preference, 0.9, "User's favorite"),
    // Facts about the user.
    rule(&["my", "name", "is"], Fact, 0.95, "User's name is"),
    rule(&["i", "work", "at"], Fact, 0.9, "User works at"),
    rule(&["i", "work", "for"], Fact, 0.9, "User works for"),
    rule(&["i", "work", "as"], Fact, 0.9, "User works as"),
    rule(&["i", "work", "in"], Fact, 0.85, "User works in"),
    rule(&["i", "am", "working", "at"], Fact, 0.85, "User works at"),
    rule(&["i", "live", "in"], Fact, 0.9, "User lives in"),
    rule(&["i", "am", "based", "in"], Fact, 0.9, "User is based in"),
    rule(&["i", "moved", "to"], Fact, 0.8, "User moved to"),
    rule(&["i", "am", "from"], Fact, 0.85, "User is from"),
    rule(&["i", "come", "from"], Fact, 0.85, "User comes from"),
    rule(&["i", "was", "born", "in"], Fact, 0.9, "User was born in"),
    rule(&["i", "speak"], Fact, 0.85, "User speaks"),
    rule(&["i", "studied"], Fact, 0.8, "User studied"),
    rule(&["i", "graduated", "from"], Fact, 0.85, "User graduated from"),
    rule(&["i", "am", "allergic", "to"], Fact, 0.9, "User is allergic to"),
    guarded(&["i", "am"], Fact, 0.85, "User is", Guard::Trait),
    rule(&["i", "have", "been"], Fact, 0.7, "User has been"),
    guarded(&["i", "have"], Fact, 0.7, "User has", Guard::NextNotIn(PASSING)),
    guarded(&["i", "have", "a"], Fact, 0.6, "User has a", Guard::NextNotIn(PASSING_THINGS)),
    guarded(&["i", "have", "an"], Fact, 0.6, "User has an", Guard::NextNotIn(PASSING_THINGS)),
    rule(&["i", "own"], Fact, 0.8, "User owns"),
    guarded(&["my"], Fact, 0.75, "User's", Guard::CopulaSoon),
    // Tasks.
    rule(&["remind", "me", "to"], Task, 0.9, "User needs to"),
    rule(&["remind", "me", "about"], Task, 0.85, "User wants a reminder about"),
    rule(&["do", "not", "let", "me", "forget", "to"], Task, 0.85, "User needs to"),
    rule(&["remember", "to"], Task, 0.8, "User needs to"),
    guarded(&["i", "need", "to"], Task, 0.8, "User needs to", Guard::NextNotIn(ASKING)),
    guarded(&["i", "have", "to"], Task, 0.8, "User has to", Guard::NextNotIn(ASKING)),
    guarded(&["i", "have", "got", "to"], Task, 0.8, "User has to", Guard::NextNotIn(ASKING)),
    guarded(&["i", "must"], Task, 0.8, "User must", Guard::NextNotIn(ASKING)),
    guarded(&["i", "should"], Task, 0.6, "User should", Guard::NextNotIn(ASKING)),
    rule(&["i", "am", "supposed", "to"], Task, 0.7, "User is supposed to"),
    rule(&["i", "plan", "to"], Task, 0.75, "User plans to"),
    rule(&["i", "am", "planning", "to"], Task, 0.75, "User plans to"),
    guarded(&["i", "want", "to"], Task, 0.5, "User wants to", Guard::NextNotIn(ASKING)),
    guarded(&["i", "would", "like", "to"], Task, 0.5, "User would like to", Guard::NextNotIn(ASKING)),
    rule(&["todo"], Task, 0.85, "User's to-do:"),
    rule(&["to-do"], Task, 0.85, "User's to-do:"),
    // Projects.
    rule(&["i", "am", "building"], Project, 0.85, "User is building"),
    rule(&["i", "am", "working", "on"], Project, 0.85, "User is working on"),
    rule(&["i", "work", "on"], Project, 0.8, "User works on"),
    rule(&["i", "am", "developing"], Project, 0.85, "User is developing"),
    rule(&["i", "am", "creating"], Project, 0.75, "User is creating"),
    rule(&["i", "am", "designing"], Project, 0.75, "User is designing"),
    guarded(&["i", "am", "writing"], Project, 0.7, "User is writing", Guard::NextNotIn(&["to", "this"])),
    rule(&["i", "maintain"], Project, 0.8, "User maintains"),
    rule(&["we", "are", "building"], Project, 0.75, "User's team is building"),
    rule(&["my", "project"], Project, 0.85, "User's project"),
    rule(&["my", "side", "project"], Project, 0.85, "User's side project"),
    rule(&["my", "current", "project"], Project, 0.85, "User's current project"),
    rule(&["my", "pet", "project"], Project, 0.85, "User's pet project"),
    rule(&["my", "app"], Project, 0.8, "User's app"),
    rule(&["my", "startup"], Project, 0.8, "User's startup"),
];

/// Words a clause may open with before its statement ("Oh, and by the way, I …").
pub(super) const FILLERS: &[&[&str]] = &[
    &["by", "the", "way"],
    &["just", "so", "you", "know"],
    &["for", "the", "record"],
    &["keep", "in", "mind", "that"],
    &["note", "that"],
    &["remember", "that"],
    &["can", "you"],
    &["could", "you"],
    &["please"],
    &["also"],
    &["and"],
    &["but"],
    &["so"],
    &["oh"],
    &["well"],
    &["actually"],
    &["honestly"],
    &["btw"],
    &["fyi"],
    &["yeah"],
    &["yes"],
    &["ok"],
    &["okay"],
    &["hi"],
    &["hey"],
    &["hello"],
    &["um"],
    &["anyway"],
    &["plus"],
    &["personally"],
    &["generally"],
];
/// Openers that make what follows uncertain.
pub(super) const HEDGES: &[&[&str]] = &[
    &["i", "think", "that"],
    &["i", "think"],
    &["i", "guess"],
    &["i", "believe"],
    &["i", "suppose"],
    &["i", "feel", "like"],
    &["maybe"],
    &["probably"],
    &["perhaps"],
];
/// Adverbs dropped between "I" and its verb ("I really like").
#[rustfmt::skip]
pub(super) const INTENSIFIERS: &[&str] = &[
    "really", "absolutely", "totally", "definitely", "strongly", "generally", "mostly", "mainly",
    "personally", "also", "still", "just", "actually", "truly", "honestly", "do", "already", "currently",
    "now", "primarily", "exclusively", "basically",
];
/// Adverbs between "I" and its verb that hedge ("I kind of like").
pub(super) const SOFTENERS: &[&[&str]] =
    &[&["kind", "of"], &["sort", "of"], &["kinda"], &["sorta"], &["somewhat"], &["sometimes"]];
/// Contractions expanded before matching: (normalised form, words).
pub(super) const CONTRACTIONS: &[(&str, &[&str])] = &[
    ("i'm", &["I", "am"]),
    ("im", &["I", "am"]),
    ("i've", &["I", "have"]),
    ("i'd", &["I", "would"]),
    ("i'll", &["I", "will"]),
    ("don't", &["do", "not"]),
    ("dont", &["do", "not"]),
    ("doesn't", &["does", "not"]),
    ("didn't", &["did", "not"]),
    ("can't", &["cannot"]),
    ("won't", &["will", "not"]),
    ("we're", &["we", "are"]),
];
/// Words that, opening what follows a pattern, point back into the conversation.
pub(super) const REFERRING: &[&str] =
    &["it", "this", "that", "these", "those", "your", "yours", "you", "them"];
/// Words that open a request to the assistant after a comma.
pub(super) const REQUEST_OPENERS: &[&str] = &[
    "can", "could", "would", "will", "please", "thanks", "thank", "any", "what", "how", "why", "right", "ok",
    "okay", "is", "do", "does",
];
/// Words that never make a tag.
#[rustfmt::skip]
pub(super) const NOT_TAGS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "for", "with", "without", "to", "of", "in", "on", "at", "by",
    "from", "as", "is", "are", "was", "be", "been", "it", "this", "that", "these", "those", "their", "them",
    "they", "theirs", "themselves", "my", "me", "you", "your", "we", "our", "so", "very", "really", "more",
    "most", "than", "when", "while", "because", "if", "not", "all", "any", "some", "much", "many", "lot",
    "lots", "over", "about", "into", "up", "out", "just", "also", "too", "can", "will", "would", "should",
    "do", "does", "use", "get", "make", "go", "have", "has", "had", "like", "want", "need", "every", "day",
    "days", "time", "things", "thing", "stuff", "way", "other", "one", "two", "new", "good", "great", "best",
    "her", "his", "him", "she", "he", "its", "am", "honestly", "please", "after", "before",
];
