//! The quiesce pre-hook: the source's Deployments and StatefulSets scaled to zero while
//! their volumes are backed up, and back to their counts afterwards, also after a
//! failure, a cancel or a restart.

use std::time::{Duration, Instant};

use ferry_kube::{Captured, Cluster};
use ferry_proto::v1::StepState;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracing::warn;

use crate::error::{Result, TransferError};
use crate::job::{Quiesced, steps};
use crate::runtime::JobRun;

/// Annotation holding a source workload's replica count while the quiesce pre-hook
/// keeps it at zero. Distinct from ferry.dev/replicas, which marks workloads a
/// migration brought in scaled to zero, so resuming the source never starts those.
pub const QUIESCE_ANNOTATION: &str = "ferry.dev/quiesced-replicas";

/// Annotation holding a source workload's replica count after a warm migration's
/// cutover moved it to another cluster: it stays at zero, and nothing scales it back.
pub const MOVED_ANNOTATION: &str = "ferry.dev/moved-replicas";

/// How often the quiesce pre-hook looks for the source's pods to be gone: a cutover's
/// downtime starts there.
const STOPPED_POLL: Duration = Duration::from_millis(250);

/// Scales the application's Deployments and StatefulSets on the source to zero, each
/// one's count kept in an annotation and in the checkpoint before it is changed.
/// `asked` is the request's quiesce_source; the step is skipped without it.
pub(crate) async fn quiesce(
    run: &JobRun,
    src: &Cluster,
    ns: &str,
    captured: &Captured,
    asked: bool,
) -> Result<()> {
    if run.step_finished(steps::QUIESCE) {
        return Ok(());
    }
    if !asked {
        run.step(
            steps::QUIESCE,
            StepState::Skipped,
            "not asked (quiesce_source)",
        )
        .await;
        return Ok(());
    }
    run.step(
        steps::QUIESCE,
        StepState::Running,
        format!("scaling workloads in {ns} on cluster {} to zero", src.name),
    )
    .await;
    let pp = PatchParams {
        field_manager: Some("ferry-quiesce".into()),
        ..Default::default()
    };
    for o in &captured.objects {
        let kind = o.resource.kind.as_str();
        if o.resource.group != "apps" || !matches!(kind, "Deployment" | "StatefulSet") {
            continue;
        }
        let name = o.object.metadata.name.clone().unwrap_or_default();
        let (replicas, annotation) = workload_replicas(src, ns, kind, &name).await?;
        // Quiesced by an earlier attempt of this job: its count is in the annotation.
        let original = match annotation.and_then(|a| a.parse::<i32>().ok()) {
            Some(n) => n,
            None if replicas == 0 => continue,
            None => replicas,
        };
        run.update_checkpoint(|c| {
            if !c.quiesced.iter().any(|q| q.kind == kind && q.name == name) {
                c.quiesced.push(Quiesced {
                    kind: kind.to_owned(),
                    name: name.clone(),
                    replicas: original,
                });
            }
        })
        .await;
        let patch = json!({"metadata": {"annotations": {QUIESCE_ANNOTATION: original.to_string()}},
                           "spec": {"replicas": 0}});
        patch_workload(src, ns, kind, &name, &pp, &patch).await?;
    }
    // Pods of a workload scaled to zero stop after their grace period; the copy waits.
    let quiesced = run.with_checkpoint(|c| c.quiesced.clone());
    let deadline = Instant::now() + run.config().quiesce_timeout;
    for q in &quiesced {
        loop {
            let running = running_replicas(src, ns, &q.kind, &q.name).await?;
            if running == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(TransferError::Object {
                    action: "waiting for the pods of",
                    cluster: src.name.clone(),
                    object: Box::new(workload_ref(ns, &q.kind, &q.name)),
                    message: format!("{running} replica(s) still running after scaling to zero"),
                    hint: "check why its pods do not stop, or start the job again without quiesce_source"
                        .into(),
                });
            }
            run.check_cancel()?;
            tokio::time::sleep(STOPPED_POLL).await;
        }
    }
    run.step(
        steps::QUIESCE,
        StepState::Succeeded,
        format!("{} workload(s) scaled to zero", quiesced.len()),
    )
    .await;
    Ok(())
}

pub(crate) fn workload_ref(ns: &str, kind: &str, name: &str) -> ferry_kube::ObjectRef {
    ferry_kube::ObjectRef {
        api_version: "apps/v1".into(),
        kind: kind.to_owned(),
        namespace: Some(ns.to_owned()),
        name: name.to_owned(),
    }
}

fn kube_object_error(
    action: &'static str,
    cluster: &Cluster,
    ns: &str,
    kind: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> TransferError {
    let cluster = cluster.name.clone();
    let object = workload_ref(ns, kind, name);
    move |e| TransferError::Object {
        action,
        cluster,
        object: Box::new(object),
        message: e.to_string(),
        hint: "grant the user get and patch on deployments and statefulsets, then start again"
            .into(),
    }
}

/// `spec.replicas` and the quiesce annotation of a workload.
async fn workload_replicas(
    c: &Cluster,
    ns: &str,
    kind: &str,
    name: &str,
) -> Result<(i32, Option<String>)> {
    let err = kube_object_error("reading", c, ns, kind, name);
    let (replicas, annotations) = if kind == "Deployment" {
        let d = Api::<Deployment>::namespaced(c.client.clone(), ns)
            .get(name)
            .await
            .map_err(err)?;
        (
            d.spec.and_then(|s| s.replicas).unwrap_or(1),
            d.metadata.annotations,
        )
    } else {
        let s = Api::<StatefulSet>::namespaced(c.client.clone(), ns)
            .get(name)
            .await
            .map_err(err)?;
        (
            s.spec.and_then(|s| s.replicas).unwrap_or(1),
            s.metadata.annotations,
        )
    };
    Ok((
        replicas,
        annotations.and_then(|mut a| a.remove(QUIESCE_ANNOTATION)),
    ))
}

/// Pods a workload still runs (status.replicas; absent means none).
async fn running_replicas(c: &Cluster, ns: &str, kind: &str, name: &str) -> Result<i32> {
    let err = kube_object_error("reading", c, ns, kind, name);
    Ok(if kind == "Deployment" {
        Api::<Deployment>::namespaced(c.client.clone(), ns)
            .get(name)
            .await
            .map_err(err)?
            .status
            .map(|s| s.replicas.unwrap_or(0))
            .unwrap_or(0)
    } else {
        Api::<StatefulSet>::namespaced(c.client.clone(), ns)
            .get(name)
            .await
            .map_err(err)?
            .status
            .map(|s| s.replicas)
            .unwrap_or(0)
    })
}

async fn patch_workload(
    c: &Cluster,
    ns: &str,
    kind: &str,
    name: &str,
    pp: &PatchParams,
    patch: &serde_json::Value,
) -> Result<()> {
    let err = kube_object_error("scaling", c, ns, kind, name);
    if kind == "Deployment" {
        Api::<Deployment>::namespaced(c.client.clone(), ns)
            .patch(name, pp, &Patch::Merge(patch))
            .await
            .map_err(err)?;
    } else {
        Api::<StatefulSet>::namespaced(c.client.clone(), ns)
            .patch(name, pp, &Patch::Merge(patch))
            .await
            .map_err(err)?;
    }
    Ok(())
}

/// Scales back what the quiesce pre-hook scaled down; runs after a failure or a
/// cancel too. What could not be scaled back stays in the checkpoint and is reported.
pub(crate) async fn unquiesce(run: &JobRun, src: &Cluster, ns: &str) -> Result<()> {
    let quiesced = run.with_checkpoint(|c| c.quiesced.clone());
    if quiesced.is_empty() {
        if !run.step_finished(steps::UNQUIESCE) {
            run.step(
                steps::UNQUIESCE,
                StepState::Skipped,
                "nothing was scaled down",
            )
            .await;
        }
        return Ok(());
    }
    run.step(
        steps::UNQUIESCE,
        StepState::Running,
        format!(
            "scaling {} workload(s) back on cluster {}",
            quiesced.len(),
            src.name
        ),
    )
    .await;
    let pp = PatchParams {
        field_manager: Some("ferry-quiesce".into()),
        ..Default::default()
    };
    let mut first_error = None;
    for q in &quiesced {
        let patch = json!({"metadata": {"annotations": {QUIESCE_ANNOTATION: null}},
                           "spec": {"replicas": q.replicas}});
        match patch_workload(src, ns, &q.kind, &q.name, &pp, &patch).await {
            Ok(()) => {
                run.update_checkpoint(|c| {
                    c.quiesced
                        .retain(|x| !(x.kind == q.kind && x.name == q.name));
                })
                .await;
            }
            Err(e) => {
                warn!(workload = %q.name, error = %e, "scaling back on the source failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => {
            run.step(
                steps::UNQUIESCE,
                StepState::Succeeded,
                format!(
                    "{} workload(s) back to their replica counts",
                    quiesced.len()
                ),
            )
            .await;
            Ok(())
        }
        Some(e) => {
            run.step(steps::UNQUIESCE, StepState::Failed, e.to_string())
                .await;
            Err(e)
        }
    }
}

/// Marks workloads a cutover stopped as moved: their quiesce annotation (which a later
/// job would scale back from) becomes [`MOVED_ANNOTATION`].
pub(crate) async fn hand_over(src: &Cluster, ns: &str, stopped: &[Quiesced]) -> Result<()> {
    let pp = PatchParams {
        field_manager: Some("ferry-quiesce".into()),
        ..Default::default()
    };
    for q in stopped {
        let patch = json!({"metadata": {"annotations": {
            QUIESCE_ANNOTATION: null,
            MOVED_ANNOTATION: q.replicas.to_string(),
        }}});
        patch_workload(src, ns, &q.kind, &q.name, &pp, &patch).await?;
    }
    Ok(())
}

/// For a job ended without running (after a restart): the source comes back anyway.
pub(crate) async fn unquiesce_left_over(run: &JobRun) -> Result<()> {
    if run.with_checkpoint(|c| c.quiesced.is_empty()) {
        return Ok(());
    }
    let job = run.job();
    let src = run.deps().clusters.cluster(job.source.as_ref()).await?;
    let ns = job.application.map(|a| a.namespace).unwrap_or_default();
    unquiesce(run, &src, &ns).await
}
