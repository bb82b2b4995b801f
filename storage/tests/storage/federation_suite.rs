//! The federation store suite (agents' latest summaries, the merged view, pulls since a
//! cursor, tenants apart, 100,000-hash pushes, concurrent pushes), run on SQLite and on
//! PostgreSQL.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{Database, FederationStore, MergedView, PushOutcome, Summary};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        the_merge_counts_each_agents_latest_summary_once,
        a_pull_since_a_cursor_reads_only_what_changed,
        tenants_do_not_see_each_other,
        agents_are_listed_with_their_latest_summary,
        a_push_of_100k_hashes_is_diffed,
        concurrent_pushes_keep_the_merge_exact,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn FederationStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.federation_store())
}

async fn open_postgres() -> Option<Arc<dyn FederationStore>> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap().federation_store())
}

fn at(minute: i64) -> DateTime<Utc> {
    "2026-02-01T12:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute)
}

fn summary(agent: &str, minute: i64, topics: &[(&str, i64)], hashes: &[&str]) -> Summary {
    Summary {
        agent_id: agent.to_string(),
        timestamp: at(minute),
        topic_counts: topics.iter().map(|(t, n)| (t.to_string(), *n)).collect(),
        fact_hashes: hashes.iter().map(|h| h.to_string()).collect(),
        metadata: json!({"agent": agent, "minute": minute}),
    }
}

async fn push(store: &Arc<dyn FederationStore>, tenant: &str, summary: Summary) -> PushOutcome {
    store.push(tenant, &summary, Utc::now()).await.unwrap()
}

fn topics(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn the_merge_counts_each_agents_latest_summary_once(store: Arc<dyn FederationStore>) {
    let empty = store.pull("t", None).await.unwrap();
    assert_eq!(empty, MergedView::default(), "nothing before the first push");

    assert_eq!(
        push(&store, "t", summary("a", 0, &[("prefs", 5), ("ctx", 3)], &["aa", "bb"])).await,
        PushOutcome::Accepted { cursor: 1 }
    );
    push(&store, "t", summary("b", 1, &[("prefs", 10)], &["bb", "cc"])).await;
    push(&store, "t", summary("c", 2, &[("ctx", 5), ("misc", 0)], &["dd"])).await;
    // a again: its earlier summary no longer counts.
    push(&store, "t", summary("a", 3, &[("prefs", 1)], &["aa", "ee"])).await;
    // b, older than b's stored summary: ignored, nothing changes.
    let ignored = push(&store, "t", summary("b", 0, &[("prefs", 1000)], &["zz"])).await;
    assert_eq!(ignored, PushOutcome::Ignored { stored: at(1) });
    // c with the same timestamp: replaces.
    assert_eq!(
        push(&store, "t", summary("c", 2, &[("ctx", 4), ("misc", 0)], &["dd"])).await,
        PushOutcome::Accepted { cursor: 5 }
    );

    let view = store.pull("t", None).await.unwrap();
    assert_eq!(view.topic_counts, topics(&[("ctx", 4), ("misc", 0), ("prefs", 11)]));
    assert_eq!(view.fact_hashes, strings(&["aa", "bb", "cc", "dd", "ee"]));
    assert_eq!((view.contributing_agents, view.total_topics, view.total_facts), (3, 3, 5));
    assert_eq!(view.last_updated, Some(at(3)));
    assert_eq!(view.cursor, 5, "the ignored push took no seq");
    assert!(view.removed_topics.is_empty() && view.removed_fact_hashes.is_empty());
}

async fn a_pull_since_a_cursor_reads_only_what_changed(store: Arc<dyn FederationStore>) {
    push(&store, "t", summary("a", 0, &[("x", 1), ("y", 2)], &["01", "02"])).await;
    push(&store, "t", summary("b", 0, &[("y", 3)], &["02", "03"])).await;
    let first = store.pull("t", None).await.unwrap();
    assert_eq!(first.cursor, 2);

    let nothing = store.pull("t", Some(first.cursor)).await.unwrap();
    assert!(nothing.topic_counts.is_empty() && nothing.fact_hashes.is_empty(), "{nothing:?}");
    assert!(nothing.removed_topics.is_empty() && nothing.removed_fact_hashes.is_empty());
    assert_eq!(
        (nothing.cursor, nothing.contributing_agents, nothing.total_topics, nothing.total_facts),
        (2, 2, 2, 3)
    );

    // a drops x and 01, keeps y, adds z and 04; "02" stays held by b, so it is no change.
    push(&store, "t", summary("a", 1, &[("y", 2), ("z", 7)], &["02", "04"])).await;
    // b drops 02 (a still holds it) and changes y.
    push(&store, "t", summary("b", 1, &[("y", 4)], &["03"])).await;
    let changes = store.pull("t", Some(first.cursor)).await.unwrap();
    assert_eq!(changes.topic_counts, topics(&[("y", 6), ("z", 7)]));
    assert_eq!(changes.removed_topics, strings(&["x"]));
    assert_eq!(changes.fact_hashes, strings(&["04"]));
    assert_eq!(changes.removed_fact_hashes, strings(&["01"]));
    assert_eq!((changes.cursor, changes.total_topics, changes.total_facts), (4, 2, 3));

    // A removed hash that comes back is reported as present again, no longer removed.
    push(&store, "t", summary("b", 2, &[("y", 4)], &["03", "01"])).await;
    let again = store.pull("t", Some(changes.cursor)).await.unwrap();
    assert_eq!((again.fact_hashes.clone(), again.removed_fact_hashes.clone()), (strings(&["01"]), vec![]));
    let since_start = store.pull("t", Some(0)).await.unwrap();
    assert_eq!(since_start.fact_hashes, strings(&["01", "02", "03", "04"]));
    assert_eq!(since_start.removed_topics, strings(&["x"]));
    assert_eq!(store.pull("t", None).await.unwrap().fact_hashes, since_start.fact_hashes);
}

async fn tenants_do_not_see_each_other(store: Arc<dyn FederationStore>) {
    push(&store, "org:one", summary("a", 0, &[("secret", 1)], &["aa"])).await;
    push(&store, "user:two", summary("a", 5, &[("other", 2)], &["bb"])).await;
    // The same agent id in another tenant is another agent: this older push is not ignored.
    assert!(matches!(
        push(&store, "user:two", summary("a", 6, &[], &[])).await,
        PushOutcome::Accepted { .. }
    ));
    assert!(matches!(
        push(&store, "org:one", summary("a", 1, &[("secret", 2)], &["aa"])).await,
        PushOutcome::Accepted { .. }
    ));
    let one = store.pull("org:one", None).await.unwrap();
    let two = store.pull("user:two", None).await.unwrap();
    assert_eq!(
        (one.topic_counts, one.fact_hashes, one.cursor),
        (topics(&[("secret", 2)]), strings(&["aa"]), 2)
    );
    assert_eq!((two.topic_counts.len(), two.fact_hashes.len(), two.cursor), (0, 0, 2));
    assert_eq!(store.agents("org:one").await.unwrap().len(), 1);
    assert!(store.agents("nobody").await.unwrap().is_empty());
}

async fn agents_are_listed_with_their_latest_summary(store: Arc<dyn FederationStore>) {
    push(&store, "t", summary("b", 0, &[("x", 1)], &["aa"])).await;
    let received: DateTime<Utc> = "2026-03-01T08:00:00.250Z".parse().unwrap();
    store.push("t", &summary("a", 4, &[("x", 1), ("y", 2)], &["aa", "bb", "cc"]), received).await.unwrap();
    let agents = store.agents("t").await.unwrap();
    let ids: Vec<&str> = agents.iter().map(|a| a.agent_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    let a = &agents[0];
    assert_eq!((a.timestamp, a.last_push, a.topics, a.facts), (at(4), received, 2, 3));
    assert_eq!(a.metadata, json!({"agent": "a", "minute": 4}));
}

fn hashes(range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{:064x}", u64::from(i) * 0x9e37_79b9)).collect()
}

async fn a_push_of_100k_hashes_is_diffed(store: Arc<dyn FederationStore>) {
    let first = hashes(0..100_000);
    let mut big = summary("big", 0, &[("t", 1)], &[]);
    big.fact_hashes = first.clone();
    push(&store, "t", big.clone()).await;
    push(&store, "t", summary("small", 0, &[], &[&first[5]])).await;
    let view = store.pull("t", None).await.unwrap();
    assert_eq!((view.fact_hashes.len(), view.total_facts), (100_000, 100_000));
    assert_eq!(view.fact_hashes.iter().collect::<BTreeSet<_>>(), first.iter().collect::<BTreeSet<_>>());

    // Half of them swapped for new ones.
    big.timestamp = at(1);
    big.fact_hashes = hashes(50_000..150_000);
    push(&store, "t", big).await;
    let changes = store.pull("t", Some(view.cursor)).await.unwrap();
    assert_eq!(
        changes.fact_hashes,
        hashes(100_000..150_000).into_iter().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>()
    );
    let mut removed: Vec<String> = hashes(0..50_000).into_iter().filter(|h| *h != first[5]).collect();
    removed.sort();
    assert_eq!(changes.removed_fact_hashes, removed, "the hash `small` holds stays");
    assert_eq!(changes.total_facts, 100_001);
}

async fn concurrent_pushes_keep_the_merge_exact(store: Arc<dyn FederationStore>) {
    let tasks: Vec<_> = (0..8)
        .map(|agent| {
            let store = store.clone();
            tokio::spawn(async move {
                for round in 0..5_i64 {
                    let hashes: Vec<String> =
                        (0..50).map(|i| format!("{:x}", (agent * 7 + round + i) % 90)).collect();
                    let hashes: Vec<&str> = hashes.iter().map(String::as_str).collect();
                    let s = summary(
                        &format!("agent-{agent}"),
                        round,
                        &[("shared", round + 1), ("own", agent)],
                        &hashes,
                    );
                    store.push("t", &s, Utc::now()).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let view = store.pull("t", None).await.unwrap();
    let expected: BTreeSet<String> =
        (0..8).flat_map(|agent| (0..50).map(move |i| format!("{:x}", (agent * 7 + 4 + i) % 90))).collect();
    assert_eq!(view.fact_hashes, expected.into_iter().collect::<Vec<_>>());
    assert_eq!(view.topic_counts, topics(&[("own", (0..8).sum()), ("shared", 8 * 5)]));
    assert_eq!(
        (view.cursor, view.contributing_agents, view.total_facts),
        (40, 8, view.fact_hashes.len() as i64)
    );
}
