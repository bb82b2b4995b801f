//! The key/value store conformance suite, run on SQLite and on PostgreSQL.

use std::sync::Arc;

use serde_json::json;
use storage::StoreError;
use storage::config::DatabaseConfig;
use storage::sql::{Database, Expect, KeyValueStore};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        put_get_and_versions,
        absent_and_stale_conditions,
        concurrent_updates_from_one_version_have_one_winner,
        deletes_honour_conditions,
        list_pages_by_prefix_in_key_order,
        migrations_are_idempotent,
    ]
);

async fn open_sqlite() -> Option<Database> {
    let dir = tempfile::tempdir().unwrap().keep();
    let config = DatabaseConfig::Sqlite { path: dir.join("engram.db") };
    Some(Database::connect(&config).await.unwrap())
}

async fn open_postgres() -> Option<Database> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = storage::config::Config::from_raw(&storage::config::RawConfig::layered(
        [("DATABASE_URL".to_string(), url)],
        [],
        [],
    ))
    .unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap())
}

async fn put_get_and_versions(database: Database) {
    let store = database.key_value_store();
    assert_eq!(store.get("ns", "k").await.unwrap(), None);
    assert_eq!(store.put("ns", "k", &json!({"a": 1}), Expect::Any).await.unwrap(), 1);
    assert_eq!(store.put("ns", "k", &json!({"a": 2}), Expect::Any).await.unwrap(), 2);
    let got = store.get("ns", "k").await.unwrap().unwrap();
    assert_eq!((got.value, got.version), (json!({"a": 2}), 2));
    assert_eq!(store.get("other", "k").await.unwrap(), None, "namespaces are apart");
    let unicode = json!({"text": "ünïcödé \u{1F600}", "n": [1.5, null, true]});
    store.put("ns", "ключ", &unicode, Expect::Any).await.unwrap();
    assert_eq!(store.get("ns", "ключ").await.unwrap().unwrap().value, unicode);
}

async fn absent_and_stale_conditions(database: Database) {
    let store = database.key_value_store();
    assert_eq!(store.put("ns", "k", &json!(1), Expect::Absent).await.unwrap(), 1);
    let again = store.put("ns", "k", &json!(2), Expect::Absent).await;
    assert!(matches!(again, Err(StoreError::PreconditionFailed)), "{again:?}");
    assert_eq!(store.put("ns", "k", &json!(3), Expect::Version(1)).await.unwrap(), 2);
    let stale = store.put("ns", "k", &json!(4), Expect::Version(1)).await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed)), "{stale:?}");
    let missing = store.put("ns", "nothing", &json!(4), Expect::Version(1)).await;
    assert!(matches!(missing, Err(StoreError::PreconditionFailed)), "{missing:?}");
    assert_eq!(store.get("ns", "k").await.unwrap().unwrap().value, json!(3), "failed writes changed nothing");
}

async fn concurrent_updates_from_one_version_have_one_winner(database: Database) {
    let store: Arc<dyn KeyValueStore> = database.key_value_store();
    for round in 0..5 {
        let key = format!("race-{round}");
        let base = store.put("ns", &key, &json!("start"), Expect::Any).await.unwrap();
        let attempts = (0..32).map(|i| {
            let (store, key) = (store.clone(), key.clone());
            tokio::spawn(async move { store.put("ns", &key, &json!(i), Expect::Version(base)).await })
        });
        let results = futures::future::join_all(attempts).await;
        let winners: Vec<_> = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).collect();
        let losers = results.iter().filter(|r| matches!(r, Ok(Err(StoreError::PreconditionFailed)))).count();
        assert_eq!((winners.len(), losers), (1, 31), "round {round}: {results:?}");
        assert_eq!(store.get("ns", &key).await.unwrap().unwrap().version, base + 1);
    }
}

async fn deletes_honour_conditions(database: Database) {
    let store = database.key_value_store();
    assert!(!store.delete("ns", "k", Expect::Any).await.unwrap());
    store.put("ns", "k", &json!(1), Expect::Any).await.unwrap();
    store.put("ns", "k", &json!(2), Expect::Any).await.unwrap();
    let stale = store.delete("ns", "k", Expect::Version(1)).await;
    assert!(matches!(stale, Err(StoreError::PreconditionFailed)), "{stale:?}");
    let present = store.delete("ns", "k", Expect::Absent).await;
    assert!(matches!(present, Err(StoreError::PreconditionFailed)), "{present:?}");
    assert!(store.delete("ns", "k", Expect::Version(2)).await.unwrap());
    assert_eq!(store.get("ns", "k").await.unwrap(), None);
}

async fn list_pages_by_prefix_in_key_order(database: Database) {
    let store = database.key_value_store();
    for key in ["b/2", "a/1", "b/1", "b/3", "c", "b%", "b_"] {
        store.put("ns", key, &json!(key), Expect::Any).await.unwrap();
    }
    store.put("other", "b/9", &json!(0), Expect::Any).await.unwrap();
    let keys =
        |page: Vec<(String, storage::sql::Versioned)>| page.into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    assert_eq!(keys(store.list("ns", "b/", None, 2).await.unwrap()), ["b/1", "b/2"]);
    assert_eq!(keys(store.list("ns", "b/", Some("b/2"), 10).await.unwrap()), ["b/3"]);
    // LIKE wildcards in a prefix are plain characters.
    assert_eq!(keys(store.list("ns", "b%", None, 10).await.unwrap()), ["b%"]);
    assert_eq!(keys(store.list("ns", "", None, 100).await.unwrap()).len(), 7);
}

async fn migrations_are_idempotent(database: Database) {
    database.migrate().await.unwrap();
    database.migrate().await.unwrap();
    database.ping().await.unwrap();
    if let Database::Postgres(pool) = &database {
        let distance: f64 = sqlx::query_scalar("SELECT ('[1,0,0]'::vector <=> '[0,1,0]'::vector)::float8")
            .fetch_one(pool)
            .await
            .expect("pgvector is installed");
        assert!((distance - 1.0).abs() < 1e-9);
        let hstore: String = sqlx::query_scalar("SELECT ('a=>1'::hstore -> 'a')")
            .fetch_one(pool)
            .await
            .expect("hstore is installed");
        assert_eq!(hstore, "1");
    }
}
