//! Schedules through the scheduler over gRPC, whose runs are real migrations by the
//! transfer service (over gRPC too) from the test environment's cluster a to cluster b.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferry_proto::v1::{
    CreateScheduleRequest, ErrorCode, ImportPolicySpec, JobKind, JobState, ListSchedulesRequest,
    RunState, StartExportRequest, create_schedule_request,
};
use tonic::Code;

/// An interval schedule runs again and again (each run a migration that carries the
/// latest change), lists its runs newest first with their jobs, stops while suspended,
/// goes on when resumed, runs on demand while suspended, and is gone once deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_interval_schedule_migrates_until_suspended_and_again_once_resumed() {
    let bench = Bench::start().await;
    let ns = ferry_testenv::unique_name("sched-every");
    application(&bench.a, &ns, "hello").await;

    let created = bench.create(schedule(&ns, every(2), migration(&ns))).await;
    assert!(created.id.starts_with("sch-"), "{created:?}");
    assert!(!created.suspended);
    assert!(created.next_run_at.is_some());
    assert!(created.last_run.is_none());
    // The server's retry defaults are filled in, so the schedule says what applies.
    assert_eq!(created.retry.unwrap().max_attempts, 3);

    let runs = bench
        .runs_until(&ns, "two successful runs", LONG, |runs| {
            let done = runs.iter().filter(|r| state(r) == RunState::Succeeded);
            done.count() >= 2
        })
        .await;
    assert_eq!(greeting(&bench.b, &ns).await.as_deref(), Some("hello"));

    // Newest first, each with its own job, started by this schedule.
    for pair in runs.windows(2) {
        let (newer, older) = (&pair[0].scheduled_at, &pair[1].scheduled_at);
        assert!(
            seconds(newer.as_ref()) > seconds(older.as_ref()),
            "not newest first: {runs:#?}"
        );
    }
    let done: Vec<_> = runs
        .iter()
        .filter(|r| state(r) == RunState::Succeeded)
        .collect();
    assert_ne!(done[0].job_ids, done[1].job_ids);
    for r in &done {
        assert_eq!(r.schedule_id, created.id);
        assert_eq!((r.attempts, r.job_ids.len()), (1, 1), "{r:?}");
        assert!(!r.manual && r.error.is_none(), "{r:?}");
        assert!(seconds(r.finished_at.as_ref()) >= seconds(r.started_at.as_ref()));
        let job = bench.job(&r.job_ids[0]).await;
        assert_eq!(job.schedule_id, created.id, "{job:?}");
        assert_eq!(job.kind, JobKind::Migration as i32);
        assert_eq!(job.state, JobState::Succeeded as i32);
        assert!(!job.dry_run);
    }

    // A later run carries a change made on the source.
    set_greeting(&bench.a, &ns, "bonjour").await;
    eventually("the change to reach cluster b", LONG, || async {
        greeting(&bench.b, &ns).await.as_deref() == Some("bonjour")
    })
    .await;

    // By name, with its latest run.
    let got = bench.get(&ns).await.unwrap();
    assert_eq!(got.id, created.id);
    assert!(got.last_run.is_some_and(|r| r.schedule_id == created.id));

    // Suspended: no next run, and none starts over three intervals.
    let suspended = bench.suspend(&created.id).await;
    assert!(suspended.suspended);
    assert!(suspended.next_run_at.is_none());
    let settled = bench.settled(&ns).await;
    tokio::time::sleep(MIN_INTERVAL * 3).await;
    assert_eq!(
        bench.runs(&ns).await.len(),
        settled.len(),
        "a suspended schedule started a run"
    );

    // Resumed: due again from now, and runs go on.
    let resumed = bench.resume(&ns).await;
    assert!(!resumed.suspended);
    assert!(resumed.next_run_at.is_some());
    let count = settled.len();
    let after = bench
        .runs_until(&ns, "a run after resume", LONG, |runs| {
            runs.len() > count && state(&runs[0]) == RunState::Succeeded
        })
        .await;
    assert!(!after[0].manual);

    // RunNow works while suspended, and says the run is manual.
    bench.suspend(&ns).await;
    bench.settled(&ns).await;
    let manual = bench.run_now(&ns).await.unwrap();
    assert!(manual.manual);
    assert_eq!(state(&manual), RunState::Running);
    let runs = bench.run_ends(&ns, &manual.id, RunState::Succeeded).await;
    assert_eq!(runs[0].id, manual.id);

    // Deleted: gone with its runs.
    bench.delete(&ns).await;
    let err = bench.get(&created.id).await.expect_err("deleted");
    assert_eq!(err.code(), Code::NotFound);
}

/// A migration that fails as a job (its namespace does not exist) is retried with
/// doubling backoff and the run ends FAILED after max_attempts, with every job and the
/// job's own error. A start the transfer service refuses is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_migration_is_retried_with_backoff_then_fails_with_the_jobs_error() {
    let bench = Bench::start().await;
    let ns = ferry_testenv::unique_name("sched-missing");
    let mut req = schedule(&ns, every(3600), migration(&ns));
    // Waits of 1 s then 2 s.
    req.retry = Some(retry(3, 1000, 4000));
    let created = bench.create(req).await;

    bench.run_now(&created.id).await.unwrap();
    let run = bench.newest_ends(&ns, RunState::Failed).await;
    assert_eq!(run.attempts, 3, "{run:#?}");
    assert_eq!(run.job_ids.len(), 3, "{run:#?}");
    let error = run.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::NotFound as i32, "{error:?}");
    assert!(error.message.contains(&ns), "{error:?}");
    let took = seconds(run.finished_at.as_ref()) - seconds(run.started_at.as_ref());
    assert!(took >= 3.0, "backoff of 1 s + 2 s, took {took:.2} s");
    for id in &run.job_ids {
        let job = bench.job(id).await;
        assert_eq!(job.state, JobState::Failed as i32, "{job:?}");
        assert_eq!(job.schedule_id, created.id);
    }
    let mut ids = run.job_ids.clone();
    ids.dedup();
    assert_eq!(ids.len(), 3, "one job per attempt");

    // An export naming no repository (and the transfer service has no default profile):
    // the transfer service refuses the start, and a refusal is not retried.
    let name = format!("{ns}-export");
    let export = CreateScheduleRequest {
        name: name.clone(),
        trigger: Some(every(3600)),
        spec: Some(create_schedule_request::Spec::Export(StartExportRequest {
            application: migration(&ns).application,
            ..Default::default()
        })),
        retry: Some(retry(3, 1000, 1000)),
        ..Default::default()
    };
    bench.create(export).await;
    bench.run_now(&name).await.unwrap();
    let run = bench.newest_ends(&name, RunState::Failed).await;
    assert_eq!(run.attempts, 1, "{run:#?}");
    assert!(run.job_ids.is_empty());
    let error = run.error.unwrap();
    assert!(error.message.contains("export"), "{error:?}");
    assert!(!error.hint.is_empty(), "{error:?}");
}

/// While a run's job is going, due times record SKIPPED runs and RunNow is refused with
/// the run and job to wait for; once the job ends, the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_of_one_schedule_never_overlap() {
    let bench = Bench::start().await;
    let ns = ferry_testenv::unique_name("sched-overlap");
    gated_schedule(&bench, &ns, 2).await;

    let runs = bench
        .runs_until(&ns, "two skipped runs", LONG, |runs| {
            let skipped = runs.iter().filter(|r| state(r) == RunState::Skipped);
            skipped.count() >= 2
        })
        .await;
    let going: Vec<_> = runs
        .iter()
        .filter(|r| state(r) == RunState::Running)
        .collect();
    assert_eq!(going.len(), 1, "{runs:#?}");
    let first = going[0].clone();
    assert_eq!(first.job_ids.len(), 1, "{first:#?}");
    for r in runs.iter().filter(|r| state(r) == RunState::Skipped) {
        assert_eq!(r.attempts, 0);
        assert!(r.job_ids.is_empty());
        assert!(r.finished_at.is_some());
        assert!(seconds(r.scheduled_at.as_ref()) > seconds(first.scheduled_at.as_ref()));
    }

    let refused = bench.run_now(&ns).await.expect_err("a run is going");
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let detail = refusal(&refused);
    assert!(detail.message.contains(&first.id), "{detail:?}");
    assert!(detail.hint.contains(&first.job_ids[0]), "{detail:?}");

    set_gate(&bench.a, &ns, true).await;
    let runs = bench.run_ends(&ns, &first.id, RunState::Succeeded).await;
    let done = runs.iter().find(|r| r.id == first.id).unwrap();
    assert_eq!(done.job_ids, first.job_ids);
    assert_eq!(greeting(&bench.b, &ns).await.as_deref(), Some("hello"));
    bench.delete(&ns).await;
}

/// A scheduler stopped while a run's job is going resumes that run when it starts
/// again: it waits on the same job, and the run ends when the job does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_scheduler_resumes_the_run_it_left_going() {
    let mut bench = Bench::start().await;
    let ns = ferry_testenv::unique_name("sched-restart");
    gated_schedule(&bench, &ns, 3600).await;
    let run = bench.run_now(&ns).await.unwrap();
    let runs = bench
        .runs_until(&ns, "the run's job", LONG, |runs| {
            runs.first().is_some_and(|r| !r.job_ids.is_empty())
        })
        .await;
    let job_id = runs[0].job_ids[0].clone();

    bench.restart_scheduler().await;
    let runs = bench.runs(&ns).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, run.id);
    assert_eq!(state(&runs[0]), RunState::Running);

    set_gate(&bench.a, &ns, true).await;
    let resumed = bench.newest_ends(&ns, RunState::Succeeded).await;
    assert_eq!(resumed.id, run.id);
    assert_eq!(resumed.attempts, 1, "{resumed:#?}");
    assert_eq!(
        resumed.job_ids,
        vec![job_id.clone()],
        "waited on the same job"
    );
    assert_eq!(bench.job(&job_id).await.state, JobState::Succeeded as i32);
    assert_eq!(greeting(&bench.b, &ns).await.as_deref(), Some("hello"));
}

/// A schedule named `ns` migrating an application whose jobs wait at the gate (see
/// `gated_workload`) until the test opens it.
async fn gated_schedule(bench: &Bench, ns: &str, interval: i64) {
    application(&bench.a, ns, "hello").await;
    gated_workload(&bench.a, ns).await;
    let mut m = migration(ns);
    m.quiesce_source = true;
    bench.create(schedule(ns, every(interval), m)).await;
}

fn refusal(status: &tonic::Status) -> ferry_proto::v1::ErrorDetail {
    ferry_rpc::detail(status).unwrap_or_else(|| panic!("no detail in {status:?}"))
}

/// Bad requests are refused with the field, what is wrong and the next step; lookups of
/// unknown schedules are NOT_FOUND; listings page in name order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_are_refused_with_the_field_and_the_next_step() {
    let bench = Bench::start().await;
    let ns = ferry_testenv::unique_name("sched-bad");
    let refuse = |req: CreateScheduleRequest| {
        let mut c = bench.client.clone();
        async move { c.create_schedule(req).await.expect_err("refused") }
    };
    let cron = |expr: &str| create_schedule_request::Trigger::Cron(expr.into());

    let e = refuse(schedule(&ns, cron("0 25 * * *"), migration(&ns))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let d = refusal(&e);
    assert_eq!(d.code, ErrorCode::InvalidArgument as i32);
    assert!(d.message.contains("field 2 (hour)"), "{d:?}");
    assert!(d.message.contains("out of range 0-23"), "{d:?}");
    assert!(d.hint.contains("five fields"), "{d:?}");

    let e = refuse(schedule(&ns, cron("0 2 * *"), migration(&ns))).await;
    assert!(refusal(&e).message.contains("want five fields"), "{e:?}");

    let e = refuse(schedule(&ns, every(1), migration(&ns))).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let d = refusal(&e);
    assert!(d.message.contains("minimum of 2s"), "{d:?}");
    assert!(d.hint.contains("at least 2s"), "{d:?}");

    let mut zoned = schedule(&ns, cron("0 2 * * *"), migration(&ns));
    zoned.time_zone = "Europe/Atlantis".into();
    let d = refusal(&refuse(zoned).await);
    assert!(d.message.contains("time_zone"), "{d:?}");
    assert!(d.hint.contains("IANA"), "{d:?}");

    let mut dry = migration(&ns);
    dry.dry_run = true;
    let d = refusal(&refuse(schedule(&ns, every(60), dry)).await);
    assert!(d.message.contains("migration.dry_run"), "{d:?}");

    let mut owned = migration(&ns);
    owned.schedule_id = "sch-someone".into();
    let d = refusal(&refuse(schedule(&ns, every(60), owned)).await);
    assert!(d.message.contains("migration.schedule_id"), "{d:?}");

    // An import policy must name its import profile (tests/import_policies.rs has the
    // rest of its checks).
    let mut import = schedule(&ns, every(60), migration(&ns));
    import.spec = Some(create_schedule_request::Spec::ImportPolicy(
        ImportPolicySpec::default(),
    ));
    let e = refuse(import).await;
    assert_eq!(e.code(), Code::InvalidArgument);
    let d = refusal(&e);
    assert!(
        d.message.contains("import_policy.repository.profile"),
        "{d:?}"
    );
    assert!(d.hint.contains("--kind import"), "{d:?}");

    let mut no_spec = schedule(&ns, every(60), migration(&ns));
    no_spec.spec = None;
    assert!(refusal(&refuse(no_spec).await).message.contains("spec"));

    let mut zoned = schedule(&ns, cron("30 2 * * mon-fri"), migration(&ns));
    zoned.time_zone = "Europe/Paris".into();
    zoned.suspended = true;
    let ok = bench.create(zoned).await;
    assert_eq!(ok.time_zone, "Europe/Paris");
    assert!(ok.suspended && ok.next_run_at.is_none());

    let e = refuse(schedule(&ns, every(60), migration(&ns))).await;
    assert_eq!(e.code(), Code::AlreadyExists);
    let d = refusal(&e);
    assert!(d.message.contains(&ns), "{d:?}");
    assert!(d.hint.contains("another name"), "{d:?}");

    let e = bench.get("no-such-schedule").await.expect_err("unknown");
    assert_eq!(e.code(), Code::NotFound);
    assert!(refusal(&e).hint.contains("ListSchedules"), "{e:?}");
    let e = bench.run_now("").await.expect_err("empty");
    assert_eq!(e.code(), Code::InvalidArgument);

    // Pages in name order: this bench's scheduler holds only this test's schedules.
    for suffix in ["c", "a", "b"] {
        let mut s = schedule(&format!("{ns}-{suffix}"), every(3600), migration(&ns));
        s.suspended = true;
        bench.create(s).await;
    }
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let req = ListSchedulesRequest {
            page_size: 2,
            page_token,
        };
        let page = bench.client.clone().list_schedules(req).await.unwrap();
        let page = page.into_inner();
        assert!(page.schedules.len() <= 2);
        names.extend(page.schedules.into_iter().map(|s| s.name));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    let want: Vec<String> = ["", "-a", "-b", "-c"]
        .iter()
        .map(|s| format!("{ns}{s}"))
        .collect();
    assert_eq!(names, want);
}
