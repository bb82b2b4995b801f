//! The identity store conformance suite (accounts, sessions, refresh tokens, API keys), run
//! on SQLite and on PostgreSQL.

use std::sync::Arc;

use chrono::{Duration, Utc};
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{ApiKey, Database, IdentityStore, NewUser, Role, Rotation};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        emails_and_github_logins_are_unique,
        sessions_end_when_revoked,
        refresh_tokens_rotate_once_and_reuse_revokes_the_session,
        expired_and_unknown_refresh_tokens_are_invalid,
        concurrent_rotation_has_one_winner,
        api_keys_are_found_by_hash_until_revoked,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn IdentityStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.identity_store())
}

async fn open_postgres() -> Option<Arc<dyn IdentityStore>> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap().identity_store())
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        id: storage::ids::new_id(),
        email: Some(email.to_string()),
        password_hash: Some(format!("hash-of-{email}")),
        display_name: String::new(),
        role: Role::User,
        github_login: None,
    }
}

async fn user_with_session(store: &Arc<dyn IdentityStore>, email: &str, refresh: &str) -> (String, String) {
    let user = store.create_user(new_user(email)).await.unwrap().unwrap();
    let session = storage::ids::new_id();
    store.create_session(&session, &user.id, refresh, Utc::now() + Duration::days(30)).await.unwrap();
    (user.id, session)
}

async fn emails_and_github_logins_are_unique(store: Arc<dyn IdentityStore>) {
    let alice = store.create_user(new_user("alice@example.com")).await.unwrap().unwrap();
    assert_eq!((alice.role, alice.settings.clone()), (Role::User, serde_json::json!({})));
    assert!(store.create_user(new_user("alice@example.com")).await.unwrap().is_none());
    let (found, hash) = store.credentials("alice@example.com").await.unwrap().unwrap();
    assert_eq!((found, hash.as_deref()), (alice.clone(), Some("hash-of-alice@example.com")));
    assert!(store.credentials("bob@example.com").await.unwrap().is_none());
    assert_eq!(store.user(&alice.id).await.unwrap(), Some(alice));

    let octo =
        NewUser { email: None, password_hash: None, github_login: Some("octocat".into()), ..new_user("") };
    let octo = store.create_user(octo).await.unwrap().unwrap();
    assert_eq!(store.user_by_github_login("octocat").await.unwrap(), Some(octo.clone()));
    let twin = NewUser { id: storage::ids::new_id(), ..new_user("") };
    let twin = NewUser { email: None, github_login: Some("octocat".into()), ..twin };
    assert!(store.create_user(twin).await.unwrap().is_none(), "one account per GitHub login");
    let second_without_email = NewUser { email: None, github_login: Some("hubot".into()), ..new_user("") };
    assert!(store.create_user(second_without_email).await.unwrap().is_some(), "many users have no email");
}

async fn sessions_end_when_revoked(store: Arc<dyn IdentityStore>) {
    let (user_id, session) = user_with_session(&store, "s@example.com", "r1").await;
    assert_eq!(store.session_user(&session).await.unwrap().unwrap().id, user_id);
    assert!(store.revoke_session(&session, "logout").await.unwrap());
    assert!(!store.revoke_session(&session, "logout").await.unwrap(), "revoked once");
    assert!(store.session_user(&session).await.unwrap().is_none());
    assert!(store.session_user("no-such-session").await.unwrap().is_none());
    let later = Utc::now() + Duration::days(30);
    assert_eq!(store.rotate_refresh_token("r1", "r2", later).await.unwrap(), Rotation::Invalid);
}

async fn refresh_tokens_rotate_once_and_reuse_revokes_the_session(store: Arc<dyn IdentityStore>) {
    let (user_id, session) = user_with_session(&store, "r@example.com", "first").await;
    let later = Utc::now() + Duration::days(30);
    match store.rotate_refresh_token("first", "second", later).await.unwrap() {
        Rotation::Rotated { session_id, user } => {
            assert_eq!((session_id, user.id), (session.clone(), user_id))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        store.rotate_refresh_token("second", "third", later).await.unwrap(),
        Rotation::Rotated { .. }
    ));
    assert_eq!(
        store.rotate_refresh_token("first", "stolen", later).await.unwrap(),
        Rotation::Reused { session_id: session.clone() }
    );
    assert!(store.session_user(&session).await.unwrap().is_none(), "reuse revokes the session");
    assert_eq!(store.rotate_refresh_token("third", "fourth", later).await.unwrap(), Rotation::Invalid);
}

async fn expired_and_unknown_refresh_tokens_are_invalid(store: Arc<dyn IdentityStore>) {
    let user = store.create_user(new_user("e@example.com")).await.unwrap().unwrap();
    let session = storage::ids::new_id();
    store.create_session(&session, &user.id, "old", Utc::now() - Duration::seconds(1)).await.unwrap();
    let later = Utc::now() + Duration::days(30);
    assert_eq!(store.rotate_refresh_token("old", "new", later).await.unwrap(), Rotation::Invalid);
    assert_eq!(store.rotate_refresh_token("never-issued", "new2", later).await.unwrap(), Rotation::Invalid);
    assert!(store.session_user(&session).await.unwrap().is_some(), "an expired token does not revoke");
}

async fn concurrent_rotation_has_one_winner(store: Arc<dyn IdentityStore>) {
    let (_, session) = user_with_session(&store, "c@example.com", "shared").await;
    let later = Utc::now() + Duration::days(30);
    let attempts = (0..6).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store.rotate_refresh_token("shared", &format!("next-{i}"), later).await.unwrap()
        })
    });
    let outcomes: Vec<Rotation> =
        futures::future::join_all(attempts).await.into_iter().map(|r| r.unwrap()).collect();
    let rotated = outcomes.iter().filter(|o| matches!(o, Rotation::Rotated { .. })).count();
    assert_eq!(rotated, 1, "{outcomes:?}");
    assert!(store.session_user(&session).await.unwrap().is_none(), "the copies count as reuse");
}

async fn api_keys_are_found_by_hash_until_revoked(store: Arc<dyn IdentityStore>) {
    let user = store.create_user(new_user("k@example.com")).await.unwrap().unwrap();
    let key = ApiKey {
        id: storage::ids::new_id(),
        user_id: user.id.clone(),
        name: "sync client".into(),
        scopes: vec!["blobs:rw".into(), "memories:read".into()],
        created_at: Utc::now(),
        last_used_at: None,
        revoked_at: None,
    };
    store.create_api_key(&key, "secret-hash").await.unwrap();
    let (found, owner) = store.api_key_user("secret-hash").await.unwrap().unwrap();
    assert_eq!((found.scopes.clone(), owner.id.clone()), (key.scopes.clone(), user.id.clone()));
    assert!(found.last_used_at.is_some(), "use is recorded");
    assert!(store.api_key_user("other-hash").await.unwrap().is_none());
    let listed = store.api_keys(&user.id).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!store.revoke_api_key("someone-else", &key.id).await.unwrap(), "only the owner revokes");
    assert!(store.revoke_api_key(&user.id, &key.id).await.unwrap());
    assert!(store.api_key_user("secret-hash").await.unwrap().is_none());
    assert!(store.api_keys(&user.id).await.unwrap()[0].revoked_at.is_some());
}
