//! The semantic memory store suite (CRUD with history, filters and paging, vector and
//! keyword search, the change feed with tombstones, idempotent inserts, concurrent writers),
//! run on SQLite and on PostgreSQL + pgvector.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::memories::keyword_terms as terms;
use storage::sql::{
    BACKLOG_FROM_VECTORS, ChangesFrom, Database, Inserted, ListFrom, Memory, MemoryChange, MemoryFilter,
    MemoryPatch, MemoryScope, MemoryStore, MemoryType, NewMemory,
};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        a_memory_is_created_read_updated_with_history_and_deleted,
        lists_filter_and_page_by_offset_and_cursor,
        semantic_search_ranks_by_cosine_within_the_filter,
        semantic_search_follows_updates_and_deletes,
        keyword_search_stems_and_skips_history,
        the_change_feed_pages_and_reports_deletes,
        inserts_are_idempotent_on_client_ids,
        long_lists_of_ids_and_contents_are_one_call_each,
        concurrent_writers_get_distinct_sequence_numbers,
        bulk_inserts_are_searchable_before_and_after_their_vectors_are_indexed,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn MemoryStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.memory_store())
}

async fn open_postgres() -> Option<Arc<dyn MemoryStore>> {
    Some(open_postgres_at(storage::testing::fresh_postgres_url().await?).await)
}

async fn open_postgres_at(url: String) -> Arc<dyn MemoryStore> {
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Database::connect(&config.backends.database).await.unwrap().memory_store()
}

fn at(minute: i64) -> DateTime<Utc> {
    "2026-03-01T09:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute)
}

fn new(content: &str) -> NewMemory {
    NewMemory {
        id: None,
        content: content.to_string(),
        memory_type: MemoryType::Fact,
        scope: MemoryScope::UserGlobal,
        source_url: None,
        source_platform: None,
        source_timestamp: None,
        source_conversation_id: None,
        confidence: Some(0.9),
        tags: Vec::new(),
        created_at: None,
        provenance: None,
        embedding: None,
    }
}

/// A unit vector in 8 dimensions pointing mostly along `axis`, tilted by `tilt` toward the next.
fn direction(axis: usize, tilt: f32) -> Vec<f32> {
    let mut v = [0.0f32; 8];
    v[axis % 8] = 1.0;
    v[(axis + 1) % 8] = tilt;
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

async fn create(store: &Arc<dyn MemoryStore>, owner: &str, memory: NewMemory) -> Memory {
    match store.insert(owner, vec![memory]).await.unwrap().remove(0) {
        Inserted::Created(memory) => *memory,
        other => panic!("expected a created memory, got {other:?}"),
    }
}

fn ids(memories: &[Memory]) -> Vec<String> {
    memories.iter().map(|m| m.id.clone()).collect()
}

async fn a_memory_is_created_read_updated_with_history_and_deleted(store: Arc<dyn MemoryStore>) {
    let created = create(
        &store,
        "alice",
        NewMemory {
            tags: vec!["ui".into(), "prefs".into()],
            source_platform: Some("chatgpt.com".into()),
            provenance: Some(json!({"conversationId": "c1", "turnStart": 0, "turnEnd": 1})),
            embedding: Some(direction(0, 0.0)),
            memory_type: MemoryType::Preference,
            ..new("I prefer dark mode")
        },
    )
    .await;
    assert_eq!(created.id.len(), 36);
    let read = store.get("alice", &created.id, false).await.unwrap().unwrap();
    assert_eq!(read.content, "I prefer dark mode");
    assert_eq!(read.tags, ["ui", "prefs"]);
    assert_eq!(read.provenance, Some(json!({"conversationId": "c1", "turnStart": 0, "turnEnd": 1})));
    assert_eq!(read.embedding, None, "vectors only on request");
    let with_vector = store.get("alice", &created.id, true).await.unwrap().unwrap();
    assert_eq!(with_vector.embedding.unwrap().len(), 8);
    assert!(store.get("bob", &created.id, false).await.unwrap().is_none(), "another owner sees nothing");

    let retagged = store
        .update("alice", &created.id, MemoryPatch { tags: Some(vec!["ui".into()]), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(retagged.tags, ["ui"]);
    assert!(retagged.seq > created.seq);
    assert!(
        store.history("alice", &created.id).await.unwrap().is_empty(),
        "metadata changes keep no history"
    );
    let unchanged = store
        .update("alice", &created.id, MemoryPatch { tags: Some(vec!["ui".into()]), ..Default::default() })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unchanged.seq, retagged.seq, "a no-op update is not a change");

    let first = store
        .update(
            "alice",
            &created.id,
            MemoryPatch { content: Some("I prefer light mode".into()), ..Default::default() },
        )
        .await
        .unwrap()
        .unwrap();
    let second = store
        .update(
            "alice",
            &created.id,
            MemoryPatch { content: Some("I prefer solarized".into()), ..Default::default() },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.id, created.id, "the live memory keeps its id");
    assert!(second.valid_from >= first.valid_from && second.valid_to.is_none());
    let history = store.history("alice", &created.id).await.unwrap();
    assert_eq!(
        history.iter().map(|m| m.content.as_str()).collect::<Vec<_>>(),
        ["I prefer light mode", "I prefer dark mode"]
    );
    assert!(
        history
            .iter()
            .all(|m| m.superseded_by.as_deref() == Some(created.id.as_str()) && m.valid_to.is_some())
    );
    let old = store.get("alice", &history[1].id, false).await.unwrap().unwrap();
    assert_eq!(old.content, "I prefer dark mode", "history rows are readable by id");
    assert!(
        store
            .update("alice", &history[1].id, MemoryPatch { content: Some("x".into()), ..Default::default() })
            .await
            .unwrap()
            .is_none(),
        "history is not updatable"
    );
    assert_eq!(store.count("alice").await.unwrap(), 1);

    let deleted = store.delete("alice", &created.id).await.unwrap().unwrap();
    assert!(deleted.seq > second.seq);
    assert!(store.get("alice", &created.id, false).await.unwrap().is_none());
    assert!(store.get("alice", &history[0].id, false).await.unwrap().is_none(), "history goes with it");
    assert!(store.delete("alice", &created.id).await.unwrap().is_none());
    assert!(store.update("alice", "missing", MemoryPatch::default()).await.unwrap().is_none());
}

async fn lists_filter_and_page_by_offset_and_cursor(store: Arc<dyn MemoryStore>) {
    let mut batch = Vec::new();
    for i in 0..30i64 {
        batch.push(NewMemory {
            memory_type: if i % 3 == 0 { MemoryType::Task } else { MemoryType::Fact },
            scope: if i % 2 == 0 { MemoryScope::Site } else { MemoryScope::UserGlobal },
            source_platform: Some(if i < 10 { "claude.ai" } else { "chatgpt.com" }.into()),
            tags: match i % 4 {
                0 => vec!["work".into(), "urgent".into()],
                1 => vec!["work".into()],
                2 => vec!["home".into()],
                _ => vec![],
            },
            created_at: Some(at(i / 2)), // pairs share a time: the cursor must break ties by id
            ..new(&format!("memory number {i}"))
        });
    }
    store.insert("carol", batch).await.unwrap();
    store.insert("dave", vec![new("not carol's")]).await.unwrap();
    let all = store.list("carol", &MemoryFilter::default(), &ListFrom::Offset(0), 100).await.unwrap();
    assert_eq!(all.len(), 30);
    assert!(
        all.windows(2).all(|w| (w[0].created_at, &w[0].id) > (w[1].created_at, &w[1].id)),
        "newest first"
    );

    let mut by_cursor = Vec::new();
    let mut from = ListFrom::Offset(0);
    loop {
        let page = store.list("carol", &MemoryFilter::default(), &from, 7).await.unwrap();
        let Some(last) = page.last() else { break };
        from = ListFrom::After { created_at: last.created_at, id: last.id.clone() };
        by_cursor.extend(ids(&page));
    }
    assert_eq!(by_cursor, ids(&all), "cursor pages cover everything once, in order");
    let offset_page = store.list("carol", &MemoryFilter::default(), &ListFrom::Offset(7), 7).await.unwrap();
    assert_eq!(ids(&offset_page), ids(&all[7..14]));

    let count = |filter: MemoryFilter| {
        let store = store.clone();
        async move { store.list("carol", &filter, &ListFrom::Offset(0), 100).await.unwrap().len() }
    };
    assert_eq!(count(MemoryFilter { memory_type: Some(MemoryType::Task), ..Default::default() }).await, 10);
    assert_eq!(count(MemoryFilter { scope: Some(MemoryScope::Site), ..Default::default() }).await, 15);
    assert_eq!(count(MemoryFilter { platform: Some("claude.ai".into()), ..Default::default() }).await, 10);
    let work = MemoryFilter { tags_all: vec!["work".into()], ..Default::default() };
    assert_eq!(count(work).await, 16);
    let work_and_urgent =
        MemoryFilter { tags_all: vec!["work".into(), "urgent".into()], ..Default::default() };
    assert_eq!(count(work_and_urgent).await, 8);
    let urgent_or_home =
        MemoryFilter { tags_any: vec!["urgent".into(), "home".into()], ..Default::default() };
    assert_eq!(count(urgent_or_home).await, 15);
    let window = MemoryFilter { start: Some(at(2)), end: Some(at(4)), ..Default::default() };
    assert_eq!(count(window).await, 6, "created 2..=4 minutes in: items 4..=9");
}

async fn semantic_search_ranks_by_cosine_within_the_filter(store: Arc<dyn MemoryStore>) {
    let mut batch = Vec::new();
    for axis in 0..8 {
        for tilt in [0.1f32, 0.5] {
            batch.push(NewMemory {
                embedding: Some(direction(axis, tilt)),
                tags: vec![format!("axis{axis}")],
                memory_type: if tilt < 0.3 { MemoryType::Fact } else { MemoryType::Preference },
                ..new(&format!("axis {axis} tilt {tilt}"))
            });
        }
    }
    batch.push(new("no vector yet"));
    store.insert("erin", batch).await.unwrap();
    store
        .insert("frank", vec![NewMemory { embedding: Some(direction(3, 0.0)), ..new("frank's") }])
        .await
        .unwrap();

    let hits = store.semantic("erin", &direction(3, 0.0), &MemoryFilter::default(), 3).await.unwrap();
    let contents: Vec<&str> = hits.iter().map(|h| h.memory.content.as_str()).collect();
    assert_eq!(contents, ["axis 3 tilt 0.1", "axis 3 tilt 0.5", "axis 2 tilt 0.5"]);
    assert!(hits[0].score > hits[1].score && hits[1].score > hits[2].score);
    assert!((hits[0].score - f64::from(direction(3, 0.1)[3])).abs() < 1e-4, "the score is the cosine");

    let preferences = MemoryFilter { memory_type: Some(MemoryType::Preference), ..Default::default() };
    let hits = store.semantic("erin", &direction(3, 0.0), &preferences, 2).await.unwrap();
    assert!(hits.iter().all(|h| h.memory.memory_type == MemoryType::Preference));
    assert_eq!(hits[0].memory.content, "axis 3 tilt 0.5");
    let far_tag = MemoryFilter { tags_all: vec!["axis7".into()], ..Default::default() };
    let hits = store.semantic("erin", &direction(3, 0.0), &far_tag, 5).await.unwrap();
    assert_eq!(hits.len(), 2, "a filter far from the query still fills the page");
    let all = store.semantic("erin", &direction(0, 0.0), &MemoryFilter::default(), 100).await.unwrap();
    assert_eq!(all.len(), 16, "only memories with a vector, never another owner's");
}

async fn semantic_search_follows_updates_and_deletes(store: Arc<dyn MemoryStore>) {
    let a = create(&store, "gina", NewMemory { embedding: Some(direction(1, 0.0)), ..new("a") }).await;
    let b = create(&store, "gina", NewMemory { embedding: Some(direction(2, 0.0)), ..new("b") }).await;
    let top = |store: Arc<dyn MemoryStore>, axis| async move {
        store.semantic("gina", &direction(axis, 0.0), &MemoryFilter::default(), 1).await.unwrap()[0]
            .memory
            .id
            .clone()
    };
    assert_eq!(top(store.clone(), 1).await, a.id);
    store
        .update("gina", &b.id, MemoryPatch { embedding: Some(direction(1, 0.01)), ..Default::default() })
        .await
        .unwrap();
    store.delete("gina", &a.id).await.unwrap();
    assert_eq!(top(store.clone(), 1).await, b.id, "the search sees the new vector and not the deleted one");
    store
        .update("gina", &b.id, MemoryPatch { content: Some("b changed".into()), ..Default::default() })
        .await
        .unwrap();
    assert!(
        store.semantic("gina", &direction(1, 0.0), &MemoryFilter::default(), 5).await.unwrap().is_empty(),
        "changed content without a new vector drops the old vector"
    );
    store
        .update("gina", &b.id, MemoryPatch { embedding: Some(direction(5, 0.0)), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(top(store.clone(), 5).await, b.id);
}

async fn keyword_search_stems_and_skips_history(store: Arc<dyn MemoryStore>) {
    let marathon = create(&store, "hana", new("I run a marathon every spring")).await;
    create(&store, "hana", new("My favourite editor is Helix")).await;
    create(&store, "hana", new("Running shoes wear out after 800 km; marathons need good ones")).await;
    create(&store, "ivan", new("I also run marathons")).await;
    let hits =
        store.keyword("hana", &terms("running marathons"), &MemoryFilter::default(), 10).await.unwrap();
    let contents: Vec<&str> = hits.iter().map(|h| h.memory.content.as_str()).collect();
    assert_eq!(
        contents,
        ["I run a marathon every spring", "Running shoes wear out after 800 km; marathons need good ones"]
    );
    let hits =
        store.keyword("hana", &terms("the shoes I run in"), &MemoryFilter::default(), 10).await.unwrap();
    let contents: Vec<&str> = hits.iter().map(|h| h.memory.content.as_str()).collect();
    assert_eq!(contents.len(), 2, "{contents:?}");
    assert!(contents[0].starts_with("Running shoes"), "both words match: it ranks first ({contents:?})");
    assert!(hits[0].score > hits[1].score && hits[1].score > 0.0);
    assert!(
        store.keyword("hana", &terms("the of and"), &MemoryFilter::default(), 10).await.unwrap().is_empty()
    );

    store
        .update(
            "hana",
            &marathon.id,
            MemoryPatch { content: Some("I swim every spring".into()), ..Default::default() },
        )
        .await
        .unwrap();
    let hits = store.keyword("hana", &terms("marathon"), &MemoryFilter::default(), 10).await.unwrap();
    assert_eq!(hits.len(), 1, "the replaced content is history and not found");
    let hits = store.keyword("hana", &terms("swimming"), &MemoryFilter::default(), 10).await.unwrap();
    assert_eq!(
        ids(&hits.into_iter().map(|h| h.memory).collect::<Vec<_>>()),
        std::slice::from_ref(&marathon.id)
    );
    let tasks = MemoryFilter { memory_type: Some(MemoryType::Task), ..Default::default() };
    assert!(store.keyword("hana", &terms("swim"), &tasks, 10).await.unwrap().is_empty());
}

async fn the_change_feed_pages_and_reports_deletes(store: Arc<dyn MemoryStore>) {
    let mut made = Vec::new();
    for i in 0..5 {
        made.push(create(&store, "jack", new(&format!("change {i}"))).await);
    }
    let start = store.changes("jack", ChangesFrom::Seq(0), 2).await.unwrap();
    assert_eq!(start.changes.len(), 2);
    assert!(start.has_more);
    let rest = store.changes("jack", ChangesFrom::Seq(start.cursor), 100).await.unwrap();
    assert_eq!(rest.changes.len(), 3);
    assert!(!rest.has_more);
    let quiet = store.changes("jack", ChangesFrom::Seq(rest.cursor), 100).await.unwrap();
    assert!(quiet.changes.is_empty() && quiet.cursor == rest.cursor);

    store.delete("jack", &made[1].id).await.unwrap();
    store
        .update("jack", &made[3].id, MemoryPatch { content: Some("changed".into()), ..Default::default() })
        .await
        .unwrap();
    let next = store.changes("jack", ChangesFrom::Seq(rest.cursor), 100).await.unwrap();
    match &next.changes[..] {
        [MemoryChange::Deleted { id, .. }, MemoryChange::Upserted(updated)] => {
            assert_eq!(id, &made[1].id);
            assert_eq!(updated.content, "changed");
        }
        other => panic!("expected a delete then an update, got {other:?}"),
    }

    let stamp = made[2].updated_at;
    let after = store.changes("jack", ChangesFrom::UpdatedAfter(stamp), 100).await.unwrap();
    assert!(
        after.changes.iter().all(|c| match c {
            MemoryChange::Upserted(m) => m.updated_at > stamp,
            MemoryChange::Deleted { deleted_at, .. } => *deleted_at > stamp,
        }),
        "strictly after"
    );
    assert!(after.changes.iter().any(|c| matches!(c, MemoryChange::Deleted { .. })), "deletes are reported");
    assert_eq!(after.cursor, next.cursor);

    // Re-creating a deleted id replaces its tombstone.
    store.insert("jack", vec![NewMemory { id: Some(made[1].id.clone()), ..new("back") }]).await.unwrap();
    let feed = store.changes("jack", ChangesFrom::Seq(0), 100).await.unwrap();
    let about_it: Vec<&MemoryChange> = feed
        .changes
        .iter()
        .filter(|c| match c {
            MemoryChange::Upserted(m) => m.id == made[1].id,
            MemoryChange::Deleted { id, .. } => *id == made[1].id,
        })
        .collect();
    assert!(matches!(about_it[..], [MemoryChange::Upserted(_)]), "{about_it:?}");
    assert!(store.changes("nobody", ChangesFrom::Seq(0), 10).await.unwrap().changes.is_empty());
}

async fn inserts_are_idempotent_on_client_ids(store: Arc<dyn MemoryStore>) {
    let batch = vec![
        NewMemory { id: Some("client-1".into()), created_at: Some(at(-600)), ..new("imported one") },
        NewMemory { id: Some("client-2".into()), ..new("imported two") },
        NewMemory { id: Some("client-1".into()), ..new("same id later in the batch") },
    ];
    let outcomes = store.insert("kim", batch.clone()).await.unwrap();
    assert!(matches!(&outcomes[0], Inserted::Created(m) if m.id == "client-1" && m.created_at == at(-600)));
    assert!(matches!(&outcomes[2], Inserted::ExistingId(id) if id == "client-1"));
    let again = store.insert("kim", batch).await.unwrap();
    assert!(again.iter().all(|o| matches!(o, Inserted::ExistingId(_))));
    assert_eq!(store.count("kim").await.unwrap(), 2);
    store.insert("lee", vec![NewMemory { id: Some("client-1".into()), ..new("lee's own") }]).await.unwrap();
    assert_eq!(store.get("lee", "client-1", false).await.unwrap().unwrap().content, "lee's own");

    let found =
        store.existing_contents("kim", &["IMPORTED  one".into(), "never stored".into()]).await.unwrap();
    assert_eq!(found, [storage::sql::memories::content_key("imported one")]);

    let before = store.get("kim", "client-2", false).await.unwrap().unwrap();
    store.record_access("kim", &["client-2".into(), "client-2".into(), "never stored".into()]).await.unwrap();
    store.record_access("kim", &["client-2".into()]).await.unwrap();
    let after = store.get("kim", "client-2", false).await.unwrap().unwrap();
    assert_eq!(after.access_count, before.access_count + 2);
    assert!(after.seq == before.seq && after.updated_at == before.updated_at);
    assert!(store.get("kim", "never stored", false).await.unwrap().is_none());
    // An update keeps the reads counted so far and counts on from there.
    let patch = MemoryPatch { confidence: Some(Some(0.25)), ..MemoryPatch::default() };
    let updated = store.update("kim", "client-2", patch).await.unwrap().unwrap();
    assert_eq!(updated.access_count, before.access_count + 2);
    store.record_access("kim", &["client-2".into()]).await.unwrap();
    assert_eq!(
        store.get("kim", "client-2", false).await.unwrap().unwrap().access_count,
        before.access_count + 3
    );

    let exported = store.export_page("kim", None, 1, true).await.unwrap();
    assert_eq!(ids(&exported), ["client-1"]);
    assert_eq!(ids(&store.export_page("kim", Some("client-1"), 10, false).await.unwrap()), ["client-2"]);
}

/// Thousands of client ids, contents and reads in one call each, on every backend; ids named
/// twice, or not the owner's, count once or not at all.
async fn long_lists_of_ids_and_contents_are_one_call_each(store: Arc<dyn MemoryStore>) {
    const COUNT: usize = 3_000;
    let batch: Vec<NewMemory> = (0..COUNT)
        .map(|i| NewMemory { id: Some(format!("bulk-{i:05}")), ..new(&format!("bulk fact number {i}")) })
        .collect();
    let first = store.insert("nia", batch.clone()).await.unwrap();
    assert!(first.iter().all(|o| matches!(o, Inserted::Created(_))));
    let again = store.insert("nia", batch.clone()).await.unwrap();
    assert!(again.iter().all(|o| matches!(o, Inserted::ExistingId(_))), "every id is taken now");
    assert_eq!(store.count("nia").await.unwrap(), COUNT as i64);

    let mut contents: Vec<String> = batch.iter().map(|m| m.content.to_uppercase()).collect();
    contents.push("never stored".into());
    let found: HashSet<String> =
        store.existing_contents("nia", &contents).await.unwrap().into_iter().collect();
    assert_eq!(found.len(), COUNT);
    assert!(store.existing_contents("omar", &contents).await.unwrap().is_empty(), "another owner's");

    let mut reads: Vec<String> = batch.iter().filter_map(|m| m.id.clone()).collect();
    reads.extend(reads.clone());
    store.record_access("nia", &reads).await.unwrap();
    store.record_access("omar", &reads).await.unwrap();
    let page = store.export_page("nia", None, COUNT as i64, false).await.unwrap();
    assert_eq!(page.len(), COUNT);
    assert!(page.iter().all(|m| m.access_count == 1), "one read each, however often named");
}

async fn concurrent_writers_get_distinct_sequence_numbers(store: Arc<dyn MemoryStore>) {
    let writers = (0..8).map(|w| {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                store.insert("mia", vec![new(&format!("writer {w} item {i}"))]).await.unwrap();
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let feed = store.changes("mia", ChangesFrom::Seq(0), 1000).await.unwrap();
    let seqs: HashSet<i64> = feed.changes.iter().map(MemoryChange::seq).collect();
    assert_eq!(seqs.len(), 80);
    assert_eq!(feed.cursor, *seqs.iter().max().unwrap());
}

/// A pseudo-random unit vector in 16 dimensions (xorshift from `seed`).
fn scattered(seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let raw: Vec<f32> = (0..16)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|v| v * v).sum::<f32>().sqrt();
    raw.iter().map(|v| v / norm).collect()
}

/// `count` memories `"<prefix> i"` with scattered vectors, every even one tagged `even`.
fn bulk(prefix: &str, count: usize) -> Vec<NewMemory> {
    (0..count)
        .map(|i| NewMemory {
            embedding: Some(scattered(i as u64)),
            tags: if i % 2 == 0 { vec!["even".into()] } else { Vec::new() },
            ..new(&format!("{prefix} {i}"))
        })
        .collect()
}

async fn bulk_inserts_are_searchable_before_and_after_their_vectors_are_indexed(store: Arc<dyn MemoryStore>) {
    let count = BACKLOG_FROM_VECTORS + 50;
    let inserted = store.insert("kira", bulk("bulk", count)).await.unwrap();
    let bulk_ids: Vec<String> = inserted
        .iter()
        .map(|i| match i {
            Inserted::Created(m) => m.id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    create(&store, "kira", NewMemory { embedding: Some(scattered(9_999)), ..new("single") }).await;
    create(&store, "lars", NewMemory { embedding: Some(scattered(3)), ..new("someone else's") }).await;
    store.delete("kira", &bulk_ids[7]).await.unwrap();

    // The expected answers, by brute force over what kira has.
    let mut vectors: Vec<(String, Vec<f32>)> =
        (0..count).filter(|&i| i != 7).map(|i| (format!("bulk {i}"), scattered(i as u64))).collect();
    vectors.push(("single".into(), scattered(9_999)));
    let exact = |query: &[f32], even_only: bool| -> Vec<String> {
        let mut scored: Vec<(f32, &String)> = vectors
            .iter()
            .filter(|(content, _)| {
                !even_only
                    || content.strip_prefix("bulk ").is_some_and(|i| i.parse::<usize>().unwrap() % 2 == 0)
            })
            .map(|(content, v)| (v.iter().zip(query).map(|(a, b)| a * b).sum(), content))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(5).map(|(_, content)| content.clone()).collect()
    };
    let even = MemoryFilter { tags_all: vec!["even".into()], ..Default::default() };
    let check = |stage: &'static str| {
        let store = store.clone();
        let exact = &exact;
        let even = even.clone();
        async move {
            for seed in [7u64, 5_000, 5_001, 5_002, 9_999] {
                let query = scattered(seed);
                for (filter, even_only) in [(MemoryFilter::default(), false), (even.clone(), true)] {
                    let hits = store.semantic("kira", &query, &filter, 5).await.unwrap();
                    let found: Vec<String> = hits.iter().map(|h| h.memory.content.clone()).collect();
                    assert_eq!(
                        found,
                        exact(&query, even_only),
                        "{stage}: query {seed}, even only {even_only}"
                    );
                }
            }
        }
    };
    check("before indexing").await;
    let pending = store.backlog("kira").await.unwrap();
    assert_eq!(store.index_backlog(Some("kira"), 1_000_000).await.unwrap(), Some(pending as u64));
    assert_eq!(store.backlog("kira").await.unwrap(), 0);
    assert_eq!(store.index_backlog(None, 1_000_000).await.unwrap(), Some(0), "nothing is left for anyone");
    check("after indexing").await;
}

/// PostgreSQL leaves a bulk insert's vectors to the backlog; draining it goes by owner and
/// by batch, one drainer at a time, and never touches a row twice.
#[tokio::test]
async fn postgres_bulk_vectors_wait_for_the_index_owner_by_owner() {
    use sqlx::Connection;
    let Some(url) = storage::testing::fresh_postgres_url().await else { return };
    let store = open_postgres_at(url.clone()).await;
    let count = BACKLOG_FROM_VECTORS + 1;
    store.insert("mia", bulk("mia", count)).await.unwrap();
    store.insert("noor", bulk("noor", count)).await.unwrap();
    store.insert("noor", bulk("few", BACKLOG_FROM_VECTORS)).await.unwrap();
    assert_eq!(store.backlog("mia").await.unwrap(), count as i64);
    assert_eq!(
        store.backlog("noor").await.unwrap(),
        count as i64,
        "a small insert goes straight into the index"
    );
    let mia = store.backlog_span("mia").await.unwrap().expect("mia's vectors wait");
    assert!(
        mia.oldest <= mia.newest && chrono::Utc::now() - mia.newest < chrono::Duration::seconds(60),
        "{mia:?}"
    );
    let noor = store.backlog_span("noor").await.unwrap().expect("noor's vectors wait");
    assert!(mia.newest <= noor.oldest, "noor's insert came later: {mia:?} {noor:?}");
    assert_eq!(store.backlog_span("nobody").await.unwrap(), None, "an owner with nothing waiting");
    // Another drainer at work: this one moves nothing and says it is busy.
    let mut other = sqlx::PgConnection::connect(&url).await.unwrap();
    let mut drainer = other.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('memories_vector_backlog'))")
        .execute(&mut *drainer)
        .await
        .unwrap();
    assert_eq!(store.index_backlog(Some("mia"), 60).await.unwrap(), None);
    drainer.rollback().await.unwrap();
    assert_eq!(store.index_backlog(Some("mia"), 60).await.unwrap(), Some(60));
    assert_eq!(store.backlog("mia").await.unwrap(), count as i64 - 60);
    assert_eq!(store.backlog("noor").await.unwrap(), count as i64);
    assert_eq!(store.index_backlog(None, 1_000_000).await.unwrap(), Some((2 * count - 60) as u64));
    assert_eq!(store.backlog("mia").await.unwrap() + store.backlog("noor").await.unwrap(), 0);
    assert_eq!(store.backlog_span("mia").await.unwrap(), None);
}
