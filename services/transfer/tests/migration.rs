//! Migrations through the transfer service over gRPC, between the test environment's
//! two real clusters, with volume data moved by in-process agents through MinIO.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use common::*;
use ferry_proto::v1::{
    ActivateRequest, ApplicationSelector, CancelJobRequest, ClusterRef, ErrorCode, JobEvent,
    JobRef, JobReport, JobState, ListJobsRequest, ObjectAction, StepState, VolumeResult,
    cluster_ref, job_event,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use kube::Api;

fn assert_succeeded(report: &JobReport) {
    assert_eq!(
        report.state,
        JobState::Succeeded as i32,
        "job did not succeed: {report:#?}"
    );
}

fn action_of(report: &JobReport, kind: &str, name: &str) -> i32 {
    report
        .objects
        .iter()
        .find(|o| {
            o.object
                .as_ref()
                .is_some_and(|r| r.kind == kind && r.name == name)
        })
        .unwrap_or_else(|| panic!("no outcome for {kind} {name}: {:#?}", report.objects))
        .action
}

/// A full migration (objects byte-for-byte data, a report of every object and volume),
/// then a second one after ~1% of the bytes changed, which uploads about 1%.
#[tokio::test]
async fn migration_moves_objects_and_data_and_a_rerun_moves_only_the_change() {
    let bench = Bench::start().await;
    let (ns, mut files) = bench.with_application("mig-full", 4 << 20).await;

    let id = bench.start_migration(bench.request(&ns)).await;
    let (events, report) = bench.watch(&id).await;
    assert_succeeded(&report);

    stream_has_a_snapshot_every_step_and_progress(&events);
    let total: u64 = files.values().map(|c| c.len() as u64).sum();
    report_lists_every_volume_and_object(&bench, &ns, &report, total).await;
    let vol = &report.volumes[0];
    let dst = destination_has_the_objects_started_and_the_data(&bench, &ns, &files).await;
    get_and_list_jobs_agree_with_the_stream(&bench, &id, &report).await;

    // About 1% of the bytes change.
    bench.change_one_percent(&ns, &mut files);

    let id2 = bench.start_migration(bench.request(&ns)).await;
    let (_, report2) = bench.watch(&id2).await;
    assert_succeeded(&report2);
    let vol2 = &report2.volumes[0];
    assert_uploaded_about_one_percent("second migration", vol2, total);
    // The destination volume keeps its earlier restore: only the chunks of the changed
    // pages are written again, in place (scattered 4 KiB pages each rewrite a chunk or
    // two around them).
    assert_eq!(vol.bytes_written, total, "{vol:#?}");
    let written = vol2.bytes_written as f64 / total as f64;
    eprintln!(
        "second migration: {:.2}% of the volume written",
        written * 100.0
    );
    assert!(vol2.bytes_written > 0 && written < 0.05, "{vol2:#?}");
    assert_ne!(vol2.snapshot_id, vol.snapshot_id);
    assert_same(&files, &dst);
    assert_eq!(bench.restore_points(&ns).await.len(), 2);
    // Objects the first run wrote are re-applied unchanged, not skipped.
    let cm_outcome = report2
        .objects
        .iter()
        .find(|o| {
            o.object
                .as_ref()
                .is_some_and(|r| r.kind == "ConfigMap" && r.name == "settings")
        })
        .unwrap();
    assert_eq!(cm_outcome.action, ObjectAction::Updated as i32);
    assert!(cm_outcome.reason.contains("unchanged"), "{cm_outcome:?}");
}

/// The stream: a snapshot first, steps and progress, the report last.
fn stream_has_a_snapshot_every_step_and_progress(events: &[JobEvent]) {
    assert!(matches!(
        events.first().and_then(|e| e.event.as_ref()),
        Some(job_event::Event::Snapshot(_))
    ));
    let finished_steps: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.event {
            Some(job_event::Event::Step(s)) if s.state == StepState::Succeeded as i32 => {
                Some(s.name.clone())
            }
            _ => None,
        })
        .collect();
    for step in [
        "capture",
        "preflight",
        "backup-volumes",
        "commit-restore-point",
        "restore-volumes",
        "apply",
        "start-applications",
    ] {
        assert!(
            finished_steps.iter().any(|s| s == step),
            "{step} not in {finished_steps:?}"
        );
    }
    let backup_progress = events.iter().any(|e| {
        matches!(&e.event, Some(job_event::Event::Progress(p))
            if p.step == "backup-volumes" && p.bytes_read > 0 && p.bytes_total > 0)
    });
    assert!(backup_progress, "no backup progress: {events:#?}");
    assert!(events.iter().any(|e| matches!(&e.event,
        Some(job_event::Event::Progress(p)) if p.step == "apply" && p.objects_total > 0)));
}

/// The report: every volume and object, and the one restore point it names.
async fn report_lists_every_volume_and_object(
    bench: &Bench,
    ns: &str,
    report: &JobReport,
    total: u64,
) {
    assert_eq!(report.volumes.len(), 1, "{report:#?}");
    let vol = &report.volumes[0];
    assert_eq!(vol.pvc_name, "data-db-0");
    assert_eq!(vol.result, VolumeResult::Succeeded as i32);
    assert_eq!(vol.bytes_total, total);
    assert!(vol.bytes_uploaded > total / 2, "{vol:#?}");
    assert!(!vol.snapshot_id.is_empty());
    assert_eq!(vol.destination_volume, format!("ferry-{ns}-data-db-0"));
    for (kind, name) in [
        ("ConfigMap", "settings"),
        ("Secret", "db-password"),
        ("Service", "db"),
        ("Deployment", "web"),
        ("StatefulSet", "db"),
        ("PersistentVolumeClaim", "data-db-0"),
    ] {
        assert_eq!(
            action_of(report, kind, name),
            ObjectAction::Created as i32,
            "{kind} {name}"
        );
    }
    assert_eq!(
        action_of(report, "ServiceAccount", "default"),
        ObjectAction::Excluded as i32
    );
    assert_eq!(
        bench.restore_points(ns).await,
        vec![report.restore_point_id.clone()]
    );
}

/// The destination: objects, workloads started, the claim bound to its new volume, the
/// data. The volume's directory on the destination, for the rerun to compare.
async fn destination_has_the_objects_started_and_the_data(
    bench: &Bench,
    ns: &str,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) -> PathBuf {
    let b = &bench.b;
    let cm = Api::<ConfigMap>::namespaced(b.clone(), ns)
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "hello");
    let sa = Api::<Secret>::namespaced(bench.a.clone(), ns)
        .get("db-password")
        .await
        .unwrap();
    let sb = Api::<Secret>::namespaced(b.clone(), ns)
        .get("db-password")
        .await
        .unwrap();
    assert_eq!(sa.data, sb.data);
    Api::<Service>::namespaced(b.clone(), ns)
        .get("db")
        .await
        .unwrap();
    let web = deployment(b, ns, "web").await;
    assert_eq!(web.spec.unwrap().replicas, Some(2), "started");
    let db = Api::<StatefulSet>::namespaced(b.clone(), ns)
        .get("db")
        .await
        .unwrap();
    assert_eq!(db.spec.unwrap().replicas, Some(1), "started");
    wait_bound(b, ns, "data-db-0").await;
    // Under the destination agent's volume root, not the service's own.
    let dst = bench.assert_restored(files, ns, "data-db-0").await;
    assert!(!bench.root.path().join(SERVICE_VOLUME_ROOT).exists());
    dst
}

/// GetJob and ListJobs agree with the stream.
async fn get_and_list_jobs_agree_with_the_stream(bench: &Bench, id: &str, report: &JobReport) {
    let got = bench.get_job(id).await;
    assert_eq!(got.job.unwrap().state, JobState::Succeeded as i32);
    assert_eq!(
        got.report.unwrap().restore_point_id,
        report.restore_point_id
    );
    let listed = bench
        .service
        .client
        .clone()
        .list_jobs(ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.jobs.iter().any(|j| j.id == id));
}

/// Into another namespace with the storage class mapped, workloads left stopped until
/// Activate. A first try without the class mapping fails pre-flight and writes nothing.
#[tokio::test]
async fn renamed_namespace_with_a_mapped_class_waits_for_activate() {
    let bench = Bench::start().await;
    let ns = ferry_testenv::unique_name("mig-ren");
    let target = format!("{ns}-b");
    let class_a = format!("sca-{ns}");
    let class_b = format!("scb-{ns}");
    create_cluster::<k8s_openapi::api::storage::v1::StorageClass>(
        &bench.a,
        storage_class(&class_a),
    )
    .await;
    create_cluster::<k8s_openapi::api::storage::v1::StorageClass>(
        &bench.b,
        storage_class(&class_b),
    )
    .await;
    let src = bench.src_volume(&ns, "data-db-0");
    let files = fill_volume(&src, 1 << 20);
    application(&bench.a, &ns, &class_a, &src).await;

    let mut req = bench.request(&ns);
    let apply = req.apply.as_mut().unwrap();
    apply.start_applications = false;
    apply.namespace_mapping = HashMap::from([(ns.clone(), target.clone())]);

    // Without the class mapping: pre-flight names the missing class; nothing written.
    let id = bench.start_migration(req.clone()).await;
    let (_, report) = bench.watch(&id).await;
    assert_eq!(report.state, JobState::Failed as i32, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(
        error.code,
        ErrorCode::MissingPrerequisite as i32,
        "{error:?}"
    );
    assert!(error.message.contains(&class_a), "{}", error.message);
    assert!(!namespace_exists(&bench.b, &target).await);
    assert!(bench.restore_points(&ns).await.is_empty());

    req.apply.as_mut().unwrap().storage_class_mapping =
        HashMap::from([(class_a.clone(), class_b.clone())]);
    let id = bench.start_migration(req).await;
    let (_, report) = bench.watch(&id).await;
    assert_succeeded(&report);
    let start = report.objects.len();
    assert!(start > 0);
    let vol = &report.volumes[0];
    assert_eq!(vol.source_storage_class, class_a);
    assert_eq!(vol.destination_storage_class, class_b);

    let b = &bench.b;
    assert!(
        !namespace_exists(b, &ns).await,
        "nothing in the source's namespace name"
    );
    wait_bound(b, &target, "data-db-0").await;
    let claim = Api::<PersistentVolumeClaim>::namespaced(b.clone(), &target)
        .get("data-db-0")
        .await
        .unwrap();
    assert_eq!(
        claim.spec.unwrap().storage_class_name,
        Some(class_b.clone())
    );
    bench.assert_restored(&files, &target, "data-db-0").await;
    let deployments = Api::<Deployment>::namespaced(b.clone(), &target);
    let web = deployments.get("web").await.unwrap();
    assert_eq!(
        web.spec.unwrap().replicas,
        Some(0),
        "stopped until Activate"
    );

    let activated = bench
        .service
        .client
        .clone()
        .activate(ActivateRequest {
            cluster: Some(ClusterRef {
                target: Some(cluster_ref::Target::Context("b".into())),
            }),
            application: Some(ApplicationSelector {
                namespace: target.clone(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(activated.workloads.len(), 2, "{activated:#?}");
    assert!(
        activated
            .workloads
            .iter()
            .all(|w| w.action == ObjectAction::Updated as i32)
    );
    let web = deployments.get("web").await.unwrap();
    assert_eq!(web.spec.unwrap().replicas, Some(2));
}

/// A cancel while volumes are backed up: the job ends CANCELLED, the destination has no
/// application, the repository no restore point, and the quiesced source is running again.
#[tokio::test]
async fn cancel_mid_transfer_leaves_nothing_behind() {
    let bench = Bench::start().await;
    let (ns, _) = bench.with_application("mig-cancel", 96 << 20).await;
    let mut req = bench.request(&ns);
    req.quiesce_source = true;
    let id = bench.start_migration(req).await;

    let (ended, (events, _)) = watch_until(&bench.service.client, &id, |e| {
        matches!(&e.event, Some(job_event::Event::Progress(p)) if p.step == "backup-volumes" && p.bytes_read > 0)
    })
    .await;
    assert!(
        !ended,
        "the job finished before it could be cancelled: {events:#?}"
    );
    // The source is quiesced while its data is copied.
    let web = deployment(&bench.a, &ns, "web").await;
    assert_eq!(web.spec.unwrap().replicas, Some(0));

    let answer = bench
        .service
        .client
        .clone()
        .cancel_job(CancelJobRequest {
            job: Some(JobRef { id: id.clone() }),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let state = answer.job.unwrap().state;
    assert!(
        state == JobState::Cancelling as i32 || state == JobState::Cancelled as i32,
        "{state}"
    );
    let (_, report) = bench.watch(&id).await;
    assert_eq!(report.state, JobState::Cancelled as i32, "{report:#?}");
    assert!(report.restore_point_id.is_empty());
    assert!(
        bench.restore_points(&ns).await.is_empty(),
        "a restore point was written"
    );
    // The repository reads clean: what the stopped backup uploaded is complete or
    // merely unreferenced, never half-visible.
    let check = bench.repository.check(true).await.unwrap();
    assert!(check.problems.is_empty(), "{:?}", check.problems);
    assert!(
        !namespace_exists(&bench.b, &ns).await,
        "the destination has the application"
    );
    // The source runs again with its own replica counts.
    let web = deployment(&bench.a, &ns, "web").await;
    assert_eq!(web.spec.as_ref().unwrap().replicas, Some(2));
    assert!(
        !web.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(ferry_transfer::QUIESCE_ANNOTATION)
    );
    let db = Api::<StatefulSet>::namespaced(bench.a.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    assert_eq!(db.spec.unwrap().replicas, Some(1));
}

/// The service dies while a job backs up volumes; a new one on the same data directory
/// resumes the job from the backup step, and it finishes with the data in place.
#[tokio::test]
async fn a_restarted_service_resumes_a_running_job() {
    let mut bench = Bench::start().await;
    let (ns, files) = bench.with_application("mig-restart", 48 << 20).await;
    let id = bench.start_migration(bench.request(&ns)).await;
    let (ended, _) = watch_until(&bench.service.client, &id, |e| {
        matches!(&e.event, Some(job_event::Event::Progress(p)) if p.step == "backup-volumes" && p.bytes_read > 0)
    })
    .await;
    assert!(!ended, "the job finished before the restart");

    // The destination's agent now names another root; the resumed job keeps the one it
    // planned with, so its data lands where its volume points.
    let elsewhere = bench.root.path().join("volumes/dst/elsewhere");
    bench.replace_destination_agent(elsewhere.clone()).await;
    bench.crash_and_restart().await;

    let (events, report) = bench.watch(&id).await;
    assert_succeeded(&report);
    assert!(
        matches!(
            events.first().and_then(|e| e.event.as_ref()),
            Some(job_event::Event::Snapshot(_))
        ),
        "no snapshot first: {events:#?}"
    );
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.message.contains("resumed at step backup-volumes")),
        "the report says the job was resumed: {:#?}",
        report.warnings
    );
    assert_eq!(
        bench.restore_points(&ns).await,
        vec![report.restore_point_id.clone()]
    );
    bench.assert_restored(&files, &ns, "data-db-0").await;
    assert!(!elsewhere.exists(), "the resumed job asked the agent again");
}

/// The destination's agent cannot be reached: a migration that moves volume data stops
/// in pre-flight with an error naming the cluster and the agent, before the source is
/// touched or anything is written; a dry run only warns.
#[tokio::test]
async fn an_unreachable_destination_agent_stops_the_migration_in_preflight() {
    let mut bench = Bench::start().await;
    let (ns, _) = bench.with_application("mig-noagent", 64 << 10).await;
    bench.lose_destination_agent().await;

    let mut req = bench.request(&ns);
    req.quiesce_source = true;
    let id = bench.start_migration(req.clone()).await;
    let (events, report) = bench.watch(&id).await;
    assert_eq!(report.state, JobState::Failed as i32, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::Unreachable as i32, "{error:?}");
    assert_eq!(error.cluster, "b");
    assert!(
        error.message.contains("agent on cluster b"),
        "{}",
        error.message
    );
    assert!(!error.hint.is_empty(), "{error:?}");
    let failed_step = events.iter().rev().find_map(|e| match &e.event {
        Some(job_event::Event::Step(s)) if s.state == StepState::Failed as i32 => {
            Some(s.name.clone())
        }
        _ => None,
    });
    assert_eq!(failed_step.as_deref(), Some("preflight"), "{events:#?}");
    assert!(bench.restore_points(&ns).await.is_empty());
    assert!(
        !namespace_exists(&bench.b, &ns).await,
        "the destination has the application"
    );
    let web = deployment(&bench.a, &ns, "web").await;
    assert_eq!(
        web.spec.unwrap().replicas,
        Some(2),
        "the source was quiesced"
    );

    req.dry_run = true;
    let id = bench.start_migration(req).await;
    let (_, report) = bench.watch(&id).await;
    assert_succeeded(&report);
    let warning = report
        .warnings
        .iter()
        .find(|w| w.code == ErrorCode::Unreachable as i32)
        .unwrap_or_else(|| panic!("no warning about the agent: {:#?}", report.warnings));
    assert!(
        warning.message.contains("agent on cluster b"),
        "{}",
        warning.message
    );
}

/// A start repeated with the request id of an earlier one (a controller restarted between
/// starting a Migration's jobs and writing them into its status) answers the earlier
/// job and starts nothing, also after the service restarted; without an id, a start is a
/// new job.
#[tokio::test]
async fn a_start_repeated_with_its_request_id_answers_the_same_job() {
    let mut bench = Bench::start().await;
    let (ns, files) = bench.with_application("mig-again", 1 << 20).await;
    let mut req = bench.request(&ns);
    req.request_id = "8d0c6a3e-migration-uid".into();
    let first = bench.start_migration(req.clone()).await;
    assert_eq!(bench.start_migration(req.clone()).await, first);
    let (_, report) = bench.watch(&first).await;
    assert_succeeded(&report);

    bench.crash_and_restart().await;
    assert_eq!(bench.start_migration(req.clone()).await, first);

    req.request_id.clear();
    let fresh = bench.start_migration(req).await;
    assert_ne!(fresh, first);
    let (_, report) = bench.watch(&fresh).await;
    assert_succeeded(&report);
    // Two migrations ran, not four: one restore point each.
    assert_eq!(bench.restore_points(&ns).await.len(), 2);
    bench.assert_restored(&files, &ns, "data-db-0").await;
}
