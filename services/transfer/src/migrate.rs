//! The migration runner: the source half of an export (capture, pre-flight, quiesce,
//! back up volumes, resume the source, commit the restore point) and the destination
//! half of a restore (restore volumes, apply, start) in one job. Every step skips
//! itself when a resumed job already finished it, and saves what later steps need.

use ferry_kube::Captured;
use ferry_proto::v1::{JobState, StartMigrationRequest};

use crate::access::Target;
use crate::deps::cluster_key;
use crate::destination::Destination;
use crate::error::{Result, TransferError};
use crate::job::steps;
use crate::preflight::{Checked, preflight};
use crate::runtime::JobRun;
use crate::source::Source;

/// Runs (or resumes) a migration; the state it ends in, or the error that stopped it.
pub(crate) async fn run(run: &JobRun) -> Result<JobState> {
    let req: StartMigrationRequest = run.request()?;
    let deps = run.deps();
    let src = deps.clusters.cluster(req.source.as_ref()).await?;
    let dst = deps.clusters.cluster(req.destination.as_ref()).await?;
    let app = req.application.clone().unwrap_or_default();
    let apply = req.apply.clone().unwrap_or_default();
    let moves_data = !req.skip_volume_data && !req.dry_run;
    let mover = run.config().mover.with_options(req.volumes.as_ref());
    let dst = Destination {
        run,
        writer: run.writer(&dst).await?,
        key: cluster_key(req.destination.as_ref()),
        target: target_namespace(&apply, &app.namespace),
        namespace: app.namespace.clone(),
        apply,
        repository: req.repository.clone(),
        dry_run: req.dry_run,
        moves_data,
        skip_volume_data: req.skip_volume_data,
        cluster: dst,
        mover: mover.clone(),
        overwrite_changes: req
            .volumes
            .as_ref()
            .is_some_and(|v| v.overwrite_destination_changes),
        keep_movers: req.warm.is_some(),
    };
    let src = Source {
        run,
        key: cluster_key(req.source.as_ref()),
        app,
        repository: req.repository.clone(),
        quiesce: req.quiesce_source,
        moves_data,
        tags: [("destination-cluster".to_owned(), dst.key.clone())].into(),
        backup_is_last: false,
        cluster: src,
        mover,
    };

    let (captured, checked) = prepare(run, &req, &src, &dst).await?;
    if req.warm.is_some() {
        return crate::warm::run(run, &req, &src, &dst, captured, checked).await;
    }
    let planned = checked
        .planned
        .as_ref()
        .ok_or_else(|| TransferError::Internal("a migration's pre-flight made no plan".into()))?;

    if req.dry_run {
        let copy = [
            steps::QUIESCE,
            steps::BACKUP,
            steps::UNQUIESCE,
            steps::COMMIT,
        ];
        run.skip(&copy, "dry run").await;
        return dst.deliver(planned).await;
    }
    let snapshots = src.copy(&captured, &checked.volumes).await?;
    run.check_cancel()?;
    src.commit(&captured, &snapshots).await?;
    run.check_cancel()?;
    dst.deliver(planned).await
}

/// Captures the application (or takes the capture of a resumed job), reviews what it
/// will create, and runs the pre-flight: the capture and what the pre-flight found.
pub(crate) async fn prepare(
    run: &JobRun,
    req: &StartMigrationRequest,
    src: &Source<'_>,
    dst: &Destination<'_>,
) -> Result<(Captured, Checked)> {
    let captured = src.capture().await?;
    run.check_cancel()?;
    // The request was reviewed for the types present then; what was captured is what
    // will be created, reviewed again before anything leaves the source.
    run.require_create(
        Target::of(req.destination.as_ref(), &dst.target, req.apply.as_ref()),
        &crate::restore::created_types(&captured),
    )
    .await?;
    let checked = preflight(run, Some(src), Some(dst), &captured, &[]).await?;
    run.check_cancel()?;
    if checked.planned.is_none() {
        return Err(TransferError::Internal(
            "a migration's pre-flight made no plan".into(),
        ));
    }
    Ok((captured, checked))
}

/// The application's namespace on the destination: the request's mapping of it, else
/// its own name.
pub(crate) fn target_namespace(apply: &ferry_proto::v1::ApplyOptions, namespace: &str) -> String {
    apply
        .namespace_mapping
        .get(namespace)
        .cloned()
        .unwrap_or_else(|| namespace.to_owned())
}
