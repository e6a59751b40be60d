//! Exports into a repository and restores from it, through the transfer service over
//! gRPC, between the test environment's two real clusters, with volume data moved by
//! in-process agents through MinIO.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use common::*;
use ferry_kube::RestorePointManifest;
use ferry_proto::v1::{
    ErrorCode, JobEvent, JobKind, JobReport, JobState, ObjectAction, RepositoryRef, StepState,
    VolumeOutcome, VolumeResult, job_event,
};
use ferry_repo::{Id, Repository};
use ferry_transfer::{Handover, TokenRequest, TransferError};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret};
use kube::Api;

/// A token issuer that remembers what it was asked.
#[derive(Debug, Default)]
struct Recorder {
    asked: parking_lot::Mutex<Vec<TokenRequest>>,
}

#[async_trait]
impl Handover for Recorder {
    async fn migration_token(&self, req: &TokenRequest) -> Result<String, TransferError> {
        self.asked.lock().push(req.clone());
        Ok(format!("ferry-token:{}", req.restore_point_id))
    }
}

fn assert_succeeded(report: &JobReport) {
    assert_eq!(
        report.state,
        JobState::Succeeded as i32,
        "job did not succeed: {report:#?}"
    );
}

/// The state each step ended in, from a watch's events.
fn step_states(events: &[JobEvent]) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    for e in events {
        match &e.event {
            Some(job_event::Event::Snapshot(j)) => {
                out.extend(j.steps.iter().map(|s| (s.name.clone(), s.state)));
            }
            Some(job_event::Event::Step(s)) => {
                out.insert(s.name.clone(), s.state);
            }
            _ => {}
        }
    }
    out
}

/// Each of `names` ended SUCCEEDED.
fn assert_succeeded_steps(steps: &HashMap<String, i32>, names: &[&str]) {
    for step in names {
        assert_eq!(
            steps.get(*step),
            Some(&(StepState::Succeeded as i32)),
            "{step}: {steps:?}"
        );
    }
}

/// The restore point as a fresh reader of the repository sees it.
async fn manifest(bench: &Bench, ns: &str, id: &str) -> RestorePointManifest {
    let key = std::fs::read(bench.root.path().join("profiles/main.key")).unwrap();
    let repo = Repository::open(bench.repository.backend().clone(), &key)
        .await
        .unwrap();
    repo.load_restore_point(ns, &Id::parse(id).unwrap())
        .await
        .unwrap()
}

/// Nothing of the application reached cluster b: no namespace, claim, volume or
/// workload.
async fn nothing_on_b(bench: &Bench, ns: &str) {
    assert!(!namespace_exists(&bench.b, ns).await, "namespace {ns} on b");
    let b = &bench.b;
    let claims = Api::<PersistentVolumeClaim>::namespaced(b.clone(), ns)
        .get_opt("data-db-0")
        .await
        .unwrap();
    assert!(claims.is_none(), "a claim on b");
    let pv = Api::<PersistentVolume>::all(b.clone())
        .get_opt(&format!("ferry-{ns}-data-db-0"))
        .await
        .unwrap();
    assert!(pv.is_none(), "a volume on b");
    for name in ["web"] {
        let d = Api::<Deployment>::namespaced(b.clone(), ns)
            .get_opt(name)
            .await
            .unwrap();
        assert!(d.is_none(), "deployment {name} on b");
    }
    let s = Api::<StatefulSet>::namespaced(b.clone(), ns)
        .get_opt("db")
        .await
        .unwrap();
    assert!(s.is_none(), "statefulset db on b");
}

/// An export writes a tagged restore point with the objects and the volume's data and
/// hands it over as a token; a restore of it onto cluster b, into another namespace,
/// brings the objects and the data byte for byte, workloads stopped. A second export
/// after about 1% of the bytes changed uploads about 1%.
#[tokio::test]
async fn export_then_restore_into_a_renamed_namespace() {
    let recorder = Arc::new(Recorder::default());
    let bench = Bench::start_with(Some(recorder.clone())).await;
    let (ns, mut files) = bench.with_application("exp", 4 << 20).await;
    let total: u64 = files.values().map(|c| c.len() as u64).sum();

    let (id, report) = export_with_tags_and_a_recipient(&bench, &ns).await;
    let rp = report.restore_point_id.clone();
    let vol = &report.volumes[0];
    report_names_volume_restore_point_and_token(&bench, &recorder, &ns, &report, total);
    restore_point_holds_tags_objects_and_snapshot(&bench, &ns, &id, &rp, vol, total).await;
    restore_onto_b_under_another_name_stopped(&bench, &ns, &rp, vol, &files).await;

    // About 1% of the bytes change; the next export uploads about that much.
    bench.change_one_percent(&ns, &mut files);
    let id2 = bench.start_export(bench.export_request(&ns)).await;
    let (_, report2) = bench.watch(&id2).await;
    assert_succeeded(&report2);
    let vol2 = &report2.volumes[0];
    assert_uploaded_about_one_percent("second export", vol2, total);
    assert_ne!(vol2.snapshot_id, vol.snapshot_id);
    // Without a recipient key there is no token, and no one was asked for one.
    assert!(report2.migration_token.is_empty());
    assert_eq!(recorder.asked.lock().len(), 1);
    assert_eq!(bench.restore_points(&ns).await.len(), 2);
}

/// Exports `ns` with a team tag, a `job` tag the job's own must override, and a
/// recipient key; checks it ran every export step and no apply. The job's id and report.
async fn export_with_tags_and_a_recipient(bench: &Bench, ns: &str) -> (String, JobReport) {
    let mut req = bench.export_request(ns);
    req.tags = HashMap::from([
        ("team".to_owned(), "shop".to_owned()),
        // The job's own tags win over a request's.
        ("job".to_owned(), "mine".to_owned()),
    ]);
    req.recipient_key = "ferry-import-key:b:0123".into();
    let id = bench.start_export(req).await;
    let (events, report) = bench.watch(&id).await;
    assert_succeeded(&report);
    assert_eq!(
        bench.get_job(&id).await.job.unwrap().kind,
        JobKind::Export as i32
    );
    let steps = step_states(&events);
    assert_succeeded_steps(
        &steps,
        &[
            "capture",
            "preflight",
            "backup-volumes",
            "commit-restore-point",
            "issue-token",
        ],
    );
    assert!(!steps.contains_key("apply"), "{steps:?}");
    (id, report)
}

/// The report: the volume, its bytes, the restore point and the token, which the
/// issuer was asked for exactly once with the recipient's key.
fn report_names_volume_restore_point_and_token(
    bench: &Bench,
    recorder: &Recorder,
    ns: &str,
    report: &JobReport,
    total: u64,
) {
    let rp = report.restore_point_id.clone();
    assert!(!rp.is_empty());
    assert_eq!(report.volumes.len(), 1, "{report:#?}");
    let vol = &report.volumes[0];
    assert_eq!(vol.pvc_name, "data-db-0");
    assert_eq!(vol.result, VolumeResult::Succeeded as i32, "{vol:#?}");
    assert_eq!(vol.bytes_total, total);
    assert!(vol.bytes_uploaded > total / 2, "{vol:#?}");
    assert_eq!(report.migration_token, format!("ferry-token:{rp}"));
    let asked = recorder.asked.lock().clone();
    assert_eq!(
        asked,
        vec![TokenRequest {
            repository: RepositoryRef {
                profile: PROFILE.into(),
                repository_id: bench.repository.config().id.to_string(),
            },
            namespace: ns.to_owned(),
            restore_point_id: rp.clone(),
            recipient_key: "ferry-import-key:b:0123".into(),
        }]
    );
}

/// The restore point: tags, objects and the volume's snapshot; and the export wrote
/// nothing to a cluster.
async fn restore_point_holds_tags_objects_and_snapshot(
    bench: &Bench,
    ns: &str,
    id: &str,
    rp: &str,
    vol: &VolumeOutcome,
    total: u64,
) {
    assert_eq!(bench.restore_points(ns).await, vec![rp.to_owned()]);
    let point = manifest(bench, ns, rp).await;
    assert_eq!(point.tags.get("team").map(String::as_str), Some("shop"));
    assert_eq!(point.tags.get("job").map(String::as_str), Some(id));
    assert_eq!(
        point.tags.get("source-cluster").map(String::as_str),
        Some("a")
    );
    assert_eq!(point.captured.namespace, ns);
    let kinds: Vec<(String, String)> = point
        .captured
        .objects
        .iter()
        .map(|o| {
            (
                o.resource.kind.clone(),
                o.object.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    for (kind, name) in [
        ("ConfigMap", "settings"),
        ("Secret", "db-password"),
        ("Deployment", "web"),
        ("StatefulSet", "db"),
        ("PersistentVolumeClaim", "data-db-0"),
    ] {
        assert!(
            kinds.iter().any(|(k, n)| k == kind && n == name),
            "{kind} {name} not in {kinds:?}"
        );
    }
    assert_eq!(point.volumes.len(), 1);
    assert_eq!(point.volumes[0].pvc, "data-db-0");
    assert_eq!(point.volumes[0].snapshot_id, vol.snapshot_id);
    assert_eq!(point.volumes[0].bytes, total);
    // An export writes nothing to a cluster.
    assert!(!namespace_exists(&bench.b, ns).await);
}

/// A restore of `rp` onto cluster b, into `{ns}-r`, workloads stopped: every restore
/// step but the start ran, and the objects and the data arrived under the new name only.
async fn restore_onto_b_under_another_name_stopped(
    bench: &Bench,
    ns: &str,
    rp: &str,
    vol: &VolumeOutcome,
    files: &BTreeMap<PathBuf, Vec<u8>>,
) {
    let target = format!("{ns}-r");
    let mut req = bench.restore_request(rp);
    let apply = req.apply.as_mut().unwrap();
    apply.namespace_mapping = HashMap::from([(ns.to_owned(), target.clone())]);
    apply.start_applications = false;
    let rid = bench.start_restore(req).await;
    let (events, restored) = bench.watch(&rid).await;
    assert_succeeded(&restored);
    assert_eq!(
        bench.get_job(&rid).await.job.unwrap().kind,
        JobKind::Restore as i32
    );
    let steps = step_states(&events);
    assert_succeeded_steps(
        &steps,
        &[
            "read-restore-point",
            "preflight",
            "restore-volumes",
            "apply",
        ],
    );
    assert_eq!(
        steps.get("start-applications"),
        Some(&(StepState::Skipped as i32))
    );
    assert_eq!(restored.restore_point_id, rp);
    let rvol = &restored.volumes[0];
    assert_eq!(rvol.result, VolumeResult::Succeeded as i32, "{rvol:#?}");
    assert_eq!(rvol.snapshot_id, vol.snapshot_id);
    assert_eq!(rvol.destination_volume, format!("ferry-{target}-data-db-0"));
    let created = restored
        .objects
        .iter()
        .filter(|o| o.action == ObjectAction::Created as i32)
        .count();
    assert!(created >= 6, "{:#?}", restored.objects);

    let b = &bench.b;
    assert!(!namespace_exists(b, ns).await, "nothing under the old name");
    let cm = Api::<ConfigMap>::namespaced(b.clone(), &target)
        .get("settings")
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["greeting"], "hello");
    let secret = Api::<Secret>::namespaced(b.clone(), &target)
        .get("db-password")
        .await
        .unwrap();
    assert_eq!(
        secret.data.unwrap()["password"].0,
        b"s3cret".to_vec(),
        "secret content"
    );
    wait_bound(b, &target, "data-db-0").await;
    bench.assert_restored(files, &target, "data-db-0").await;
    assert!(!bench.root.path().join(SERVICE_VOLUME_ROOT).exists());
    let web = deployment(b, &target, "web").await;
    assert_eq!(web.spec.unwrap().replicas, Some(0), "stopped");
    let db = Api::<StatefulSet>::namespaced(b.clone(), &target)
        .get("db")
        .await
        .unwrap();
    assert_eq!(db.spec.unwrap().replicas, Some(0), "stopped");
}

/// A profile named `name` whose S3 endpoint nobody listens on.
async fn unreachable_profile(bench: &Bench, name: &str) {
    let env = ferry_testenv::shared().await.unwrap();
    let s3 = env.s3().unwrap();
    let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = free.local_addr().unwrap();
    drop(free);
    std::fs::write(
        bench.root.path().join(format!("profiles/{name}.yaml")),
        format!(
            "repository: s3:http://{closed}/{}/nothing\nregion: {}\naccessKeyId: {}\n\
             secretAccessKey: {}\nkeyFile: main.key\n",
            s3.bucket, s3.region, s3.access_key, s3.secret_key
        ),
    )
    .unwrap();
}

/// A restore that cannot read what it needs fails before it applies anything: a restore
/// point that does not exist (NOT_FOUND), a repository that cannot be reached, and a
/// restore point whose data was deleted from the bucket. An export on a service without
/// a token issuer says so in its report.
#[tokio::test]
async fn restores_that_cannot_read_their_data_apply_nothing() {
    let bench = Bench::start().await;
    let (ns, _) = bench.with_application("exp-broken", 1 << 20).await;

    let mut req = bench.export_request(&ns);
    req.recipient_key = "ferry-import-key:b:0123".into();
    let id = bench.start_export(req).await;
    let (_, report) = bench.watch(&id).await;
    assert_succeeded(&report);
    assert!(report.migration_token.is_empty());
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.message.contains("no token issuer is configured")),
        "{:#?}",
        report.warnings
    );
    let rp = report.restore_point_id.clone();
    assert!(!rp.is_empty());

    // A restore point that does not exist.
    let missing = "ab".repeat(32);
    let rid = bench.start_restore(bench.restore_request(&missing)).await;
    let (events, failed) = bench.watch(&rid).await;
    assert_eq!(failed.state, JobState::Failed as i32, "{failed:#?}");
    let error = failed.error.clone().unwrap();
    assert_eq!(error.code, ErrorCode::NotFound as i32, "{error:?}");
    assert!(error.message.contains(&missing), "{error:?}");
    let steps = step_states(&events);
    assert_eq!(
        steps.get("read-restore-point"),
        Some(&(StepState::Failed as i32))
    );
    assert_eq!(steps.get("apply"), Some(&(StepState::Skipped as i32)));
    // A malformed id is refused outright.
    let refused = bench
        .service
        .client
        .clone()
        .start_restore(bench.restore_request("not-an-id"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    // The repository cannot be reached.
    unreachable_profile(&bench, "closed").await;
    let mut req = bench.restore_request(&rp);
    req.repository = Some(RepositoryRef {
        profile: "closed".into(),
        repository_id: String::new(),
    });
    let rid = bench.start_restore(req).await;
    let (_, failed) = bench.watch(&rid).await;
    assert_eq!(failed.state, JobState::Failed as i32, "{failed:#?}");
    assert_eq!(
        failed.error.clone().unwrap().code,
        ErrorCode::Unreachable as i32,
        "{failed:#?}"
    );
    nothing_on_b(&bench, &ns).await;

    // The restore point is there, its volume data is not.
    let backend = bench.repository.backend().clone();
    let packs = backend.list("packs/").await.unwrap();
    assert!(!packs.is_empty());
    for p in &packs {
        backend.delete(&p.key).await.unwrap();
    }
    assert_eq!(bench.restore_points(&ns).await, vec![rp.clone()]);
    let rid = bench.start_restore(bench.restore_request(&rp)).await;
    let (events, failed) = bench.watch(&rid).await;
    assert_eq!(failed.state, JobState::Failed as i32, "{failed:#?}");
    let steps = step_states(&events);
    assert_eq!(steps.get("apply"), Some(&(StepState::Skipped as i32)));
    assert_eq!(
        steps.get("start-applications"),
        Some(&(StepState::Skipped as i32))
    );
    // Nothing applied: each object is listed as read from the restore point, or left out.
    assert!(failed.objects.iter().all(|o| {
        o.action == ObjectAction::Captured as i32 || o.action == ObjectAction::Excluded as i32
    }));
    nothing_on_b(&bench, &ns).await;
    let tags: BTreeMap<String, String> = manifest(&bench, &ns, &rp).await.tags;
    assert_eq!(tags.get("job"), Some(&id));
}

/// A cancel while the destination's agent restores volumes: the job ends CANCELLED,
/// the agent's operation stops, and no object of the application is applied.
#[tokio::test]
async fn a_restore_cancelled_while_volumes_restore_applies_nothing() {
    let bench = Bench::start().await;
    let (ns, _) = bench.with_application("exp-cancel", 96 << 20).await;
    let id = bench.start_export(bench.export_request(&ns)).await;
    let (_, report) = bench.watch(&id).await;
    assert_succeeded(&report);

    let rid = bench
        .start_restore(bench.restore_request(&report.restore_point_id))
        .await;
    let (ended, (events, _)) = watch_until(&bench.service.client, &rid, |e| {
        matches!(&e.event, Some(job_event::Event::Progress(p))
            if p.step == "restore-volumes" && p.bytes_read > 0)
    })
    .await;
    assert!(
        !ended,
        "the restore finished before it could be cancelled: {events:#?}"
    );
    bench
        .service
        .client
        .clone()
        .cancel_job(ferry_proto::v1::CancelJobRequest {
            job: Some(ferry_proto::v1::JobRef { id: rid.clone() }),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let (events, cancelled) = bench.watch(&rid).await;
    assert_eq!(
        cancelled.state,
        JobState::Cancelled as i32,
        "{cancelled:#?}"
    );
    let steps = step_states(&events);
    assert_eq!(steps.get("apply"), Some(&(StepState::Skipped as i32)));
    nothing_on_b(&bench, &ns).await;
}
