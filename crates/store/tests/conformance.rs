//! The store's contract, checked on SQLite and on a real PostgreSQL server
//! (started by the test from the machine's PostgreSQL binaries): guarded
//! transitions, history, prefixes, cache entries, the lifecycle of runs and
//! jobs (tests/lifecycle), fenced task and job writes, writers in parallel.

mod lifecycle;
mod pg;

use lifecycle::{lease_of, run};

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use switchyard_store::{
    CacheEntry, CatalogStore, Claim, ExperimentRecord, JobRecord, JobStore, Kind, Lease,
    MemoryStore, PipelineRecord, PipelineVersionRecord, RecurringRunRecord, RunCatalog, RunField,
    RunFilter, RunStore, RunUpdate, SqlStore, State, StoreError, TaskRecord,
};

fn task(run: &str, key: &str, state: State) -> TaskRecord {
    TaskRecord {
        run_id: run.into(),
        task_key: key.into(),
        name: key.into(),
        parent_key: None,
        kind: "container".into(),
        state,
        attempt: 0,
        cached: false,
        inputs: Some(json!({"x": 1})),
        outputs: None,
        log_path: None,
        error: None,
        fingerprint: None,
        started_at: Some(Utc::now()),
        finished_at: None,
    }
}

async fn runs_transitions_and_history(store: Arc<dyn RunStore>) {
    store.create_run(&run("abc-1")).await.unwrap();
    store.create_run(&run("abd-2")).await.unwrap();
    assert_eq!(store.get_run("abc").await.unwrap().id, "abc-1");
    assert!(matches!(
        store.get_run("ab").await,
        Err(StoreError::Ambiguous(_))
    ));
    assert!(matches!(
        store.get_run("zz").await,
        Err(StoreError::RunNotFound(_))
    ));
    assert!(matches!(
        store.get_run("%").await,
        Err(StoreError::RunNotFound(_))
    ));

    // Guarded: only from the listed states.
    assert!(!store
        .transition_run(
            "abc-1",
            &[State::Running],
            State::Succeeded,
            RunUpdate::default()
        )
        .await
        .unwrap());
    assert!(store
        .transition_run(
            "abc-1",
            &[State::Pending],
            State::Running,
            RunUpdate {
                started_at: Some(Utc::now()),
                ..Default::default()
            }
        )
        .await
        .unwrap());
    let done = RunUpdate {
        outputs: Some(json!({"o": 2})),
        finished_at: Some(Utc::now()),
        ..Default::default()
    };
    assert!(store
        .transition_run("abc-1", &[State::Running], State::Succeeded, done)
        .await
        .unwrap());
    let r = store.get_run("abc-1").await.unwrap();
    assert_eq!(r.state, State::Succeeded);
    assert_eq!(r.outputs, Some(json!({"o": 2})));
    assert!(r.started_at.is_some() && r.finished_at.is_some());

    // Tasks: a transition is recorded only when the state changes.
    store
        .put_task(&task("abc-1", "t", State::Running), None)
        .await
        .unwrap();
    store
        .put_task(&task("abc-1", "t", State::Running), None)
        .await
        .unwrap();
    let mut t = task("abc-1", "t", State::Succeeded);
    t.outputs = Some(json!({"parameters": {"Output": 1}}));
    store.put_task(&t, None).await.unwrap();
    let got = store.get_task("abc-1", "t").await.unwrap().unwrap();
    assert_eq!(got.state, State::Succeeded);
    assert_eq!(got.outputs, t.outputs);
    let history: Vec<(Option<String>, State)> = store
        .transitions("abc-1")
        .await
        .unwrap()
        .into_iter()
        .map(|t| (t.task_key, t.state))
        .collect();
    assert_eq!(
        history,
        vec![
            (None, State::Pending),
            (None, State::Running),
            (None, State::Succeeded),
            (Some("t".into()), State::Running),
            (Some("t".into()), State::Succeeded)
        ]
    );
    assert_eq!(store.list_runs(10).await.unwrap().len(), 2);
}

async fn cache_entries(store: Arc<dyn RunStore>) {
    assert!(store.get_cache("f").await.unwrap().is_none());
    let e = CacheEntry {
        fingerprint: "f".into(),
        outputs: json!({"a": 1}),
        run_id: "r".into(),
        task_key: "t".into(),
        created_at: Utc::now(),
    };
    store.put_cache(&e).await.unwrap();
    store
        .put_cache(&CacheEntry {
            outputs: json!({"a": 2}),
            ..e.clone()
        })
        .await
        .unwrap();
    assert_eq!(
        store.get_cache("f").await.unwrap().unwrap().outputs,
        json!({"a": 2})
    );
}

/// Two stores on one database (as two processes would be) writing at once.
async fn parallel_writers_do_not_conflict(a: Arc<dyn RunStore>, b: Arc<dyn RunStore>) {
    a.create_run(&run("r1")).await.unwrap();
    b.create_run(&run("r2")).await.unwrap();
    let mut handles = Vec::new();
    let writers = [
        (a.clone(), "r1"),
        (b.clone(), "r2"),
        (a.clone(), "r2"),
        (b.clone(), "r1"),
    ];
    for (worker, (store, id)) in writers.into_iter().enumerate() {
        handles.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("w{worker}-{i}");
                store
                    .put_task(&task(id, &key, State::Running), None)
                    .await?;
                store
                    .put_task(&task(id, &key, State::Succeeded), None)
                    .await?;
            }
            Ok::<_, StoreError>(())
        }));
    }
    for h in handles {
        h.await.unwrap().unwrap();
    }
    let total = a.list_tasks("r1").await.unwrap().len() + a.list_tasks("r2").await.unwrap().len();
    assert_eq!(total, 200);
}

/// Task writes are fenced by the run's owner: once another process took the
/// run over, the old owner's task writes change nothing.
async fn task_writes_are_fenced(store: Arc<dyn RunStore>) {
    store.create_run(&run("c1")).await.unwrap();
    let held = lease_of("a", "h1", 30);
    let running = Claim {
        from: &[State::Pending],
        to: Some(State::Running),
        ..Claim::default()
    };
    assert!(store
        .claim(Kind::Run, "c1", None, &held, running)
        .await
        .unwrap());
    // The holder writes…
    assert!(store
        .put_task(&task("c1", "t", State::Running), Some(&held.owner))
        .await
        .unwrap());
    let held = store.get_run("c1").await.unwrap().lease.unwrap();
    assert!(store
        .claim(
            Kind::Run,
            "c1",
            Some(&held),
            &lease_of("c", "h2", 30),
            Claim::lease_only()
        )
        .await
        .unwrap());
    // …and the moment another took the run over, its writes do nothing
    // (false, no record change, no transition), while the new owner's land.
    let before = store.transitions("c1").await.unwrap().len();
    assert!(!store
        .put_task(&task("c1", "t", State::Failed), Some(&held.owner))
        .await
        .unwrap());
    assert!(!store
        .put_task(&task("c1", "late", State::Running), Some(&held.owner))
        .await
        .unwrap());
    let t = store.get_task("c1", "t").await.unwrap().unwrap();
    assert_eq!(t.state, State::Running, "the fenced write changed nothing");
    assert!(store.get_task("c1", "late").await.unwrap().is_none());
    assert_eq!(store.transitions("c1").await.unwrap().len(), before);
    assert!(store
        .put_task(&task("c1", "t", State::Succeeded), Some("c"))
        .await
        .unwrap());
    // A server owns the runs it queues from their creation.
    store.create_run(&run("c3")).await.unwrap();
    store
        .set_owner("c3", Some(&lease_of("e", "h1", 30)))
        .await
        .unwrap();
    assert_eq!(store.get_run("c3").await.unwrap().lease.unwrap().owner, "e");
}

/// A schedule's next slot moves only from the value the mover saw and only
/// while enabled; runs find their schedule; archiving an experiment disables
/// its schedules and archives its runs.
async fn recurring_runs(store: impl RunStore + CatalogStore) {
    let t = |s: i64| chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
    let exp = ExperimentRecord {
        id: "e1".into(),
        display_name: "nightly".into(),
        description: None,
        storage_state: "AVAILABLE".into(),
        created_at: Utc::now(),
    };
    store.create_experiment(&exp).await.unwrap();
    let r = RecurringRunRecord {
        id: "rr1".into(),
        display_name: "every-minute".into(),
        description: None,
        experiment_id: "e1".into(),
        pipeline_id: None,
        pipeline_version_id: None,
        pipeline_spec: Some(json!({"pipelineInfo": {"name": "p"}})),
        runtime_config: Some(json!({"parameters": {"a": 1}})),
        trigger: json!({"periodic_schedule": {"interval_second": "60"}}),
        max_concurrency: 2,
        no_catchup: false,
        enabled: true,
        next_fire: Some(t(60)),
        error: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
        service_account: Some("trainer".into()),
    };
    store.create_recurring_run(&r).await.unwrap();
    assert_eq!(
        store
            .get_recurring_run("rr1")
            .await
            .unwrap()
            .service_account
            .as_deref(),
        Some("trainer")
    );
    assert!(matches!(
        store.create_recurring_run(&r).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let got = store.get_recurring_run("rr1").await.unwrap();
    assert_eq!(
        (got.next_fire, got.max_concurrency, got.enabled),
        (Some(t(60)), 2, true)
    );
    assert_eq!(got.runtime_config, r.runtime_config);
    assert!(store.due_recurring_runs(t(59)).await.unwrap().is_empty());
    assert_eq!(store.due_recurring_runs(t(60)).await.unwrap().len(), 1);
    // Two movers from the same slot: one wins.
    assert!(store
        .advance_recurring_run("rr1", t(60), Some(t(120)))
        .await
        .unwrap());
    assert!(!store
        .advance_recurring_run("rr1", t(60), Some(t(120)))
        .await
        .unwrap());
    // Disabled: nothing moves, nothing is due; enabling keeps the slot.
    store.set_recurring_run_enabled("rr1", false).await.unwrap();
    assert!(!store
        .advance_recurring_run("rr1", t(120), Some(t(180)))
        .await
        .unwrap());
    assert!(store.due_recurring_runs(t(1000)).await.unwrap().is_empty());
    store.set_recurring_run_enabled("rr1", true).await.unwrap();
    assert_eq!(
        store.get_recurring_run("rr1").await.unwrap().next_fire,
        Some(t(120))
    );
    store
        .fail_recurring_run("rr1", "its pipeline is gone")
        .await
        .unwrap();
    let failed = store.get_recurring_run("rr1").await.unwrap();
    assert!(!failed.enabled && failed.error.as_deref() == Some("its pipeline is gone"));
    store.set_recurring_run_enabled("rr1", true).await.unwrap();
    assert!(store
        .get_recurring_run("rr1")
        .await
        .unwrap()
        .error
        .is_none());
    // The end of a schedule: no next slot.
    assert!(store
        .advance_recurring_run("rr1", t(120), None)
        .await
        .unwrap());
    assert!(store
        .due_recurring_runs(t(100_000))
        .await
        .unwrap()
        .is_empty());
    // Runs it fired are found by it.
    store.create_run(&run("fired-1")).await.unwrap();
    assert!(matches!(
        store.create_run(&run("fired-1")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    store
        .put_run_catalog(&RunCatalog {
            run_id: "fired-1".into(),
            experiment_id: "e1".into(),
            storage_state: "AVAILABLE".into(),
            description: None,
            pipeline_id: None,
            pipeline_version_id: None,
            runtime_config: None,
            recurring_run_id: Some("rr1".into()),
            service_account: Some("trainer".into()),
        })
        .await
        .unwrap();
    let by = |id: &str| RunFilter {
        field: RunField::RecurringRunId,
        negate: false,
        values: vec![id.into()],
    };
    let (page, total) = store
        .page_runs(None, &[by("rr1")], false, 0, 10)
        .await
        .unwrap();
    assert_eq!(total, 1);
    assert_eq!(
        page[0].1.as_ref().unwrap().recurring_run_id.as_deref(),
        Some("rr1")
    );
    assert_eq!(
        store
            .page_runs(None, &[by("rr2")], false, 0, 10)
            .await
            .unwrap()
            .1,
        0
    );
    // Archiving the experiment: its runs archived, its schedules disabled.
    store.set_recurring_run_enabled("rr1", true).await.unwrap();
    store
        .set_experiment_storage("e1", "ARCHIVED")
        .await
        .unwrap();
    assert!(!store.get_recurring_run("rr1").await.unwrap().enabled);
    let cat = store.get_run_catalog("fired-1").await.unwrap().unwrap();
    assert_eq!(cat.storage_state, "ARCHIVED");
    store.delete_recurring_run("rr1").await.unwrap();
    assert!(matches!(
        store.delete_recurring_run("rr1").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(
        store.get_run_catalog("fired-1").await.unwrap().is_some(),
        "its runs stay"
    );
}

fn running_job(id: &str, lease: Lease) -> JobRecord {
    lifecycle::job(id, State::Running, Some(lease))
}

/// Writing a job record read before the last renewal keeps the longer lease.
async fn job_leases(store: Arc<dyn JobStore>) {
    let mut job = running_job("j1", lease_of("a", "h1", 30));
    store.create_job(&job).await.unwrap();
    let later = Utc::now() + chrono::Duration::seconds(300);
    assert_eq!(store.renew_leases("a", later).await.unwrap(), 1);
    job.restarts = 1;
    assert!(store.update_job(&job, None, Some("a")).await.unwrap());
    let stored = store.get_job("j1").await.unwrap().lease.unwrap();
    assert_eq!(stored.until_ms(), later.timestamp_millis());
    // Ended with its lease given up: nothing is renewed.
    job.state = State::Canceled;
    job.lease = None;
    assert!(store
        .update_job(&job, Some("canceled"), None)
        .await
        .unwrap());
    assert!(store.get_job("j1").await.unwrap().lease.is_none());
    assert_eq!(store.renew_leases("a", later).await.unwrap(), 0);
}

/// A job whose follower died is taken over by exactly one process, and a
/// pipeline task finds its latest job.
async fn job_claims_and_task_links(store: Arc<dyn JobStore>) {
    use switchyard_store::TaskLink;
    let link = TaskLink {
        run_id: "run-jc".into(),
        task_key: "train".into(),
    };
    let dead = lease_of("gone", "h9", -30);
    let mut job = JobRecord {
        task: Some(link.clone()),
        created_at: Utc::now() - chrono::Duration::seconds(10),
        ..running_job("jc1", dead.clone())
    };
    store.create_job(&job).await.unwrap();
    assert_eq!(store.job_for_task(&link).await.unwrap().unwrap().id, "jc1");
    let unfinished = |store: &Arc<dyn JobStore>| {
        let store = store.clone();
        async move {
            store
                .unfinished_jobs()
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id)
                .filter(|id| id.starts_with("jc"))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(unfinished(&store).await, ["jc1"]);
    // A placed job that failed over runs elsewhere: its backend and spec
    // are written with the rest; its KPIs when it ends.
    job.backend = "sagemaker".into();
    job.spec = serde_json::json!({"spec": {"backend": "sagemaker"}});
    job.state = State::Succeeded;
    job.lease = None;
    job.kpi = Some(serde_json::json!({"backend": "sagemaker", "est_cost_usd": 0.25}));
    assert!(store.update_job(&job, None, None).await.unwrap());
    assert!(unfinished(&store).await.is_empty());
    let back = store.get_job("jc1").await.unwrap();
    assert_eq!(
        (back.backend.as_str(), &back.spec, &back.kpi),
        ("sagemaker", &job.spec, &job.kpi)
    );
    // A second job of the task (a retry) is the one found; other tasks find none.
    job.id = "jc2".into();
    job.state = State::Pending;
    job.created_at = Utc::now();
    store.create_job(&job).await.unwrap();
    assert_eq!(store.job_for_task(&link).await.unwrap().unwrap().id, "jc2");
    let other = TaskLink {
        run_id: "run-jc".into(),
        task_key: "eval".into(),
    };
    assert!(store.job_for_task(&other).await.unwrap().is_none());
    let alone = store.get_job("jc2").await.unwrap();
    assert_eq!(alone.task, Some(link));
}

/// Filtered pages are filtered by the database, counted, and paged.
async fn filtered_pages(store: impl RunStore + CatalogStore) {
    for (id, name, state) in [
        ("flt-1", "flt-a", State::Succeeded),
        ("flt-2", "flt-b", State::Failed),
        ("flt-3", "flt-a", State::Running),
    ] {
        let mut r = run(id);
        r.display_name = name.into();
        r.state = state;
        store.create_run(&r).await.unwrap();
    }
    let f = |field, negate, values: &[&str]| RunFilter {
        field,
        negate,
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    // Every query is limited to these runs (the store holds other tests' runs).
    let ours = f(RunField::DisplayName, false, &["flt-a", "flt-b"]);
    let page = |filters: Vec<RunFilter>, offset: u64, limit: u64| {
        let store = &store;
        async move {
            let (rows, total) = store
                .page_runs(None, &filters, true, offset, limit)
                .await
                .unwrap();
            assert!(rows.iter().all(|(r, _)| r.spec.is_empty()));
            let mut ids: Vec<String> = rows.into_iter().map(|(r, _)| r.id).collect();
            ids.sort();
            (ids, total)
        }
    };
    assert_eq!(
        page(vec![f(RunField::DisplayName, false, &["flt-a"])], 0, 100).await,
        (vec!["flt-1".to_string(), "flt-3".to_string()], 2)
    );
    assert_eq!(
        page(
            vec![ours.clone(), f(RunField::State, false, &["SUCCEEDED"])],
            0,
            100
        )
        .await,
        (vec!["flt-1".to_string()], 1)
    );
    assert_eq!(
        page(
            vec![ours.clone(), f(RunField::State, true, &["SUCCEEDED"])],
            0,
            100
        )
        .await,
        (vec!["flt-2".to_string(), "flt-3".to_string()], 2)
    );
    assert_eq!(
        page(
            vec![
                ours.clone(),
                f(RunField::StorageState, false, &["AVAILABLE"])
            ],
            0,
            100
        )
        .await
        .1,
        3
    );
    assert_eq!(
        page(
            vec![ours.clone(), f(RunField::Id, false, &["flt-2", "nope"])],
            0,
            100
        )
        .await,
        (vec!["flt-2".to_string()], 1)
    );
    // A page of one, the total still counts every match.
    let (one, total) = page(vec![ours.clone()], 1, 1).await;
    assert_eq!((one.len(), total), (1, 3));
    assert_eq!(
        page(vec![ours, f(RunField::State, false, &[])], 0, 100)
            .await
            .1,
        0
    );
}

fn version(id: &str, pipeline: &str, name: &str) -> PipelineVersionRecord {
    PipelineVersionRecord {
        id: id.into(),
        pipeline_id: pipeline.into(),
        name: name.into(),
        display_name: name.into(),
        description: None,
        spec: json!({"pipelineInfo": {"name": pipeline}}),
        created_at: Utc::now(),
        tags: [("stage".to_string(), name.to_string())].into(),
    }
}

/// Experiments and pipelines keep unique names; a pipeline's versions go
/// with it, a run's catalog entry, tasks and history with the run; missing
/// records are NotFound; the stats count what is stored.
async fn experiments_pipelines_and_runs(store: impl RunStore + CatalogStore) {
    let exp = |id: &str, name: &str| ExperimentRecord {
        id: id.into(),
        display_name: name.into(),
        description: Some("d".into()),
        storage_state: "AVAILABLE".into(),
        created_at: Utc::now(),
    };
    store.create_experiment(&exp("x1", "first")).await.unwrap();
    store.create_experiment(&exp("x2", "second")).await.unwrap();
    assert!(matches!(
        store.create_experiment(&exp("x3", "first")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        store.get_experiment("x2").await.unwrap().display_name,
        "second"
    );
    assert!(matches!(
        store.get_experiment("nope").await,
        Err(StoreError::NotFound {
            kind: "experiment",
            ..
        })
    ));
    assert_eq!(
        store
            .experiment_by_name("first")
            .await
            .unwrap()
            .map(|e| e.id),
        Some("x1".to_string())
    );
    assert!(store.experiment_by_name("third").await.unwrap().is_none());
    let names: Vec<String> = store
        .list_experiments()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .filter(|id| id.starts_with('x'))
        .collect();
    assert_eq!(names, ["x1", "x2"], "oldest first");
    assert!(matches!(
        store.set_experiment_storage("nope", "ARCHIVED").await,
        Err(StoreError::NotFound { .. })
    ));

    let p = PipelineRecord {
        id: "p1".into(),
        name: "train".into(),
        display_name: "Train".into(),
        description: None,
        created_at: Utc::now(),
        tags: Default::default(),
    };
    store
        .create_pipeline(&p, Some(&version("v1", "p1", "v1")))
        .await
        .unwrap();
    assert!(matches!(
        store
            .create_pipeline(
                &PipelineRecord {
                    id: "p2".into(),
                    ..p.clone()
                },
                None
            )
            .await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(
        store.get_pipeline("p2").await.is_err(),
        "nothing half-created"
    );
    store
        .create_version(&version("v2", "p1", "v2"))
        .await
        .unwrap();
    assert!(matches!(
        store.create_version(&version("v3", "p1", "v2")).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert_eq!(
        store.get_version("v2").await.unwrap().spec["pipelineInfo"]["name"],
        "p1"
    );
    let versions: Vec<String> = store
        .list_versions("p1")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(versions, ["v1", "v2"]);
    // Tags are stored, replaced as a whole and cleared (KFP's updates).
    assert_eq!(store.get_version("v2").await.unwrap().tags["stage"], "v2");
    let team: switchyard_store::Tags = [("team".to_string(), "ml".to_string())].into();
    store
        .update_pipeline("p1", Some("Train v2"), Some(&team))
        .await
        .unwrap();
    let got = store.get_pipeline("p1").await.unwrap();
    assert_eq!((got.display_name.as_str(), &got.tags), ("Train v2", &team));
    // Only what is given changes.
    store
        .update_pipeline("p1", Some("Train v3"), None)
        .await
        .unwrap();
    let got = store.get_pipeline("p1").await.unwrap();
    assert_eq!((got.display_name.as_str(), &got.tags), ("Train v3", &team));
    store
        .update_pipeline("p1", None, Some(&Default::default()))
        .await
        .unwrap();
    let got = store.get_pipeline("p1").await.unwrap();
    assert!(got.tags.is_empty() && got.display_name == "Train v3");
    store.update_pipeline("p1", None, None).await.unwrap();
    store
        .update_version("v2", Some("second"), Some(&team))
        .await
        .unwrap();
    let got = store.get_version("v2").await.unwrap();
    assert_eq!((got.display_name.as_str(), &got.tags), ("second", &team));
    assert!(matches!(
        store.update_pipeline("nope", Some("x"), Some(&team)).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.update_version("nope", None, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        store.pipeline_by_name("train").await.unwrap().map(|p| p.id),
        Some("p1".to_string())
    );
    store.delete_version("v1").await.unwrap();
    assert!(matches!(
        store.delete_version("v1").await,
        Err(StoreError::NotFound { .. })
    ));
    store.delete_pipeline("p1").await.unwrap();
    assert!(matches!(
        store.get_version("v2").await,
        Err(StoreError::NotFound {
            kind: "pipeline version",
            ..
        })
    ));
    assert!(store.list_pipelines().await.unwrap().is_empty());

    // A run with its entry, tasks and history; deleting it takes them along.
    // (The SQLite file is shared with the other checks: the stats compare.)
    let before = store.stats().await.unwrap();
    let mut r = run("cat-1");
    r.started_at = Some(Utc::now() - chrono::Duration::seconds(5));
    r.finished_at = Some(Utc::now());
    r.state = State::Succeeded;
    store.create_run(&r).await.unwrap();
    let mut t = task("cat-1", "train", State::Succeeded);
    t.started_at = r.started_at;
    t.finished_at = r.finished_at;
    assert!(store.put_task(&t, None).await.unwrap());
    let entry = RunCatalog {
        run_id: "cat-1".into(),
        experiment_id: "x2".into(),
        storage_state: "AVAILABLE".into(),
        description: Some("why".into()),
        pipeline_id: None,
        pipeline_version_id: None,
        runtime_config: Some(json!({"parameters": {"a": 1}})),
        recurring_run_id: None,
        service_account: Some("runner".into()),
    };
    store.put_run_catalog(&entry).await.unwrap();
    let (page, total) = store.page_runs(Some("x2"), &[], true, 0, 10).await.unwrap();
    assert_eq!((page.len(), total), (1, 1));
    assert_eq!(
        page[0].1.as_ref().unwrap().runtime_config,
        entry.runtime_config
    );
    let after = store.stats().await.unwrap();
    let succeeded = |counts: &[(String, u64)]| {
        counts
            .iter()
            .find(|(s, _)| s == "SUCCEEDED")
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(
        succeeded(&after.runs_by_state),
        succeeded(&before.runs_by_state) + 1
    );
    assert_eq!(
        succeeded(&after.tasks_by_state),
        succeeded(&before.tasks_by_state) + 1
    );
    assert_eq!(after.run_seconds.1, before.run_seconds.1 + 1);
    let added = after.run_seconds.0 - before.run_seconds.0;
    assert!((added - 5.0).abs() < 0.01, "{after:?}");
    store
        .set_experiment_storage("x2", "ARCHIVED")
        .await
        .unwrap();
    assert_eq!(
        store
            .get_run_catalog("cat-1")
            .await
            .unwrap()
            .unwrap()
            .storage_state,
        "ARCHIVED"
    );
    store.delete_run("cat-1").await.unwrap();
    assert!(store.get_run_catalog("cat-1").await.unwrap().is_none());
    assert!(store.list_tasks("cat-1").await.unwrap().is_empty());
    assert!(store.transitions("cat-1").await.unwrap().is_empty());
    assert!(matches!(
        store.delete_run("cat-1").await,
        Err(StoreError::NotFound { kind: "run", .. })
    ));
    assert!(
        store.put_run_catalog(&entry).await.is_err(),
        "no entry for a run that is not there"
    );
    store.delete_experiment("x1").await.unwrap();
    assert!(matches!(
        store.delete_experiment("x1").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn all(open: impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = SqlStore>>>) {
    runs_transitions_and_history(Arc::new(open().await)).await;
    filtered_pages(open().await).await;
    cache_entries(Arc::new(open().await)).await;
    task_writes_are_fenced(Arc::new(open().await)).await;
    lifecycle::lifecycle(Arc::new(open().await)).await;
    job_leases(Arc::new(open().await)).await;
    job_claims_and_task_links(Arc::new(open().await)).await;
    recurring_runs(open().await).await;
    experiments_pipelines_and_runs(open().await).await;
    parallel_writers_do_not_conflict(Arc::new(open().await), Arc::new(open().await)).await;
}

/// The in-memory store keeps the run, job and catalog stores' contract too (the
/// engine's fast tests stand on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_conformance() {
    let fresh = || -> Arc<dyn RunStore> { Arc::new(MemoryStore::new()) };
    runs_transitions_and_history(fresh()).await;
    cache_entries(fresh()).await;
    task_writes_are_fenced(fresh()).await;
    lifecycle::lifecycle(Arc::new(MemoryStore::new())).await;
    let shared = fresh();
    parallel_writers_do_not_conflict(shared.clone(), shared).await;
    job_leases(Arc::new(MemoryStore::new())).await;
    job_claims_and_task_links(Arc::new(MemoryStore::new())).await;
    filtered_pages(MemoryStore::new()).await;
    recurring_runs(MemoryStore::new()).await;
    experiments_pipelines_and_runs(MemoryStore::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    // The calls share the file, as processes do.
    all(|| {
        let path = path.clone();
        Box::pin(async move { SqlStore::open(&path).await.unwrap() })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "needs the PostgreSQL server binaries (scripts/setup --postgres)"]
async fn postgres_conformance() {
    let cluster = pg::Cluster::start();
    let url = cluster.url();
    all(|| {
        let url = url.clone();
        Box::pin(async move { SqlStore::connect(&url).await.unwrap() })
    })
    .await;
    // A second connection to an existing schema applies no migration twice.
    SqlStore::connect(&url).await.unwrap();
}
