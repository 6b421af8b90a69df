//! The lifecycle contract (claim, renew, control, cancel, release, fenced
//! writes), checked for each kind of held record on every store: the same
//! assertions for a run and for a training job.

use std::sync::Arc;

use chrono::Utc;
use serde_json::json;
use switchyard_store::{
    Claim, JobRecord, JobStore, Kind, Lease, RunRecord, RunStore, RunUpdate, State, StoreError,
};

/// A store with both kinds of records.
pub trait Both: RunStore + JobStore {}
impl<T: RunStore + JobStore> Both for T {}

pub fn lease_of(owner: &str, host: &str, secs: i64) -> Lease {
    Lease {
        owner: owner.into(),
        host: host.into(),
        pid: 1,
        until: Utc::now() + chrono::Duration::seconds(secs),
    }
}

pub fn run(id: &str) -> RunRecord {
    RunRecord {
        id: id.into(),
        pipeline_name: "p".into(),
        display_name: "p-1".into(),
        state: State::Pending,
        spec: "{}".into(),
        parameters: json!({"a": 1}),
        pipeline_root: "/tmp".into(),
        options: json!({}),
        outputs: None,
        error: None,
        lease: None,
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
    }
}

/// A job record in `state` held by `lease`.
pub fn job(id: &str, state: State, lease: Option<Lease>) -> JobRecord {
    JobRecord {
        id: id.into(),
        name: "train".into(),
        backend: "local".into(),
        state,
        spec: json!({}),
        restarts: 0,
        model: None,
        metrics: None,
        failure_reason: None,
        logs_dir: None,
        placement: None,
        kpi: None,
        lease,
        task: None,
        created_at: Utc::now(),
        started_at: None,
        finished_at: None,
    }
}

/// Creates a PENDING record of `kind`, unheld.
async fn create(store: &dyn Both, kind: Kind, id: &str) {
    match kind {
        Kind::Run => store.create_run(&run(id)).await.unwrap(),
        Kind::Job => store
            .create_job(&job(id, State::Pending, None))
            .await
            .unwrap(),
    }
}

async fn lease(store: &dyn Both, kind: Kind, id: &str) -> Option<Lease> {
    match kind {
        Kind::Run => store.get_run(id).await.unwrap().lease,
        Kind::Job => store.get_job(id).await.unwrap().lease,
    }
}

async fn state(store: &dyn Both, kind: Kind, id: &str) -> State {
    store.control(kind, id).await.unwrap().state
}

/// How many state changes the record's history holds.
async fn history(store: &dyn Both, kind: Kind, id: &str) -> usize {
    match kind {
        Kind::Run => store.transitions(id).await.unwrap().len(),
        Kind::Job => store.job_events(id).await.unwrap().len(),
    }
}

/// Ends the record (as its owner `owner` would), fenced by that owner.
async fn end(store: &dyn Both, kind: Kind, id: &str, owner: &str, to: State) -> bool {
    match kind {
        Kind::Run => {
            let update = RunUpdate {
                if_owned_by: Some(owner.into()),
                finished_at: Some(Utc::now()),
                ..Default::default()
            };
            store
                .transition_run(id, &[State::Running], to, update)
                .await
                .unwrap()
        }
        Kind::Job => {
            let mut j = store.get_job(id).await.unwrap();
            j.state = to;
            j.finished_at = Some(Utc::now());
            store.update_job(&j, None, Some(owner)).await.unwrap()
        }
    }
}

/// Every lifecycle check, for both kinds.
pub async fn lifecycle(store: Arc<dyn Both>) {
    for kind in Kind::ALL {
        claims_are_exclusive(&*store, kind).await;
        cancel_requests_and_reset(&*store, kind).await;
        not_found_is_said(&*store, kind).await;
    }
    renewal_covers_every_kind(&*store).await;
    a_job_follower_that_lost_its_job_writes_nothing(&*store).await;
}

async fn claims_are_exclusive(store: &dyn Both, kind: Kind) {
    let id = format!("{}-c1", kind.noun());
    let id = id.as_str();
    create(store, kind, id).await;
    let running = Claim {
        from: &[State::Pending],
        to: Some(State::Running),
        ..Claim::default()
    };
    let before = history(store, kind, id).await;
    let claim = |owner: &'static str| async move {
        store
            .claim(kind, id, None, &lease_of(owner, "h1", 30), running)
            .await
    };
    let (x, y) = tokio::join!(claim("a"), claim("b"));
    assert!(x.unwrap() ^ y.unwrap(), "{kind:?}: exactly one claim wins");
    assert_eq!(state(store, kind, id).await, State::Running);
    assert_eq!(
        history(store, kind, id).await,
        before + 1,
        "{kind:?}: one history row"
    );
    let held = lease(store, kind, id).await.unwrap();
    assert!(["a", "b"].contains(&held.owner.as_str()) && held.host == "h1");
    // A take-over must name the lease it saw: a stale observation (the owner
    // renewed meanwhile) loses.
    let mut stale = held.clone();
    stale.until -= chrono::Duration::seconds(5);
    let take = |observed: Lease| async move {
        store
            .claim(
                kind,
                id,
                Some(&observed),
                &lease_of("c", "h2", 30),
                Claim::lease_only(),
            )
            .await
            .unwrap()
    };
    assert!(!take(stale).await, "{kind:?}: stale observation");
    let later = Utc::now() + chrono::Duration::seconds(300);
    assert!(store.renew_leases(&held.owner, later).await.unwrap() >= 1);
    let renewed = lease(store, kind, id).await.unwrap();
    assert_eq!(renewed.until_ms(), later.timestamp_millis());
    assert!(
        !take(held.clone()).await,
        "{kind:?}: the renewed lease is not the one seen"
    );
    assert!(take(renewed).await);
    let control = store.control(kind, id).await.unwrap();
    assert_eq!(control.owner.as_deref(), Some("c"));
    assert!(!control.cancel_requested);
    assert_eq!(
        control.state,
        State::Running,
        "{kind:?}: a lease-only claim keeps the state"
    );
    // The old owner cannot end it or release it; the new one can.
    assert!(!end(store, kind, id, &held.owner, State::Failed).await);
    assert!(!store.release(kind, id, &held.owner).await.unwrap());
    assert_eq!(state(store, kind, id).await, State::Running);
    assert!(end(store, kind, id, "c", State::Succeeded).await);
    assert!(store.release(kind, id, "c").await.unwrap());
    assert!(lease(store, kind, id).await.is_none());
    // An ended record is nobody's to take, and its lease is not renewed.
    assert!(!store
        .claim(
            kind,
            id,
            None,
            &lease_of("d", "h1", 30),
            Claim::lease_only()
        )
        .await
        .unwrap());
    // The claimant's own renewal between its look and its take does not
    // make the take fail (the claim is its own).
    let queued = format!("{}-c3", kind.noun());
    create(store, kind, &queued).await;
    let owner = format!("queuer-{}", kind.noun());
    let mine = lease_of(&owner, "h1", 30);
    assert!(store
        .claim(kind, &queued, None, &mine, Claim::lease_only())
        .await
        .unwrap());
    assert_eq!(store.renew_leases(&owner, later).await.unwrap(), 1);
    assert!(store
        .claim(
            kind,
            &queued,
            Some(&mine),
            &lease_of(&owner, "h1", 30),
            running
        )
        .await
        .unwrap());
    assert_eq!(state(store, kind, &queued).await, State::Running);
    assert!(end(store, kind, &queued, &owner, State::Succeeded).await);
    assert_eq!(
        store.renew_leases(&owner, later).await.unwrap(),
        0,
        "{kind:?}: ended"
    );
}

async fn cancel_requests_and_reset(store: &dyn Both, kind: Kind) {
    let id = format!("{}-x1", kind.noun());
    create(store, kind, &id).await;
    assert!(!store.control(kind, &id).await.unwrap().cancel_requested);
    store.request_cancel(kind, &id).await.unwrap();
    assert!(store.control(kind, &id).await.unwrap().cancel_requested);
    // A resume (reset) clears the request, the error and the end.
    let resume = Claim {
        from: &[State::Pending],
        to: Some(State::Running),
        started_at: Some(Utc::now()),
        reset: true,
    };
    assert!(store
        .claim(kind, &id, None, &lease_of("r", "h1", 30), resume)
        .await
        .unwrap());
    let control = store.control(kind, &id).await.unwrap();
    assert!(
        !control.cancel_requested,
        "{kind:?}: reset clears the request"
    );
    assert_eq!(control.owner.as_deref(), Some("r"));
    // A request for a record that does not exist changes nothing.
    store.request_cancel(kind, "nope").await.unwrap();
}

async fn not_found_is_said(store: &dyn Both, kind: Kind) {
    let err = store.control(kind, "missing").await.unwrap_err();
    match kind {
        Kind::Run => assert!(matches!(err, StoreError::RunNotFound(_)), "{err}"),
        Kind::Job => assert!(matches!(err, StoreError::JobNotFound(_)), "{err}"),
    }
    assert!(!store
        .claim(
            kind,
            "missing",
            None,
            &lease_of("a", "h", 30),
            Claim::lease_only()
        )
        .await
        .unwrap());
    assert!(!store.release(kind, "missing", "a").await.unwrap());
}

/// One renewal extends what an owner holds of every kind, and nothing else.
async fn renewal_covers_every_kind(store: &dyn Both) {
    let owner = lease_of("keeper", "h1", 30);
    for kind in Kind::ALL {
        let id = format!("{}-k1", kind.noun());
        create(store, kind, &id).await;
        assert!(store
            .claim(kind, &id, None, &owner, Claim::lease_only())
            .await
            .unwrap());
    }
    let later = Utc::now() + chrono::Duration::seconds(600);
    assert_eq!(store.renew_leases("keeper", later).await.unwrap(), 2);
    assert_eq!(store.renew_leases("nobody", later).await.unwrap(), 0);
    for kind in Kind::ALL {
        let id = format!("{}-k1", kind.noun());
        let l = lease(store, kind, &id).await.unwrap();
        assert_eq!(l.until_ms(), later.timestamp_millis(), "{kind:?}");
    }
}

/// Job writes are fenced by the owner as task writes are: once another
/// process took the job over, the old follower's status, events and metrics
/// are refused (false) and change nothing, while the new owner's land.
async fn a_job_follower_that_lost_its_job_writes_nothing(store: &dyn Both) {
    let old = lease_of("old", "h1", 30);
    store
        .create_job(&job("j-f1", State::Running, Some(old.clone())))
        .await
        .unwrap();
    let mut rec = store.get_job("j-f1").await.unwrap();
    rec.restarts = 1;
    assert!(store
        .update_job(&rec, Some("restart"), Some("old"))
        .await
        .unwrap());
    // Taken over by "new".
    assert!(store
        .claim(
            Kind::Job,
            "j-f1",
            Some(&old),
            &lease_of("new", "h2", 30),
            Claim::lease_only()
        )
        .await
        .unwrap());
    let events = store.job_events("j-f1").await.unwrap().len();
    let mut stale = store.get_job("j-f1").await.unwrap();
    stale.state = State::Failed;
    stale.failure_reason = Some("the old follower's end".into());
    stale.lease = None;
    assert!(!store
        .update_job(&stale, Some("failed"), Some("old"))
        .await
        .unwrap());
    assert!(!store
        .add_job_event("j-f1", State::Running, "late", Some("old"))
        .await
        .unwrap());
    assert!(!store
        .add_job_metrics("j-f1", &[("loss".into(), 0.5)], Some("old"))
        .await
        .unwrap());
    let now = store.get_job("j-f1").await.unwrap();
    assert_eq!(
        now.state,
        State::Running,
        "the fenced write changed nothing"
    );
    assert_eq!(now.failure_reason, None);
    assert_eq!(now.lease.unwrap().owner, "new");
    assert_eq!(store.job_events("j-f1").await.unwrap().len(), events);
    assert!(store.job_metrics("j-f1").await.unwrap().is_empty());
    // The new owner's writes land.
    assert!(store
        .add_job_metrics("j-f1", &[("loss".into(), 0.25)], Some("new"))
        .await
        .unwrap());
    assert!(store
        .add_job_event("j-f1", State::Running, "followed", Some("new"))
        .await
        .unwrap());
    let mut mine = store.get_job("j-f1").await.unwrap();
    mine.state = State::Succeeded;
    mine.lease = None;
    assert!(store.update_job(&mine, None, Some("new")).await.unwrap());
    assert_eq!(store.get_job("j-f1").await.unwrap().state, State::Succeeded);
    assert_eq!(store.job_metrics("j-f1").await.unwrap().len(), 1);
}
