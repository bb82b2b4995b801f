//! The blob sync index suite, run on SQLite and PostgreSQL: settling writes in and out of
//! order, versions kept and pruned, change cursors under concurrent writers, pending writes
//! and tombstone purges.

use std::sync::{Arc, Mutex};

use chrono::{Duration, Utc};
use futures::FutureExt;
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{BlobIndexStore, Database, Observed, PathState, Transition};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        a_hint_from_the_indexed_state_is_applied,
        a_hint_that_arrives_late_defers_to_the_store,
        deletes_become_tombstones_and_versions_are_pruned,
        concurrent_settles_give_each_change_one_cursor,
        pending_writes_are_listed_once_stale,
        purging_a_tombstone_raises_the_purged_cursor,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn BlobIndexStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.blob_index())
}

async fn open_postgres() -> Option<Arc<dyn BlobIndexStore>> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap().blob_index())
}

fn object(md5: &str) -> Observed {
    Observed {
        md5: md5.to_string(),
        size: 3,
        last_modified: Utc::now(),
        content_type: Some("text/plain".into()),
    }
}

fn write(from: Option<&str>, to: &str) -> Transition {
    Transition {
        from: from.map_or(PathState::Absent, |m| PathState::Live(m.to_string())),
        to: Some(object(to)),
    }
}

/// A blob store stand-in for `settle`'s look at the store: answers what it is set to, and
/// counts the looks.
#[derive(Clone, Default)]
struct StoreView {
    holds: Arc<Mutex<Option<String>>>,
    looks: Arc<Mutex<u32>>,
}

impl StoreView {
    fn set(&self, md5: Option<&str>) {
        *self.holds.lock().unwrap() = md5.map(str::to_string);
    }

    fn looks(&self) -> u32 {
        *self.looks.lock().unwrap()
    }

    fn head(
        &self,
    ) -> impl Fn() -> futures::future::BoxFuture<'static, storage::StoreResult<Option<Observed>>> + Send + Sync
    {
        let view = self.clone();
        move || {
            *view.looks.lock().unwrap() += 1;
            let held = view.holds.lock().unwrap().clone();
            async move { Ok(held.map(|m| object(&m))) }.boxed()
        }
    }
}

async fn a_hint_from_the_indexed_state_is_applied(store: Arc<dyn BlobIndexStore>) {
    let view = StoreView::default();
    let head = view.head();
    let created = store.settle("ns", "a.md", Some(&write(None, "m1")), &head, 10).await.unwrap();
    assert!(created.changed);
    let entry = created.entry.unwrap();
    assert_eq!((entry.md5.as_str(), entry.version, entry.is_deleted), ("m1", 1, false));
    assert_eq!(entry.content_type.as_deref(), Some("text/plain"));
    let updated = store.settle("ns", "a.md", Some(&write(Some("m1"), "m2")), &head, 10).await.unwrap();
    assert_eq!(updated.entry.as_ref().unwrap().md5, "m2");
    assert!(updated.entry.unwrap().seq > entry.seq, "each change takes a later cursor");
    assert_eq!(view.looks(), 0, "hints in order need no look at the store");
}

async fn a_hint_that_arrives_late_defers_to_the_store(store: Arc<dyn BlobIndexStore>) {
    let view = StoreView::default();
    let head = view.head();
    store.settle("ns", "race.md", Some(&write(None, "base")), &head, 10).await.unwrap();
    // The store went base -> A -> B; B's settle arrives first, A's after it.
    view.set(Some("B"));
    let b_first = store.settle("ns", "race.md", Some(&write(Some("A"), "B")), &head, 10).await.unwrap();
    assert_eq!(b_first.entry.unwrap().md5, "B", "B's hint did not match, so the store was read");
    let a_late = store.settle("ns", "race.md", Some(&write(Some("base"), "A")), &head, 10).await.unwrap();
    assert!(!a_late.changed, "A's late hint does not roll the index back");
    assert_eq!(store.get("ns", "race.md").await.unwrap().unwrap().md5, "B");
    assert_eq!(view.looks(), 2);
}

async fn deletes_become_tombstones_and_versions_are_pruned(store: Arc<dyn BlobIndexStore>) {
    let view = StoreView::default();
    let head = view.head();
    let md5s = ["v1", "v2", "v3", "v4"];
    store.settle("ns", "doc", Some(&write(None, md5s[0])), &head, 3).await.unwrap();
    let mut pruned = Vec::new();
    for pair in md5s.windows(2) {
        pruned.extend(
            store.settle("ns", "doc", Some(&write(Some(pair[0]), pair[1])), &head, 3).await.unwrap().pruned,
        );
    }
    assert_eq!(pruned, vec!["v1".to_string()], "only the version beyond the kept three goes");
    let deleted = Transition { from: PathState::Live("v4".into()), to: None };
    let settled = store.settle("ns", "doc", Some(&deleted), &head, 3).await.unwrap();
    let tombstone = settled.entry.unwrap();
    assert!(tombstone.is_deleted && tombstone.md5 == "v4" && tombstone.version == 5);
    assert_eq!(settled.pruned, vec!["v2".to_string()]);
    let versions: Vec<(i64, bool)> =
        store.versions("ns", "doc").await.unwrap().iter().map(|v| (v.version, v.is_deleted)).collect();
    assert_eq!(versions, vec![(5, true), (4, false), (3, false)]);
    // Deleting again, or a look that finds nothing, changes nothing.
    assert!(!store.settle("ns", "doc", None, &head, 3).await.unwrap().changed);
    // Re-created from the tombstone.
    let again = store.settle("ns", "doc", Some(&write(None, "v5")), &head, 3).await.unwrap();
    assert_eq!(again.entry.map(|e| (e.is_deleted, e.version)), Some((false, 6)));
}

async fn concurrent_settles_give_each_change_one_cursor(store: Arc<dyn BlobIndexStore>) {
    let view = StoreView::default();
    let writers = (0..24).map(|i| {
        let (store, view) = (store.clone(), view.clone());
        async move {
            let head = view.head();
            store.settle("busy", &format!("f{i}"), Some(&write(None, "x")), &head, 10).await.unwrap()
        }
    });
    let reader = {
        let store = store.clone();
        async move {
            // Follow the cursor while the writers run; every change must be seen exactly once.
            let mut seen = Vec::new();
            let mut cursor = 0;
            for _ in 0..200 {
                let page = store.changes("busy", cursor, 5).await.unwrap();
                seen.extend(page.entries.iter().map(|e| e.path.clone()));
                cursor = page.cursor;
                if seen.len() == 24 {
                    break;
                }
                tokio::task::yield_now().await;
            }
            (seen, cursor)
        }
    };
    let (_, (mut seen, cursor)) = tokio::join!(futures::future::join_all(writers), reader);
    let rest = store.changes("busy", cursor, 100).await.unwrap();
    seen.extend(rest.entries.iter().map(|e| e.path.clone()));
    let total = seen.len();
    seen.sort();
    seen.dedup();
    assert_eq!((total, seen.len()), (24, 24), "each change seen once: {seen:?}");
}

async fn pending_writes_are_listed_once_stale(store: Arc<dyn BlobIndexStore>) {
    let id = store.begin_write("ns", "p.md").await.unwrap();
    assert!(store.stale_writes(Utc::now() - Duration::minutes(1), 10).await.unwrap().is_empty());
    let stale = store.stale_writes(Utc::now() + Duration::seconds(1), 10).await.unwrap();
    assert_eq!(stale, vec![(id.clone(), "ns".to_string(), "p.md".to_string())]);
    store.end_write(&id).await.unwrap();
    assert!(store.stale_writes(Utc::now() + Duration::seconds(1), 10).await.unwrap().is_empty());
}

async fn purging_a_tombstone_raises_the_purged_cursor(store: Arc<dyn BlobIndexStore>) {
    let view = StoreView::default();
    let head = view.head();
    store.settle("gc", "old", Some(&write(None, "o")), &head, 10).await.unwrap();
    store.settle("gc", "live", Some(&write(None, "l")), &head, 10).await.unwrap();
    store
        .settle("gc", "old", Some(&Transition { from: PathState::Live("o".into()), to: None }), &head, 10)
        .await
        .unwrap();
    assert!(
        store.purge_tombstones(Utc::now() - Duration::days(1), None).await.unwrap().is_empty(),
        "too young"
    );
    let purged = store.purge_tombstones(Utc::now() + Duration::seconds(1), Some("gc")).await.unwrap();
    assert_eq!(purged, vec![("gc".to_string(), "old".to_string())]);
    assert!(store.get("gc", "old").await.unwrap().is_none());
    assert!(store.versions("gc", "old").await.unwrap().is_empty());
    let page = store.changes("gc", 0, 100).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(page.purged_seq >= 3, "{}", page.purged_seq);
}
