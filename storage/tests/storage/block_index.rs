//! The git memory block index (tantivy in a directory): stemming and stop words, strength
//! weighting, no zero-score filler, incremental updates, persistence and bounds.

use storage::StoreError;
use storage::git_memory::blocks::Strength;
use storage::git_memory::index::{BlockIndex, FileChange, entity_of};

const MOM: &str = "# Mom\n/START\n### Family [Strength: High]\nWent running with my mother every Sunday.\n[ALWAYS_LOAD]\n/END\nnot indexed: running\n/START\n### Cooking\nMom bakes bread.\n/END\n";
const GYM: &str = "/START\n### Fitness\nWent running at the gym; mothers' day plans.\n/END\n";

fn index_in(dir: &tempfile::TempDir) -> BlockIndex {
    BlockIndex::open(&dir.path().join("index")).unwrap()
}

fn seeded(dir: &tempfile::TempDir) -> BlockIndex {
    let index = index_in(dir);
    let stats = index.rebuild([("memories/people/mom.md", MOM), ("memories/contexts/gym.md", GYM)]).unwrap();
    assert_eq!(stats.total_blocks, 3);
    index
}

#[test]
fn stems_drop_stop_words_and_never_pad_with_misses() {
    let dir = tempfile::tempdir().unwrap();
    let index = seeded(&dir);
    let hits = index.search("runs", 10).unwrap();
    assert_eq!(
        hits.len(),
        2,
        "running ~ runs in both files, and text outside blocks is not indexed: {hits:?}"
    );
    let hits = index.search("mothers", 10).unwrap();
    assert!(hits.iter().any(|h| h.entity == "mom") && hits.iter().any(|h| h.entity == "gym"), "{hits:?}");
    let stop = index.search("the with", 10).unwrap();
    assert!(stop.is_empty(), "stop words alone match nothing: {stop:?}");
    assert!(index.search("zebra", 5).unwrap().is_empty(), "no zero-score filler");
    assert!(
        index.search("health: (fitness \"unbalanced", 5).is_ok(),
        "there is no query syntax to get wrong"
    );
    assert!(index.search("*", 5).unwrap().is_empty(), "`*` is not a wildcard");
    assert!(index.search("text:bread", 5).unwrap().len() == 1, "nor is a field name special");
}

#[test]
fn strength_multiplies_the_score() {
    let dir = tempfile::tempdir().unwrap();
    let index = index_in(&dir);
    let block =
        |strength: &str| format!("/START\n### Note [Strength: {strength}]\nquarterly budget review\n/END\n");
    let (high, low, medium) = (block("High"), block("Low"), block("Medium"));
    index.rebuild([("a.md", low.as_str()), ("b.md", high.as_str()), ("c.md", medium.as_str())]).unwrap();
    let hits = index.search("budget", 3).unwrap();
    let order: Vec<&str> = hits.iter().map(|h| h.entity.as_str()).collect();
    assert_eq!(order, ["b", "c", "a"]);
    assert_eq!(hits[0].strength, Strength::High);
    assert!((hits[0].score / hits[2].score - 1.5).abs() < 1e-3, "{hits:?}");
    assert!((hits[1].score / hits[2].score - 1.2).abs() < 1e-3, "{hits:?}");
}

#[test]
fn changes_reindex_whole_files_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let index = seeded(&dir);
    let new_mom = "/START\n### Family\nMom moved to Lisbon.\n/END\n";
    index
        .apply(&[
            FileChange::Upsert { file: "memories/people/mom.md", markdown: new_mom },
            FileChange::Remove { file: "memories/contexts/gym.md" },
        ])
        .unwrap();
    assert!(index.search("running", 10).unwrap().is_empty(), "old blocks are gone");
    assert_eq!(index.search("lisbon", 10).unwrap()[0].file, "memories/people/mom.md");
    let stats = index.stats().unwrap();
    assert_eq!((stats.total_blocks, stats.avg_tokens), (1, 6.0));
    drop(index);

    let reopened = index_in(&dir);
    assert_eq!(reopened.search("lisbon", 1).unwrap().len(), 1, "kept on disk");
    assert_eq!(reopened.stats().unwrap().total_blocks, 1);
}

#[test]
fn k_is_bounded_and_core_blocks_come_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let index = seeded(&dir);
    for k in [0, 101] {
        assert!(matches!(index.search("mom", k), Err(StoreError::InvalidKey(_))), "k = {k}");
    }
    assert_eq!(index.search("mom", 100).unwrap().len(), 1);
    let core = index.always_load_blocks("memories/people/mom.md").unwrap();
    assert_eq!(core.len(), 1);
    assert_eq!(core[0].heading.as_deref(), Some("Family [Strength: High]"));
    assert!(index.always_load_blocks("memories/contexts/gym.md").unwrap().is_empty());
    assert_eq!(entity_of("timeline/2026-11.md"), "2026-11");
}
