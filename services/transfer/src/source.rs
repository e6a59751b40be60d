//! The source half of a job, shared by migrations and exports: capture the application,
//! find its volumes, quiesce, back every volume up through the source's agents, and
//! commit the restore point last.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ferry_kube::{CaptureSpec, Captured, Cluster, RestorePointManifest, VolumeSnapshot};
use ferry_proto::v1::{
    ApplicationSelector, BackupRequest, BackupSummary, Progress, RepositoryRef, StepState,
    VolumeResult, backup_event,
};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::Api;
use kube::api::ListParams;
use tracing::{info, warn};

use crate::agent_ops::{Aggregate, Step, follow, op_id, until_agent_answers};
use crate::error::{Result, TransferError, agent_error};
use crate::job::steps;
use crate::mover::{Access, Movers};
use crate::quiesce::{quiesce, unquiesce};
use crate::runtime::{JobRun, captured_outcomes};
use crate::snapshot::{ClaimShape, Taken};

/// A claim's volume on the source, as the agents see it.
#[derive(Debug, Clone)]
pub(crate) struct SourceVolume {
    pvc: String,
    pv: String,
    /// hostPath or local path on the node; empty for a CSI volume, which is found where
    /// the kubelet mounted it for a pod when the backup starts.
    path: String,
    /// The node it is pinned to, if any (kubernetes.io/hostname affinity).
    node: String,
    /// The CSI driver of a CSI volume; empty otherwise.
    driver: String,
    /// The claim, for a claim made from a snapshot of it.
    shape: ClaimShape,
}

/// Where one volume is read, found as its backup starts.
struct Reach {
    access: Access,
    node: String,
    /// The report's `read_through`.
    through: String,
    /// A mover pod Ferry started for it, to delete afterwards.
    mover: bool,
    /// The CSI snapshot it is read from, to delete afterwards.
    snapshot: Option<Taken>,
}

/// The source half of a job.
pub(crate) struct Source<'a> {
    pub run: &'a JobRun,
    /// Named as users name it, for messages.
    pub cluster: Cluster,
    /// The cluster as agents, restore points and migration ids know it: [`cluster_key`]
    /// of the request's reference.
    ///
    /// [`cluster_key`]: crate::deps::cluster_key
    pub key: String,
    /// The application: its namespace, narrowed by labels and resource types.
    pub app: ApplicationSelector,
    /// The request's repository; absent means the service's default profile.
    pub repository: Option<RepositoryRef>,
    /// The quiesce pre-hook was asked for.
    pub quiesce: bool,
    /// Volume data is backed up and a restore point written (not a dry run, not
    /// skip_volume_data).
    pub moves_data: bool,
    /// Tags the restore point gets besides `job` and `source-cluster`.
    pub tags: BTreeMap<String, String>,
    /// A volume is done once backed up (an export); else once restored (a migration).
    pub backup_is_last: bool,
    /// How mover pods and snapshots are made: the service's flags under the job's options.
    pub mover: crate::mover::MoverConfig,
}

impl Source<'_> {
    pub fn namespace(&self) -> &str {
        &self.app.namespace
    }

    fn repository_ref(&self) -> Result<RepositoryRef> {
        self.run.repository_ref(self.repository.as_ref())
    }

    /// Reads the application from the source, or takes it from the checkpoint of a
    /// resumed job.
    pub async fn capture(&self) -> Result<Captured> {
        let run = self.run;
        if run.step_finished(steps::CAPTURE)
            && let Some(c) = run.with_checkpoint(|c| c.captured.clone())
        {
            return Ok(c);
        }
        run.step(
            steps::CAPTURE,
            StepState::Running,
            format!(
                "reading {} on cluster {}",
                self.namespace(),
                self.cluster.name
            ),
        )
        .await;
        let spec = capture_spec(&self.app);
        let mut captured = tokio::select! {
            c = ferry_kube::capture(&self.cluster, &spec) => c.map_err(TransferError::kube("capture", &self.cluster.name))?,
            () = run.cancel_token().cancelled() => return Err(run.cancelled()),
        };
        // Restore points record the source by its key, and migration ids are made from
        // it: a renamed cluster keeps finding what it wrote.
        captured.cluster = self.key.clone();
        let message = format!(
            "{} object(s), {} volume(s); {} left out",
            captured.objects.len(),
            captured.volumes.len(),
            captured.excluded.len()
        );
        run.with_report(|r| {
            r.objects = captured_outcomes(&captured);
        });
        let stored = captured.clone();
        run.update_checkpoint(|c| c.captured = Some(stored)).await;
        run.objects_done(steps::CAPTURE, captured.objects.len());
        run.step(steps::CAPTURE, StepState::Succeeded, message)
            .await;
        Ok(captured)
    }

    /// Finds each claim's path on its node; problems, not errors, so all are reported.
    /// None to find when no data moves.
    pub async fn volumes(
        &self,
        captured: &Captured,
        problems: &mut Vec<String>,
    ) -> Result<Vec<SourceVolume>> {
        if !self.moves_data {
            return Ok(Vec::new());
        }
        let (ns, cluster) = (self.namespace(), &self.cluster.name);
        let api: Api<PersistentVolume> = Api::all(self.cluster.client.clone());
        let mut out = Vec::new();
        for v in &captured.volumes {
            let Some(pv_name) = v.pv.clone() else {
                problems.push(format!(
                    "claim {ns}/{} on cluster {cluster} is not bound to a volume: bind it, or \
                 migrate with skip_volume_data",
                    v.pvc
                ));
                continue;
            };
            let pv = api
                .get_opt(&pv_name)
                .await
                .map_err(|e| TransferError::Object {
                    action: "reading",
                    cluster: cluster.clone(),
                    object: Box::new(ferry_kube::ObjectRef {
                        api_version: "v1".into(),
                        kind: "PersistentVolume".into(),
                        namespace: None,
                        name: pv_name.clone(),
                    }),
                    message: e.to_string(),
                    hint: "grant the source user get on persistentvolumes".into(),
                })?;
            let Some(pv) = pv else {
                problems.push(format!(
                    "volume {pv_name} of claim {ns}/{} on cluster {cluster} does not exist: \
                     bind the claim to a volume, or migrate with skip_volume_data",
                    v.pvc
                ));
                continue;
            };
            // The claim names the volume, but only the binder's claimRef says whose it
            // is: a user may name anyone's volume in a claim of their own.
            let claim = captured.objects.iter().find(|o| {
                o.resource.group.is_empty()
                    && o.resource.kind == "PersistentVolumeClaim"
                    && kube::ResourceExt::name_any(&o.object) == v.pvc
            });
            let Some(claim) = claim else {
                problems.push(format!(
                    "claim {ns}/{} on cluster {cluster} is not among the captured objects, so \
                     Ferry cannot check that volume {pv_name} is bound to it; capture again",
                    v.pvc
                ));
                continue;
            };
            if let Err(refusal) = ferry_kube::check_claim_binding(ns, &claim.object, &pv) {
                warn!(pvc = %v.pvc, pv = %pv_name, %refusal, "volume refused");
                problems.push(format!("on cluster {cluster}: {refusal}"));
                continue;
            }
            let spec = pv.spec;
            let path = spec.as_ref().and_then(|s| {
                s.host_path
                    .as_ref()
                    .map(|h| h.path.clone())
                    .or_else(|| s.local.as_ref().map(|l| l.path.clone()))
                    // Read where the kubelet mounts it for a pod.
                    .or_else(|| s.csi.as_ref().map(|_| String::new()))
            });
            let Some(path) = path else {
                problems.push(format!(
                    "volume {pv_name} of claim {ns}/{} on cluster {cluster} is neither \
                 hostPath, local nor CSI, so no agent can read it; migrate with \
                 skip_volume_data",
                    v.pvc
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
            let driver = spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.driver.clone())
                .unwrap_or_default();
            out.push(SourceVolume {
                pvc: v.pvc.clone(),
                pv: pv_name,
                path,
                node,
                driver,
                shape: ClaimShape {
                    storage_class: v.storage_class.clone(),
                    capacity: v.capacity.clone(),
                    access_modes: v.access_modes.clone(),
                    volume_mode: v.volume_mode.clone(),
                },
            });
        }
        Ok(out)
    }

    /// Quiesces the source if asked, backs its volumes up, and brings the source back
    /// whatever happened to the copy: the snapshots, in the order of `volumes`.
    pub async fn copy(
        &self,
        captured: &Captured,
        volumes: &[SourceVolume],
    ) -> Result<Vec<VolumeSnapshot>> {
        let copied = async {
            quiesce(
                self.run,
                &self.cluster,
                self.namespace(),
                captured,
                self.quiesce,
            )
            .await?;
            self.backup(volumes).await
        }
        .await;
        let resumed = unquiesce(self.run, &self.cluster, self.namespace()).await;
        let snapshots = copied?;
        resumed?;
        Ok(snapshots)
    }

    /// Backs every claim's volume up through the source's agents; the snapshots, in the
    /// order of `volumes`.
    pub(crate) async fn backup(&self, volumes: &[SourceVolume]) -> Result<Vec<VolumeSnapshot>> {
        let run = self.run;
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
            let why = if self.moves_data {
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
            format!(
                "{} volume(s) on cluster {}",
                volumes.len(),
                self.cluster.name
            ),
        )
        .await;
        let repo_ref = self.repository_ref()?;
        let (repo, limits) = run.deps().repositories.open(&repo_ref).await?;
        limits.check_writes(&repo_ref.profile, self.namespace())?;
        let repository_id = repo.config().id.to_string();
        run.update_checkpoint(|c| c.repository_id = repository_id.clone())
            .await;
        let mut agent_ref = run.deps().repositories.for_agents(&repo_ref, &self.key);
        agent_ref.repository_id = repository_id;
        let parents = self.parents(&repo).await;
        let claims = volumes
            .iter()
            .map(|v| (self.namespace().to_owned(), v.pvc.clone()))
            .collect();
        let agg = Aggregate::new(run, steps::BACKUP, claims);
        let attempt = run.with_checkpoint(|c| c.attempt);
        if attempt > 1 && volumes.iter().any(|v| v.path.is_empty()) {
            // A mover pod an earlier attempt left may be on its way out (its volume
            // unmounted under a new attempt's copy): start the movers afresh.
            let job = run.id();
            self.movers(&job).sweep(self.namespace()).await;
        }

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
                        let summary = self
                            .backup_one(vol, idx, attempt, &parent, agent_ref, agg)
                            .await;
                        self.record_backup(vol, started.elapsed(), &summary);
                        run.persist(false).await;
                        summary.map(|_| ())
                    }
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(run.config().volume_concurrency.max(1))
        .try_collect()
        .await;
        if volumes.iter().any(|v| v.path.is_empty()) {
            // Each mover is released as its volume is done; this catches the ones a
            // failure elsewhere left starting, and an earlier attempt's.
            let job = run.id();
            let movers = self.movers(&job);
            movers.sweep(self.namespace()).await;
            movers.sweep_snapshots(self.namespace()).await;
        }
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

    /// Each claim's parent snapshot: a warm migration's previous sync's, else the one in
    /// the application's latest restore point.
    async fn parents(&self, repo: &ferry_repo::Repository) -> HashMap<String, String> {
        let warm = self.run.with_checkpoint(|c| c.warm_parents.clone());
        if warm.is_empty() {
            parents(repo, self.namespace(), &self.key).await
        } else {
            warm.into_iter().collect()
        }
    }

    fn record_backup(&self, vol: &SourceVolume, took: Duration, summary: &Result<BackupSummary>) {
        let done = if self.backup_is_last {
            VolumeResult::Succeeded
        } else {
            // Succeeded once restored on the destination.
            VolumeResult::Skipped
        };
        self.run.with_report(|r| {
            let Some(v) = r.volumes.iter_mut().find(|v| v.pvc_name == vol.pvc) else {
                return;
            };
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
                    v.result = done as i32;
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
        &self,
        vol: &SourceVolume,
        idx: usize,
        attempt: u32,
        parent: &str,
        repository: RepositoryRef,
        agg: &Aggregate<'_>,
    ) -> Result<BackupSummary> {
        let run = self.run;
        run.check_cancel()?;
        let job = run.id();
        let movers = self.movers(&job);
        let reach = self.reach(vol, &movers).await?;
        self.run.with_report(|r| {
            if let Some(v) = r.volumes.iter_mut().find(|v| v.pvc_name == vol.pvc) {
                v.read_through = reach.through.clone();
                v.node = reach.node.clone();
            }
        });
        let r = until_agent_answers(run, &vol.pvc, |tries| {
            let op = op_id(&job, attempt, "backup", idx, tries);
            self.backup_from(vol, &reach, idx, op, parent, repository.clone(), agg)
        })
        .await;
        match &reach.snapshot {
            Some(taken) => movers.drop_snapshot(self.namespace(), taken).await,
            None if reach.mover => movers.release(self.namespace(), &vol.pvc).await,
            None => {}
        }
        r
    }

    fn movers<'m>(&'m self, job: &'m str) -> Movers<'m> {
        Movers {
            client: &self.cluster.client,
            cluster: &self.cluster.name,
            config: &self.mover,
            job,
            cancel: self.run.cancel_token(),
        }
    }

    /// Where `vol` is read: a hostPath or local volume at its path; a CSI volume where
    /// the kubelet mounted it for a running pod of the application, else for a mover pod
    /// Ferry starts (read-only).
    async fn reach(&self, vol: &SourceVolume, movers: &Movers<'_>) -> Result<Reach> {
        if !vol.path.is_empty() {
            return Ok(Reach {
                access: Access::Path(vol.path.clone()),
                node: vol.node.clone(),
                through: "host path".into(),
                mover: false,
                snapshot: None,
            });
        }
        let ns = self.namespace();
        // One point in time, when the driver can take one.
        if let Some(class) = movers.snapshot_class(&vol.driver).await? {
            let taken = movers
                .take_snapshot(ns, &vol.pvc, &class, &vol.shape)
                .await?;
            let held = match movers.hold(ns, &taken.claim, true).await {
                Ok(held) => held,
                Err(e) => {
                    movers.drop_snapshot(ns, &taken).await;
                    return Err(e);
                }
            };
            return Ok(Reach {
                access: held.access,
                node: held.node,
                through: format!(
                    "csi snapshot {} (class {}), mover pod {}",
                    taken.snapshot, taken.class, held.pod
                ),
                mover: true,
                snapshot: Some(taken),
            });
        }
        if let Some((pod, uid, node)) = self.mounting_pod(&vol.pvc).await? {
            return Ok(Reach {
                access: crate::mover::pod_volume(&node, &uid, &vol.pv),
                node,
                through: format!("pod {pod}"),
                mover: false,
                snapshot: None,
            });
        }
        let held = movers.hold(ns, &vol.pvc, true).await?;
        Ok(Reach {
            access: held.access,
            node: held.node,
            through: format!("mover pod {}", held.pod),
            mover: true,
            snapshot: None,
        })
    }

    /// A running pod of the application that mounts claim `pvc`: (name, uid, node).
    async fn mounting_pod(&self, pvc: &str) -> Result<Option<(String, String, String)>> {
        let ns = self.namespace();
        let pods: Api<Pod> = Api::namespaced(self.cluster.client.clone(), ns);
        let list = pods
            .list(&ListParams::default().fields("status.phase=Running"))
            .await
            .map_err(|e| TransferError::Volume {
                cluster: self.cluster.name.clone(),
                namespace: ns.to_owned(),
                pvc: pvc.to_owned(),
                message: format!("listing the pods that mount it: {e}"),
                hint: "grant Ferry list on pods there, then start again".into(),
            })?;
        Ok(list.items.into_iter().find_map(|p| {
            let spec = p.spec.as_ref()?;
            let mounts = spec.volumes.iter().flatten().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == pvc)
            });
            let deleting = p.metadata.deletion_timestamp.is_some();
            (mounts && !deleting).then(|| {
                (
                    p.metadata.name.clone().unwrap_or_default(),
                    p.metadata.uid.clone().unwrap_or_default(),
                    spec.node_name.clone().unwrap_or_default(),
                )
            })
        }))
    }

    #[allow(clippy::too_many_arguments)]
    async fn backup_from(
        &self,
        vol: &SourceVolume,
        reach: &Reach,
        idx: usize,
        op: String,
        parent: &str,
        repository: RepositoryRef,
        agg: &Aggregate<'_>,
    ) -> Result<BackupSummary> {
        let run = self.run;
        let cluster = self.cluster.name.as_str();
        let found = run.deps().agents.agent(&self.key, &reach.node).await;
        let mut client = found.map_err(|e| e.naming(&self.key, cluster))?;
        let _tracked = run.track_op(client.clone(), &op);
        info!(pvc = %vol.pvc, at = %reach.access, through = %reach.through, parent = %parent, op = %op, "backing up volume");
        let request = BackupRequest {
            operation_id: op.clone(),
            path: match &reach.access {
                Access::Path(p) => p.clone(),
                Access::Pod(_) => String::new(),
            },
            pod_volume: match &reach.access {
                Access::Pod(p) => Some(p.clone()),
                Access::Path(_) => None,
            },
            repository: Some(repository),
            parent_snapshot_id: parent.to_owned(),
            tags: [
                ("namespace".to_owned(), self.namespace().to_owned()),
                ("pvc".to_owned(), vol.pvc.clone()),
                ("pv".to_owned(), vol.pv.clone()),
                ("job".to_owned(), run.id()),
            ]
            .into(),
        };
        let fail = |s: &tonic::Status| agent_error(cluster, &reach.node, "backing up", &vol.pvc, s);
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

    /// Writes the restore point, after every snapshot it names exists.
    pub async fn commit(&self, captured: &Captured, snapshots: &[VolumeSnapshot]) -> Result<()> {
        let run = self.run;
        if run.step_finished(steps::COMMIT) {
            return Ok(());
        }
        if !self.moves_data {
            run.step(
                steps::COMMIT,
                StepState::Skipped,
                "skip_volume_data: no restore point",
            )
            .await;
            return Ok(());
        }
        let repo_ref = self.repository_ref()?;
        run.step(
            steps::COMMIT,
            StepState::Running,
            format!(
                "writing a restore point of {} to profile {}",
                self.namespace(),
                repo_ref.profile
            ),
        )
        .await;
        let (repo, limits) = run.deps().repositories.open(&repo_ref).await?;
        limits.check_writes(&repo_ref.profile, self.namespace())?;
        if repo_ref.repository_id.is_empty() {
            // No volume pinned it: the restore point's repository is the one the token names.
            let id = repo.config().id.to_string();
            run.update_checkpoint(|c| c.repository_id = id).await;
        }
        let created_at = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|e| TransferError::Internal(format!("formatting a time: {e}")))?;
        let manifest = RestorePointManifest {
            format: ferry_kube::RESTORE_POINT_FORMAT,
            created_at,
            job_id: run.id(),
            tags: self
                .tags
                .clone()
                .into_iter()
                .chain([
                    ("job".to_owned(), run.id()),
                    ("source-cluster".to_owned(), self.key.clone()),
                ])
                .collect(),
            captured: captured.clone(),
            volumes: snapshots.to_vec(),
        };
        let id = repo
            .save_restore_point(self.namespace(), &manifest)
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
        match repo.size_bytes().await {
            Ok(bytes) => ferry_metrics::metrics()
                .jobs
                .repository_size(&repo_ref.profile, bytes),
            Err(e) => warn!(profile = %repo_ref.profile, error = %e, "measuring the repository"),
        }
        run.step(
            steps::COMMIT,
            StepState::Succeeded,
            format!("restore point {id}"),
        )
        .await;
        Ok(())
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

/// What capturing `app` reads.
pub(crate) fn capture_spec(app: &ferry_proto::v1::ApplicationSelector) -> CaptureSpec {
    let mut spec = CaptureSpec::new(app.namespace.clone());
    spec.label_selector = (!app.label_selector.is_empty()).then(|| app.label_selector.clone());
    spec.include_resources = app.include_resources.clone();
    spec.exclude_resources = app.exclude_resources.clone();
    spec
}
