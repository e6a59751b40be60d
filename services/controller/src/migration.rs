//! Migration objects onto the transfer service's StartMigration; what every object
//! whose work is transfer jobs shares (following, outcomes, cancelling on delete) is
//! in [`crate::jobs`].

use std::future::Future;
use std::sync::Arc;

use ferry_crd::requester::Requester;
use ferry_crd::{ApplySpec, ExistingObjects, Migration, MigrationSpec, MigrationStatus, Selection};
use ferry_proto::v1::{
    ApplicationSelector, ApplyOptions, ClusterRef, ExistingObjectPolicy, Job, RepositoryRef,
    StartMigrationRequest, cluster_ref,
};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::Ctx;
use crate::error::Result;
use crate::jobs::{JobsObject, acting, started};

impl JobsObject for Migration {
    const KIND: &'static str = "Migration";

    fn jobs_status(&self) -> Option<&MigrationStatus> {
        self.status.as_ref()
    }

    fn wakes(ctx: &Ctx) -> &crate::watch::Wakes<Self> {
        &ctx.migration_wakes
    }

    fn start_jobs(
        &self,
        ctx: &Ctx,
        who: &Requester,
    ) -> impl Future<Output = Result<Vec<Job>, tonic::Status>> + Send {
        let namespaces = if self.spec.namespaces.is_empty() {
            vec![self.namespace().unwrap_or_default()]
        } else {
            self.spec.namespaces.clone()
        };
        let mut request = start_request(&self.spec, &namespaces);
        // The object's uid: a controller restarted between starting the jobs and writing
        // them into the status asks again and gets the same jobs, not new ones.
        request.request_id = self.uid().unwrap_or_default();
        let warm = warm_options(self.spec.warm.as_ref());
        let mut transfer = ctx.transfer.clone();
        let who = who.clone();
        async move {
            request.warm = warm?;
            let response = transfer.start_migration(acting(request, &who)).await?;
            Ok(started(response.into_inner()))
        }
    }

    fn cutover_asked(&self) -> bool {
        self.annotations()
            .get(ferry_crd::CUTOVER_ANNOTATION)
            .is_some_and(|v| !v.is_empty())
    }
}

/// A spec's `warm` as the transfer service takes it; a duration that does not parse is
/// refused, naming the field.
fn warm_options(
    warm: Option<&ferry_crd::WarmSpec>,
) -> Result<Option<ferry_proto::v1::WarmOptions>, tonic::Status> {
    let Some(warm) = warm else {
        return Ok(None);
    };
    let seconds = |field: &str, text: &str| -> Result<u32, tonic::Status> {
        if text.trim().is_empty() {
            return Ok(0);
        }
        ferry_crd::parse_duration(text)
            .and_then(|d| u32::try_from(d.as_secs()).ok())
            .ok_or_else(|| {
                tonic::Status::invalid_argument(format!(
                    "spec.warm.{field}: {text:?} is not a duration; write it like 90s, 15m, \
                     1h30m or 2d"
                ))
            })
    };
    Ok(Some(ferry_proto::v1::WarmOptions {
        sync_interval_seconds: seconds("syncInterval", &warm.sync_interval)?,
        cutover_after_seconds: seconds("cutoverAfter", &warm.cutover_after)?,
    }))
}

/// The controller's entry for one Migration.
pub async fn reconcile(m: Arc<Migration>, ctx: Arc<Ctx>) -> Result<Action> {
    crate::jobs::reconcile(m, ctx).await
}

/// The request a Migration's spec makes, for `namespaces`.
pub(crate) fn start_request(s: &MigrationSpec, namespaces: &[String]) -> StartMigrationRequest {
    StartMigrationRequest {
        source: None,
        destination: Some(pair(&s.cluster_pair)),
        application: Some(selector(&s.objects, String::new())),
        apply: Some(apply_options(&s.apply)),
        dry_run: s.dry_run,
        repository: repository(&s.profile),
        skip_volume_data: s.skip_volume_data,
        schedule_id: String::new(),
        quiesce_source: s.quiesce_source,
        namespaces: namespaces.to_vec(),
        all_namespaces: false,
        // Set by a Migration, never by a schedule (each run is a new start).
        request_id: String::new(),
        volumes: s.volumes.as_ref().map(volume_options),
        warm: None,
    }
}

/// A spec's `volumes` as the transfer service takes them.
pub(crate) fn volume_options(v: &ferry_crd::VolumeSpec) -> ferry_proto::v1::VolumeOptions {
    let mover = v.mover.clone().unwrap_or_default();
    ferry_proto::v1::VolumeOptions {
        snapshot_class: v.snapshot_class.clone(),
        no_csi_snapshots: v.csi_snapshots == Some(false),
        mover_cpu: mover.cpu,
        mover_memory: mover.memory,
        mover_start_timeout_seconds: mover.start_timeout_seconds.unwrap_or_default(),
        overwrite_destination_changes: v.overwrite_destination_changes,
    }
}

/// A ClusterPair, by the name the ClusterPair object and the pairing service share.
pub(crate) fn pair(name: &str) -> ClusterRef {
    ClusterRef {
        target: Some(cluster_ref::Target::PairId(name.to_owned())),
    }
}

/// The objects a spec selects, in `namespace` ("" when the request names it otherwise).
pub(crate) fn selector(s: &Selection, namespace: String) -> ApplicationSelector {
    ApplicationSelector {
        namespace,
        label_selector: s.selector.clone(),
        include_resources: s.include_resources.clone(),
        exclude_resources: s.exclude_resources.clone(),
    }
}

/// How a spec's objects are applied.
pub(crate) fn apply_options(a: &ApplySpec) -> ApplyOptions {
    ApplyOptions {
        namespace_mapping: a.namespace_mapping.clone().into_iter().collect(),
        storage_class_mapping: a.storage_class_mapping.clone().into_iter().collect(),
        zone_mapping: a.zone_mapping.clone().into_iter().collect(),
        start_applications: a.start_applications.unwrap_or(true),
        existing_object_policy: match a.existing_objects {
            ExistingObjects::Skip => ExistingObjectPolicy::Skip,
            ExistingObjects::Update => ExistingObjectPolicy::Update,
            ExistingObjects::Fail => ExistingObjectPolicy::Fail,
        } as i32,
        preserve_node_ports: a.preserve_node_ports,
    }
}

/// A repository profile by name; None (the default) when empty.
pub(crate) fn repository(profile: &str) -> Option<RepositoryRef> {
    (!profile.is_empty()).then(|| RepositoryRef {
        profile: profile.to_owned(),
        repository_id: String::new(),
    })
}
