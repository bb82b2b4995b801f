//! The rule-based extractor on realistic conversations, turn splitting, validation of the
//! LLM's items, and the confidence and duplicate filter.

use serde_json::json;
use storage::sql::MemoryType::{self, Fact, Preference, Project, Task};

use super::*;

/// (content, type, confidence, turn) of each fact, for compact assertions.
fn found(text: &str) -> Vec<(String, MemoryType, f64, usize)> {
    rule_based_facts(text)
        .into_iter()
        .map(|f| {
            assert_eq!(f.turn_start, f.turn_end);
            (f.content, f.memory_type, f.confidence, f.turn_start)
        })
        .collect()
}

fn contents(text: &str) -> Vec<String> {
    rule_based_facts(text).into_iter().map(|f| f.content).collect()
}

#[test]
fn the_seed_conversation_yields_a_preference_about_react() {
    let facts = rule_based_facts(
        "User: I love using React for building UIs\nAssistant: React is great for component-based UIs!",
    );
    assert_eq!(facts.len(), 1, "{facts:?}");
    let fact = &facts[0];
    assert_eq!(fact.content, "User loves using React for building UIs");
    assert_eq!(fact.memory_type, Preference);
    assert_eq!(fact.confidence, 0.9);
    assert_eq!(fact.tags, ["react", "uis"]);
    assert_eq!((fact.turn_start, fact.turn_end), (0, 0));
}

#[test]
fn a_long_conversation_gives_each_kind_from_the_users_turns_only() {
    let conversation = "\
User: Hi! My name is Dana and I'm a backend engineer.
Assistant: Nice to meet you, Dana. I love helping engineers.
User: I work at Acme Corp and I live in Lisbon.
I'm building a personal finance tracker in Rust, and I prefer PostgreSQL over MySQL.
Assistant: Sounds like a fun project. Do you need help with the schema?
User: Yes. Also, remind me to renew the TLS certificate on Friday.
I always write tests first. Which ORM should I use?";
    assert_eq!(
        found(conversation),
        vec![
            ("User's name is Dana".into(), Fact, 0.95, 0),
            ("User is a backend engineer".into(), Fact, 0.85, 0),
            ("User works at Acme Corp".into(), Fact, 0.9, 2),
            ("User lives in Lisbon".into(), Fact, 0.9, 2),
            ("User is building a personal finance tracker in Rust".into(), Project, 0.85, 2),
            ("User prefers PostgreSQL over MySQL".into(), Preference, 0.9, 2),
            ("User needs to renew the TLS certificate on Friday".into(), Task, 0.9, 4),
            ("User always writes tests first".into(), Preference, 0.8, 4),
        ]
    );
    let tags = rule_based_facts(conversation).into_iter().map(|f| f.tags).collect::<Vec<_>>();
    assert_eq!(tags[4], ["personal", "finance", "tracker", "rust"]);
    assert_eq!(tags[5], ["postgresql", "mysql"]);
}

#[test]
fn hedges_lower_the_confidence_and_intensifiers_are_dropped() {
    assert_eq!(
        found("User: I think I like Svelte more than Vue. I really hate tabs. I kind of enjoy hiking"),
        vec![
            ("User likes Svelte more than Vue".into(), Preference, 0.5, 0),
            ("User hates tabs".into(), Preference, 0.9, 0),
            ("User enjoys hiking".into(), Preference, 0.5, 0),
        ]
    );
    assert_eq!(found("User: Maybe I love sushi")[0].2, 0.6);
}

#[test]
fn first_person_words_are_turned_into_the_third_person() {
    assert_eq!(
        contents("User: I prefer dark mode because my eyes hurt when I'm tired.\nAssistant: Noted."),
        ["User prefers dark mode because their eyes hurt when they are tired"]
    );
    assert_eq!(
        contents("User: I never eat meat. I usually go to bed early. I always try to stretch"),
        ["User never eats meat", "User usually goes to bed early", "User always tries to stretch"]
    );
    assert_eq!(contents("User: I never drink. I always cry!"), ["User never drinks", "User always cries"]);
    assert_eq!(contents("User: My favourite editor is Helix"), ["User's favourite editor is Helix"]);
    assert_eq!(contents("User: my sister is a nurse in Porto"), ["User's sister is a nurse in Porto"]);
    assert_eq!(contents("User: I don’t like loud offices"), ["User does not like loud offices"]);
}

#[test]
fn questions_chit_chat_and_vague_statements_are_skipped() {
    let none = "\
User: Can you explain how borrowing works?
Do you like Rust?
What should I have for dinner?
I love it! Thanks, I like your idea.
I have a question about lifetimes.
I need to know what a trait object is.
I'm a bit confused.
I'm not sure.
My question is simple.
Assistant: I prefer to keep answers short, and I use examples.";
    assert_eq!(found(none), vec![]);
}

#[test]
fn requests_phrased_as_questions_still_count() {
    assert_eq!(
        found("User: Could you remind me to call the dentist tomorrow?"),
        vec![("User needs to call the dentist tomorrow".into(), Task, 0.9, 0)]
    );
    assert_eq!(
        contents("User: I prefer tabs over spaces, what do you think?"),
        ["User prefers tabs over spaces"]
    );
}

#[test]
fn tasks_and_projects_are_recognised() {
    let text = "\
User: TODO: migrate the blog to Hugo
I need to file my taxes by April 15.
I'm working on an open-source CLI called ripnote
My side project is a mechanical keyboard firmware.
I'm planning to learn Japanese next year.
- I have to pick up my kids at 5";
    assert_eq!(
        found(text),
        vec![
            ("User's to-do: migrate the blog to Hugo".into(), Task, 0.85, 0),
            ("User needs to file their taxes by April 15".into(), Task, 0.8, 0),
            ("User is working on an open-source CLI called ripnote".into(), Project, 0.85, 0),
            ("User's side project is a mechanical keyboard firmware".into(), Project, 0.85, 0),
            ("User plans to learn Japanese next year".into(), Task, 0.75, 0),
            ("User has to pick up their kids at 5".into(), Task, 0.8, 0),
        ]
    );
}

#[test]
fn facts_about_the_user_are_recognised() {
    let text = "Human: I'm vegetarian and I'm allergic to peanuts. I was born in Nairobi; I speak Swahili and \
                English.\nAI: Got it.\nHuman: I have two cats, e.g. Miso and Tofu. I'm originally from Kenya";
    assert_eq!(
        found(text),
        vec![
            ("User is vegetarian".into(), Fact, 0.85, 0),
            ("User is allergic to peanuts".into(), Fact, 0.9, 0),
            ("User was born in Nairobi".into(), Fact, 0.9, 0),
            ("User speaks Swahili and English".into(), Fact, 0.85, 0),
            ("User has two cats, e.g. Miso and Tofu".into(), Fact, 0.7, 2),
            ("User is originally from Kenya".into(), Fact, 0.85, 2),
        ]
    );
}

#[test]
fn code_blocks_and_assistant_turns_are_ignored() {
    let text = "User: Here is my config:\n```\n// I prefer nothing here\nlet x = 1;\n```\nI use Neovim with \
                LazyVim.\nAssistant: I love Neovim too.";
    assert_eq!(contents(text), ["User uses Neovim with LazyVim"]);
}

#[test]
fn text_without_speakers_is_one_user_turn() {
    assert_eq!(
        found("I live in Oslo. I prefer trains to planes."),
        vec![
            ("User lives in Oslo".into(), Fact, 0.9, 0),
            ("User prefers trains to planes".into(), Preference, 0.9, 0)
        ]
    );
    assert_eq!(found(""), vec![]);
}

#[test]
fn turns_split_on_speaker_lines_in_any_case() {
    let turns = split_turns("intro line\nUSER: one\ncontinued\n\nassistant:two\nHuman:   \nAi: three");
    let shape: Vec<(Speaker, &str)> = turns.iter().map(|t| (t.speaker, t.text.as_str())).collect();
    assert_eq!(
        shape,
        [
            (Speaker::Other, "intro line"),
            (Speaker::User, "one\ncontinued"),
            (Speaker::Assistant, "two"),
            (Speaker::Assistant, "three"),
        ]
    );
    assert_eq!(split_turns("Note: I prefer tea")[0].speaker, Speaker::User);
}

#[test]
fn llm_items_are_validated_one_by_one() {
    let valid = json!({"content": " User prefers tea ", "type": "Preference", "confidence": 1.4,
                       "tags": ["Tea", "tea", 3, " drinks "], "turn_start": 0, "turn_end": 1});
    let fact = validate(valid, 2).unwrap();
    assert_eq!(fact.content, "User prefers tea");
    assert_eq!((fact.memory_type, fact.confidence), (Preference, 1.0));
    assert_eq!(fact.tags, ["tea", "drinks"]);
    let defaults = validate(json!({"content": "User is a pilot", "type": "fact"}), 3).unwrap();
    assert_eq!((defaults.confidence, defaults.turn_start, defaults.turn_end), (0.7, 0, 2));
    for invalid in [
        json!({"content": "x", "type": "opinion"}),
        json!({"content": "   ", "type": "fact"}),
        json!({"content": "x".repeat(MAX_CONTENT_CHARS + 1), "type": "fact"}),
        json!({"content": "x", "type": "fact", "turn_start": 0, "turn_end": 2}),
        json!({"content": "x", "type": "fact", "turn_start": 1, "turn_end": 0}),
        json!({"content": "x", "type": "fact", "turn_start": -1}),
        json!({"content": "x", "type": "fact", "confidence": "high"}),
        json!({"type": "fact"}),
        json!("User likes tea"),
    ] {
        assert_eq!(validate(invalid.clone(), 2), None, "{invalid}");
    }
    assert_eq!(validate(json!({"content": "x", "type": "fact"}), 0), None, "no turns");
}

#[test]
fn only_confident_distinct_facts_are_kept() {
    let fact = |content: &str, confidence: f64| CandidateFact {
        content: content.into(),
        memory_type: Preference,
        confidence,
        tags: Vec::new(),
        turn_start: 0,
        turn_end: 0,
    };
    let kept = confident_and_unique(vec![
        fact("User likes tea", 0.6),
        fact("User hates coffee", 0.3),
        fact("user  likes TEA", 0.9),
        fact("User likes tea", 0.5),
        fact("User uses Vim", 0.5),
    ]);
    let kept: Vec<(&str, f64)> = kept.iter().map(|f| (f.content.as_str(), f.confidence)).collect();
    assert_eq!(kept, [("user  likes TEA", 0.9), ("User uses Vim", 0.5)]);
}

#[tokio::test]
async fn extract_facts_without_an_llm_uses_the_rules() {
    let facts = extract_facts(None, "User: I think I have a sailboat. I love sailing. I love sailing!")
        .await
        .unwrap();
    let contents: Vec<&str> = facts.iter().map(|f| f.content.as_str()).collect();
    assert_eq!(contents, ["User loves sailing"], "hedged 0.3 dropped, duplicate merged");
}

#[test]
fn compound_sentences_split_into_statements() {
    assert_eq!(
        contents("User: My favorite color is green, my favourite food is ramen."),
        ["User's favorite color is green", "User's favourite food is ramen"]
    );
    assert_eq!(
        found("User: I think I prefer pandas over polars, but honestly I'm not sure."),
        vec![("User prefers pandas over polars".into(), Preference, 0.6, 0)]
    );
    assert_eq!(
        contents("User: I sometimes use Emacs, and I already work at a bank, and honestly I love it."),
        ["User uses Emacs", "User works at a bank"]
    );
}

#[test]
fn standing_instructions_to_the_assistant_are_preferences() {
    assert_eq!(
        found("User: Always answer in Spanish. Don't use emojis please. Don't worry about it. Never mind."),
        vec![
            ("User wants the assistant to always answer in Spanish".into(), Preference, 0.6, 0),
            ("User does not want the assistant to use emojis".into(), Preference, 0.6, 0),
        ]
    );
}
