//! The migration runner: capture, pre-flight, quiesce, back up volumes, resume the
//! source, commit the restore point, restore volumes, apply, start. Every step skips
//! itself when a resumed job already finished it, and saves what later steps need.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferry_kube::{
    ApplyOptions as KubeApplyOptions, CaptureSpec, Captured, Cluster, ClusterFacts, ExistingPolicy,
    ObjectResult, Outcome, Plan, RestorePointManifest, RestoredVolume, TransformSpec,
    VolumeSnapshot,
};
use ferry_proto::v1::{
    BackupRequest, BackupSummary, ErrorCode, ErrorDetail, ExistingObjectPolicy, GetInfoRequest,
    JobState, ObjectAction, ObjectOutcome, Progress, RepositoryRef, RestoreRequest,
    StartMigrationRequest, StepState, VolumeOutcome, VolumeResult, backup_event, restore_event,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

use crate::error::{Result, TransferError, agent_error, proto_object};
use crate::job::{Quiesced, short_hash, steps};
use crate::runtime::{JobRun, api_ref, excluded_outcome};

/// Annotation holding a source workload's replica count while the quiesce pre-hook
/// keeps it at zero. Distinct from ferry.dev/replicas, which marks workloads a
/// migration brought in scaled to zero, so resuming the source never starts those.
pub const QUIESCE_ANNOTATION: &str = "ferry.dev/quiesced-replicas";

/// How long the destination's agent gets to say where it creates volumes.
const AGENT_INFO_TIMEOUT: Duration = Duration::from_secs(30);

/// A claim's volume on the source, as the agents see it.
#[derive(Debug, Clone)]
struct SourceVolume {
    pvc: String,
    pv: String,
    /// hostPath or local path on the node.
    path: String,
    /// The node it is pinned to, if any (kubernetes.io/hostname affinity).
    node: String,
}

/// Everything the steps share.
struct Ctx<'a> {
    run: &'a JobRun,
    req: StartMigrationRequest,
    src: Cluster,
    dst: Cluster,
    namespace: String,
    target: String,
    moves_data: bool,
}

/// Runs (or resumes) a migration; the state it ends in, or the error that stopped it.
pub(crate) async fn run(run: &JobRun) -> Result<JobState> {
    let req = run.request()?;
    let deps = run.deps();
    let src = deps.clusters.cluster(req.source.as_ref()).await?;
    let dst = deps.clusters.cluster(req.destination.as_ref()).await?;
    let namespace = req
        .application
        .as_ref()
        .map(|a| a.namespace.clone())
        .unwrap_or_default();
    let target = req
        .apply
        .clone()
        .unwrap_or_default()
        .namespace_mapping
        .get(&namespace)
        .cloned()
        .unwrap_or_else(|| namespace.clone());
    let ctx = Ctx {
        run,
        moves_data: !req.skip_volume_data && !req.dry_run,
        req,
        src,
        dst,
        namespace,
        target,
    };

    let captured = capture(&ctx).await?;
    run.check_cancel()?;
    let (plan, volumes, root) = preflight(&ctx, &captured).await?;
    run.check_cancel()?;

    if ctx.req.dry_run {
        for name in [
            steps::QUIESCE,
            steps::BACKUP,
            steps::UNQUIESCE,
            steps::COMMIT,
            steps::RESTORE,
        ] {
            run.step(name, StepState::Skipped, "dry run").await;
        }
        let state = apply(&ctx, &plan).await?;
        run.step(steps::START, StepState::Skipped, "dry run").await;
        return Ok(state);
    }

    // The source must come back whatever happens to the copy.
    let copied = async {
        quiesce(&ctx, &captured).await?;
        backup(&ctx, &volumes).await
    }
    .await;
    let resumed = unquiesce(run, &ctx.src, &ctx.namespace).await;
    let snapshots = copied?;
    resumed?;
    run.check_cancel()?;

    commit(&ctx, &captured, &snapshots).await?;
    run.check_cancel()?;
    restore(&ctx, &root).await?;
    run.check_cancel()?;
    let state = apply(&ctx, &plan).await?;
    // A cancel asked during apply is honoured after it: an apply stopped half-way
    // would leave more to explain than one that finished.
    run.check_cancel()?;
    if state != JobState::Succeeded {
        run.step(
            steps::START,
            StepState::Skipped,
            "some objects failed to apply; fix them, then Activate",
        )
        .await;
        return Ok(state);
    }
    start(&ctx).await?;
    Ok(state)
}

async fn capture(ctx: &Ctx<'_>) -> Result<Captured> {
    let run = ctx.run;
    if run.step_finished(steps::CAPTURE)
        && let Some(c) = run.with_checkpoint(|c| c.captured.clone())
    {
        return Ok(c);
    }
    run.step(
        steps::CAPTURE,
        StepState::Running,
        format!("reading {} on cluster {}", ctx.namespace, ctx.src.name),
    )
    .await;
    let app = ctx.req.application.clone().unwrap_or_default();
    let mut spec = CaptureSpec::new(&ctx.namespace);
    spec.label_selector = (!app.label_selector.is_empty()).then_some(app.label_selector);
    spec.include_resources = app.include_resources;
    spec.exclude_resources = app.exclude_resources;
    let captured = tokio::select! {
        c = ferry_kube::capture(&ctx.src, &spec) => c.map_err(TransferError::kube("capture", &ctx.src.name))?,
        () = run.cancel_token().cancelled() => return Err(run.cancelled()),
    };
    let message = format!(
        "{} object(s), {} volume(s); {} left out",
        captured.objects.len(),
        captured.volumes.len(),
        captured.excluded.len()
    );
    run.with_report(|r| {
        r.objects = captured.excluded.iter().map(excluded_outcome).collect();
    });
    let stored = captured.clone();
    run.update_checkpoint(|c| c.captured = Some(stored)).await;
    run.progress(
        Progress {
            step: steps::CAPTURE.into(),
            objects_done: captured.objects.len() as u64,
            objects_total: captured.objects.len() as u64,
            ..Default::default()
        },
        true,
    );
    run.step(steps::CAPTURE, StepState::Succeeded, message)
        .await;
    Ok(captured)
}

/// The destination PV of a claim: unique per namespace and claim, a valid name.
fn destination_pv(target: &str, pvc: &str) -> String {
    let name = format!("ferry-{target}-{pvc}");
    if name.len() <= 253 {
        name
    } else {
        format!("ferry-{}", short_hash(&name))
    }
}

fn destination_path(root: &Path, target: &str, pvc: &str) -> String {
    root.join(target).join(pvc).display().to_string()
}

/// Labels written objects so a later migration of the same application to the same
/// place converges on them (and reports them unchanged) rather than skipping them.
fn migration_id(ctx: &Ctx<'_>) -> String {
    format!(
        "m-{}",
        short_hash(&format!(
            "{}/{}->{}/{}",
            ctx.src.name, ctx.namespace, ctx.dst.name, ctx.target
        ))
    )
}

/// The transform for the destination; each claim's new volume is a hostPath under
/// `root`, the directory the destination's agent restores into.
fn transform(ctx: &Ctx<'_>, captured: &Captured, root: &Path) -> TransformSpec {
    let apply = ctx.req.apply.clone().unwrap_or_default();
    let restored_volumes: BTreeMap<String, RestoredVolume> = if ctx.moves_data {
        captured
            .volumes
            .iter()
            .map(|v| {
                let path = destination_path(root, &ctx.target, &v.pvc);
                let source = json!({"hostPath": {"path": path, "type": "DirectoryOrCreate"}});
                let source = source.as_object().cloned().unwrap_or_default();
                (
                    v.pvc.clone(),
                    RestoredVolume {
                        pv_name: destination_pv(&ctx.target, &v.pvc),
                        source,
                        reclaim_policy: None,
                    },
                )
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    TransformSpec {
        migration_id: migration_id(ctx),
        target_namespace: (ctx.target != ctx.namespace).then(|| ctx.target.clone()),
        storage_classes: apply.storage_class_mapping.into_iter().collect(),
        zones: apply.zone_mapping.into_iter().collect(),
        preserve_node_ports: apply.preserve_node_ports,
        keep_load_balancer_ip: false,
        // Workloads start only in the last step, once every object and every byte of
        // data is in place (or with Activate, when start_applications is off).
        scale_to_zero: true,
        restored_volumes,
        patches: Vec::new(),
    }
}

/// Finds each claim's path on its node; problems, not errors, so all are reported.
async fn source_volumes(
    ctx: &Ctx<'_>,
    captured: &Captured,
    problems: &mut Vec<String>,
) -> Result<Vec<SourceVolume>> {
    let api: Api<PersistentVolume> = Api::all(ctx.src.client.clone());
    let mut out = Vec::new();
    for v in &captured.volumes {
        let Some(pv_name) = v.pv.clone() else {
            problems.push(format!(
                "claim {}/{} on cluster {} is not bound to a volume: bind it, or migrate with \
                 skip_volume_data",
                ctx.namespace, v.pvc, ctx.src.name
            ));
            continue;
        };
        let pv = api
            .get_opt(&pv_name)
            .await
            .map_err(|e| TransferError::Object {
                action: "reading",
                cluster: ctx.src.name.clone(),
                object: Box::new(ferry_kube::ObjectRef {
                    api_version: "v1".into(),
                    kind: "PersistentVolume".into(),
                    namespace: None,
                    name: pv_name.clone(),
                }),
                message: e.to_string(),
                hint: "grant the source user get on persistentvolumes".into(),
            })?;
        let spec = pv.and_then(|p| p.spec);
        let path = spec.as_ref().and_then(|s| {
            s.host_path
                .as_ref()
                .map(|h| h.path.clone())
                .or_else(|| s.local.as_ref().map(|l| l.path.clone()))
        });
        let Some(path) = path else {
            problems.push(format!(
                "volume {pv_name} of claim {}/{} on cluster {} is neither hostPath nor local, \
                 so no agent can read it; migrate with skip_volume_data, or move the data \
                 with a storage snapshot",
                ctx.namespace, v.pvc, ctx.src.name
            ));
            continue;
        };
        let node = spec
            .as_ref()
            .and_then(|s| s.node_affinity.as_ref())
            .and_then(|a| a.required.as_ref())
            .and_then(|r| {
                r.node_selector_terms.iter().find_map(|t| {
                    t.match_expressions.as_ref()?.iter().find_map(|e| {
                        (e.key == "kubernetes.io/hostname")
                            .then(|| e.values.as_ref()?.first().cloned())
                            .flatten()
                    })
                })
            })
            .unwrap_or_default();
        out.push(SourceVolume {
            pvc: v.pvc.clone(),
            pv: pv_name,
            path,
            node,
        });
    }
    Ok(out)
}

/// Plans for the destination and checks it. Runs on every (re)start, since the plan
/// is not stored; the pre-flight check itself runs until it once succeeded. Returns
/// the plan, the source volumes and the directory volumes are restored under.
async fn preflight(
    ctx: &Ctx<'_>,
    captured: &Captured,
) -> Result<(Plan, Vec<SourceVolume>, PathBuf)> {
    let run = ctx.run;
    let done = run.step_finished(steps::PREFLIGHT);
    if !done {
        run.step(
            steps::PREFLIGHT,
            StepState::Running,
            format!("checking cluster {}", ctx.dst.name),
        )
        .await;
    }
    let facts = ClusterFacts::gather(&ctx.dst)
        .await
        .map_err(TransferError::kube(
            "reading the destination's zones and storage classes",
            &ctx.dst.name,
        ))?;
    let mut warnings = Vec::new();
    let root = destination_root(ctx, captured, done, &mut warnings).await?;
    let spec = transform(ctx, captured, &root);
    let plan = ferry_kube::plan(captured, &spec, &facts)
        .map_err(TransferError::kube("planning", &ctx.dst.name))?;
    let mut problems: Vec<String> = Vec::new();
    let volumes = if ctx.moves_data {
        source_volumes(ctx, captured, &mut problems).await?
    } else {
        Vec::new()
    };
    if done {
        return Ok((plan, volumes, root));
    }
    let found = ferry_kube::preflight(&ctx.dst, &plan)
        .await
        .map_err(TransferError::kube("pre-flight", &ctx.dst.name))?;
    let mut missing_prerequisite = false;
    for p in &found {
        if p.is_error() {
            missing_prerequisite |=
                matches!(p.kind, ferry_kube::ProblemKind::MissingDependency { .. });
            problems.push(p.to_string());
        } else {
            warnings.push(ErrorDetail {
                code: ErrorCode::Unspecified as i32,
                message: p.to_string(),
                object: p.object.as_ref().map(proto_object),
                cluster: ctx.dst.name.clone(),
                hint: String::new(),
            });
        }
    }
    if ctx.moves_data && !volumes.is_empty() {
        let profile = repository_ref(ctx)?;
        if profile.profile.is_empty() {
            problems.push("no repository profile for the volume data".into());
        }
    }
    if !problems.is_empty() {
        return Err(TransferError::Preflight {
            cluster: ctx.dst.name.clone(),
            problems,
            missing_prerequisite,
        });
    }
    // One line per claim, filled in as its data moves.
    run.with_report(|r| {
        r.warnings.extend(warnings);
        r.volumes = plan
            .volumes
            .iter()
            .map(|v| VolumeOutcome {
                namespace: ctx.namespace.clone(),
                pvc_name: v.pvc.clone(),
                source_volume: v.source_pv.clone().unwrap_or_default(),
                destination_volume: v.pv.clone().unwrap_or_default(),
                source_storage_class: captured
                    .volumes
                    .iter()
                    .find(|c| c.pvc == v.pvc)
                    .and_then(|c| c.storage_class.clone())
                    .unwrap_or_default(),
                destination_storage_class: v.storage_class.clone().unwrap_or_default(),
                result: VolumeResult::Skipped as i32,
                ..Default::default()
            })
            .collect();
    });
    let restored_under = if ctx.moves_data && !volumes.is_empty() {
        format!("; volumes restored under {}", root.display())
    } else {
        String::new()
    };
    run.step(
        steps::PREFLIGHT,
        StepState::Succeeded,
        format!(
            "{} object(s) to apply in namespace {} on cluster {}{restored_under}",
            plan.objects.len(),
            plan.namespace,
            ctx.dst.name
        ),
    )
    .await;
    Ok((plan, volumes, root))
}

/// The directory restored volumes go under on the destination, for the new volumes'
/// hostPath and the restore alike: where the destination's agent creates them
/// (GetInfo), else this service's `volume_root`. Asked once per job and kept in the
/// checkpoint, so a resumed job restores where its volumes point. An agent that cannot
/// answer stops a job that moves volume data; a dry run only warns.
async fn destination_root(
    ctx: &Ctx<'_>,
    captured: &Captured,
    preflight_done: bool,
    warnings: &mut Vec<ErrorDetail>,
) -> Result<PathBuf> {
    let run = ctx.run;
    if let Some(root) = run.with_checkpoint(|c| c.volume_root.clone()) {
        return Ok(root);
    }
    let own = run.config().volume_root.clone();
    // No data to restore; or a job from before the root was kept, whose restore used
    // this service's root.
    if ctx.req.skip_volume_data || captured.volumes.is_empty() || run.step_finished(steps::RESTORE)
    {
        return Ok(own);
    }
    if !ctx.moves_data {
        // A dry run restores nothing, but says what would stop the migration.
        if preflight_done {
            return Ok(own);
        }
        return match agent_volume_root(ctx).await {
            Ok(root) => Ok(root.unwrap_or(own)),
            Err(e) if e.is_cancelled() => Err(e),
            Err(e) => {
                warnings.push(ErrorDetail {
                    message: format!("{e}; without dry_run the migration would stop here"),
                    ..e.detail()
                });
                Ok(own)
            }
        };
    }
    let root = agent_volume_root(ctx).await?.unwrap_or(own);
    info!(root = %root.display(), cluster = %ctx.dst.name, "destination volume root");
    run.update_checkpoint(|c| c.volume_root = Some(root.clone()))
        .await;
    Ok(root)
}

/// Asks the destination's agent where it creates restored volumes; None when it has
/// no setting of its own.
async fn agent_volume_root(ctx: &Ctx<'_>) -> Result<Option<PathBuf>> {
    let run = ctx.run;
    let cluster = ctx.dst.name.as_str();
    let mut client = run.deps().agents.agent(cluster, "").await?;
    let failed = |code: ErrorCode, message: String, hint: &str| TransferError::Agent {
        cluster: cluster.to_owned(),
        node: "any".into(),
        what: "did not say where it creates restored volumes (GetInfo)".into(),
        code,
        message,
        hint: hint.into(),
    };
    let unreachable = |message: String| {
        failed(
            ErrorCode::Unreachable,
            message,
            "check that the destination's agent runs and its port is reachable from the \
             transfer service, then start again; volume data cannot be restored without it",
        )
    };
    let answer = tokio::select! {
        r = tokio::time::timeout(AGENT_INFO_TIMEOUT, client.get_info(GetInfoRequest {})) => r,
        () = run.cancel_token().cancelled() => return Err(run.cancelled()),
    };
    let info = match answer {
        Ok(Ok(info)) => info.into_inner(),
        Ok(Err(s)) if s.message().is_empty() => {
            return Err(unreachable(s.code().description().to_owned()));
        }
        Ok(Err(s)) => return Err(unreachable(s.message().to_owned())),
        Err(_) => {
            return Err(unreachable(format!(
                "no answer in {} s",
                AGENT_INFO_TIMEOUT.as_secs()
            )));
        }
    };
    if info.volume_root.is_empty() {
        return Ok(None);
    }
    let root = PathBuf::from(&info.volume_root);
    if !root.is_absolute() {
        return Err(failed(
            ErrorCode::InvalidArgument,
            format!("it reported {:?}, a relative path", info.volume_root),
            "give the agent an absolute --volume-root",
        ));
    }
    Ok(Some(root))
}

fn repository_ref(ctx: &Ctx<'_>) -> Result<RepositoryRef> {
    let mut r = ctx.req.repository.clone().unwrap_or_default();
    if r.profile.is_empty() {
        r.profile = ctx.run.config().default_profile.clone().ok_or_else(|| {
            TransferError::invalid("repository", "missing, and the service has no default")
        })?;
    }
    let pinned = ctx.run.with_checkpoint(|c| c.repository_id.clone());
    if r.repository_id.is_empty() {
        r.repository_id = pinned;
    }
    Ok(r)
}

/// Scales the application's Deployments and StatefulSets on the source to zero, each
/// one's count kept in an annotation and in the checkpoint before it is changed.
async fn quiesce(ctx: &Ctx<'_>, captured: &Captured) -> Result<()> {
    let run = ctx.run;
    if run.step_finished(steps::QUIESCE) {
        return Ok(());
    }
    if !ctx.req.quiesce_source {
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
        format!(
            "scaling workloads in {} on cluster {} to zero",
            ctx.namespace, ctx.src.name
        ),
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
        let (replicas, annotation) =
            workload_replicas(&ctx.src, &ctx.namespace, kind, &name).await?;
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
        patch_workload(&ctx.src, &ctx.namespace, kind, &name, &pp, &patch).await?;
    }
    // Pods of a workload scaled to zero stop after their grace period; the copy waits.
    let quiesced = run.with_checkpoint(|c| c.quiesced.clone());
    let deadline = Instant::now() + run.config().quiesce_timeout;
    for q in &quiesced {
        loop {
            let running = running_replicas(&ctx.src, &ctx.namespace, &q.kind, &q.name).await?;
            if running == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(TransferError::Object {
                    action: "waiting for the pods of",
                    cluster: ctx.src.name.clone(),
                    object: Box::new(workload_ref(&ctx.namespace, &q.kind, &q.name)),
                    message: format!("{running} replica(s) still running after scaling to zero"),
                    hint: "check why its pods do not stop, or migrate without quiesce_source"
                        .into(),
                });
            }
            run.check_cancel()?;
            tokio::time::sleep(Duration::from_secs(1)).await;
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

fn workload_ref(ns: &str, kind: &str, name: &str) -> ferry_kube::ObjectRef {
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
async fn unquiesce(run: &JobRun, src: &Cluster, ns: &str) -> Result<()> {
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

/// For a job ended without running (after a restart): the source comes back anyway.
pub(crate) async fn unquiesce_left_over(run: &JobRun) -> Result<()> {
    if run.with_checkpoint(|c| c.quiesced.is_empty()) {
        return Ok(());
    }
    let req = run.request()?;
    let src = run.deps().clusters.cluster(req.source.as_ref()).await?;
    let ns = req.application.map(|a| a.namespace).unwrap_or_default();
    unquiesce(run, &src, &ns).await
}

/// Sums the latest progress of every volume of a step.
struct Aggregate<'a> {
    run: &'a JobRun,
    step: &'static str,
    per_volume: parking_lot::Mutex<Vec<Progress>>,
}

impl<'a> Aggregate<'a> {
    fn new(run: &'a JobRun, step: &'static str, volumes: usize) -> Self {
        Aggregate {
            run,
            step,
            per_volume: parking_lot::Mutex::new(vec![Progress::default(); volumes]),
        }
    }

    fn update(&self, idx: usize, p: Progress, force: bool) {
        let total = {
            let mut all = self.per_volume.lock();
            if let Some(slot) = all.get_mut(idx) {
                *slot = p;
            }
            let mut t = Progress {
                step: self.step.into(),
                ..Default::default()
            };
            for v in all.iter() {
                t.files_done += v.files_done;
                t.files_total += v.files_total;
                t.bytes_read += v.bytes_read;
                t.bytes_new += v.bytes_new;
                t.bytes_uploaded += v.bytes_uploaded;
                t.bytes_total += v.bytes_total;
                t.rate_bytes_per_second += v.rate_bytes_per_second;
            }
            if t.rate_bytes_per_second > 0 && t.bytes_total > t.bytes_read {
                t.eta = Some(prost_types::Duration {
                    seconds: ((t.bytes_total - t.bytes_read) / t.rate_bytes_per_second) as i64,
                    nanos: 0,
                });
            }
            t
        };
        self.run.progress(total, force);
    }
}

/// The snapshot of each claim in the application's latest restore point in the
/// repository: the parents that make this backup incremental.
async fn parents(
    repo: &ferry_repo::Repository,
    app: &str,
    source_cluster: &str,
) -> HashMap<String, String> {
    let ids = match repo.restore_point_ids(Some(app)).await {
        Ok(ids) => ids,
        Err(e) => {
            warn!(error = %e, "listing restore points failed; backing up in full");
            return HashMap::new();
        }
    };
    let loaded: Vec<RestorePointManifest> = futures::stream::iter(ids)
        .map(|(app, id)| async move {
            repo.load_restore_point::<RestorePointManifest>(&app, &id)
                .await
                .map_err(
                    |e| warn!(restore_point = %id, error = %e, "unreadable restore point skipped"),
                )
                .ok()
        })
        .buffer_unordered(8)
        .filter_map(|m| async move { m })
        .collect()
        .await;
    let parse = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
    };
    loaded
        .into_iter()
        .filter(|m| m.captured.cluster == source_cluster)
        .max_by_key(|m| parse(&m.created_at))
        .map(|m| {
            m.volumes
                .into_iter()
                .map(|v| (v.pvc, v.snapshot_id))
                .collect()
        })
        .unwrap_or_default()
}

/// Backs every claim's volume up through the source's agents; the snapshots, in the
/// order of `volumes`.
async fn backup(ctx: &Ctx<'_>, volumes: &[SourceVolume]) -> Result<Vec<VolumeSnapshot>> {
    let run = ctx.run;
    let done_snapshots = |run: &JobRun| -> Vec<VolumeSnapshot> {
        run.with_report(|r| {
            r.volumes
                .iter()
                .filter(|v| !v.snapshot_id.is_empty())
                .map(|v| VolumeSnapshot {
                    pvc: v.pvc_name.clone(),
                    snapshot_id: v.snapshot_id.clone(),
                    bytes: v.bytes_total,
                })
                .collect()
        })
    };
    if run.step_finished(steps::BACKUP) {
        return Ok(done_snapshots(run));
    }
    if volumes.is_empty() {
        let why = if ctx.moves_data {
            "the application has no volumes"
        } else {
            "skip_volume_data"
        };
        run.step(steps::BACKUP, StepState::Skipped, why).await;
        return Ok(Vec::new());
    }
    run.step(
        steps::BACKUP,
        StepState::Running,
        format!("{} volume(s) on cluster {}", volumes.len(), ctx.src.name),
    )
    .await;
    let repo_ref = repository_ref(ctx)?;
    let repo = run.deps().repositories.open(&repo_ref).await?;
    let repository_id = repo.config().id.to_string();
    run.update_checkpoint(|c| c.repository_id = repository_id.clone())
        .await;
    let mut agent_ref = run.deps().repositories.for_agents(&repo_ref, &ctx.src.name);
    agent_ref.repository_id = repository_id;
    let parents = parents(&repo, &ctx.namespace, &ctx.src.name).await;
    let agg = Aggregate::new(run, steps::BACKUP, volumes.len());
    let attempt = run.with_checkpoint(|c| c.attempt);

    let result: Result<Vec<()>> = futures::stream::iter(
        // Futures made first: a closure mapped over a stream here defeats the
        // compiler's Send proof for the job's task (rust-lang/rust#102211).
        volumes
            .iter()
            .enumerate()
            .map(|(idx, vol)| {
                let parent = parents.get(&vol.pvc).cloned().unwrap_or_default();
                let agent_ref = agent_ref.clone();
                let agg = &agg;
                async move {
                    let already = run.with_report(|r| {
                        r.volumes
                            .iter()
                            .any(|v| v.pvc_name == vol.pvc && !v.snapshot_id.is_empty())
                    });
                    if already {
                        return Ok(());
                    }
                    let started = Instant::now();
                    let summary = backup_one(ctx, vol, idx, attempt, &parent, agent_ref, agg).await;
                    record_backup(run, vol, started.elapsed(), &summary);
                    run.persist(false).await;
                    summary.map(|_| ())
                }
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(run.config().volume_concurrency.max(1))
    .try_collect()
    .await;
    result?;
    let snapshots = done_snapshots(run);
    let (uploaded, total) = run.with_report(|r| {
        (
            r.volumes.iter().map(|v| v.bytes_uploaded).sum::<u64>(),
            r.volumes.iter().map(|v| v.bytes_total).sum::<u64>(),
        )
    });
    run.step(
        steps::BACKUP,
        StepState::Succeeded,
        format!(
            "{} volume(s), {total} byte(s), {uploaded} byte(s) uploaded",
            snapshots.len()
        ),
    )
    .await;
    Ok(snapshots)
}

fn record_backup(
    run: &JobRun,
    vol: &SourceVolume,
    took: Duration,
    summary: &Result<BackupSummary>,
) {
    run.with_report(|r| {
        let Some(v) = r.volumes.iter_mut().find(|v| v.pvc_name == vol.pvc) else {
            return;
        };
        v.node = vol.node.clone();
        v.duration = Some(prost_types::Duration {
            seconds: took.as_secs() as i64,
            nanos: took.subsec_nanos() as i32,
        });
        match summary {
            Ok(s) => {
                v.snapshot_id = s.snapshot_id.clone();
                v.files = s.files_new + s.files_changed + s.files_unmodified;
                v.bytes_total = s.bytes_total;
                v.bytes_new = s.bytes_new;
                v.bytes_uploaded = s.bytes_uploaded;
                // Succeeded once restored on the destination.
                v.result = VolumeResult::Skipped as i32;
                v.error = None;
            }
            Err(e) if e.is_cancelled() => v.result = VolumeResult::Skipped as i32,
            Err(e) => {
                v.result = VolumeResult::Failed as i32;
                v.error = Some(e.detail());
            }
        }
    });
}

async fn backup_one(
    ctx: &Ctx<'_>,
    vol: &SourceVolume,
    idx: usize,
    attempt: u32,
    parent: &str,
    repository: RepositoryRef,
    agg: &Aggregate<'_>,
) -> Result<BackupSummary> {
    let run = ctx.run;
    run.check_cancel()?;
    let cluster = ctx.src.name.as_str();
    let mut client = run.deps().agents.agent(cluster, &vol.node).await?;
    let op = format!("{}-a{attempt}-backup-{idx}", run.id());
    let _tracked = run.track_op(client.clone(), &op);
    info!(pvc = %vol.pvc, path = %vol.path, parent = %parent, op = %op, "backing up volume");
    let request = BackupRequest {
        operation_id: op.clone(),
        path: vol.path.clone(),
        repository: Some(repository),
        parent_snapshot_id: parent.to_owned(),
        tags: [
            ("namespace".to_owned(), ctx.namespace.clone()),
            ("pvc".to_owned(), vol.pvc.clone()),
            ("pv".to_owned(), vol.pv.clone()),
            ("job".to_owned(), run.id()),
        ]
        .into(),
    };
    let fail = |s: &tonic::Status| agent_error(cluster, &vol.node, "backing up", &vol.pvc, s);
    let stream = tokio::select! {
        r = client.backup(request) => r.map_err(|s| fail(&s))?.into_inner(),
        () = run.cancel_token().cancelled() => return Err(run.cancelled()),
    };
    follow(run, stream, agg, idx, "backup", fail, |ev| match ev.event {
        Some(backup_event::Event::Progress(p)) => Step::Progress(p),
        Some(backup_event::Event::Done(s)) => {
            let files = s.files_new + s.files_changed + s.files_unmodified;
            let last = Progress {
                files_done: files,
                files_total: files,
                bytes_read: s.bytes_total,
                bytes_new: s.bytes_new,
                bytes_uploaded: s.bytes_uploaded,
                bytes_total: s.bytes_total,
                ..Default::default()
            };
            Step::Done(last, s)
        }
        None => Step::Nothing,
    })
    .await
}

/// One event of an agent's stream, as a job sees it.
enum Step<S> {
    Progress(Progress),
    /// The summary, with the progress it amounts to.
    Done(Progress, S),
    Nothing,
}

/// Follows an agent operation's event stream into the job's progress until its
/// summary. Dropping the stream on cancel is safe: the agent cancels an operation
/// whose client went away, and CancelJob has also sent it a Cancel.
async fn follow<E, S>(
    run: &JobRun,
    mut stream: tonic::Streaming<E>,
    agg: &Aggregate<'_>,
    idx: usize,
    what: &str,
    fail: impl Fn(&tonic::Status) -> TransferError,
    step: impl Fn(E) -> Step<S>,
) -> Result<S> {
    loop {
        let message = tokio::select! {
            m = stream.message() => m,
            () = run.cancel_token().cancelled() => return Err(run.cancelled()),
        };
        match message {
            Ok(Some(ev)) => match step(ev) {
                Step::Progress(p) => agg.update(idx, p, false),
                Step::Done(last, summary) => {
                    agg.update(idx, last, true);
                    return Ok(summary);
                }
                Step::Nothing => {}
            },
            Ok(None) => {
                return Err(fail(&tonic::Status::internal(format!(
                    "the {what} stream ended without a summary"
                ))));
            }
            Err(_) if run.cancel_token().is_cancelled() => return Err(run.cancelled()),
            Err(s) => return Err(fail(&s)),
        }
    }
}

/// Writes the restore point, after every snapshot it names exists.
async fn commit(ctx: &Ctx<'_>, captured: &Captured, snapshots: &[VolumeSnapshot]) -> Result<()> {
    let run = ctx.run;
    if run.step_finished(steps::COMMIT) {
        return Ok(());
    }
    if !ctx.moves_data {
        run.step(
            steps::COMMIT,
            StepState::Skipped,
            "skip_volume_data: no restore point",
        )
        .await;
        return Ok(());
    }
    let repo_ref = repository_ref(ctx)?;
    run.step(
        steps::COMMIT,
        StepState::Running,
        format!(
            "writing a restore point of {} to profile {}",
            ctx.namespace, repo_ref.profile
        ),
    )
    .await;
    let repo = run.deps().repositories.open(&repo_ref).await?;
    let created_at = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| TransferError::Internal(format!("formatting a time: {e}")))?;
    let manifest = RestorePointManifest {
        format: ferry_kube::RESTORE_POINT_FORMAT,
        created_at,
        job_id: run.id(),
        tags: [
            ("job".to_owned(), run.id()),
            ("source-cluster".to_owned(), ctx.src.name.clone()),
            ("destination-cluster".to_owned(), ctx.dst.name.clone()),
        ]
        .into(),
        captured: captured.clone(),
        volumes: snapshots.to_vec(),
    };
    let id = repo
        .save_restore_point(&ctx.namespace, &manifest)
        .await
        .map_err(|source| TransferError::Repository {
            profile: repo_ref.profile.clone(),
            action: "writing the restore point",
            hint: "check that the profile may write to the repository, then start again".into(),
            source: Box::new(source),
        })?
        .to_string();
    run.with_report(|r| r.restore_point_id = id.clone());
    run.update_checkpoint(|c| c.restore_point_id = id.clone())
        .await;
    run.step(
        steps::COMMIT,
        StepState::Succeeded,
        format!("restore point {id}"),
    )
    .await;
    Ok(())
}

/// Restores each snapshot into its new volume's directory under `root` on the
/// destination, before any object is applied: a claim binds to a volume whose data is
/// already there.
async fn restore(ctx: &Ctx<'_>, root: &Path) -> Result<()> {
    let run = ctx.run;
    if run.step_finished(steps::RESTORE) {
        return Ok(());
    }
    let todo: Vec<(String, String)> = run.with_report(|r| {
        r.volumes
            .iter()
            .filter(|v| !v.snapshot_id.is_empty())
            .map(|v| (v.pvc_name.clone(), v.snapshot_id.clone()))
            .collect()
    });
    if todo.is_empty() {
        run.step(
            steps::RESTORE,
            StepState::Skipped,
            "no volume data to restore",
        )
        .await;
        return Ok(());
    }
    run.step(
        steps::RESTORE,
        StepState::Running,
        format!("{} volume(s) on cluster {}", todo.len(), ctx.dst.name),
    )
    .await;
    let repo_ref = repository_ref(ctx)?;
    let agent_ref = run.deps().repositories.for_agents(&repo_ref, &ctx.dst.name);
    let agg = Aggregate::new(run, steps::RESTORE, todo.len());
    let attempt = run.with_checkpoint(|c| c.attempt);
    let result: Result<Vec<()>> = futures::stream::iter(
        // Futures made first: a closure mapped over a stream here defeats the
        // compiler's Send proof for the job's task (rust-lang/rust#102211).
        todo.iter()
            .enumerate()
            .map(|(idx, (pvc, snapshot))| {
                let agent_ref = agent_ref.clone();
                let agg = &agg;
                let path = destination_path(root, &ctx.target, pvc);
                async move {
                    let r =
                        restore_one(ctx, pvc, snapshot, &path, idx, attempt, agent_ref, agg).await;
                    run.with_report(|rep| {
                        if let Some(v) = rep.volumes.iter_mut().find(|v| &v.pvc_name == pvc) {
                            match &r {
                                Ok(()) => v.result = VolumeResult::Succeeded as i32,
                                Err(e) if e.is_cancelled() => {}
                                Err(e) => {
                                    v.result = VolumeResult::Failed as i32;
                                    v.error = Some(e.detail());
                                }
                            }
                        }
                    });
                    r
                }
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(run.config().volume_concurrency.max(1))
    .try_collect()
    .await;
    result?;
    run.step(
        steps::RESTORE,
        StepState::Succeeded,
        format!("{} volume(s) restored under {}", todo.len(), root.display()),
    )
    .await;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn restore_one(
    ctx: &Ctx<'_>,
    pvc: &str,
    snapshot: &str,
    path: &str,
    idx: usize,
    attempt: u32,
    repository: RepositoryRef,
    agg: &Aggregate<'_>,
) -> Result<()> {
    let run = ctx.run;
    run.check_cancel()?;
    let cluster = ctx.dst.name.as_str();
    let mut client = run.deps().agents.agent(cluster, "").await?;
    let op = format!("{}-a{attempt}-restore-{idx}", run.id());
    let _tracked = run.track_op(client.clone(), &op);
    info!(%pvc, %path, %snapshot, op = %op, "restoring volume");
    let request = RestoreRequest {
        operation_id: op.clone(),
        repository: Some(repository),
        snapshot_id: snapshot.to_owned(),
        target_path: path.to_owned(),
        // A migration run again replaces the data of the one before.
        delete_extraneous: true,
    };
    let fail = |s: &tonic::Status| agent_error(cluster, "", "restoring", pvc, s);
    let stream = tokio::select! {
        r = client.restore(request) => r.map_err(|s| fail(&s))?.into_inner(),
        () = run.cancel_token().cancelled() => return Err(run.cancelled()),
    };
    follow(run, stream, agg, idx, "restore", fail, |ev| {
        match ev.event {
            Some(restore_event::Event::Progress(p)) => Step::Progress(p),
            Some(restore_event::Event::Done(s)) => {
                let last = Progress {
                    files_done: s.files_restored,
                    files_total: s.files_restored,
                    bytes_read: s.bytes_written,
                    bytes_total: s.bytes_written,
                    ..Default::default()
                };
                Step::Done(last, ())
            }
            None => Step::Nothing,
        }
    })
    .await
}

/// One apply result as the report lists it.
pub(crate) fn outcome_of(
    r: &ObjectResult,
    source: Option<&ferry_kube::ObjectRef>,
) -> ObjectOutcome {
    let (action, reason, error) = match &r.outcome {
        Outcome::Created => (ObjectAction::Created, String::new(), None),
        Outcome::Updated => (ObjectAction::Updated, String::new(), None),
        Outcome::Unchanged => (
            ObjectAction::Updated,
            "unchanged: already as captured".to_owned(),
            None,
        ),
        Outcome::Deleted => (ObjectAction::Updated, "deleted by purge".to_owned(), None),
        Outcome::Skipped { reason } => (ObjectAction::Skipped, reason.clone(), None),
        Outcome::Failed { reason, code } => (
            ObjectAction::Failed,
            String::new(),
            Some(ErrorDetail {
                code: match code {
                    Some(403) => ErrorCode::PermissionDenied,
                    Some(409) => ErrorCode::Conflict,
                    Some(404) => ErrorCode::MissingPrerequisite,
                    _ => ErrorCode::Internal,
                } as i32,
                message: reason.clone(),
                object: Some(api_ref(&r.object)),
                cluster: String::new(),
                hint: String::new(),
            }),
        ),
    };
    let dest = api_ref(&r.object);
    let (object, destination_object) = match source {
        Some(s) if *s != r.object => (Some(api_ref(s)), Some(dest)),
        Some(s) => (Some(api_ref(s)), None),
        None => (Some(dest), None),
    };
    ObjectOutcome {
        object,
        destination_object,
        action: action as i32,
        reason,
        error,
    }
}

/// Applies the plan (or dry-runs it) and reports every object.
async fn apply(ctx: &Ctx<'_>, plan: &Plan) -> Result<JobState> {
    let run = ctx.run;
    let dry_run = ctx.req.dry_run;
    if run.step_finished(steps::APPLY) {
        return Ok(JobState::Succeeded);
    }
    run.step(
        steps::APPLY,
        StepState::Running,
        format!(
            "{}{} object(s) into namespace {} on cluster {}",
            if dry_run { "dry run of " } else { "" },
            plan.objects.len(),
            plan.namespace,
            ctx.dst.name
        ),
    )
    .await;
    let apply = ctx.req.apply.clone().unwrap_or_default();
    let opts = KubeApplyOptions {
        existing: match ExistingObjectPolicy::try_from(apply.existing_object_policy) {
            Ok(ExistingObjectPolicy::Update) => ExistingPolicy::Update,
            Ok(ExistingObjectPolicy::Fail) => ExistingPolicy::Fail,
            _ => ExistingPolicy::Skip,
        },
        dry_run,
        ..Default::default()
    };
    let total = plan.objects.len() as u64;
    let seen: parking_lot::Mutex<Vec<ObjectResult>> = parking_lot::Mutex::new(Vec::new());
    let sources: HashMap<ferry_kube::ObjectRef, ferry_kube::ObjectRef> = plan
        .objects
        .iter()
        .filter_map(|o| Some((o.object_ref(), o.source.clone()?)))
        .collect();
    let result = ferry_kube::apply(&ctx.dst, plan, &opts, |r| {
        let done = {
            let mut s = seen.lock();
            s.push(r.clone());
            s.len() as u64
        };
        run.progress(
            Progress {
                step: steps::APPLY.into(),
                objects_done: done,
                objects_total: total,
                ..Default::default()
            },
            done == total,
        );
    })
    .await;
    let (results, stop) = match result {
        Ok(results) => (results, None),
        Err(e) => (seen.into_inner(), Some(e)),
    };
    let outcomes: Vec<ObjectOutcome> = results
        .iter()
        .map(|r| outcome_of(r, sources.get(&r.object)))
        .collect();
    let failed: Vec<&ObjectResult> = results.iter().filter(|r| r.is_failed()).collect();
    let applied = results
        .iter()
        .filter(|r| {
            matches!(
                r.outcome,
                Outcome::Created | Outcome::Updated | Outcome::Unchanged
            )
        })
        .count();
    run.with_report(|r| {
        // Only the capture's exclusions and this apply's results: never an earlier,
        // interrupted attempt's.
        r.objects
            .retain(|o| o.action == ObjectAction::Excluded as i32);
        r.objects.extend(outcomes);
    });
    if let Some(e) = stop {
        let applied_names: Vec<String> = results
            .iter()
            .filter(|r| !r.is_failed())
            .map(|r| r.object.to_string())
            .collect();
        let message = format!(
            "stopped after {applied} of {total} object(s) were applied ({}): {e}",
            if applied_names.is_empty() {
                "none".to_owned()
            } else {
                applied_names.join(", ")
            }
        );
        run.step(steps::APPLY, StepState::Failed, message.clone())
            .await;
        return Err(TransferError::Kube {
            step: "apply",
            cluster: ctx.dst.name.clone(),
            source: Box::new(e),
        });
    }
    if let Some(first) = failed.first() {
        let e = TransferError::ApplyFailed {
            cluster: ctx.dst.name.clone(),
            failed: failed.len(),
            applied,
            total: results.len(),
            first: format!("{}: {:?}", first.object, first.outcome),
        };
        run.with_report(|r| r.warnings.push(e.detail()));
        run.step(steps::APPLY, StepState::Failed, e.to_string())
            .await;
        return Ok(JobState::PartiallySucceeded);
    }
    run.step(
        steps::APPLY,
        StepState::Succeeded,
        format!(
            "{applied} object(s) {} in namespace {}",
            if dry_run {
                "would be applied"
            } else {
                "applied"
            },
            plan.namespace
        ),
    )
    .await;
    Ok(JobState::Succeeded)
}

/// Scales the workloads up on the destination, or leaves that to Activate.
async fn start(ctx: &Ctx<'_>) -> Result<()> {
    let run = ctx.run;
    let start = ctx.req.apply.as_ref().is_some_and(|a| a.start_applications);
    if !start {
        run.step(
            steps::START,
            StepState::Skipped,
            format!(
                "start_applications is off: workloads wait at zero replicas; run Activate on \
                 namespace {} of cluster {}",
                ctx.target, ctx.dst.name
            ),
        )
        .await;
        return Ok(());
    }
    run.step(
        steps::START,
        StepState::Running,
        format!("scaling workloads up in {}", ctx.target),
    )
    .await;
    let results =
        ferry_kube::activate(&ctx.dst, &ctx.target)
            .await
            .map_err(TransferError::kube(
                "starting the application",
                &ctx.dst.name,
            ))?;
    let failed = results.iter().filter(|r| r.is_failed()).count();
    if failed > 0 {
        let first = results
            .iter()
            .find(|r| r.is_failed())
            .map(|r| format!("{}: {:?}", r.object, r.outcome))
            .unwrap_or_default();
        let e = TransferError::Object {
            action: "starting",
            cluster: ctx.dst.name.clone(),
            object: Box::new(
                results
                    .iter()
                    .find(|r| r.is_failed())
                    .map(|r| r.object.clone())
                    .unwrap_or_else(|| workload_ref(&ctx.target, "Deployment", "")),
            ),
            message: format!("{failed} workload(s) could not be scaled up; first: {first}"),
            hint: "fix the failure, then run Activate".into(),
        };
        run.step(steps::START, StepState::Failed, e.to_string())
            .await;
        return Err(e);
    }
    run.step(
        steps::START,
        StepState::Succeeded,
        format!("{} workload(s) scaled up", results.len()),
    )
    .await;
    Ok(())
}
