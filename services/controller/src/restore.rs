//! Restore objects onto the transfer service's StartRestore; following the job,
//! its outcomes and cancelling it on delete are [`crate::jobs`]'.

use std::future::Future;
use std::sync::Arc;

use ferry_crd::requester::Requester;
use ferry_crd::{MigrationStatus, Restore};
use ferry_proto::v1::{Job, StartRestoreRequest};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::Ctx;
use crate::error::Result;
use crate::jobs::{JobsObject, acting, started};
use crate::migration::{apply_options, pair, repository, selector};

impl JobsObject for Restore {
    const KIND: &'static str = "Restore";

    fn jobs_status(&self) -> Option<&MigrationStatus> {
        self.status.as_ref()
    }

    fn wakes(ctx: &Ctx) -> &crate::watch::Wakes<Self> {
        &ctx.restore_wakes
    }

    fn start_jobs(
        &self,
        ctx: &Ctx,
        who: &Requester,
    ) -> impl Future<Output = Result<Vec<Job>, tonic::Status>> + Send {
        let s = &self.spec;
        let request = acting(
            StartRestoreRequest {
                destination: (!s.cluster_pair.is_empty()).then(|| pair(&s.cluster_pair)),
                repository: repository(&s.profile),
                restore_point_id: s.restore_point.clone(),
                // The restore point names its namespace; the transfer service checks the
                // requester may read it there.
                application: Some(selector(&s.objects, String::new())),
                apply: Some(apply_options(&s.apply)),
                dry_run: s.dry_run,
                schedule_id: String::new(),
                // As a Migration's: a restarted controller gets the same job again.
                request_id: self.uid().unwrap_or_default(),
                volumes: s.volumes.as_ref().map(crate::migration::volume_options),
            },
            who,
        );
        let mut transfer = ctx.transfer.clone();
        async move {
            let response = transfer.start_restore(request).await?;
            Ok(started(response.into_inner()))
        }
    }
}

/// The controller's entry for one Restore.
pub async fn reconcile(r: Arc<Restore>, ctx: Arc<Ctx>) -> Result<Action> {
    crate::jobs::reconcile(r, ctx).await
}
