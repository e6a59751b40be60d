//! The destination half of a job, shared by migrations, restores and imports: plan the
//! application for the destination, restore every volume through the destination's
//! agent before any object is applied, apply, and start.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_kube::{Captured, Cluster, ClusterFacts, Plan, RestoredVolume, TransformSpec};
use ferry_proto::v1::{
    ApplyOptions, ErrorCode, ErrorDetail, GetInfoRequest, JobState, RepositoryRef, StepState,
};
use serde_json::json;
use tracing::info;

use crate::agent_ops::Aggregate;
use crate::error::{Result, TransferError, proto_object};
use crate::job::{short_hash, steps};
use crate::quiesce::workload_ref;
use crate::runtime::JobRun;

/// How long the destination's agent gets to say where it creates volumes.
const AGENT_INFO_TIMEOUT: Duration = Duration::from_secs(30);

/// The destination half of a job.
pub(crate) struct Destination<'a> {
    pub run: &'a JobRun,
    /// Named as users name it, for messages; Ferry's own credential there, which
    /// writes what is Ferry's (volumes' PersistentVolumes, mover pods) and reads what
    /// planning needs.
    pub cluster: Cluster,
    /// The same cluster acting as the user who started the job: every object of the
    /// application is written through it, so the API server judges it as theirs.
    pub writer: Cluster,
    /// The cluster as agents and migration ids know it: [`cluster_key`] of the request's
    /// reference (a pair's id, which stays when the pair or the cluster is renamed).
    ///
    /// [`cluster_key`]: crate::deps::cluster_key
    pub key: String,
    /// The application's namespace on the source (the restore point's).
    pub namespace: String,
    /// Its namespace here, after the request's namespace mapping.
    pub target: String,
    /// How mover pods are made: the service's flags under the job's options.
    pub mover: crate::mover::MoverConfig,
    pub apply: ApplyOptions,
    /// The request's repository; absent means the service's default profile.
    pub repository: Option<RepositoryRef>,
    pub dry_run: bool,
    /// Volume data is restored (not a dry run, not skip_volume_data).
    pub moves_data: bool,
    /// The request moves objects only (a migration's skip_volume_data).
    pub skip_volume_data: bool,
    /// A volume changed on the destination since its last restore is overwritten
    /// rather than refused (the request's `overwrite_destination_changes`).
    pub overwrite_changes: bool,
    /// Mover pods stay after their restore, for the next one (a warm migration's syncs);
    /// [`Destination::release_movers`] lets them go.
    pub keep_movers: bool,
}

/// Where a job's restored volumes go on the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A hostPath volume per claim under this directory (clusters without a provisioner).
    Root(PathBuf),
    /// Each claim provisioned through its (mapped) StorageClass, its data restored
    /// through a mover pod that holds it mounted.
    Provision,
}

impl std::fmt::Display for Placement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Placement::Root(root) => write!(f, "volumes restored under {}", root.display()),
            Placement::Provision => f.write_str(
                "volumes provisioned through their storage classes and restored through mover pods",
            ),
        }
    }
}

/// One volume's restore, as the restore step hands it out.
struct RestoreOne<'a> {
    pvc: &'a str,
    snapshot: &'a str,
    /// Its place among the job's volumes (progress, operation ids).
    idx: usize,
    attempt: u32,
    /// The repository as the destination's agents know it.
    repository: RepositoryRef,
    agg: &'a Aggregate<'a>,
}

/// The destination's plan, and where its volumes are restored.
pub(crate) struct Planned {
    pub plan: Plan,
    pub placement: Placement,
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

impl Destination<'_> {
    /// Labels written objects so a later migration (or restore) of the same application
    /// to the same place converges on them (and reports them unchanged) rather than
    /// skipping them. `source` is the cluster the application was captured on.
    fn migration_id(&self, source: &str) -> String {
        format!(
            "m-{}",
            short_hash(&format!(
                "{source}/{}->{}/{}",
                self.namespace, self.key, self.target
            ))
        )
    }

    /// The transform for the destination; with a volume root, each claim's new volume is
    /// a hostPath under it, the directory the destination's agent restores into; else
    /// claims are provisioned by their class.
    fn transform(&self, captured: &Captured, placement: &Placement) -> TransformSpec {
        let apply = self.apply.clone();
        let restored_volumes: BTreeMap<String, RestoredVolume> = if self.moves_data
            && let Placement::Root(root) = placement
        {
            captured
                .volumes
                .iter()
                .map(|v| {
                    let path = destination_path(root, &self.target, &v.pvc);
                    let source = json!({"hostPath": {"path": path, "type": "DirectoryOrCreate"}});
                    let source = source.as_object().cloned().unwrap_or_default();
                    (
                        v.pvc.clone(),
                        RestoredVolume {
                            pv_name: destination_pv(&self.target, &v.pvc),
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
            migration_id: self.migration_id(&captured.cluster),
            target_namespace: (self.target != self.namespace).then(|| self.target.clone()),
            storage_classes: apply.storage_class_mapping.into_iter().collect(),
            zones: apply.zone_mapping.into_iter().collect(),
            preserve_node_ports: apply.preserve_node_ports,
            keep_load_balancer_ip: false,
            // Workloads start only in the last step, once every object and every byte of
            // data is in place (or with Activate, when start_applications is off).
            scale_to_zero: true,
            // A CronJob only runs at its schedule, and its volumes and configuration
            // are in place before it arrives: it keeps its suspend flag unless the
            // application is to stay stopped, so a start step put off by a failed
            // object does not leave it suspended.
            keep_suspend: apply.start_applications,
            restored_volumes,
            patches: Vec::new(),
        }
    }

    /// Plans for the destination. Runs on every (re)start, since the plan is not
    /// stored. `preflight_done`: the pre-flight once succeeded; problems found asking
    /// the destination's agent are warnings of a dry run.
    pub async fn plan(
        &self,
        captured: &Captured,
        preflight_done: bool,
        warnings: &mut Vec<ErrorDetail>,
    ) -> Result<Planned> {
        let facts = ClusterFacts::gather(&self.cluster)
            .await
            .map_err(TransferError::kube(
                "reading the destination's zones and storage classes",
                &self.cluster.name,
            ))?;
        let placement = self.placement(captured, preflight_done, warnings).await?;
        let spec = self.transform(captured, &placement);
        let plan = ferry_kube::plan(captured, &spec, &facts)
            .map_err(TransferError::kube("planning", &self.cluster.name))?;
        Ok(Planned { plan, placement })
    }

    /// Pre-flight of the plan on the destination: errors into `problems`, the rest
    /// into `warnings`; whether a missing prerequisite is among the errors.
    pub async fn check(
        &self,
        plan: &Plan,
        problems: &mut Vec<String>,
        warnings: &mut Vec<ErrorDetail>,
    ) -> Result<bool> {
        let found = ferry_kube::preflight(&self.writer, plan)
            .await
            .map_err(TransferError::kube("pre-flight", &self.cluster.name))?;
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
                    cluster: self.cluster.name.clone(),
                    hint: String::new(),
                });
            }
        }
        Ok(missing_prerequisite)
    }

    /// Restores the volumes, applies the plan and starts the application (or, for a
    /// dry run, dry-runs the apply only): the state the job ends in. Volume data is in
    /// place before any object is applied, so no workload ever gets an empty volume.
    pub async fn deliver(&self, planned: &Planned) -> Result<JobState> {
        let run = self.run;
        if self.dry_run {
            run.step(steps::RESTORE, StepState::Skipped, "dry run")
                .await;
            let state = self.apply_plan(&planned.plan).await?;
            run.step(steps::START, StepState::Skipped, "dry run").await;
            return Ok(state);
        }
        self.restore(planned).await?;
        run.check_cancel()?;
        let state = self.apply_plan(&planned.plan).await?;
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
        self.start().await?;
        Ok(state)
    }

    /// Where restored volumes go on the destination: under the directory the
    /// destination's agent names (GetInfo), else under this service's `volume_root`, else
    /// into claims provisioned through their class. Decided once per job and kept in the
    /// checkpoint, so a resumed job restores where its volumes point. An agent that cannot
    /// answer stops a job that moves volume data; a dry run only warns.
    async fn placement(
        &self,
        captured: &Captured,
        preflight_done: bool,
        warnings: &mut Vec<ErrorDetail>,
    ) -> Result<Placement> {
        let run = self.run;
        let (kept, provisioned) = run.with_checkpoint(|c| (c.volume_root.clone(), c.provisioned));
        if let Some(root) = kept {
            return Ok(Placement::Root(root));
        }
        if provisioned {
            return Ok(Placement::Provision);
        }
        let own = || {
            run.config()
                .volume_root
                .clone()
                .map_or(Placement::Provision, Placement::Root)
        };
        // No data to restore; or a job from before the placement was kept, whose restore
        // used this service's root.
        if self.skip_volume_data || captured.volumes.is_empty() || run.step_finished(steps::RESTORE)
        {
            return Ok(own());
        }
        if !self.moves_data {
            // A dry run restores nothing, but says what would stop the job.
            if preflight_done {
                return Ok(own());
            }
            return match self.agent_volume_root().await {
                Ok(root) => Ok(root.map_or_else(own, Placement::Root)),
                Err(e) if e.is_cancelled() => Err(e),
                Err(e) => {
                    warnings.push(ErrorDetail {
                        message: format!("{e}; without dry_run the job would stop here"),
                        ..e.detail()
                    });
                    Ok(own())
                }
            };
        }
        let placement = self
            .agent_volume_root()
            .await?
            .map_or_else(own, Placement::Root);
        info!(%placement, cluster = %self.cluster.name, "destination volumes");
        run.update_checkpoint(|c| match &placement {
            Placement::Root(root) => c.volume_root = Some(root.clone()),
            Placement::Provision => c.provisioned = true,
        })
        .await;
        Ok(placement)
    }

    /// A client of the destination's agents.
    async fn agent(&self) -> Result<crate::deps::AgentClient> {
        self.agent_on("").await
    }

    /// A client of the destination's agent on `node` (any agent when empty).
    async fn agent_on(&self, node: &str) -> Result<crate::deps::AgentClient> {
        let found = self.run.deps().agents.agent(&self.key, node).await;
        found.map_err(|e| e.naming(&self.key, &self.cluster.name))
    }

    /// Asks the destination's agent where it creates restored volumes; None when it has
    /// no setting of its own.
    async fn agent_volume_root(&self) -> Result<Option<PathBuf>> {
        let run = self.run;
        let cluster = self.cluster.name.as_str();
        let mut client = self.agent().await?;
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

    /// Scales the workloads up on the destination, or leaves that to Activate.
    async fn start(&self) -> Result<()> {
        let run = self.run;
        let start = self.apply.start_applications;
        if !start {
            run.step(
                steps::START,
                StepState::Skipped,
                format!(
                    "start_applications is off: workloads wait at zero replicas; run Activate on \
                 namespace {} of cluster {}",
                    self.target, self.cluster.name
                ),
            )
            .await;
            return Ok(());
        }
        run.step(
            steps::START,
            StepState::Running,
            format!("scaling workloads up in {}", self.target),
        )
        .await;
        let results = ferry_kube::activate(&self.writer, &self.target)
            .await
            .map_err(TransferError::kube(
                "starting the application",
                &self.cluster.name,
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
                cluster: self.cluster.name.clone(),
                object: Box::new(
                    results
                        .iter()
                        .find(|r| r.is_failed())
                        .map(|r| r.object.clone())
                        .unwrap_or_else(|| workload_ref(&self.target, "Deployment", "")),
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
}

mod apply;
mod volumes;

pub(crate) use apply::outcome_of;
