//! The agent evaluation store suite (tasks with one run per agent, scopes and paging, status
//! moves that an ended task or run refuses, judgements, retries, cancels, the judged runs a
//! leaderboard reads), run on SQLite and on PostgreSQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use storage::config::{Config, DatabaseConfig, RawConfig};
use storage::sql::{
    Database, EvalStore, PullRequest, RunJudgement, RunStatus, RunUpdate, TaskQuery, TaskScope, TaskSpec,
    TaskStatus,
};

storage::store_suite!(
    sqlite => open_sqlite, postgres => open_postgres;
    [
        a_task_is_created_with_a_queued_run_per_agent,
        tasks_are_listed_by_scope_status_and_page,
        an_ended_task_or_run_refuses_further_moves,
        runs_are_judged_retried_and_cancelled,
        judged_runs_are_read_by_scope_and_time,
    ]
);

async fn open_sqlite() -> Option<Arc<dyn EvalStore>> {
    let dir = tempfile::tempdir().unwrap().keep();
    let database = Database::connect(&DatabaseConfig::Sqlite { path: dir.join("engram.db") }).await.unwrap();
    Some(database.eval_store())
}

async fn open_postgres() -> Option<Arc<dyn EvalStore>> {
    let url = storage::testing::fresh_postgres_url().await?;
    let config = Config::from_raw(&RawConfig::layered([("DATABASE_URL".to_string(), url)], [], [])).unwrap();
    Some(Database::connect(&config.backends.database).await.unwrap().eval_store())
}

fn at(minute: i64) -> DateTime<Utc> {
    "2026-06-01T08:00:00Z".parse::<DateTime<Utc>>().unwrap() + Duration::minutes(minute)
}

fn new_task(owner: &str, team: Option<&str>, agents: &[&str]) -> TaskSpec {
    TaskSpec {
        owner: owner.into(),
        team_id: team.map(str::to_string),
        org_id: None,
        project_id: None,
        created_by_email: Some(format!("{owner}@example.com")),
        created_by_name: None,
        pr: None,
        scenario_name: Some("release-notes".into()),
        scenario: Some(json!({"name": "release-notes"})),
        agents: agents.iter().map(|a| a.to_string()).collect(),
        rubric: vec!["AR".into(), "SF".into()],
        rubric_thresholds: BTreeMap::from([("AR".to_string(), 0.8)]),
        max_files: 50,
    }
}

fn scored(overall: f64, passed: bool) -> RunJudgement {
    RunJudgement::Scored { score: json!({"overall_score": overall}), overall_score: overall, passed }
}

fn done() -> RunUpdate {
    RunUpdate { status: Some(RunStatus::Done), ..RunUpdate::default() }
}

async fn a_task_is_created_with_a_queued_run_per_agent(store: Arc<dyn EvalStore>) {
    let mut new = new_task("ann", Some("t1"), &["codex", "claude", "gemini"]);
    new.pr = Some(PullRequest { url: "https://github.com/o/r/pull/7".into(), repo: "o/r".into(), number: 7 });
    let task = store.create_task(&new, at(0)).await.unwrap();
    assert_eq!(task.id.len(), 36);
    assert_eq!((task.status, task.created_at, task.started_at), (TaskStatus::Queued, at(0), None));
    assert_eq!(task.spec.pr.as_ref().unwrap().number, 7);
    assert_eq!(task.spec.rubric_thresholds["AR"], 0.8);
    assert_eq!(store.task(&task.id).await.unwrap().unwrap(), task);
    assert!(store.task("no-such-task").await.unwrap().is_none());

    let runs = store.runs(&task.id).await.unwrap();
    let agents: Vec<&str> = runs.iter().map(|r| r.agent.as_str()).collect();
    assert_eq!(agents, ["codex", "claude", "gemini"], "in the task's order");
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Queued && r.retry_count == 0 && r.judgement.is_none())
    );
    assert_eq!(store.run(&task.id, "claude").await.unwrap().unwrap(), runs[1]);
    assert!(store.run(&task.id, "qwen").await.unwrap().is_none());

    let prepared = json!({"name": "pr-7", "probes": []});
    store.set_task_prepared(&task.id, &["src/a.rs".into()], Some("abc123"), &prepared, at(1)).await.unwrap();
    store.set_task_job(&task.id, "job-1").await.unwrap();
    let task = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        (task.changed_files, task.prompt_hash.as_deref()),
        (vec!["src/a.rs".to_string()], Some("abc123"))
    );
    assert_eq!((task.spec.scenario, task.job_id.as_deref()), (Some(prepared), Some("job-1")));
}

async fn tasks_are_listed_by_scope_status_and_page(store: Arc<dyn EvalStore>) {
    let mut ids = Vec::new();
    for (i, (owner, team)) in
        [("ann", Some("t1")), ("bob", Some("t1")), ("cat", None), ("ann", None)].iter().enumerate()
    {
        ids.push(store.create_task(&new_task(owner, *team, &["codex"]), at(i as i64)).await.unwrap().id);
    }
    store.set_task_status(&ids[1], TaskStatus::Running, None, at(10)).await.unwrap();
    let page = |scope: TaskScope, status: Option<TaskStatus>, offset: i64, limit: i64| {
        let store = store.clone();
        async move {
            let (tasks, total) = store.tasks(&TaskQuery { scope, status, offset, limit }).await.unwrap();
            (tasks.into_iter().map(|t| t.id).collect::<Vec<_>>(), total)
        }
    };
    let own = TaskScope { owner: Some("ann".into()), team_id: None };
    assert_eq!(
        page(own.clone(), None, 0, 10).await,
        (vec![ids[3].clone(), ids[0].clone()], 2),
        "newest first"
    );
    let with_team = TaskScope { owner: Some("ann".into()), team_id: Some("t1".into()) };
    assert_eq!(page(with_team.clone(), None, 0, 10).await.1, 3);
    assert_eq!(page(with_team.clone(), None, 1, 1).await, (vec![ids[1].clone()], 3), "a page, and the total");
    assert_eq!(page(with_team, Some(TaskStatus::Running), 0, 10).await, (vec![ids[1].clone()], 1));
    let team_only = TaskScope { owner: None, team_id: Some("t1".into()) };
    assert_eq!(page(team_only, None, 0, 10).await.1, 2);
    assert_eq!(page(TaskScope::default(), None, 0, 10).await.1, 4, "no scope: every task");
    assert_eq!(page(TaskScope { owner: Some("dan".into()), team_id: None }, None, 0, 10).await.1, 0);
}

async fn an_ended_task_or_run_refuses_further_moves(store: Arc<dyn EvalStore>) {
    let task = store.create_task(&new_task("ann", None, &["codex", "claude"]), at(0)).await.unwrap();
    assert!(store.set_task_status(&task.id, TaskStatus::Running, None, at(1)).await.unwrap());
    assert!(store.set_task_status(&task.id, TaskStatus::Judging, None, at(2)).await.unwrap());
    let running = RunUpdate {
        status: Some(RunStatus::Running),
        milestones: Some(json!({"init": "2026"})),
        ..RunUpdate::default()
    };
    let run = store.update_run(&task.id, "codex", &running, at(2)).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.started_at, run.milestones["init"].as_str()),
        (RunStatus::Running, Some(at(2)), Some("2026"))
    );
    let stats = RunUpdate { stats: Some(json!({"turns": 12})), ..RunUpdate::default() };
    let run = store.update_run(&task.id, "codex", &stats, at(3)).await.unwrap().unwrap();
    assert_eq!(
        (run.status, run.stats["turns"].as_i64()),
        (RunStatus::Running, Some(12)),
        "unnamed fields stay"
    );
    let failed = RunUpdate {
        status: Some(RunStatus::Error),
        error_message: Some("exit 1".into()),
        ..RunUpdate::default()
    };
    let run = store.update_run(&task.id, "codex", &failed, at(4)).await.unwrap().unwrap();
    assert_eq!((run.completed_at, run.error_message.as_deref()), (Some(at(4)), Some("exit 1")));
    assert!(
        store.update_run(&task.id, "codex", &done(), at(5)).await.unwrap().is_none(),
        "an ended run stays"
    );
    assert!(store.update_run(&task.id, "nobody", &done(), at(5)).await.unwrap().is_none());

    assert!(store.set_task_status(&task.id, TaskStatus::Done, None, at(6)).await.unwrap());
    assert!(!store.set_task_status(&task.id, TaskStatus::Running, None, at(7)).await.unwrap());
    let task = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        (task.status, task.started_at, task.completed_at),
        (TaskStatus::Done, Some(at(1)), Some(at(6)))
    );
}

async fn runs_are_judged_retried_and_cancelled(store: Arc<dyn EvalStore>) {
    let task = store.create_task(&new_task("ann", None, &["codex", "claude", "qwen"]), at(0)).await.unwrap();
    assert!(!store.judge_run(&task.id, "codex", &scored(0.9, true), at(1)).await.unwrap(), "not done yet");
    store.update_run(&task.id, "codex", &done(), at(1)).await.unwrap().unwrap();
    assert!(store.judge_run(&task.id, "codex", &scored(0.9, true), at(2)).await.unwrap());
    store.update_run(&task.id, "claude", &done(), at(1)).await.unwrap().unwrap();
    let unscored = RunJudgement::Unscored { reason: "the judge answered garbage".into() };
    assert!(store.judge_run(&task.id, "claude", &unscored, at(2)).await.unwrap());
    let failed = RunUpdate {
        status: Some(RunStatus::Error),
        error_message: Some("timed out".into()),
        ..RunUpdate::default()
    };
    store.update_run(&task.id, "qwen", &failed, at(1)).await.unwrap().unwrap();
    store.set_task_status(&task.id, TaskStatus::Done, None, at(3)).await.unwrap();

    let runs = store.runs(&task.id).await.unwrap();
    assert_eq!(runs[0].judgement, Some(scored(0.9, true)));
    assert_eq!((runs[1].judgement.clone(), runs[1].judged_at), (Some(unscored), Some(at(2))));

    let retried = store.retry(&task.id, None, at(4)).await.unwrap();
    assert_eq!(retried.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(), ["qwen"], "only the failed run");
    assert_eq!(
        (retried[0].status, retried[0].retry_count, retried[0].error_message.clone()),
        (RunStatus::Queued, 1, None)
    );
    assert_eq!(store.task(&task.id).await.unwrap().unwrap().status, TaskStatus::Queued);
    let named = store.retry(&task.id, Some(&["codex".to_string(), "qwen".to_string()]), at(5)).await.unwrap();
    assert_eq!(
        named.iter().map(|r| r.agent.as_str()).collect::<Vec<_>>(),
        ["codex"],
        "qwen is queued, not ended"
    );
    assert_eq!(
        (named[0].judgement.clone(), named[0].retry_count),
        (None, 1),
        "a retried run loses its judgement"
    );

    store
        .update_run(
            &task.id,
            "codex",
            &RunUpdate { status: Some(RunStatus::Running), ..RunUpdate::default() },
            at(6),
        )
        .await
        .unwrap();
    assert!(store.cancel(&task.id, "Task cancelled by user", at(7)).await.unwrap());
    assert!(!store.cancel(&task.id, "again", at(8)).await.unwrap(), "an ended task is not cancelled twice");
    let task = store.task(&task.id).await.unwrap().unwrap();
    assert_eq!(
        (task.status, task.error_message.as_deref()),
        (TaskStatus::Error, Some("Task cancelled by user"))
    );
    let runs = store.runs(&task.id).await.unwrap();
    assert!(
        runs.iter()
            .filter(|r| r.agent != "claude")
            .all(|r| r.status == RunStatus::Error && r.error_message.as_deref() == Some("Task cancelled"))
    );
    assert_eq!(runs[1].status, RunStatus::Done, "a run that had ended keeps its end");
    assert!(
        store.update_run(&task.id, "codex", &done(), at(9)).await.unwrap().is_none(),
        "a late worker changes nothing"
    );
}

async fn judged_runs_are_read_by_scope_and_time(store: Arc<dyn EvalStore>) {
    for (minute, owner, team) in [(0, "ann", Some("t1")), (10, "bob", Some("t1")), (20, "cat", None)] {
        let task = store.create_task(&new_task(owner, team, &["codex", "claude"]), at(minute)).await.unwrap();
        for agent in ["codex", "claude"] {
            store.update_run(&task.id, agent, &done(), at(minute + 1)).await.unwrap();
        }
        store.judge_run(&task.id, "codex", &scored(0.5, false), at(minute + 2)).await.unwrap();
    }
    let all = store.judged_runs(&TaskScope::default(), None, None).await.unwrap();
    assert_eq!(all.len(), 3, "claude's runs were never judged");
    assert!(all.iter().all(|r| r.agent == "codex" && r.rubric == ["AR", "SF"]));
    let team = TaskScope { owner: Some("cat".into()), team_id: Some("t1".into()) };
    assert_eq!(store.judged_runs(&team, None, None).await.unwrap().len(), 3);
    let own = TaskScope { owner: Some("bob".into()), team_id: None };
    assert_eq!(store.judged_runs(&own, None, None).await.unwrap()[0].judged_at, at(12));
    let window = store.judged_runs(&TaskScope::default(), Some(at(12)), Some(at(22))).await.unwrap();
    assert_eq!(
        window.iter().map(|r| r.judged_at).collect::<Vec<_>>(),
        [at(12)],
        "since is inclusive, until is not"
    );
}
