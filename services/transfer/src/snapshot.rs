//! CSI snapshots on the source: a volume whose driver has a VolumeSnapshotClass is backed
//! up from a VolumeSnapshot (one point in time, crash-consistent) rather than from the
//! live volume. The snapshot is restored into a temporary claim, which a mover pod holds
//! mounted while the node's agent reads it; the claim and the snapshot are deleted
//! afterwards, whatever happened, and a sweep by the job's label catches what a killed
//! attempt left.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::error::{Result, TransferError};
use crate::job::short_hash;
use crate::mover::{JOB_LABEL, Movers};

/// Marks the objects of this module, beside the job's label.
const SNAPSHOT_LABEL: &str = "ferry.dev/snapshot";
/// Marks a class as its driver's default (the external-snapshotter's annotation).
const DEFAULT_CLASS: &str = "snapshot.storage.kubernetes.io/is-default-class";
const POLL: Duration = Duration::from_millis(500);

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "snapshot.storage.k8s.io",
        "v1",
        kind,
    ))
}

/// The names a job's snapshot of a claim and its temporary claim get: stable, so a
/// resumed job finds its own.
pub fn names(job: &str, claim: &str) -> (String, String) {
    let h = &short_hash(&format!("{job}/{claim}"))[..12];
    (format!("ferry-{h}"), format!("ferry-snap-{h}"))
}

/// A snapshot taken and restored into a temporary claim.
#[derive(Debug, Clone)]
pub struct Taken {
    pub snapshot: String,
    pub class: String,
    /// The temporary claim holding the snapshot's data.
    pub claim: String,
}

/// What the source claim looked like, for the temporary claim made from its snapshot.
#[derive(Debug, Clone, Default)]
pub struct ClaimShape {
    pub storage_class: Option<String>,
    pub capacity: Option<String>,
    pub access_modes: Vec<String>,
    pub volume_mode: Option<String>,
}

impl Movers<'_> {
    /// The VolumeSnapshotClass of CSI driver `driver`: the one marked default, else the
    /// only one; None when the cluster has no snapshot API or no class for the driver.
    pub async fn snapshot_class(&self, driver: &str) -> Result<Option<String>> {
        if !self.config.csi_snapshots || driver.is_empty() {
            return Ok(None);
        }
        let api: Api<DynamicObject> =
            Api::all_with(self.client.clone(), &resource("VolumeSnapshotClass"));
        let list = match api.list(&ListParams::default()).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 && self.config.snapshot_class.is_none() => {
                return Ok(None);
            }
            Err(e) if self.config.snapshot_class.is_none() => {
                warn!(cluster = %self.cluster, error = %e, "listing VolumeSnapshotClasses");
                return Ok(None);
            }
            Err(e) => {
                return Err(TransferError::Cluster {
                    cluster: self.cluster.to_owned(),
                    message: format!("listing VolumeSnapshotClasses: {e}"),
                    hint: "install the snapshot CRDs, or migrate without volumes.snapshot_class"
                        .into(),
                });
            }
        };
        // The class the job named, for volumes of its driver.
        if let Some(named) = &self.config.snapshot_class {
            let Some(class) = list
                .items
                .iter()
                .find(|c| c.metadata.name.as_ref() == Some(named))
            else {
                return Err(TransferError::Cluster {
                    cluster: self.cluster.to_owned(),
                    message: format!("VolumeSnapshotClass {named} does not exist"),
                    hint: "name one of `kubectl get volumesnapshotclasses`, or leave the class \
                           out to use each driver's default"
                        .into(),
                });
            };
            if class.data.get("driver").and_then(Value::as_str) == Some(driver) {
                return Ok(Some(named.clone()));
            }
        }
        let mut classes: Vec<&DynamicObject> = list
            .items
            .iter()
            .filter(|c| c.data.get("driver").and_then(Value::as_str) == Some(driver))
            .collect();
        classes.sort_by_key(|c| {
            let default = c
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(DEFAULT_CLASS))
                .is_some_and(|v| v == "true");
            (!default, c.metadata.name.clone())
        });
        let Some(first) = classes.first() else {
            return Ok(None);
        };
        let marked = first
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_CLASS))
            .is_some_and(|v| v == "true");
        // Several classes and none marked: which one the user wants is not ours to guess.
        Ok((marked || classes.len() == 1).then(|| first.metadata.name.clone().unwrap_or_default()))
    }

    /// Takes a VolumeSnapshot of `claim` with `class`, waits until it is ready, and
    /// restores it into a temporary claim shaped like `shape`.
    pub async fn take_snapshot(
        &self,
        namespace: &str,
        claim: &str,
        class: &str,
        shape: &ClaimShape,
    ) -> Result<Taken> {
        let (snapshot, temp) = names(self.job, claim);
        let labels = json!({
            "app.kubernetes.io/managed-by": "ferry",
            JOB_LABEL: self.job,
            SNAPSHOT_LABEL: "true",
        });
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource("VolumeSnapshot"));
        let manifest: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "snapshot.storage.k8s.io/v1",
            "kind": "VolumeSnapshot",
            "metadata": { "name": snapshot, "namespace": namespace, "labels": labels },
            "spec": {
                "volumeSnapshotClassName": class,
                "source": { "persistentVolumeClaimName": claim },
            },
        }))
        .map_err(|e| TransferError::Internal(format!("building a VolumeSnapshot: {e}")))?;
        let kube_error = |what: &str, e: kube::Error| {
            self.volume_error(
                namespace,
                claim,
                format!("{what}: {e}"),
                "check that Ferry may manage volumesnapshots and claims there, then start again",
            )
        };
        match snapshots.create(&PostParams::default(), &manifest).await {
            Ok(_) => info!(%snapshot, %namespace, %claim, %class, "volume snapshot created"),
            // This job's, from an earlier attempt.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(kube_error("creating its VolumeSnapshot", e)),
        }
        let size = self
            .wait_ready(&snapshots, namespace, claim, &snapshot, class)
            .await?;
        let capacity = size
            .or_else(|| shape.capacity.clone())
            .unwrap_or_else(|| "1Gi".into());
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let mut spec = json!({
            "accessModes": if shape.access_modes.is_empty() { vec!["ReadWriteOnce".to_owned()] } else { shape.access_modes.clone() },
            "resources": { "requests": { "storage": capacity } },
            "dataSource": {
                "apiGroup": "snapshot.storage.k8s.io",
                "kind": "VolumeSnapshot",
                "name": snapshot,
            },
        });
        if let Some(class) = &shape.storage_class {
            spec["storageClassName"] = json!(class);
        }
        if let Some(mode) = &shape.volume_mode {
            spec["volumeMode"] = json!(mode);
        }
        let manifest: PersistentVolumeClaim = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": { "name": temp, "namespace": namespace, "labels": labels },
            "spec": spec,
        }))
        .map_err(|e| TransferError::Internal(format!("building a claim: {e}")))?;
        match claims.create(&PostParams::default(), &manifest).await {
            Ok(_) => info!(claim = %temp, %snapshot, "claim from the snapshot created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(kube_error("creating a claim from its VolumeSnapshot", e)),
        }
        Ok(Taken {
            snapshot,
            class: class.to_owned(),
            claim: temp,
        })
    }

    /// Waits until VolumeSnapshot `snapshot` of `claim` is ready to use; answers its
    /// restore size, when the driver gave one.
    async fn wait_ready(
        &self,
        snapshots: &Api<DynamicObject>,
        namespace: &str,
        claim: &str,
        snapshot: &str,
        class: &str,
    ) -> Result<Option<String>> {
        let started = Instant::now();
        loop {
            let got = snapshots.get(snapshot).await.map_err(|e| {
                self.volume_error(
                    namespace,
                    claim,
                    format!("reading its VolumeSnapshot: {e}"),
                    "check that Ferry may read volumesnapshots there, then start again",
                )
            })?;
            let status = got.data.get("status");
            if status
                .and_then(|s| s.get("readyToUse"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                return Ok(status
                    .and_then(|s| s.get("restoreSize"))
                    .and_then(Value::as_str)
                    .map(str::to_owned));
            }
            if let Some(message) = status
                .and_then(|s| s.pointer("/error/message"))
                .and_then(Value::as_str)
                && started.elapsed() > Duration::from_secs(30)
            {
                return Err(self.volume_error(
                    namespace,
                    claim,
                    format!("VolumeSnapshot {snapshot} (class {class}) failed: {message}"),
                    "check the CSI driver's snapshotter, or migrate without snapshots",
                ));
            }
            if started.elapsed() > self.config.start_timeout {
                return Err(self.volume_error(
                    namespace,
                    claim,
                    format!(
                        "VolumeSnapshot {snapshot} (class {class}) was not ready in {} s",
                        self.config.start_timeout.as_secs()
                    ),
                    "check the snapshot controller and the CSI driver's snapshotter \
                     (kubectl describe volumesnapshot), then start again",
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = self.cancel.cancelled() => {
                    return Err(TransferError::Cancelled { reason: "cancelled while a volume snapshot was taken".into() });
                }
            }
        }
    }

    /// Deletes the temporary claim and the snapshot of `taken` (its mover first).
    pub async fn drop_snapshot(&self, namespace: &str, taken: &Taken) {
        self.release(namespace, &taken.claim).await;
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        delete(&claims, &taken.claim, self.cluster).await;
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource("VolumeSnapshot"));
        delete(&snapshots, &taken.snapshot, self.cluster).await;
    }

    /// Deletes every snapshot and temporary claim of this job in `namespace` (after its
    /// movers: a claim in use is not deleted until its pod is gone).
    pub async fn sweep_snapshots(&self, namespace: &str) {
        let selector = format!("{JOB_LABEL}={},{SNAPSHOT_LABEL}=true", self.job);
        let params = ListParams::default().labels(&selector);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        if let Ok(list) = claims.list(&params).await {
            for c in list {
                if let Some(name) = c.metadata.name.as_deref() {
                    delete(&claims, name, self.cluster).await;
                }
            }
        }
        let snapshots: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource("VolumeSnapshot"));
        if let Ok(list) = snapshots.list(&params).await {
            for s in list {
                if let Some(name) = s.metadata.name.as_deref() {
                    delete(&snapshots, name, self.cluster).await;
                }
            }
        }
    }
}

async fn delete<K>(api: &Api<K>, name: &str, cluster: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => warn!(%name, %cluster, error = %e, "not deleted; delete it by hand"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_names_its_snapshot_and_claim_the_same_way_every_attempt() {
        let (s, c) = names("job-1", "data-db-0");
        assert_eq!((s.clone(), c.clone()), names("job-1", "data-db-0"));
        assert_ne!(s, names("job-2", "data-db-0").0);
        assert!(c.starts_with("ferry-snap-") && c.len() <= 63, "{c}");
    }
}
