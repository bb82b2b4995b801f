//! The job record store conformance suite, run on SQLite and on PostgreSQL.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde_json::json;
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{AttemptOutcome, Database, JobFilter, JobStatus, JobStore, LogLine, NewJob};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        create_get_and_idempotency,
        create_many_in_one_transaction,
        list_filters_and_pages_newest_first,
        one_claim_wins,
        attempt_outcomes,
        a_stale_worker_cannot_finish,
        cancel_queued_and_running,
        retry_failed_dead_and_cancelled,
        requeue_a_stopped_workers_jobs,
        redelivery_takes_each_due_time_once,
        oldest_due_per_kind,
        logs_in_order_and_paged,
        stats_per_kind,
        create_many_keeps_order_and_dedups_keys_within_the_batch,
        claims_take_due_jobs_by_priority_then_in_turn,
        claims_alternate_between_owners,
        the_running_cap_parks_and_room_unparks,
        waiting_jobs_are_counted_per_owner,
        finish_attempts_records_each_outcome,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn JobStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.job_store())
}

async fn open_postgres() -> Option<Arc<dyn JobStore>> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap().job_store())
}

/// Claims the next job of `job`'s kind for `worker`, with no running cap, and checks it is `job`.
async fn claim(store: &Arc<dyn JobStore>, job: &str, worker: &str) -> Option<storage::sql::Job> {
    let kind = store.get(job).await.unwrap().map(|j| j.kind).unwrap_or_default();
    let claimed = store.claim_next(&kind, 1, worker, 0).await.unwrap().pop();
    if let Some(claimed) = &claimed {
        assert_eq!(claimed.id, job, "the claim took another job than the test expected");
    }
    claimed
}

fn ids_of(jobs: &[storage::sql::Job]) -> Vec<String> {
    jobs.iter().map(|j| j.id.clone()).collect()
}

fn new_job(kind: &str, owner: &str) -> NewJob {
    NewJob {
        id: storage::ids::new_id(),
        kind: kind.into(),
        owner: owner.into(),
        payload: json!({"n": 1}),
        max_attempts: 3,
        priority: 0,
        run_at: Utc::now(),
        parent_id: None,
        idempotency_key: None,
    }
}

async fn create_get_and_idempotency(store: Arc<dyn JobStore>) {
    let mut job = new_job("noop", "alice");
    job.payload = json!({"text": "ünï", "list": [1, 2]});
    job.priority = 7;
    let (created, fresh) = store.create(job.clone()).await.unwrap();
    assert!(fresh);
    assert_eq!((created.status, created.attempt, created.priority), (JobStatus::Queued, 0, 7));
    assert_eq!(store.get(&job.id).await.unwrap().unwrap(), created);
    assert!(store.get("nope").await.unwrap().is_none());

    let keyed = NewJob { idempotency_key: Some("k1".into()), ..new_job("noop", "alice") };
    let (first, _) = store.create(keyed.clone()).await.unwrap();
    let again = NewJob { id: storage::ids::new_id(), ..keyed.clone() };
    let (second, fresh) = store.create(again).await.unwrap();
    assert!(!fresh);
    assert_eq!(second.id, first.id, "same owner and key: the existing job");
    let other_owner = NewJob { id: storage::ids::new_id(), owner: "bob".into(), ..keyed };
    let (third, fresh) = store.create(other_owner).await.unwrap();
    assert!(fresh && third.id != first.id, "keys are per owner");
}

async fn create_many_in_one_transaction(store: Arc<dyn JobStore>) {
    let jobs: Vec<_> = (0..250).map(|_| new_job("noop", "alice")).collect();
    let created = store.create_many(jobs).await.unwrap();
    assert_eq!(created.len(), 250);
    assert!(created.iter().all(|(_, fresh)| *fresh));
    let listed = store.list(&JobFilter { limit: 1000, ..Default::default() }).await.unwrap();
    assert_eq!(listed.len(), 250);
}

async fn list_filters_and_pages_newest_first(store: Arc<dyn JobStore>) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = new_job(if i % 2 == 0 { "even" } else { "odd" }, if i < 4 { "alice" } else { "bob" });
        ids.push(store.create(job).await.unwrap().0.id);
    }
    let page = |filter: JobFilter| {
        let store = store.clone();
        async move { store.list(&filter).await.unwrap().into_iter().map(|j| j.id).collect::<Vec<_>>() }
    };
    let all = page(JobFilter { limit: 10, ..Default::default() }).await;
    assert_eq!(all, ids.iter().rev().cloned().collect::<Vec<_>>());
    let first_two = page(JobFilter { limit: 2, ..Default::default() }).await;
    let next =
        page(JobFilter { limit: 2, before_id: Some(first_two[1].clone()), ..Default::default() }).await;
    assert_eq!([first_two, next].concat(), all[..4].to_vec());
    assert_eq!(page(JobFilter { kind: Some("odd".into()), limit: 10, ..Default::default() }).await.len(), 2);
    assert_eq!(
        page(JobFilter { owner: Some("bob".into()), limit: 10, ..Default::default() }).await,
        vec![ids[4].clone()]
    );
    claim(&store, &ids[0], "w").await.unwrap();
    let running = page(JobFilter { status: Some(JobStatus::Running), limit: 10, ..Default::default() }).await;
    assert_eq!(running, vec![ids[0].clone()]);
}

async fn one_claim_wins(store: Arc<dyn JobStore>) {
    let (job, _) = store.create(new_job("noop", "alice")).await.unwrap();
    let claims = (0..8).map(|i| {
        let (store, id) = (store.clone(), job.id.clone());
        tokio::spawn(async move { claim(&store, &id, &format!("worker-{i}")).await })
    });
    let won: Vec<_> =
        futures::future::join_all(claims).await.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(won.len(), 1);
    assert_eq!((won[0].status, won[0].attempt), (JobStatus::Running, 1));
    assert!(won[0].started_at.is_some());
}

async fn attempt_outcomes(store: Arc<dyn JobStore>) {
    let (a, _) = store.create(new_job("noop", "o")).await.unwrap();
    claim(&store, &a.id, "w").await.unwrap();
    store.set_progress(&a.id, 40, Some("halfway")).await.unwrap();
    let running = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!((running.progress, running.progress_message.as_deref()), (40, Some("halfway")));
    assert!(store.finish_attempt(&a.id, "w", AttemptOutcome::Succeeded(json!({"ok": true}))).await.unwrap());
    let done = store.get(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.progress, done.result),
        (JobStatus::Succeeded, 100, Some(json!({"ok": true})))
    );
    assert!(done.finished_at.is_some());

    let (b, _) = store.create(new_job("noop", "o")).await.unwrap();
    claim(&store, &b.id, "w").await.unwrap();
    let retry_at = Utc::now() - Duration::milliseconds(1);
    let failed = AttemptOutcome::Failed { error: "boom".into(), retry_at: Some(retry_at) };
    assert!(store.finish_attempt(&b.id, "w", failed).await.unwrap());
    let b_now = store.get(&b.id).await.unwrap().unwrap();
    assert_eq!((b_now.status, b_now.last_error.as_deref()), (JobStatus::Failed, Some("boom")));
    assert_eq!(b_now.run_at.timestamp_millis(), retry_at.timestamp_millis());
    let again = claim(&store, &b.id, "w2").await.unwrap();
    assert_eq!(again.attempt, 2, "a failed job is claimed again for its next attempt");
    let dead = AttemptOutcome::Failed { error: "still boom".into(), retry_at: None };
    assert!(store.finish_attempt(&b.id, "w2", dead).await.unwrap());
    assert_eq!(store.get(&b.id).await.unwrap().unwrap().status, JobStatus::Dead);
}

async fn a_stale_worker_cannot_finish(store: Arc<dyn JobStore>) {
    let (job, _) = store.create(new_job("noop", "o")).await.unwrap();
    claim(&store, &job.id, "old").await.unwrap();
    store.requeue_worker_jobs("old").await.unwrap();
    claim(&store, &job.id, "new").await.unwrap();
    assert!(!store.finish_attempt(&job.id, "old", AttemptOutcome::Succeeded(json!(1))).await.unwrap());
    assert_eq!(store.get(&job.id).await.unwrap().unwrap().status, JobStatus::Running);
    assert!(store.finish_attempt(&job.id, "new", AttemptOutcome::Succeeded(json!(2))).await.unwrap());
}

async fn cancel_queued_and_running(store: Arc<dyn JobStore>) {
    let (queued, _) = store.create(new_job("noop", "o")).await.unwrap();
    let cancelled = store.cancel(&queued.id).await.unwrap().unwrap();
    assert_eq!(cancelled.status, JobStatus::Cancelled);
    assert!(claim(&store, &queued.id, "w").await.is_none(), "a cancelled job is not claimed");

    let (running, _) = store.create(new_job("noop", "o")).await.unwrap();
    claim(&store, &running.id, "w").await.unwrap();
    let asked = store.cancel(&running.id).await.unwrap().unwrap();
    assert_eq!((asked.status, asked.cancel_requested), (JobStatus::Running, true));
    assert!(store.finish_attempt(&running.id, "w", AttemptOutcome::Cancelled).await.unwrap());
    assert_eq!(store.get(&running.id).await.unwrap().unwrap().status, JobStatus::Cancelled);

    let (done, _) = store.create(new_job("noop", "o")).await.unwrap();
    claim(&store, &done.id, "w").await;
    store.finish_attempt(&done.id, "w", AttemptOutcome::Succeeded(json!(null))).await.unwrap();
    assert_eq!(store.cancel(&done.id).await.unwrap().unwrap().status, JobStatus::Succeeded, "finished stays");
    assert!(store.cancel("missing").await.unwrap().is_none());
}

async fn retry_failed_dead_and_cancelled(store: Arc<dyn JobStore>) {
    let (job, _) = store.create(NewJob { max_attempts: 1, ..new_job("noop", "o") }).await.unwrap();
    claim(&store, &job.id, "w").await;
    store
        .finish_attempt(&job.id, "w", AttemptOutcome::Failed { error: "x".into(), retry_at: None })
        .await
        .unwrap();
    let retried = store.retry(&job.id).await.unwrap().unwrap();
    assert_eq!((retried.status, retried.max_attempts), (JobStatus::Queued, 2), "one more attempt allowed");
    assert!(store.retry(&job.id).await.unwrap().is_none(), "a queued job is not retried");
    let claimed = claim(&store, &job.id, "w").await.unwrap();
    assert_eq!(claimed.attempt, 2);
}

async fn requeue_a_stopped_workers_jobs(store: Arc<dyn JobStore>) {
    let mut ids = Vec::new();
    for worker in ["gone", "gone", "alive"] {
        let (job, _) = store.create(new_job("noop", "o")).await.unwrap();
        claim(&store, &job.id, worker).await.unwrap();
        ids.push(job.id);
    }
    let requeued = store.requeue_worker_jobs("gone").await.unwrap();
    assert_eq!(requeued.len(), 2);
    assert!(requeued.iter().all(|j| j.status == JobStatus::Queued && j.worker_id.is_none()));
    assert_eq!(store.get(&ids[2]).await.unwrap().unwrap().status, JobStatus::Running);
}

async fn redelivery_takes_each_due_time_once(store: Arc<dyn JobStore>) {
    let now = Utc::now();
    let later = NewJob { run_at: now + Duration::hours(1), ..new_job("noop", "o") };
    let earlier = NewJob { run_at: now - Duration::seconds(10), ..new_job("noop", "o") };
    let earliest = NewJob { run_at: now - Duration::seconds(20), ..new_job("noop", "o") };
    for job in [later, earlier.clone(), earliest.clone()] {
        store.create(job).await.unwrap();
    }
    // Sweeps of several workers at once: each job is taken by exactly one of them.
    let sweeps = futures::future::join_all((0..4).map(|_| store.take_for_redelivery(now, 10))).await;
    let mut taken: Vec<String> = sweeps.into_iter().flat_map(|s| s.unwrap()).map(|j| j.id).collect();
    assert_eq!(taken.len(), 2, "each due job once: {taken:?}");
    taken.sort();
    let mut expected = vec![earliest.id.clone(), earlier.id.clone()];
    expected.sort();
    assert_eq!(taken, expected);
    assert!(store.take_for_redelivery(now, 10).await.unwrap().is_empty(), "once per due time");
    // A job whose worker stopped falls due again, and may be re-delivered once more.
    let claimed = store.claim_next("noop", 1, "gone", 0).await.unwrap().pop().unwrap();
    store.requeue_worker_jobs("gone").await.unwrap();
    let again = store.take_for_redelivery(Utc::now(), 10).await.unwrap();
    assert_eq!(again.into_iter().map(|j| j.id).collect::<Vec<_>>(), [claimed.id]);
}

async fn oldest_due_per_kind(store: Arc<dyn JobStore>) {
    let now = Utc::now();
    let alpha_due = now - Duration::seconds(30);
    for run_at in [alpha_due, now - Duration::seconds(5), now + Duration::hours(1)] {
        store.create(NewJob { run_at, ..new_job("alpha", "o") }).await.unwrap();
    }
    store.create(NewJob { run_at: now + Duration::hours(1), ..new_job("beta", "o") }).await.unwrap();
    let (running, _) =
        store.create(NewJob { run_at: now - Duration::hours(1), ..new_job("gamma", "o") }).await.unwrap();
    claim(&store, &running.id, "w").await;
    let oldest = store.oldest_due(now).await.unwrap();
    assert_eq!(oldest.len(), 1, "only alpha has a due job waiting: {oldest:?}");
    assert_eq!(oldest[0].0, "alpha");
    assert!((oldest[0].1 - alpha_due).num_milliseconds().abs() <= 1);
    let stats = store.kind_stats(now).await.unwrap();
    let alpha = stats.iter().find(|s| s.kind == "alpha").unwrap();
    let age = alpha.oldest_due_age_secs.unwrap();
    assert!((29.9..=30.1).contains(&age), "{age}");
    assert_eq!(stats.iter().find(|s| s.kind == "beta").unwrap().oldest_due_age_secs, None);
}

async fn logs_in_order_and_paged(store: Arc<dyn JobStore>) {
    let (job, _) = store.create(new_job("noop", "o")).await.unwrap();
    assert_eq!(store.last_log_seq(&job.id).await.unwrap(), 0);
    let lines: Vec<LogLine> = (1..=25)
        .map(|seq| LogLine { seq, at: Utc::now(), level: "info".into(), line: format!("line {seq} ✓") })
        .collect();
    store.append_logs(&job.id, &lines[..10]).await.unwrap();
    store.append_logs(&job.id, &lines[5..]).await.unwrap();
    assert_eq!(store.last_log_seq(&job.id).await.unwrap(), 25);
    let page = store.logs(&job.id, 20, 3).await.unwrap();
    assert_eq!(page.iter().map(|l| l.seq).collect::<Vec<_>>(), [21, 22, 23]);
    assert_eq!(page[0].line, "line 21 ✓");
    assert_eq!(store.logs(&job.id, 0, 100).await.unwrap().len(), 25, "a repeated seq is stored once");
}

async fn stats_per_kind(store: Arc<dyn JobStore>) {
    for _ in 0..3 {
        store.create(new_job("alpha", "o")).await.unwrap();
    }
    let (done, _) = store.create(new_job("beta", "o")).await.unwrap();
    claim(&store, &done.id, "w").await;
    store.finish_attempt(&done.id, "w", AttemptOutcome::Succeeded(json!(1))).await.unwrap();
    let (dead, _) = store.create(new_job("beta", "o")).await.unwrap();
    claim(&store, &dead.id, "w").await;
    store
        .finish_attempt(&dead.id, "w", AttemptOutcome::Failed { error: "x".into(), retry_at: None })
        .await
        .unwrap();
    let stats = store.kind_stats(Utc::now()).await.unwrap();
    let alpha = stats.iter().find(|s| s.kind == "alpha").unwrap();
    let beta = stats.iter().find(|s| s.kind == "beta").unwrap();
    assert_eq!((alpha.queued, alpha.running, alpha.dead), (3, 0, 0));
    assert_eq!((beta.dead, beta.succeeded_last_minute, beta.succeeded_last_hour), (1, 1, 1));
}

async fn create_many_keeps_order_and_dedups_keys_within_the_batch(store: Arc<dyn JobStore>) {
    let (existing, _) = store
        .create(NewJob { idempotency_key: Some("old".into()), ..new_job("noop", "alice") })
        .await
        .unwrap();
    let mut parent_child = new_job("noop", "alice");
    let parent = store.create(new_job("noop", "alice")).await.unwrap().0;
    parent_child.parent_id = Some(parent.id.clone());
    parent_child.payload = json!({"text": "ünï \"quoted\"", "nested": {"list": [1, null, 2.5]}});
    parent_child.priority = -3;
    parent_child.max_attempts = 9;
    let batch = vec![
        NewJob { idempotency_key: Some("new".into()), ..new_job("noop", "alice") },
        parent_child.clone(),
        NewJob { idempotency_key: Some("old".into()), ..new_job("noop", "alice") },
        NewJob { idempotency_key: Some("new".into()), ..new_job("noop", "alice") },
        NewJob { payload: json!("a bare string"), ..new_job("other", "bob") },
        NewJob { payload: json!(null), ..new_job("other", "bob") },
    ];
    let created = store.create_many(batch.clone()).await.unwrap();
    let fresh: Vec<bool> = created.iter().map(|(_, fresh)| *fresh).collect();
    assert_eq!(fresh, [true, true, false, false, true, true]);
    assert_eq!(created[0].0.id, batch[0].id);
    assert_eq!(created[2].0.id, existing.id, "a key used before returns that job");
    assert_eq!(created[3].0.id, batch[0].id, "a key used earlier in the batch returns that job");
    let child = &created[1].0;
    assert_eq!(child.payload, parent_child.payload);
    assert_eq!((child.priority, child.max_attempts), (-3, 9));
    assert_eq!(child.parent_id.as_deref(), Some(parent.id.as_str()));
    assert_eq!(store.get(&child.id).await.unwrap().as_ref(), Some(child));
    assert_eq!(created[4].0.payload, json!("a bare string"));
    assert_eq!(store.get(&created[5].0.id).await.unwrap().unwrap().payload, json!(null));
    assert!(store.create_many(Vec::new()).await.unwrap().is_empty());
}

async fn claims_take_due_jobs_by_priority_then_in_turn(store: Arc<dyn JobStore>) {
    let now = Utc::now();
    let mut ids = Vec::new();
    for (priority, run_at) in [(0, now), (0, now), (5, now), (0, now + Duration::hours(1)), (0, now)] {
        let job = NewJob { priority, run_at, ..new_job("noop", "o") };
        ids.push(store.create(job).await.unwrap().0.id);
    }
    store.create(new_job("other", "o")).await.unwrap();
    assert_eq!(claim(&store, &ids[2], "elsewhere").await.unwrap().priority, 5, "priority first");
    store.cancel(&ids[1]).await.unwrap();
    let claimed = store.claim_next("noop", 10, "w", 0).await.unwrap();
    assert_eq!(
        ids_of(&claimed),
        [ids[0].clone(), ids[4].clone()],
        "due, not cancelled, of the kind, in order"
    );
    assert!(claimed.iter().all(|j| j.status == JobStatus::Running && j.worker_id.as_deref() == Some("w")));
    assert!(store.claim_next("noop", 10, "w2", 0).await.unwrap().is_empty(), "nothing is claimed twice");
    assert!(store.claim_next("noop", 0, "w", 0).await.unwrap().is_empty());
}

async fn claims_alternate_between_owners(store: Arc<dyn JobStore>) {
    let alice: Vec<_> = (0..10).map(|_| new_job("noop", "alice")).collect();
    let alice =
        ids_of(&store.create_many(alice).await.unwrap().into_iter().map(|(j, _)| j).collect::<Vec<_>>());
    assert_eq!(ids_of(&store.claim_next("noop", 1, "w", 0).await.unwrap()), [alice[0].clone()]);
    let (bob, _) = store.create(new_job("noop", "bob")).await.unwrap();
    let next = store.claim_next("noop", 2, "w", 0).await.unwrap();
    assert_eq!(
        ids_of(&next),
        [alice[1].clone(), bob.id.clone()],
        "a newcomer's job runs right after the head"
    );
    let carol: Vec<_> = (0..3).map(|_| new_job("noop", "carol")).collect();
    let carol =
        ids_of(&store.create_many(carol).await.unwrap().into_iter().map(|(j, _)| j).collect::<Vec<_>>());
    let next = store.claim_next("noop", 6, "w", 0).await.unwrap();
    let expected = [&alice[2], &carol[0], &alice[3], &carol[1], &alice[4], &carol[2]];
    assert_eq!(ids_of(&next), expected.map(String::clone), "owners with work waiting take turns");
}

async fn the_running_cap_parks_and_room_unparks(store: Arc<dyn JobStore>) {
    let alice: Vec<_> = (0..3).map(|_| new_job("noop", "alice")).collect();
    let alice =
        ids_of(&store.create_many(alice).await.unwrap().into_iter().map(|(j, _)| j).collect::<Vec<_>>());
    let (bob, _) = store.create(new_job("noop", "bob")).await.unwrap();
    let (system, _) = store.create(new_job("noop", storage::ids::SYSTEM_OWNER)).await.unwrap();
    let system_too = store.create(new_job("noop", storage::ids::SYSTEM_OWNER)).await.unwrap().0;
    let mut claimed = ids_of(&store.claim_next("noop", 5, "w", 1).await.unwrap());
    claimed.sort();
    let mut expected = vec![alice[0].clone(), bob.id.clone(), system.id.clone(), system_too.id.clone()];
    expected.sort();
    assert_eq!(claimed, expected, "one job per owner, but the cap does not apply to the platform's own");
    // One delivery came back empty: one of alice's waiting jobs is parked in its place.
    assert!(store.claim_next("noop", 1, "w", 1).await.unwrap().is_empty(), "alice is at the cap");
    assert!(
        store.take_for_redelivery(Utc::now(), 10).await.unwrap().is_empty(),
        "parked jobs are not re-delivered"
    );
    assert!(store.unpark(None, 1).await.unwrap().is_empty(), "no room yet");
    assert!(store.finish_attempt(&alice[0], "w", AttemptOutcome::Succeeded(json!(1))).await.unwrap());
    let unparked = store.unpark(Some(&["alice".to_string(), "bob".to_string()]), 1).await.unwrap();
    assert_eq!(ids_of(&unparked), [alice[1].clone()], "as many as alice has room for, in turn");
    assert_eq!(ids_of(&store.claim_next("noop", 3, "w", 1).await.unwrap()), [alice[1].clone()]);
    assert!(store.finish_attempt(&alice[1], "w", AttemptOutcome::Succeeded(json!(1))).await.unwrap());
    assert!(store.claim_parked("alice", &["other"], "w", 1).await.unwrap().is_none(), "another kind");
    let next = store.claim_parked("alice", &["other", "noop"], "w2", 1).await.unwrap().unwrap();
    assert_eq!(
        (&next.id, next.status, next.worker_id.as_deref()),
        (&alice[2], JobStatus::Running, Some("w2"))
    );
    assert!(store.claim_parked("bob", &["noop"], "w", 1).await.unwrap().is_none(), "bob has none parked");
}

async fn waiting_jobs_are_counted_per_owner(store: Arc<dyn JobStore>) {
    for owner in ["alice", "alice", "alice", "bob"] {
        store.create(new_job("noop", owner)).await.unwrap();
    }
    let running = store.claim_next("noop", 1, "w", 0).await.unwrap().pop().unwrap();
    assert_eq!(running.owner, "alice");
    let failed =
        AttemptOutcome::Failed { error: "x".into(), retry_at: Some(Utc::now() + Duration::hours(1)) };
    let (retrying, _) = store.create(new_job("other", "alice")).await.unwrap();
    claim(&store, &retrying.id, "w").await.unwrap();
    store.finish_attempt(&retrying.id, "w", failed).await.unwrap();
    assert_eq!(store.waiting_count("alice").await.unwrap(), 3, "two queued, one awaiting a retry");
    assert_eq!(store.waiting_count("bob").await.unwrap(), 1);
    assert_eq!(store.waiting_count("carol").await.unwrap(), 0);
}

async fn finish_attempts_records_each_outcome(store: Arc<dyn JobStore>) {
    let mut ids = Vec::new();
    for _ in 0..6 {
        let id = store.create(new_job("noop", "o")).await.unwrap().0.id;
        claim(&store, &id, "w").await.unwrap();
        ids.push(id);
    }
    // The last job failed and was claimed again by another worker: "w" may not finish it.
    store
        .finish_attempt(
            &ids[5],
            "w",
            AttemptOutcome::Failed { error: "e".into(), retry_at: Some(Utc::now()) },
        )
        .await
        .unwrap();
    claim(&store, &ids[5], "w2").await.unwrap();
    let retry_at = Utc::now() + Duration::minutes(5);
    let outcomes = vec![
        (ids[0].clone(), AttemptOutcome::Succeeded(json!({"n": 0}))),
        (ids[1].clone(), AttemptOutcome::Failed { error: "try again".into(), retry_at: Some(retry_at) }),
        (ids[2].clone(), AttemptOutcome::Succeeded(json!(null))),
        (ids[3].clone(), AttemptOutcome::Failed { error: "gave up".into(), retry_at: None }),
        (ids[4].clone(), AttemptOutcome::Cancelled),
        (ids[5].clone(), AttemptOutcome::Succeeded(json!("stale"))),
    ];
    let recorded = store.finish_attempts("w", &outcomes).await.unwrap();
    assert_eq!(recorded, [true, true, true, true, true, false]);
    let job = |i: usize| {
        let (store, id) = (store.clone(), ids[i].clone());
        async move { store.get(&id).await.unwrap().unwrap() }
    };
    let first = job(0).await;
    assert_eq!(
        (first.status, first.result, first.progress),
        (JobStatus::Succeeded, Some(json!({"n": 0})), 100)
    );
    assert!(first.finished_at.is_some());
    let second = job(1).await;
    assert_eq!((second.status, second.last_error.as_deref()), (JobStatus::Failed, Some("try again")));
    assert_eq!(second.run_at.timestamp_millis(), retry_at.timestamp_millis());
    assert_eq!(job(2).await.result, Some(json!(null)));
    assert_eq!(job(3).await.status, JobStatus::Dead);
    assert_eq!(job(4).await.status, JobStatus::Cancelled);
    let stale = job(5).await;
    assert_eq!((stale.status, stale.worker_id.as_deref()), (JobStatus::Running, Some("w2")));
    assert!(store.finish_attempts("w", &[]).await.unwrap().is_empty());
}
