//! What keyword search and duplicate checks compare: a query's search terms (lowercase words
//! without stop words) and a content key (the hash of the normalised content).

use sha2::{Digest, Sha256};

use super::normalized_content;

/// English words too common to help a keyword search (the usual Lucene/Snowball list, plus
/// a few conversational fillers). PostgreSQL's `english` configuration drops its own list.
pub const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "after",
    "again",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "before",
    "being",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "for",
    "from",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yes",
    "ok",
    "okay",
    "please",
    "thanks",
    "also",
    "like",
    "really",
    "much",
    "many",
    "tell",
    "know",
    "something",
    "anything",
    "thing",
    "things",
    "did",
    "does",
    "user",
];

/// At most this many distinct terms of a query are searched.
pub const MAX_TERMS: usize = 32;

/// The words of `query` worth searching for: lowercase runs of letters and digits, stop
/// words and one-letter words dropped, each once, in order, at most [`MAX_TERMS`].
pub fn keyword_terms(query: &str) -> Vec<String> {
    let mut terms: Vec<String> = Vec::new();
    for word in query.split(|c: char| !c.is_alphanumeric()) {
        let word = word.to_lowercase();
        if word.chars().count() < 2 || STOP_WORDS.contains(&word.as_str()) || terms.contains(&word) {
            continue;
        }
        terms.push(word);
        if terms.len() == MAX_TERMS {
            break;
        }
    }
    terms
}

/// The key duplicate checks compare: sha-256 (hex) of the normalised content.
pub fn content_key(content: &str) -> String {
    hex::encode(Sha256::digest(normalized_content(content).as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_drop_stop_words_punctuation_and_repeats() {
        assert_eq!(keyword_terms("What is my favourite colour? My FAVOURITE!"), ["favourite", "colour"]);
        assert_eq!(keyword_terms("dark-mode \"prefs\" OR x"), ["dark", "mode", "prefs"]);
        assert!(keyword_terms("the a of").is_empty());
        assert_eq!(keyword_terms("café 東京"), ["café", "東京"]);
    }

    #[test]
    fn terms_are_capped() {
        let many: String = (0..100).map(|i| format!("word{i} ")).collect();
        assert_eq!(keyword_terms(&many).len(), MAX_TERMS);
    }

    #[test]
    fn content_keys_ignore_case_and_spacing() {
        assert_eq!(content_key("I like  Tea"), content_key("i like tea\n"));
        assert_ne!(content_key("I like tea"), content_key("I like coffee"));
    }
}
