//! The blob store conformance suite, run on the filesystem store and on S3 (moto).

use std::sync::Arc;

use bytes::Bytes;
use storage::StoreError;
use storage::blob::{BlobKey, BlobStore, Condition, FilesystemBlobStore, S3BlobStore, md5_hex};

storage::store_suite!(
    filesystem => open_filesystem, s3 => open_s3;
    [
        create_if_absent_refuses_an_existing_key,
        update_with_a_stale_etag_is_refused,
        concurrent_updates_from_one_etag_have_one_winner,
        concurrent_creates_have_one_winner,
        delete_if_match,
        get_head_and_missing_keys,
        list_by_prefix_in_key_order,
        an_object_and_a_folder_may_share_a_name,
        check_answers,
        copy_takes_the_version_it_names_and_survives_a_rewrite,
    ]
);

async fn open_filesystem() -> Option<Arc<dyn BlobStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    Some(Arc::new(FilesystemBlobStore::open(dir).unwrap()))
}

async fn open_s3() -> Option<Arc<dyn BlobStore>> {
    let config = storage::testing::s3_config()?;
    let store = S3BlobStore::connect(&config).await.unwrap();
    store.verify_access().await.unwrap();
    Some(Arc::new(store))
}

fn key(raw: &str) -> BlobKey {
    BlobKey::parse(raw).unwrap()
}

fn is_precondition<T: std::fmt::Debug>(result: &Result<T, StoreError>) -> bool {
    matches!(result, Err(StoreError::PreconditionFailed))
}

async fn create_if_absent_refuses_an_existing_key(store: Arc<dyn BlobStore>) {
    let k = key("notes/a.md");
    let meta = store.put(&k, Bytes::from_static(b"one"), Condition::Absent).await.unwrap();
    assert_eq!(meta.etag, md5_hex(b"one"));
    assert_eq!(meta.size, 3);
    let again = store.put(&k, Bytes::from_static(b"two"), Condition::Absent).await;
    assert!(is_precondition(&again), "{again:?}");
    assert_eq!(store.get(&k).await.unwrap().unwrap().body, Bytes::from_static(b"one"));
}

async fn update_with_a_stale_etag_is_refused(store: Arc<dyn BlobStore>) {
    let k = key("doc.txt");
    let first = store.put(&k, Bytes::from_static(b"v1"), Condition::Absent).await.unwrap();
    let second =
        store.put(&k, Bytes::from_static(b"v2"), Condition::Matches(first.etag.clone())).await.unwrap();
    assert_eq!(second.etag, md5_hex(b"v2"));
    let stale = store.put(&k, Bytes::from_static(b"v3"), Condition::Matches(first.etag)).await;
    assert!(is_precondition(&stale), "{stale:?}");
    let missing =
        store.put(&key("nothing.txt"), Bytes::from_static(b"x"), Condition::Matches(second.etag)).await;
    assert!(is_precondition(&missing), "If-Match on a missing key: {missing:?}");
    assert_eq!(store.get(&k).await.unwrap().unwrap().body, Bytes::from_static(b"v2"));
}

async fn concurrent_updates_from_one_etag_have_one_winner(store: Arc<dyn BlobStore>) {
    for round in 0..5 {
        let k = key(&format!("race/{round}.txt"));
        let base = store.put(&k, Bytes::from_static(b"base"), Condition::None).await.unwrap();
        let writers = (0..32).map(|i| {
            let (store, k, etag) = (store.clone(), k.clone(), base.etag.clone());
            tokio::spawn(async move {
                let body = Bytes::from(format!("writer {i}"));
                store.put(&k, body, Condition::Matches(etag)).await
            })
        });
        let results: Vec<_> =
            futures::future::join_all(writers).await.into_iter().map(Result::unwrap).collect();
        let winners: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let refused = results.iter().filter(|r| is_precondition(r)).count();
        assert_eq!((winners.len(), refused), (1, 31), "round {round}: {results:?}");
        let stored = store.get(&k).await.unwrap().unwrap();
        assert_eq!(stored.meta.etag, winners[0].etag, "the winner's content is what is stored");
    }
}

async fn concurrent_creates_have_one_winner(store: Arc<dyn BlobStore>) {
    let k = key("created-once");
    let writers = (0..16).map(|i| {
        let (store, k) = (store.clone(), k.clone());
        tokio::spawn(async move { store.put(&k, Bytes::from(format!("{i}")), Condition::Absent).await })
    });
    let results: Vec<_> = futures::future::join_all(writers).await.into_iter().map(Result::unwrap).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    assert_eq!(results.iter().filter(|r| is_precondition(r)).count(), 15, "{results:?}");
}

async fn delete_if_match(store: Arc<dyn BlobStore>) {
    let k = key("to-delete");
    let v1 = store.put(&k, Bytes::from_static(b"1"), Condition::None).await.unwrap();
    let v2 = store.put(&k, Bytes::from_static(b"2"), Condition::None).await.unwrap();
    let stale = store.delete(&k, Condition::Matches(v1.etag)).await;
    assert!(is_precondition(&stale), "{stale:?}");
    assert!(store.head(&k).await.unwrap().is_some(), "a refused delete keeps the object");
    assert!(store.delete(&k, Condition::Matches(v2.etag.clone())).await.unwrap());
    assert!(store.get(&k).await.unwrap().is_none());
    assert!(!store.delete(&k, Condition::Matches(v2.etag)).await.unwrap(), "nothing left to delete");
    assert!(!store.delete(&k, Condition::None).await.unwrap());
}

async fn get_head_and_missing_keys(store: Arc<dyn BlobStore>) {
    let k = key("dir/ünï cödé.bin");
    assert!(store.get(&k).await.unwrap().is_none());
    assert!(store.head(&k).await.unwrap().is_none());
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let put = store.put(&k, Bytes::from(body.clone()), Condition::None).await.unwrap();
    let got = store.get(&k).await.unwrap().unwrap();
    assert_eq!(got.body.as_ref(), body.as_slice());
    assert_eq!(got.meta.etag, put.etag);
    assert_eq!(got.meta.key, k.as_str());
    let head = store.head(&k).await.unwrap().unwrap();
    assert_eq!((head.etag, head.size), (put.etag, body.len() as u64));
    let age = chrono::Utc::now() - head.last_modified;
    assert!(age.num_seconds().abs() < 120, "last_modified is about now: {age}");
}

async fn list_by_prefix_in_key_order(store: Arc<dyn BlobStore>) {
    for name in ["p/b", "p/a", "p/c/d", "q/a", "p~x", "p%y"] {
        store.put(&key(name), Bytes::from(name.to_string()), Condition::None).await.unwrap();
    }
    let keys = |metas: Vec<storage::blob::BlobMeta>| metas.into_iter().map(|m| m.key).collect::<Vec<_>>();
    assert_eq!(keys(store.list("p/", None, 100).await.unwrap()), ["p/a", "p/b", "p/c/d"]);
    assert_eq!(keys(store.list("p/", None, 2).await.unwrap()), ["p/a", "p/b"]);
    assert_eq!(keys(store.list("p/", Some("p/b"), 100).await.unwrap()), ["p/c/d"]);
    assert_eq!(keys(store.list("p", None, 100).await.unwrap()), ["p%y", "p/a", "p/b", "p/c/d", "p~x"]);
    let all = store.list("", None, 100).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|m| m.etag == md5_hex(m.key.as_bytes())));
}

async fn an_object_and_a_folder_may_share_a_name(store: Arc<dyn BlobStore>) {
    store.put(&key("shared"), Bytes::from_static(b"file"), Condition::None).await.unwrap();
    store.put(&key("shared/inner"), Bytes::from_static(b"nested"), Condition::None).await.unwrap();
    assert_eq!(store.get(&key("shared")).await.unwrap().unwrap().body, Bytes::from_static(b"file"));
    assert_eq!(store.get(&key("shared/inner")).await.unwrap().unwrap().body, Bytes::from_static(b"nested"));
}

async fn check_answers(store: Arc<dyn BlobStore>) {
    store.check().await.unwrap();
    assert!(["filesystem", "s3"].contains(&store.backend_name()));
}

async fn copy_takes_the_version_it_names_and_survives_a_rewrite(store: Arc<dyn BlobStore>) {
    let (source, aside) = (key("live/doc.md"), key("versions/doc.md/v1"));
    let v1 = store.put(&source, Bytes::from_static(b"first"), Condition::Absent).await.unwrap();
    let stale = store.copy(&source, &aside, &md5_hex(b"other")).await;
    assert!(is_precondition(&stale), "a copy of another version: {stale:?}");
    assert!(store.head(&aside).await.unwrap().is_none(), "a refused copy leaves nothing");
    let copied = store.copy(&source, &aside, &v1.etag).await.unwrap();
    assert_eq!(copied.etag, v1.etag);
    store.put(&source, Bytes::from_static(b"second"), Condition::Matches(v1.etag.clone())).await.unwrap();
    assert_eq!(store.get(&aside).await.unwrap().unwrap().body, Bytes::from_static(b"first"));
    assert_eq!(store.get(&source).await.unwrap().unwrap().body, Bytes::from_static(b"second"));
    let missing = store.copy(&key("nothing"), &aside, &v1.etag).await;
    assert!(is_precondition(&missing), "a copy of a missing object: {missing:?}");
}
