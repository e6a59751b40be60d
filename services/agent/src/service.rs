//! `ferry.v1.AgentService` over the repository engine.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ferry_proto::v1::agent_service_server::AgentService;
use ferry_proto::v1::{
    BackupEvent, BackupRequest, BackupSummary, CancelRequest, CancelResponse, ErrorCode,
    ErrorDetail, GetInfoRequest, GetInfoResponse, Progress, RepositoryRef, RestoreEvent,
    RestoreRequest, RestoreSummary, VerifyEvent, VerifyRequest, VerifySummary, backup_event,
    restore_event, verify_event,
};
use ferry_repo::{
    BackupOptions, BackupProgress, Id, RestoreOptions, RestoreProgress, WalkedSource,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::AgentConfig;
use crate::error::AgentError;
use crate::ops::{OperationGuard, Operations};
use ferry_profile::{Profile, ProfileSource};

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Events buffered per stream before the operation waits for a slow client.
const STREAM_BUFFER: usize = 16;

/// The agent's gRPC service.
#[derive(Clone, Debug)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    node_name: String,
    profiles: ProfileSource,
    allowed_roots: Vec<PathBuf>,
    volume_root: Option<PathBuf>,
    kubelet: crate::config::KubeletRoots,
    ops: Arc<Operations>,
    access: crate::config::AgentAccess,
}

impl Agent {
    pub fn new(config: &AgentConfig) -> Self {
        Agent {
            inner: Arc::new(Inner {
                node_name: config.node_name.clone(),
                profiles: config.profiles.clone(),
                // Restores go under the volume root, so it is allowed too.
                allowed_roots: config
                    .allowed_roots
                    .iter()
                    .chain(config.volume_root.as_ref())
                    .cloned()
                    .collect(),
                volume_root: config.volume_root.clone(),
                kubelet: config.kubelet.clone(),
                access: config.access.clone(),
                ops: Operations::new(config.max_concurrent_operations, config.node_name.clone()),
            }),
        }
    }

    /// Admits only the internal credential (unless the agent checks no callers).
    fn admit(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        match &self.inner.access {
            crate::config::AgentAccess::Unchecked => Ok(()),
            crate::config::AgentAccess::Internal(secret) => ferry_authz::require_internal(
                metadata,
                Some(secret),
                &self.inner.node_name,
                "the agent",
            )
            .map_err(|e| e.to_status()),
        }
    }

    /// The operation registry, for draining at shutdown.
    pub fn operations(&self) -> Arc<Operations> {
        self.inner.ops.clone()
    }

    /// Checks that `path` is absolute, normal and under an allowed root.
    fn check_path(&self, field: &'static str, path: &str) -> Result<PathBuf, AgentError> {
        if path.is_empty() {
            return Err(AgentError::invalid(field, "empty; give an absolute path"));
        }
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(AgentError::invalid(
                field,
                format!("{path:?} is relative; give an absolute path on the agent's node"),
            ));
        }
        if p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(AgentError::invalid(
                field,
                format!("{path:?} contains '..'; give a normalised absolute path"),
            ));
        }
        // No roots allow nothing: an agent reaches only the directories it was given.
        let roots = &self.inner.allowed_roots;
        if !roots.iter().any(|r| p.starts_with(r)) {
            return Err(AgentError::PathNotAllowed {
                path: path.to_string(),
                allowed: if roots.is_empty() {
                    "none (the agent was started without --allow-root or --volume-root)".into()
                } else {
                    roots
                        .iter()
                        .map(|r| r.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            });
        }
        Ok(p.to_path_buf())
    }

    /// The path of a request: `path`, or where the kubelet mounted `pod`'s CSI volume
    /// (only that directory of the kubelet's; names that could climb out are refused).
    fn request_path(
        &self,
        field: &'static str,
        path: &str,
        pod: Option<&ferry_proto::v1::PodVolume>,
    ) -> Result<PathBuf, AgentError> {
        let Some(pod) = pod else {
            return self.check_path(field, path);
        };
        if !path.is_empty() {
            return Err(AgentError::invalid(
                field,
                "both a path and a pod volume; give one",
            ));
        }
        let Some(root) = self.inner.kubelet.of(&pod.node) else {
            return Err(AgentError::invalid(
                field,
                format!(
                    "pod volume {} on node {}: this agent was started without --kubelet-root, \
                     so it reaches no pod's volume; start it with the kubelet's directory",
                    pod.volume, pod.node
                ),
            ));
        };
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s != "."
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if !name_ok(&pod.pod_uid) || !name_ok(&pod.volume) {
            return Err(AgentError::invalid(
                field,
                format!(
                    "pod uid {:?} or volume {:?} is not a Kubernetes name",
                    pod.pod_uid, pod.volume
                ),
            ));
        }
        Ok(root
            .join("pods")
            .join(&pod.pod_uid)
            .join("volumes/kubernetes.io~csi")
            .join(&pod.volume)
            .join("mount"))
    }

    fn register(&self, operation_id: &str) -> Result<OperationGuard, AgentError> {
        if operation_id.is_empty() {
            return Err(AgentError::invalid(
                "operation_id",
                "empty; pick an id unique on this agent so the operation can be cancelled",
            ));
        }
        self.inner.ops.register(operation_id)
    }
}

/// Turns engine progress into API progress with a smoothed read rate and an ETA.
#[derive(Debug)]
struct RateMeter {
    last: Option<(Instant, u64)>,
    rate: f64,
}

impl RateMeter {
    fn new() -> Self {
        RateMeter {
            last: None,
            rate: 0.0,
        }
    }

    fn update(&mut self, done: u64) -> u64 {
        let now = Instant::now();
        if let Some((t, prev)) = self.last {
            let dt = now.duration_since(t).as_secs_f64();
            if dt > 0.05 {
                let instant = done.saturating_sub(prev) as f64 / dt;
                // An exponential average: steady enough to read, quick to follow.
                self.rate = if self.rate == 0.0 {
                    instant
                } else {
                    0.7 * self.rate + 0.3 * instant
                };
                self.last = Some((now, done));
            }
        } else {
            self.last = Some((now, done));
        }
        self.rate as u64
    }
}

fn eta(total: u64, done: u64, rate: u64) -> Option<prost_types::Duration> {
    (rate > 0 && total > done).then(|| prost_types::Duration {
        seconds: ((total - done) / rate) as i64,
        nanos: 0,
    })
}

fn backup_progress(p: &BackupProgress, meter: &mut RateMeter) -> Progress {
    let rate = meter.update(p.bytes_read);
    Progress {
        step: "backup".into(),
        files_done: p.files_done,
        files_total: p.files_total,
        bytes_read: p.bytes_read,
        bytes_new: p.bytes_new,
        bytes_uploaded: p.bytes_uploaded,
        // Unchanged files are skipped without reading, so the ETA counts only bytes
        // that still have to be read; the total is what the snapshot covers.
        bytes_total: p.bytes_total,
        rate_bytes_per_second: rate,
        eta: eta(p.bytes_total, p.bytes_read, rate),
        ..Default::default()
    }
}

fn restore_progress(p: &RestoreProgress, meter: &mut RateMeter) -> Progress {
    let rate = meter.update(p.bytes_written);
    Progress {
        step: "restore".into(),
        files_done: p.files_done,
        files_total: p.files_total,
        bytes_read: p.bytes_written,
        bytes_total: p.bytes_total,
        rate_bytes_per_second: rate,
        eta: eta(p.bytes_total, p.bytes_written, rate),
        ..Default::default()
    }
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// Forwards every progress update as an event until the engine drops its sender.
/// A client that went away cancels the operation: nobody is left to act on its result.
fn forward_progress<P, E>(
    mut rx: watch::Receiver<P>,
    tx: mpsc::Sender<Result<E, Status>>,
    guard_cancel: CancellationToken,
    mut to_event: impl FnMut(&P) -> E + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    P: Send + Sync + 'static,
    E: Send + 'static,
{
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let event = to_event(&rx.borrow_and_update());
            if tx.send(Ok(event)).await.is_err() {
                guard_cancel.cancel();
                return;
            }
        }
    })
}

impl Agent {
    /// Runs an operation's `body` on its own task once a slot is free, streaming what
    /// the body sends, then its summary as the last event or its error as the status.
    fn spawn_operation<E, S, F, Fut>(
        &self,
        guard: OperationGuard,
        span: tracing::Span,
        done: fn(S) -> E,
        body: F,
    ) -> Response<EventStream<E>>
    where
        E: Send + 'static,
        S: Send + 'static,
        F: FnOnce(Agent, CancellationToken, mpsc::Sender<Result<E, Status>>) -> Fut
            + Send
            + 'static,
        Fut: Future<Output = Result<S, AgentError>> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let agent = self.clone();
        tokio::spawn(
            async move {
                let cancel = guard.cancel.clone();
                let result = match agent.inner.ops.slot(&cancel).await {
                    // The slot is held until the body has finished.
                    Some(_slot) => body(agent.clone(), cancel, tx.clone()).await,
                    None => Err(AgentError::repo("waiting for a free slot")(
                        ferry_repo::Error::Cancelled,
                    )),
                };
                // A failure ends the stream with its status, which the server's layer
                // (ferry_rpc::log) logs once.
                let message = result.map(done).map_err(Status::from);
                // Deregistered before the last message goes out: a client that has
                // seen it must find the operation over (not cancellable, its id free).
                // The stream stays open until `tx` is dropped, so a draining server
                // still delivers the message.
                drop(guard);
                let _ = tx.send(message).await;
            }
            .instrument(span),
        );
        Response::new(Box::pin(ReceiverStream::new(rx)))
    }
}

impl Agent {
    /// The profile, its opened repository, and the snapshot `spec` names in it.
    async fn open_snapshot(
        &self,
        repo_ref: &RepositoryRef,
        spec: &str,
    ) -> Result<(Profile, ferry_repo::Repository, Id), AgentError> {
        let profile = self.inner.profiles.get(&repo_ref.profile).await?;
        let repo = profile.open(&repo_ref.repository_id).await?;
        let snapshot = repo
            .resolve_snapshot(spec)
            .await
            .map_err(AgentError::repo(format!(
                "finding snapshot {spec} in {}",
                profile.repository
            )))?;
        Ok((profile, repo, snapshot))
    }
}

fn repository_ref(r: Option<RepositoryRef>) -> Result<RepositoryRef, AgentError> {
    r.ok_or_else(|| AgentError::invalid("repository", "missing; name a profile"))
}

fn require_snapshot(id: &str, verb: &str) -> Result<(), AgentError> {
    if id.is_empty() {
        return Err(AgentError::invalid(
            "snapshot_id",
            format!("empty; name the snapshot to {verb}"),
        ));
    }
    Ok(())
}

/// Refuses a pod's volume that is not mounted where the kubelet mounts it.
///
/// Why: once its pod is gone, the kubelet unmounts the volume and leaves (for a moment)
/// the empty directory it was mounted on. A backup of that directory would record an
/// empty volume, and a restore into it would write to the node's own disk, both
/// "successfully". While an operation runs it holds the directory open, so the kubelet
/// cannot unmount the volume under it.
fn require_mounted(
    path: &Path,
    pod: Option<&ferry_proto::v1::PodVolume>,
) -> Result<(), AgentError> {
    let Some(pod) = pod else {
        return Ok(());
    };
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| AgentError::Volume {
            path: path.display().to_string(),
            detail: format!("reading /proc/self/mountinfo to check it is mounted: {e}"),
        })?;
    if mount_points(&mountinfo).any(|m| Path::new(&m) == path) {
        return Ok(());
    }
    Err(AgentError::Volume {
        path: path.display().to_string(),
        detail: format!(
            "volume {} of pod {} on node {} is not mounted there: the pod is gone or its \
             volume not yet set up (a mover pod deleted early?); run the job again",
            pod.volume, pod.pod_uid, pod.node
        ),
    })
}

/// The mount points in a `/proc/<pid>/mountinfo` text, with the kernel's octal escapes
/// (`\040` for a space) undone.
fn mount_points(mountinfo: &str) -> impl Iterator<Item = String> + '_ {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| {
            let b = m.as_bytes();
            let mut out = Vec::with_capacity(b.len());
            let mut i = 0;
            while i < b.len() {
                let octal = b
                    .get(i + 1..i + 4)
                    .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
                match octal {
                    Some(d) => {
                        out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                        i += 4;
                    }
                    None => {
                        out.push(b[i]);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        })
}

#[tonic::async_trait]
impl AgentService for Agent {
    type BackupStream = EventStream<BackupEvent>;
    type RestoreStream = EventStream<RestoreEvent>;
    type VerifyStream = EventStream<VerifyEvent>;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        self.admit(request.metadata())?;
        let req = request.into_inner();
        let path = self.request_path("path", &req.path, req.pod_volume.as_ref())?;
        require_mounted(&path, req.pod_volume.as_ref())?;
        let repo_ref = repository_ref(req.repository)?;
        let parent = match req.parent_snapshot_id.as_str() {
            "" => None,
            s => Some(Id::parse(s).map_err(|_| {
                AgentError::invalid(
                    "parent_snapshot_id",
                    format!("{s:?} is not a snapshot id (64 hex digits)"),
                )
            })?),
        };
        let guard = self.register(&req.operation_id)?;
        let span = tracing::info_span!("agent.backup", op = %req.operation_id, profile = %repo_ref.profile, path = %path.display());
        let mut tags: Vec<String> = req.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        tags.sort();
        let done = |s| BackupEvent {
            event: Some(backup_event::Event::Done(s)),
        };
        Ok(self.spawn_operation(guard, span, done, move |agent, cancel, tx| async move {
            let volume = |detail: String| AgentError::Volume {
                path: path.display().to_string(),
                detail,
            };
            let meta = tokio::fs::symlink_metadata(&path)
                .await
                .map_err(|e| volume(e.to_string()))?;
            if !meta.is_dir() && !meta.is_file() && !meta.file_type().is_symlink() {
                return Err(volume("not a directory, file or device".into()));
            }
            let profile = agent.inner.profiles.get(&repo_ref.profile).await?;
            let what = format!("backing up {} to {}", path.display(), profile.repository);
            // The walk needs no key: it runs while the repository's key is derived.
            let (repo, walked) = tokio::try_join!(
                async { Ok(profile.open(&repo_ref.repository_id).await?) },
                async {
                    let walked = WalkedSource::walk(&path, &cancel).await;
                    walked.map_err(AgentError::repo(what.clone()))
                },
            )?;
            let started_at = SystemTime::now();
            let (ptx, prx) = watch::channel(BackupProgress::default());
            let mut meter = RateMeter::new();
            let forwarder = forward_progress(prx, tx, cancel.clone(), move |p| BackupEvent {
                event: Some(backup_event::Event::Progress(backup_progress(p, &mut meter))),
            });
            let options = BackupOptions {
                parent,
                tags,
                hostname: Some(agent.inner.node_name.clone()),
                progress: Some(ptx),
                cancel,
                ..BackupOptions::default()
            };
            let done = repo.backup_walked(walked, options).await;
            let _ = forwarder.await;
            let done = done.map_err(AgentError::repo(what))?;
            let s = &done.snapshot.summary;
            tracing::info!(snapshot = %done.snapshot_id, bytes_uploaded = s.bytes_uploaded, "backup done");
            Ok(BackupSummary {
                snapshot_id: done.snapshot_id.to_string(),
                files_new: s.files_read.saturating_sub(s.files_changed),
                files_changed: s.files_changed,
                files_unmodified: s.files_unchanged,
                directories: s.dirs,
                bytes_total: s.bytes_total,
                bytes_read: s.bytes_read,
                bytes_new: s.bytes_new,
                bytes_uploaded: s.bytes_uploaded,
                chunks_new: s.chunks_new,
                started_at: Some(started_at.into()),
                duration: Some(duration(Duration::from_millis(s.duration_ms))),
                skipped_files: Vec::new(),
            })
        }))
    }

    async fn restore(
        &self,
        request: Request<RestoreRequest>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        self.admit(request.metadata())?;
        let req = request.into_inner();
        let target = self.request_path(
            "target_path",
            &req.target_path,
            req.target_pod_volume.as_ref(),
        )?;
        require_mounted(&target, req.target_pod_volume.as_ref())?;
        let repo_ref = repository_ref(req.repository)?;
        require_snapshot(&req.snapshot_id, "restore")?;
        let guard = self.register(&req.operation_id)?;
        let span = tracing::info_span!("agent.restore", op = %req.operation_id, profile = %repo_ref.profile, snapshot = %req.snapshot_id, target = %target.display());
        let done = |s| RestoreEvent {
            event: Some(restore_event::Event::Done(s)),
        };
        Ok(
            self.spawn_operation(guard, span, done, move |agent, cancel, tx| async move {
                let (_, repo, snapshot) = agent.open_snapshot(&repo_ref, &req.snapshot_id).await?;
                let started_at = SystemTime::now();
                let (ptx, prx) = watch::channel(RestoreProgress::default());
                let mut meter = RateMeter::new();
                let forwarder = forward_progress(prx, tx, cancel.clone(), move |p| RestoreEvent {
                    event: Some(restore_event::Event::Progress(restore_progress(
                        p, &mut meter,
                    ))),
                });
                let options = RestoreOptions {
                    progress: Some(ptx),
                    cancel,
                    // Over the volume's earlier restore: only what changed is written,
                    // and what the snapshot lacks removed.
                    sync: req.delete_extraneous,
                    overwrite_changes: req.overwrite_changes,
                    ..RestoreOptions::default()
                };
                let done = repo.restore(&snapshot, &target, options).await;
                let _ = forwarder.await;
                let s = done.map_err(AgentError::repo(format!(
                    "restoring snapshot {} into {}",
                    snapshot.short(),
                    target.display()
                )))?;
                tracing::info!(bytes_written = s.bytes_written, "restore done");
                Ok(RestoreSummary {
                    files_restored: s.files,
                    directories: s.dirs,
                    bytes_written: s.bytes_written,
                    bytes_downloaded: s.bytes_downloaded,
                    files_unchanged: s.files_unchanged,
                    bytes_unchanged: s.bytes_unchanged,
                    started_at: Some(started_at.into()),
                    duration: Some(duration(s.duration)),
                })
            }),
        )
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<Self::VerifyStream>, Status> {
        self.admit(request.metadata())?;
        let req = request.into_inner();
        let repo_ref = repository_ref(req.repository)?;
        require_snapshot(&req.snapshot_id, "verify")?;
        let guard = self.register(&req.operation_id)?;
        let span = tracing::info_span!("agent.verify", op = %req.operation_id, profile = %repo_ref.profile, snapshot = %req.snapshot_id, read_data = req.read_data);
        let done = |s| VerifyEvent {
            event: Some(verify_event::Event::Done(s)),
        };
        Ok(
            self.spawn_operation(guard, span, done, move |agent, cancel, tx| async move {
                let started = Instant::now();
                let (profile, repo, snapshot) =
                    agent.open_snapshot(&repo_ref, &req.snapshot_id).await?;
                let _ = tx
                    .send(Ok(VerifyEvent {
                        event: Some(verify_event::Event::Progress(Progress {
                            step: "verify".into(),
                            ..Default::default()
                        })),
                    }))
                    .await;
                // A check only reads, so dropping it on cancel leaves nothing behind.
                let report = tokio::select! {
                    r = repo.check_snapshot(&snapshot, req.read_data) => r,
                    _ = cancel.cancelled() => Err(ferry_repo::Error::Cancelled),
                }
                .map_err(AgentError::repo(format!(
                    "verifying snapshot {} in {}",
                    snapshot.short(),
                    profile.repository
                )))?;
                tracing::info!(
                    ok = report.is_ok(),
                    problems = report.problems.len(),
                    "verify done"
                );
                Ok(VerifySummary {
                    ok: report.is_ok(),
                    chunks_checked: report.blobs_checked,
                    bytes_read: report.bytes_read,
                    duration: Some(duration(started.elapsed())),
                    problems: report
                        .problems
                        .iter()
                        .map(|p| ErrorDetail {
                            code: ErrorCode::Integrity as i32,
                            message: p.to_string(),
                            object: None,
                            cluster: String::new(),
                            hint:
                                "the snapshot cannot be restored whole; back the volume up again, \
                               and run `ferry repo check --read-data` for the whole repository"
                                    .into(),
                        })
                        .collect(),
                })
            }),
        )
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        self.admit(request.metadata())?;
        let id = request.into_inner().operation_id;
        let cancelled = self.inner.ops.cancel(&id);
        tracing::info!(op = %id, cancelled, "cancel requested");
        Ok(Response::new(CancelResponse { cancelled }))
    }

    async fn get_info(
        &self,
        request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        self.admit(request.metadata())?;
        let ops = &self.inner.ops;
        Ok(Response::new(GetInfoResponse {
            node_name: self.inner.node_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            capabilities: ["backup", "restore", "verify", "local", "s3"]
                .map(String::from)
                .to_vec(),
            max_concurrent_operations: ops.max() as u32,
            running_operations: ops.running() as u32,
            volume_root: self
                .inner
                .volume_root
                .as_ref()
                .map(|r| r.display().to_string())
                .unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(roots: &[&str], volume_root: Option<&str>) -> Agent {
        Agent::new(&AgentConfig {
            node_name: "n1".into(),
            profiles: ProfileSource::Static(Default::default()),
            allowed_roots: roots.iter().map(PathBuf::from).collect(),
            max_concurrent_operations: 1,
            shutdown_grace: Duration::from_secs(1),
            volume_root: volume_root.map(PathBuf::from),
            kubelet: Default::default(),
            access: crate::config::AgentAccess::Unchecked,
        })
    }

    #[test]
    fn an_agent_given_no_roots_reaches_nothing() {
        let refused = agent(&[], None)
            .check_path("path", "/var/lib/ferry")
            .expect_err("no roots");
        assert!(refused.to_string().contains("/var/lib/ferry"), "{refused}");
        let only_restores = agent(&[], Some("/srv/volumes"));
        assert!(
            only_restores
                .check_path("path", "/srv/volumes/ns/claim")
                .is_ok()
        );
        assert!(only_restores.check_path("path", "/srv/other").is_err());
        let rooted = agent(&["/data"], Some("/srv/volumes"));
        assert!(rooted.check_path("path", "/data/pv-1").is_ok());
        assert!(rooted.check_path("path", "/etc").is_err());
        assert!(rooted.check_path("path", "/data/../etc").is_err());
    }

    #[test]
    fn mount_points_are_read_with_their_escapes_undone() {
        let info = "36 35 98:0 /mnt1 /mnt/a\\040b rw,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 98:0 / /var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount rw - ext4 /dev/x rw\n";
        let points: Vec<String> = mount_points(info).collect();
        assert_eq!(
            points,
            [
                "/mnt/a b",
                "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/pv/mount"
            ]
        );
        let pod = ferry_proto::v1::PodVolume {
            node: "n1".into(),
            pod_uid: "u".into(),
            volume: "pv".into(),
        };
        let unmounted = std::env::temp_dir();
        let e = require_mounted(&unmounted, Some(&pod)).expect_err("a plain directory");
        assert!(e.to_string().contains("is not mounted there"), "{e}");
        assert!(require_mounted(&unmounted, None).is_ok());
        assert!(require_mounted(Path::new("/"), Some(&pod)).is_ok());
    }

    #[test]
    fn a_pod_volume_is_found_under_its_nodes_kubelet_directory_and_nowhere_else() {
        let pod = |node: &str, uid: &str, volume: &str| ferry_proto::v1::PodVolume {
            node: node.into(),
            pod_uid: uid.into(),
            volume: volume.into(),
        };
        let none = agent(&[], None)
            .request_path("path", "", Some(&pod("n1", "u-1", "pvc-1")))
            .expect_err("no kubelet root");
        assert!(none.to_string().contains("--kubelet-root"), "{none}");
        let mut a = agent(&[], None);
        a.inner = Arc::new(Inner {
            kubelet: crate::config::KubeletRoots::parse(&[
                "/var/lib/kubelet".into(),
                "n2=/env/node2/kubelet".into(),
            ]),
            ..Arc::try_unwrap(a.inner).expect("one owner")
        });
        assert_eq!(
            a.request_path("path", "", Some(&pod("n1", "u-1", "pvc-1")))
                .ok(),
            Some(PathBuf::from(
                "/var/lib/kubelet/pods/u-1/volumes/kubernetes.io~csi/pvc-1/mount"
            ))
        );
        assert_eq!(
            a.request_path("path", "", Some(&pod("n2", "u-2", "pvc-2")))
                .ok(),
            Some(PathBuf::from(
                "/env/node2/kubelet/pods/u-2/volumes/kubernetes.io~csi/pvc-2/mount"
            ))
        );
        for (uid, volume) in [
            ("..", "pvc"),
            ("u", ".."),
            ("u/../..", "pvc"),
            ("u", "a/b"),
            ("", "pvc"),
        ] {
            assert!(
                a.request_path("path", "", Some(&pod("n1", uid, volume)))
                    .is_err(),
                "{uid} {volume}"
            );
        }
        assert!(
            a.request_path("path", "/x", Some(&pod("n1", "u", "v")))
                .is_err()
        );
    }
}
