//! The export runner: the source half of a migration into the export profile's
//! repository (capture, pre-flight, quiesce, back up volumes, resume the source, commit
//! the restore point with the request's tags), then the migration token that hands the
//! restore point to a destination.

use ferry_proto::v1::{ErrorCode, ErrorDetail, JobState, StartExportRequest, StepState};

use crate::deps::{TokenRequest, cluster_key};
use crate::error::Result;
use crate::job::steps;
use crate::preflight::preflight;
use crate::runtime::JobRun;
use crate::source::Source;

/// Runs (or resumes) an export; the state it ends in, or the error that stopped it.
pub(crate) async fn run(run: &JobRun) -> Result<JobState> {
    let req: StartExportRequest = run.request()?;
    let cluster = run.deps().clusters.cluster(req.source.as_ref()).await?;
    let src = Source {
        run,
        key: cluster_key(req.source.as_ref()),
        cluster,
        app: req.application.clone().unwrap_or_default(),
        repository: req.repository.clone(),
        quiesce: req.quiesce_source,
        moves_data: !req.dry_run,
        tags: req.tags.clone().into_iter().collect(),
        backup_is_last: true,
        mover: run.config().mover.with_options(req.volumes.as_ref()),
    };

    let captured = src.capture().await?;
    run.check_cancel()?;
    let checked = preflight(run, Some(&src), None, &captured, &[]).await?;
    run.check_cancel()?;
    if req.dry_run {
        let rest = [
            steps::QUIESCE,
            steps::BACKUP,
            steps::UNQUIESCE,
            steps::COMMIT,
            steps::TOKEN,
        ];
        run.skip(&rest, "dry run").await;
        return Ok(JobState::Succeeded);
    }
    let snapshots = src.copy(&captured, &checked.volumes).await?;
    run.check_cancel()?;
    src.commit(&captured, &snapshots).await?;
    run.check_cancel()?;
    hand_over(&src, &req.recipient_key).await?;
    Ok(JobState::Succeeded)
}

/// The migration token for the committed restore point, into the report: made by the
/// service's [`Handover`](crate::deps::Handover) for `recipient_key`. Without a
/// recipient the export has no token; without a token issuer the report says so.
async fn hand_over(src: &Source<'_>, recipient_key: &str) -> Result<()> {
    let run = src.run;
    if run.step_finished(steps::TOKEN) {
        return Ok(());
    }
    if recipient_key.trim().is_empty() {
        run.step(
            steps::TOKEN,
            StepState::Skipped,
            "no recipient key: exported without a migration token",
        )
        .await;
        return Ok(());
    }
    let Some(handover) = run.deps().handover.clone() else {
        let message = "no migration token: no token issuer is configured on this transfer service";
        run.with_report(|r| {
            r.warnings.push(ErrorDetail {
                code: ErrorCode::Unspecified as i32,
                message: message.into(),
                hint: "give the destination an import profile of this repository and the \
                       restore point id instead, or run the export where a catalog issues \
                       tokens"
                    .into(),
                ..Default::default()
            })
        });
        run.step(steps::TOKEN, StepState::Skipped, message).await;
        return Ok(());
    };
    let (repository_id, restore_point_id) =
        run.with_checkpoint(|c| (c.repository_id.clone(), c.restore_point_id.clone()));
    let mut repository = run.repository_ref(src.repository.as_ref())?;
    repository.repository_id = repository_id;
    run.step(
        steps::TOKEN,
        StepState::Running,
        format!("issuing a migration token for restore point {restore_point_id}"),
    )
    .await;
    let request = TokenRequest {
        repository,
        namespace: src.namespace().to_owned(),
        restore_point_id,
        recipient_key: recipient_key.to_owned(),
    };
    let token = tokio::select! {
        t = handover.migration_token(&request) => t?,
        () = run.cancel_token().cancelled() => return Err(run.cancelled()),
    };
    run.with_report(|r| r.migration_token = token);
    run.step(
        steps::TOKEN,
        StepState::Succeeded,
        format!(
            "migration token for restore point {} of profile {}",
            request.restore_point_id, request.repository.profile
        ),
    )
    .await;
    Ok(())
}
