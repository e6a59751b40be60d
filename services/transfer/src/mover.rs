//! Mover pods: short-lived pods that do nothing but keep one claim mounted, so that the
//! claim is bound and provisioned (a WaitForFirstConsumer class binds only for a pod),
//! attached to one node, and reachable there by that node's agent, which reads or writes
//! the volume where the kubelet mounted it. The pod holds no credential and runs no
//! Ferry code that touches data: the node's agent, which already answers only the
//! control plane, does the copying (as Velero's node agent does).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use ferry_proto::v1::VolumeOptions;

use crate::error::{Result, TransferError};
use crate::job::short_hash;

/// Labels every mover pod, so a sweep finds a job's leftovers.
pub const JOB_LABEL: &str = "ferry.dev/job";
/// Names the claim a mover pod holds.
pub const CLAIM_ANNOTATION: &str = "ferry.dev/claim";
const MOVER_LABEL: &str = "ferry.dev/mover";
/// How often a waiting mover is looked at again.
const POLL: Duration = Duration::from_millis(250);

/// How mover pods are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoverConfig {
    /// The image mover pods run: Ferry's own (its `ferry hold` waits for SIGTERM), or any
    /// image whose `command` waits.
    pub image: Option<String>,
    /// The command the pod runs; it only has to keep running.
    pub command: Vec<String>,
    /// How long a mover pod may take to start (claim provisioned, volume attached).
    pub start_timeout: Duration,
    /// Read a CSI volume from a VolumeSnapshot when its driver has a
    /// VolumeSnapshotClass (one point in time); off: from the live volume.
    pub csi_snapshots: bool,
    /// The VolumeSnapshotClass for volumes of its driver; None: each driver's default.
    pub snapshot_class: Option<String>,
    /// CPU and memory requests of mover pods (the memory also the limit); None: small
    /// defaults.
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

impl MoverConfig {
    /// This configuration with a job's options over it.
    pub fn with_options(&self, o: Option<&VolumeOptions>) -> MoverConfig {
        let Some(o) = o else {
            return self.clone();
        };
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        MoverConfig {
            image: self.image.clone(),
            command: self.command.clone(),
            start_timeout: match o.mover_start_timeout_seconds {
                0 => self.start_timeout,
                n => Duration::from_secs(n.into()),
            },
            csi_snapshots: self.csi_snapshots && !o.no_csi_snapshots,
            snapshot_class: some(&o.snapshot_class).or_else(|| self.snapshot_class.clone()),
            cpu: some(&o.mover_cpu).or_else(|| self.cpu.clone()),
            memory: some(&o.mover_memory).or_else(|| self.memory.clone()),
        }
    }

    /// Mover pods' resources.
    fn resources(&self) -> serde_json::Value {
        let cpu = self.cpu.as_deref().unwrap_or("10m");
        match &self.memory {
            Some(m) => json!({
                "requests": { "cpu": cpu, "memory": m },
                "limits": { "memory": m },
            }),
            None => json!({
                "requests": { "cpu": cpu, "memory": "16Mi" },
                "limits": { "memory": "64Mi" },
            }),
        }
    }
}

/// Checks a job's volume options before it starts, naming the field at fault.
pub fn check_options(o: Option<&VolumeOptions>) -> Result<()> {
    let Some(o) = o else { return Ok(()) };
    for (field, value) in [
        ("volumes.mover_cpu", &o.mover_cpu),
        ("volumes.mover_memory", &o.mover_memory),
    ] {
        if !value.is_empty() && !is_quantity(value) {
            return Err(TransferError::invalid(
                field,
                format!(
                    "{value:?} is not a Kubernetes quantity; write it like 50m, 0.5, 32Mi or 1Gi"
                ),
            ));
        }
    }
    if !o.snapshot_class.is_empty() && !ferry_authz::is_dns_subdomain(&o.snapshot_class) {
        return Err(TransferError::invalid(
            "volumes.snapshot_class",
            format!(
                "{:?} is not a VolumeSnapshotClass name; list them with \
                 `kubectl get volumesnapshotclasses`",
                o.snapshot_class
            ),
        ));
    }
    if o.no_csi_snapshots && !o.snapshot_class.is_empty() {
        return Err(TransferError::invalid(
            "volumes.snapshot_class",
            "given with no_csi_snapshots; give one or the other",
        ));
    }
    Ok(())
}

/// A Kubernetes quantity as users write them: a decimal number and an optional suffix.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &s[digits.len()..];
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or_default();
    let frac = parts.next();
    SUFFIXES.contains(&suffix)
        && !digits.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
        && (!whole.is_empty() || frac.is_some())
}

/// Where a node's agent finds a volume's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// A hostPath or local volume's directory.
    Path(String),
    /// A CSI volume, where the kubelet mounted it for a pod; the agent knows its own
    /// kubelet directory.
    Pod(ferry_proto::v1::PodVolume),
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Path(p) => f.write_str(p),
            Access::Pod(p) => write!(
                f,
                "volume {} of pod {} on node {}",
                p.volume, p.pod_uid, p.node
            ),
        }
    }
}

impl Default for MoverConfig {
    fn default() -> Self {
        MoverConfig {
            image: None,
            command: vec!["/usr/bin/ferry".into(), "hold".into()],
            start_timeout: Duration::from_secs(300),
            csi_snapshots: true,
            snapshot_class: None,
            cpu: None,
            memory: None,
        }
    }
}

/// A running mover pod and the volume it holds.
#[derive(Debug, Clone)]
pub struct Held {
    pub pod: String,
    pub node: String,
    /// Where the node's agent finds the volume's files.
    pub access: Access,
    /// The PersistentVolume bound to the claim.
    pub volume: String,
}

/// The mover pod's name for a job's claim: stable, so a resumed job finds its own.
pub fn pod_name(job: &str, claim: &str) -> String {
    format!(
        "ferry-mover-{}",
        &short_hash(&format!("{job}/{claim}"))[..12]
    )
}

fn pod_manifest(
    config: &MoverConfig,
    image: &str,
    job: &str,
    namespace: &str,
    claim: &str,
    read_only: bool,
) -> Result<Pod> {
    let value = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(job, claim),
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "ferry",
                JOB_LABEL: job,
                MOVER_LABEL: "true",
            },
            "annotations": { CLAIM_ANNOTATION: claim },
        },
        "spec": {
            "restartPolicy": "Never",
            // A backstop for a pod whose job died with no one to resume it: the kubelet
            // stops it, which unmounts the volume, even if nobody deletes it.
            "activeDeadlineSeconds": 24 * 3600,
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "runAsGroup": 65532,
                "seccompProfile": { "type": "RuntimeDefault" },
            },
            "containers": [{
                "name": "hold",
                "image": image,
                "command": config.command,
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
                "resources": config.resources(),
                "volumeMounts": [{ "name": "data", "mountPath": "/data", "readOnly": read_only }],
            }],
            "volumes": [{
                "name": "data",
                "persistentVolumeClaim": { "claimName": claim, "readOnly": read_only },
            }],
        },
    });
    serde_json::from_value(value)
        .map_err(|e| TransferError::Internal(format!("building a mover pod for {claim}: {e}")))
}

/// Where the Kubernetes objects of one cluster's movers live, and who is asking.
pub(crate) struct Movers<'a> {
    pub client: &'a kube::Client,
    /// The cluster as users name it.
    pub cluster: &'a str,
    pub config: &'a MoverConfig,
    pub job: &'a str,
    pub cancel: &'a CancellationToken,
}

impl Movers<'_> {
    pub(crate) fn volume_error(
        &self,
        namespace: &str,
        claim: &str,
        message: String,
        hint: &str,
    ) -> TransferError {
        TransferError::Volume {
            cluster: self.cluster.to_owned(),
            namespace: namespace.to_owned(),
            pvc: claim.to_owned(),
            message,
            hint: hint.to_owned(),
        }
    }

    fn kube_error(
        &self,
        namespace: &str,
        claim: &str,
        what: &str,
        e: kube::Error,
    ) -> TransferError {
        self.volume_error(
            namespace,
            claim,
            format!("{what}: {e}"),
            "check that Ferry may manage pods and read claims and volumes there \
             (ClusterRole ferry-migrator), then start again",
        )
    }

    /// Starts (or finds) the mover pod of `claim` and waits until it runs with the
    /// claim bound; answers where the node's agent finds the volume.
    pub async fn hold(&self, namespace: &str, claim: &str, read_only: bool) -> Result<Held> {
        let Some(image) = self.config.image.as_deref() else {
            return Err(self.volume_error(
                namespace,
                claim,
                "the transfer service has no mover image, and this claim's volume can only \
                 be reached through a pod that mounts it"
                    .into(),
                "give the transfer service --mover-image (the chart sets Ferry's own image), \
                 or restore into hostPath volumes with --volume-root",
            ));
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let name = pod_name(self.job, claim);
        let manifest = pod_manifest(self.config, image, self.job, namespace, claim, read_only)?;
        match pods.create(&PostParams::default(), &manifest).await {
            Ok(_) => info!(pod = %name, %namespace, %claim, "mover pod created"),
            // Ours from an earlier attempt of this job (the name is the job's and the
            // claim's): it is used as it is.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(self.kube_error(namespace, claim, "creating its mover pod", e)),
        }
        let pod = self.wait_running(&pods, namespace, claim, &name).await?;
        self.locate(namespace, claim, name, &pod).await
    }

    /// Waits until mover pod `name` of `claim` runs; a pod that stops, is deleted or
    /// does not start in time is an error that says why (and is deleted).
    async fn wait_running(
        &self,
        pods: &Api<Pod>,
        namespace: &str,
        claim: &str,
        name: &str,
    ) -> Result<Pod> {
        let started = Instant::now();
        loop {
            let pod = pods
                .get_opt(name)
                .await
                .map_err(|e| self.kube_error(namespace, claim, "reading its mover pod", e))?;
            let Some(pod) = pod else {
                return Err(self.volume_error(
                    namespace,
                    claim,
                    format!("mover pod {name} was deleted while it started"),
                    "start the job again",
                ));
            };
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_default();
            match phase.as_str() {
                "Running" => return Ok(pod),
                "Failed" | "Succeeded" => {
                    let why = self.why_not_running(namespace, &pod).await;
                    self.release(namespace, claim).await;
                    return Err(self.volume_error(
                        namespace,
                        claim,
                        format!("mover pod {name} stopped ({phase}): {why}"),
                        "check the mover image and command (--mover-image, --mover-command), \
                         then start again",
                    ));
                }
                _ => {}
            }
            if started.elapsed() > self.config.start_timeout {
                let why = self.why_not_running(namespace, &pod).await;
                self.release(namespace, claim).await;
                return Err(self.volume_error(
                    namespace,
                    claim,
                    format!(
                        "mover pod {name} did not start in {} s: {why}",
                        self.config.start_timeout.as_secs()
                    ),
                    "check that the claim's StorageClass provisions volumes on this cluster \
                     and that a node can run the pod (kubectl describe pod), then start again",
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                () = self.cancel.cancelled() => {
                    self.release(namespace, claim).await;
                    return Err(TransferError::Cancelled { reason: "cancelled while a mover pod started".into() });
                }
            }
        }
    }

    /// Where the node's agent finds the volume that running mover pod `name` holds.
    async fn locate(&self, namespace: &str, claim: &str, name: String, pod: &Pod) -> Result<Held> {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), namespace);
        let pvc = claims
            .get(claim)
            .await
            .map_err(|e| self.kube_error(namespace, claim, "reading the claim", e))?;
        let volume = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .unwrap_or_default();
        if volume.is_empty() {
            return Err(self.volume_error(
                namespace,
                claim,
                format!("the claim is not bound although mover pod {name} runs"),
                "check the claim's events (kubectl describe pvc), then start again",
            ));
        }
        let pvs: Api<PersistentVolume> = Api::all(self.client.clone());
        let pv = pvs
            .get(&volume)
            .await
            .map_err(|e| self.kube_error(namespace, claim, "reading its volume", e))?;
        let access = node_access(&pv, &node, &uid).map_err(|message| {
            self.volume_error(
                namespace,
                claim,
                format!("volume {volume}: {message}"),
                "map the claim's class to one whose volumes are hostPath, local or CSI \
                     (--storage-class-map)",
            )
        })?;
        Ok(Held {
            pod: name,
            node,
            access,
            volume,
        })
    }

    /// Deletes the mover pod of `claim` and waits until it is gone, so the volume is
    /// free for the application's pods (a ReadWriteOnce volume attaches to one node).
    /// Best effort: a pod that cannot be deleted now is found again by [`sweep`].
    ///
    /// [`sweep`]: Movers::sweep
    pub async fn release(&self, namespace: &str, claim: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let name = pod_name(self.job, claim);
        self.delete_and_wait(&pods, &name).await;
    }

    async fn delete_and_wait(&self, pods: &Api<Pod>, name: &str) {
        match pods
            .delete(name, &DeleteParams::default().grace_period(1))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                warn!(pod = %name, cluster = %self.cluster, error = %e, "mover pod not deleted");
                return;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            match pods.get_opt(name).await {
                Ok(None) => return,
                Ok(Some(_)) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    warn!(pod = %name, error = %e, "waiting for a mover pod to go");
                    return;
                }
            }
        }
        warn!(pod = %name, cluster = %self.cluster, "mover pod still terminating after 120 s");
    }

    /// Deletes every mover pod of this job in `namespace`: leftovers of an attempt that
    /// died, and the job's own at its end.
    pub async fn sweep(&self, namespace: &str) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let selector = format!("{JOB_LABEL}={},{MOVER_LABEL}=true", self.job);
        let list = match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                warn!(%namespace, cluster = %self.cluster, error = %e, "listing mover pods");
                return;
            }
        };
        for pod in list {
            if let Some(name) = pod.metadata.name.as_deref() {
                self.delete_and_wait(&pods, name).await;
            }
        }
    }

    /// Why a pod does not run, from its conditions, its container states and its latest
    /// events, as `kubectl describe` would show them.
    async fn why_not_running(&self, namespace: &str, pod: &Pod) -> String {
        let mut reasons: Vec<String> = Vec::new();
        if let Some(status) = &pod.status {
            for c in status.conditions.iter().flatten() {
                if c.status != "True"
                    && let Some(m) = c.message.as_deref().filter(|m| !m.is_empty())
                {
                    reasons.push(format!("{}: {m}", c.type_));
                }
            }
            for cs in status.container_statuses.iter().flatten() {
                let state = cs.state.as_ref();
                if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                    reasons.push(format!(
                        "container waiting: {} {}",
                        w.reason.clone().unwrap_or_default(),
                        w.message.clone().unwrap_or_default()
                    ));
                }
                if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                    reasons.push(format!(
                        "container exited {}: {} {}",
                        t.exit_code,
                        t.reason.clone().unwrap_or_default(),
                        t.message.clone().unwrap_or_default()
                    ));
                }
            }
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), namespace);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let selector = format!("involvedObject.kind=Pod,involvedObject.name={name}");
        if let Ok(list) = events.list(&ListParams::default().fields(&selector)).await {
            let mut warnings: Vec<&Event> = list
                .items
                .iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .collect();
            warnings.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
            if let Some(e) = warnings.last() {
                reasons.push(format!(
                    "event {}: {}",
                    e.reason.clone().unwrap_or_default(),
                    e.message.clone().unwrap_or_default()
                ));
            }
        }
        if reasons.is_empty() {
            "no reason reported yet".into()
        } else {
            reasons.join("; ")
        }
    }
}

/// Where a volume's files are on its node, for a pod `uid` on `node` that mounts it:
/// hostPath and local volumes at their own path, CSI volumes where the kubelet mounted
/// them for the pod.
pub fn node_access(
    pv: &PersistentVolume,
    node: &str,
    uid: &str,
) -> std::result::Result<Access, String> {
    let spec = pv.spec.as_ref().ok_or("it has no spec")?;
    if let Some(h) = &spec.host_path {
        return Ok(Access::Path(h.path.clone()));
    }
    if let Some(l) = &spec.local {
        return Ok(Access::Path(l.path.clone()));
    }
    if spec.csi.is_some() {
        if uid.is_empty() || node.is_empty() {
            return Err("its pod has no uid or node yet".into());
        }
        return Ok(pod_volume(
            node,
            uid,
            &pv.metadata.name.clone().unwrap_or_default(),
        ));
    }
    let kind = [
        ("nfs", spec.nfs.is_some()),
        ("iscsi", spec.iscsi.is_some()),
        ("fc", spec.fc.is_some()),
    ]
    .into_iter()
    .find(|(_, set)| *set)
    .map_or("this kind of", |(k, _)| k);
    Err(format!(
        "{kind} volumes are not reachable through a node's agent (hostPath, local and CSI \
         volumes are)"
    ))
}

/// CSI volume `pv` of pod `uid` on `node`.
pub fn pod_volume(node: &str, uid: &str, pv: &str) -> Access {
    Access::Pod(ferry_proto::v1::PodVolume {
        node: node.to_owned(),
        pod_uid: uid.to_owned(),
        volume: pv.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(json!({"metadata": {"name": "pvc-1"}, "spec": spec})).expect("pv")
    }

    #[test]
    fn each_kind_of_volume_is_found_where_its_node_has_it() {
        let host = pv(json!({"hostPath": {"path": "/opt/local-path/pvc-1_ns_data"}}));
        assert_eq!(
            node_access(&host, "n1", "u"),
            Ok(Access::Path("/opt/local-path/pvc-1_ns_data".into()))
        );
        let local = pv(json!({"local": {"path": "/mnt/disks/d1"}}));
        assert_eq!(
            node_access(&local, "n1", "u"),
            Ok(Access::Path("/mnt/disks/d1".into()))
        );
        let csi = pv(json!({"csi": {"driver": "hostpath.csi.k8s.io", "volumeHandle": "h"}}));
        assert_eq!(
            node_access(&csi, "n1", "abc"),
            Ok(pod_volume("n1", "abc", "pvc-1"))
        );
        let nfs = pv(json!({"nfs": {"server": "s", "path": "/x"}}));
        let err = node_access(&nfs, "n1", "u").expect_err("nfs");
        assert!(err.starts_with("nfs volumes are not reachable"), "{err}");
    }

    #[test]
    fn a_jobs_volume_options_override_the_services_and_are_checked() {
        let service = MoverConfig::default();
        assert_eq!(service.with_options(None), service);
        let job = service.with_options(Some(&VolumeOptions {
            snapshot_class: "fast-snaps".into(),
            mover_cpu: "50m".into(),
            mover_memory: "32Mi".into(),
            mover_start_timeout_seconds: 30,
            ..Default::default()
        }));
        assert_eq!(job.snapshot_class.as_deref(), Some("fast-snaps"));
        assert_eq!(job.start_timeout, Duration::from_secs(30));
        assert_eq!(
            job.resources(),
            json!({"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"memory": "32Mi"}})
        );
        let live = service.with_options(Some(&VolumeOptions {
            no_csi_snapshots: true,
            ..Default::default()
        }));
        assert!(!live.csi_snapshots && live.start_timeout == service.start_timeout);

        for good in ["50m", "0.5", "1", "32Mi", "1Gi", "2k", "1.5G"] {
            assert!(is_quantity(good), "{good}");
        }
        for bad in ["", "m", "1.", ".", "-1", "1 Gi", "1gb", "1Mi2", "ten"] {
            assert!(!is_quantity(bad), "{bad}");
        }
        let refused = |o: VolumeOptions| check_options(Some(&o)).expect_err("refused").to_string();
        let e = refused(VolumeOptions {
            mover_memory: "1gb".into(),
            ..Default::default()
        });
        assert!(
            e.contains("volumes.mover_memory") && e.contains("32Mi"),
            "{e}"
        );
        let e = refused(VolumeOptions {
            snapshot_class: "Fast_Snaps".into(),
            ..Default::default()
        });
        assert!(e.contains("volumes.snapshot_class"), "{e}");
        let e = refused(VolumeOptions {
            snapshot_class: "snaps".into(),
            no_csi_snapshots: true,
            ..Default::default()
        });
        assert!(e.contains("one or the other"), "{e}");
        assert!(check_options(None).is_ok());
    }

    #[test]
    fn mover_pods_are_named_per_job_and_claim_and_hold_nothing_else() {
        let config = MoverConfig {
            image: Some("ferry:1".into()),
            ..Default::default()
        };
        let a = pod_name("job-1", "data-db-0");
        assert_eq!(a, pod_name("job-1", "data-db-0"));
        assert_ne!(a, pod_name("job-2", "data-db-0"));
        assert!(a.len() <= 63, "{a}");
        let pod =
            pod_manifest(&config, "ferry:1", "job-1", "shop", "data-db-0", true).expect("manifest");
        let spec = pod.spec.expect("spec");
        assert_eq!(spec.automount_service_account_token, Some(false));
        let volumes = spec.volumes.expect("volumes");
        let claim = volumes[0].persistent_volume_claim.as_ref().expect("claim");
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("data-db-0", Some(true))
        );
        assert_eq!(
            spec.containers[0].command.as_deref(),
            Some(&config.command[..])
        );
    }
}
