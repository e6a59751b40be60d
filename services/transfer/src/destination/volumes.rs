//! Restoring a job's volumes on the destination: the claims applied first (when they
//! are provisioned), a mover pod per claim, the agent of its node writing the data.

use ferry_kube::{ApplyOptions as KubeApplyOptions, ExistingPolicy, Outcome, Plan};
use ferry_proto::v1::{
    ExistingObjectPolicy, Progress, RestoreRequest, StepState, VolumeResult, restore_event,
};
use futures::{StreamExt, TryStreamExt};
use tracing::info;

use crate::agent_ops::{Aggregate, Step, follow, op_id, until_agent_answers};
use crate::error::{Result, TransferError, agent_error};
use crate::job::steps;
use crate::mover::{Access, Movers};

use super::{Destination, Placement, Planned, RestoreOne, destination_path};

impl Destination<'_> {
    /// Restores each snapshot before any object is applied, so a claim binds to a volume
    /// whose data is already there. With a volume root, into a directory per claim under
    /// it. Else into the claim itself, provisioned through its class: the namespace and
    /// the claims are applied first; then, per claim, a mover pod holds it mounted (which
    /// binds it, and attaches its volume to a node) while the agent of that node writes
    /// the data, and is deleted again before any other object is applied, so the
    /// application's pods find their data and a free volume.
    pub(crate) async fn restore(&self, planned: &Planned) -> Result<()> {
        let run = self.run;
        if run.step_finished(steps::RESTORE) {
            return Ok(());
        }
        let todo = self.volumes_to_restore();
        if todo.is_empty() {
            run.step(
                steps::RESTORE,
                StepState::Skipped,
                "no volume data to restore",
            )
            .await;
            return Ok(());
        }
        let cluster = &self.cluster.name;
        let (how, done) = match &planned.placement {
            Placement::Root(root) => (
                format!("on cluster {cluster}"),
                format!("restored under {}", root.display()),
            ),
            Placement::Provision => (
                format!("on cluster {cluster}, into claims provisioned by their storage classes"),
                format!("restored into claims provisioned on cluster {cluster}"),
            ),
        };
        run.step(
            steps::RESTORE,
            StepState::Running,
            format!("{} volume(s) {how}", todo.len()),
        )
        .await;
        let job = run.id();
        let movers = Movers {
            client: &self.cluster.client,
            cluster,
            config: &self.mover,
            job: &job,
            cancel: run.cancel_token(),
        };
        let provision = planned.placement == Placement::Provision;
        if provision {
            // Leftovers of an attempt that died while its movers ran (kept ones are
            // found again and used).
            if !self.keep_movers {
                movers.sweep(&self.target).await;
            }
            self.apply_claims(&planned.plan, &todo).await?;
        }
        let repo_ref = run.repository_ref(self.repository.as_ref())?;
        let agent_ref = run.deps().repositories.for_agents(&repo_ref, &self.key);
        let claims = todo
            .iter()
            .map(|(pvc, _)| (self.target.clone(), pvc.to_string()))
            .collect();
        let agg = Aggregate::new(run, steps::RESTORE, claims);
        let attempt = run.with_checkpoint(|c| c.attempt);
        let (movers, placement) = (&movers, &planned.placement);
        let result: Result<Vec<()>> = futures::stream::iter(
            // Futures made first: a closure mapped over a stream here defeats the
            // compiler's Send proof for the job's task (rust-lang/rust#102211).
            todo.iter()
                .enumerate()
                .map(|(idx, (pvc, snapshot))| {
                    let one = RestoreOne {
                        pvc,
                        snapshot,
                        idx,
                        attempt,
                        repository: agent_ref.clone(),
                        agg: &agg,
                    };
                    async move {
                        let r = match placement {
                            Placement::Root(root) => {
                                let path = destination_path(root, &self.target, pvc);
                                run.with_report(|rep| {
                                    if let Some(v) =
                                        rep.volumes.iter_mut().find(|v| &v.pvc_name == pvc)
                                    {
                                        v.written_through = "volume root".into();
                                    }
                                });
                                self.restore_one(&one, &Access::Path(path), "").await
                            }
                            Placement::Provision => self.restore_claim(movers, &one).await,
                        };
                        self.record_volume(pvc, &r);
                        r.map(|_| ())
                    }
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(run.config().volume_concurrency.max(1))
        .try_collect()
        .await;
        if provision && (!self.keep_movers || result.is_err()) {
            // Each claim's mover is released as its restore ends; this catches the ones
            // a failure elsewhere left starting.
            movers.sweep(&self.target).await;
        }
        result?;
        run.step(
            steps::RESTORE,
            StepState::Succeeded,
            format!("{} volume(s) {done}", todo.len()),
        )
        .await;
        Ok(())
    }

    /// (claim, snapshot) of each volume with data to restore.
    fn volumes_to_restore(&self) -> Vec<(String, String)> {
        self.run.with_report(|r| {
            r.volumes
                .iter()
                .filter(|v| !v.snapshot_id.is_empty())
                .map(|v| (v.pvc_name.clone(), v.snapshot_id.clone()))
                .collect()
        })
    }

    /// Writes a volume's result into the report.
    fn record_volume(&self, pvc: &str, r: &Result<u64>) {
        self.run.with_report(|rep| {
            if let Some(v) = rep.volumes.iter_mut().find(|v| v.pvc_name == pvc) {
                match r {
                    Ok(written) => {
                        v.result = VolumeResult::Succeeded as i32;
                        v.bytes_written = *written;
                    }
                    Err(e) if e.is_cancelled() => {}
                    Err(e) => {
                        v.result = VolumeResult::Failed as i32;
                        v.error = Some(e.detail());
                    }
                }
            }
        });
    }

    /// Applies the namespace and the claims of `todo` as planned, before their data: a
    /// claim that exists and is not this migration's is refused unless the request
    /// asked to update existing objects.
    async fn apply_claims(&self, plan: &Plan, todo: &[(String, String)]) -> Result<()> {
        let is_claim = |o: &ferry_kube::PlannedObject| {
            o.resource.group.is_empty()
                && o.resource.kind == "PersistentVolumeClaim"
                && todo
                    .iter()
                    .any(|(pvc, _)| o.object.metadata.name.as_deref() == Some(pvc.as_str()))
        };
        let is_namespace = |o: &ferry_kube::PlannedObject| {
            o.resource.group.is_empty() && o.resource.kind == "Namespace"
        };
        let mut claims = plan.clone();
        claims.objects.retain(|o| is_namespace(o) || is_claim(o));
        let opts = KubeApplyOptions {
            existing: self.existing_policy(),
            ..Default::default()
        };
        let results = ferry_kube::apply(&self.writer, &claims, &opts, |_| {})
            .await
            .map_err(TransferError::kube(
                "creating the claims",
                &self.cluster.name,
            ))?;
        let created: Vec<String> = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Created))
            .map(|r| r.object.to_string())
            .collect();
        self.run
            .update_checkpoint(|c| {
                for o in created {
                    if !c.created_before_apply.contains(&o) {
                        c.created_before_apply.push(o);
                    }
                }
            })
            .await;
        for r in results
            .iter()
            .filter(|r| r.object.kind == "PersistentVolumeClaim")
        {
            let refused = match &r.outcome {
                Outcome::Skipped { reason } => Some((
                    reason.clone(),
                    "delete it, map the namespace elsewhere, or start again with the existing \
                     object policy update to restore into it",
                )),
                Outcome::Failed { reason, .. } => {
                    Some((reason.clone(), "fix the cause, then start the job again"))
                }
                _ => None,
            };
            if let Some((message, hint)) = refused {
                return Err(TransferError::Volume {
                    cluster: self.cluster.name.clone(),
                    namespace: self.target.clone(),
                    pvc: r.object.name.clone(),
                    message: format!("the claim its data goes into was not written: {message}"),
                    hint: hint.into(),
                });
            }
        }
        Ok(())
    }

    pub(super) fn existing_policy(&self) -> ExistingPolicy {
        match ExistingObjectPolicy::try_from(self.apply.existing_object_policy) {
            Ok(ExistingObjectPolicy::Update) => ExistingPolicy::Update,
            Ok(ExistingObjectPolicy::Fail) => ExistingPolicy::Fail,
            _ => ExistingPolicy::Skip,
        }
    }

    /// One claim: its mover pod started, its data restored by the agent of the mover's
    /// node, the mover deleted (also when the restore failed or was cancelled).
    async fn restore_claim(&self, movers: &Movers<'_>, one: &RestoreOne<'_>) -> Result<u64> {
        let pvc = one.pvc;
        let held = movers.hold(&self.target, pvc, false).await?;
        info!(%pvc, node = %held.node, volume = %held.volume, pod = %held.pod, "mover holds claim");
        self.run.with_report(|rep| {
            if let Some(v) = rep.volumes.iter_mut().find(|v| v.pvc_name == pvc) {
                v.destination_volume = held.volume.clone();
                v.written_through = format!("mover pod {}", held.pod);
            }
        });
        let r = self.restore_one(one, &held.access, &held.node).await;
        if !self.keep_movers || r.is_err() {
            movers.release(&self.target, pvc).await;
        }
        r
    }

    /// Deletes the mover pods kept between restores, and waits until they are gone.
    pub(crate) async fn release_movers(&self) {
        let job = self.run.id();
        let movers = Movers {
            client: &self.cluster.client,
            cluster: &self.cluster.name,
            config: &self.mover,
            job: &job,
            cancel: self.run.cancel_token(),
        };
        movers.sweep(&self.target).await;
    }

    /// Restores one snapshot into `path` through the agent on `node` (any agent when
    /// empty).
    /// Bytes written.
    async fn restore_one(&self, one: &RestoreOne<'_>, to: &Access, node: &str) -> Result<u64> {
        let job = self.run.id();
        until_agent_answers(self.run, one.pvc, |tries| {
            let op = op_id(&job, one.attempt, "restore", one.idx, tries);
            self.restore_once(one, to, node, op)
        })
        .await
    }

    async fn restore_once(
        &self,
        one: &RestoreOne<'_>,
        to: &Access,
        node: &str,
        op: String,
    ) -> Result<u64> {
        let RestoreOne {
            pvc,
            snapshot,
            idx,
            agg,
            ..
        } = *one;
        let run = self.run;
        run.check_cancel()?;
        let cluster = self.cluster.name.as_str();
        let mut client = self.agent_on(node).await?;
        let _tracked = run.track_op(client.clone(), &op);
        info!(%pvc, %to, %snapshot, op = %op, "restoring volume");
        let request = RestoreRequest {
            operation_id: op.clone(),
            repository: Some(one.repository.clone()),
            snapshot_id: snapshot.to_owned(),
            target_path: match to {
                Access::Path(p) => p.clone(),
                Access::Pod(_) => String::new(),
            },
            target_pod_volume: match to {
                Access::Pod(p) => Some(p.clone()),
                Access::Path(_) => None,
            },
            // A job run again replaces the data of the one before, writing only what
            // changed, and stops when someone else wrote there meanwhile, unless asked.
            delete_extraneous: true,
            overwrite_changes: self.overwrite_changes,
        };
        let fail = |s: &tonic::Status| agent_error(cluster, node, "restoring", pvc, s);
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
                    Step::Done(last, s.bytes_written)
                }
                None => Step::Nothing,
            }
        })
        .await
    }
}
