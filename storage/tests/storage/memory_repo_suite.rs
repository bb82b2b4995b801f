//! The git memory record store suite (repo records, sealed GitHub tokens, writer leases),
//! run on SQLite and on PostgreSQL.

use std::sync::Arc;

use chrono::{Duration, Utc};
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{Database, MemoryRepoRecord, MemoryRepoStore, RepoStatus};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        records_are_replaced_and_syncs_recorded,
        a_lease_has_one_holder_until_released_or_expired,
        racing_for_a_lease_has_one_winner,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn MemoryRepoStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.memory_repo_store())
}

async fn open_postgres() -> Option<Arc<dyn MemoryRepoStore>> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap().memory_repo_store())
}

fn record(user_id: &str, url: Option<&str>) -> MemoryRepoRecord {
    let now = Utc::now();
    MemoryRepoRecord {
        user_id: user_id.to_string(),
        repo_url: url.map(str::to_string),
        branch: "main".to_string(),
        sealed_token: url.map(|_| "sealed".to_string()),
        status: RepoStatus::Active,
        last_sync: None,
        last_error: None,
        created_at: now,
        updated_at: now,
    }
}

async fn records_are_replaced_and_syncs_recorded(store: Arc<dyn MemoryRepoStore>) {
    assert_eq!(store.get("alex").await.unwrap(), None);
    store.put(&record("alex", None)).await.unwrap();
    store.put(&record("bo", Some("https://git.example/bo.git"))).await.unwrap();
    store.put(&record("alex", Some("https://git.example/alex.git"))).await.unwrap();
    let alex = store.get("alex").await.unwrap().unwrap();
    assert_eq!(alex.repo_url.as_deref(), Some("https://git.example/alex.git"));
    let remotes: Vec<String> = store.with_remote().await.unwrap().into_iter().map(|r| r.user_id).collect();
    assert_eq!(remotes, ["alex", "bo"]);

    let at = Utc::now();
    store
        .record_sync("alex", RepoStatus::Conflict, Some("index.md changed on both sides"), at)
        .await
        .unwrap();
    let alex = store.get("alex").await.unwrap().unwrap();
    assert_eq!(alex.status, RepoStatus::Conflict);
    assert_eq!(alex.last_error.as_deref(), Some("index.md changed on both sides"));
    assert_eq!(alex.last_sync.unwrap().timestamp_millis(), at.timestamp_millis());

    assert_eq!(store.github_token("alex").await.unwrap(), None);
    store.put_github_token("alex", "one").await.unwrap_err(); // no such account: the key holds
}

async fn a_lease_has_one_holder_until_released_or_expired(store: Arc<dyn MemoryRepoStore>) {
    let soon = Utc::now() + Duration::seconds(60);
    assert!(store.try_lease("gitmem:alex", "a", soon).await.unwrap());
    assert!(!store.try_lease("gitmem:alex", "b", soon).await.unwrap(), "held by a");
    assert!(store.try_lease("gitmem:bo", "b", soon).await.unwrap(), "another repo's lease is apart");
    store.release_lease("gitmem:alex", "b").await.unwrap();
    assert!(!store.try_lease("gitmem:alex", "b", soon).await.unwrap(), "only the holder releases");
    store.release_lease("gitmem:alex", "a").await.unwrap();
    assert!(store.try_lease("gitmem:alex", "b", Utc::now() - Duration::seconds(1)).await.unwrap());
    assert!(store.try_lease("gitmem:alex", "c", soon).await.unwrap(), "b's lease expired");
}

async fn racing_for_a_lease_has_one_winner(store: Arc<dyn MemoryRepoStore>) {
    let until = Utc::now() + Duration::seconds(60);
    let attempts = (0..16).map(|i| {
        let store = store.clone();
        tokio::spawn(
            async move { store.try_lease("gitmem:race", &format!("holder-{i}"), until).await.unwrap() },
        )
    });
    let mut winners = 0;
    for attempt in attempts {
        winners += usize::from(attempt.await.unwrap());
    }
    assert_eq!(winners, 1);
}
