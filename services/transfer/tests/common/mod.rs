//! A migration bench on real parts: the test environment's two clusters and MinIO, one
//! in-process agent per cluster, and the transfer service over real gRPC.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry_agent::{AgentConfig, ProfileSource};
use ferry_proto::v1::transfer_service_client::TransferServiceClient;
use ferry_proto::v1::{
    ApplicationSelector, ApplyOptions, ClusterRef, GetJobRequest, GetJobResponse, JobEvent, JobRef,
    JobReport, RepositoryRef, StartExportRequest, StartJobResponse, StartMigrationRequest,
    StartRestoreRequest, VolumeOutcome, WatchJobRequest, cluster_ref, job_event,
};
use ferry_repo::{InitOptions, Repository};
use ferry_transfer::{
    Deps, Handover, ProfileRepositories, StaticAgents, StaticClusters, Transfer, TransferConfig,
};
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const PROFILE: &str = "main";

/// The transfer service's own `volume_root`, under the bench's directory: no agent may
/// write there, and the destination's agent names another root, so data or a
/// hostPath found here would mean the service ignored the agent.
pub const SERVICE_VOLUME_ROOT: &str = "volumes/service-default";

/// One running transfer service.
pub struct Service {
    pub client: TransferServiceClient<Channel>,
    pub transfer: Transfer,
    pub shutdown: CancellationToken,
}

pub struct Bench {
    pub a: Client,
    pub b: Client,
    pub root: tempfile::TempDir,
    pub repository: Repository,
    pub service: Service,
    agents: Vec<CancellationToken>,
    agent_endpoints: (String, String),
    handover: Option<Arc<dyn Handover>>,
    /// The service reviews callers (TokenReview and SubjectAccessReview on the
    /// clusters), with cluster a as its own.
    checks_callers: bool,
}

impl Drop for Bench {
    fn drop(&mut self) {
        self.service.shutdown.cancel();
        for a in &self.agents {
            a.cancel();
        }
    }
}

/// An agent allowed under `allowed`, which creates restored volumes under `volume_root`.
async fn agent(
    root: &Path,
    node: &str,
    allowed: PathBuf,
    volume_root: PathBuf,
) -> (String, CancellationToken) {
    let config = AgentConfig {
        node_name: node.into(),
        profiles: ProfileSource::Dir(root.join("profiles")),
        allowed_roots: vec![allowed],
        max_concurrent_operations: 4,
        shutdown_grace: Duration::from_secs(1),
        volume_root: Some(volume_root),
        kubelet: Default::default(),
        access: ferry_agent::AgentAccess::Unchecked,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(ferry_agent::serve(config, listener, shutdown.clone()));
    (format!("http://{addr}"), shutdown)
}

impl Bench {
    /// A fresh repository under a unique prefix of the test bucket, a source agent
    /// allowed under `root/volumes/src`, a destination agent allowed under and creating
    /// volumes in `root/volumes/dst`, and the transfer service, whose own volume root is
    /// [`SERVICE_VOLUME_ROOT`].
    pub async fn start() -> Bench {
        Bench::start_with(None).await
    }

    /// [`Bench::start`] with a migration token issuer for exports.
    pub async fn start_with(handover: Option<Arc<dyn Handover>>) -> Bench {
        Bench::start_full(handover, false).await
    }

    /// [`Bench::start`] with a service that reviews every caller, as `ferry serve`
    /// does: requests must carry a user's token ([`Bench::as_user`]).
    pub async fn start_checking_callers() -> Bench {
        Bench::start_full(None, true).await
    }

    async fn start_full(handover: Option<Arc<dyn Handover>>, checks_callers: bool) -> Bench {
        let env = ferry_testenv::shared().await.expect("test environment");
        let s3 = env.s3().expect("S3 server");
        let root = tempfile::tempdir().expect("tempdir");
        let profiles = root.path().join("profiles");
        for d in ["profiles", "volumes/src", "volumes/dst", "data"] {
            std::fs::create_dir_all(root.path().join(d)).unwrap();
        }
        let url = format!(
            "s3:{}/{}/{}",
            s3.endpoint,
            s3.bucket,
            ferry_testenv::unique_name("transfer")
        );
        let key = random_bytes(32);
        std::fs::write(profiles.join("main.key"), &key).unwrap();
        std::fs::write(
            profiles.join(format!("{PROFILE}.yaml")),
            format!(
                "repository: {url}\nregion: {}\naccessKeyId: {}\nsecretAccessKey: {}\nkeyFile: main.key\n",
                s3.region, s3.access_key, s3.secret_key
            ),
        )
        .unwrap();
        let backend = ProfileSource::Dir(profiles.clone())
            .get(PROFILE)
            .await
            .unwrap()
            .backend()
            .unwrap();
        // Small chunks, so a 1% change re-uploads about 1%, not a whole 1 MiB chunk.
        let repository = Repository::init(backend, &key, InitOptions::small_for_tests())
            .await
            .expect("init repository");
        // The source's agent names a root of its own too: the service must ask the
        // destination's, and the destination's agent may not write under this one.
        let src_dir = root.path().join("volumes/src");
        let (src, src_stop) = agent(root.path(), "node-a", src_dir.clone(), src_dir).await;
        let dst_dir = root.path().join("volumes/dst");
        let (dst, dst_stop) = agent(root.path(), "node-b", dst_dir.clone(), dst_dir).await;
        let a = env.client("a", "admin").await.unwrap();
        let b = env.client("b", "admin").await.unwrap();
        let service =
            start_service(root.path(), &src, &dst, handover.clone(), checks_callers).await;
        Bench {
            a,
            b,
            root,
            repository,
            service,
            agents: vec![src_stop, dst_stop],
            agent_endpoints: (src, dst),
            handover,
            checks_callers,
        }
    }

    /// Stops the service as if its process died, and starts a new one on the same data
    /// directory.
    pub async fn crash_and_restart(&mut self) {
        self.service.transfer.crash();
        self.service.shutdown.cancel();
        let (src, dst) = self.agent_endpoints.clone();
        self.service = start_service(
            self.root.path(),
            &src,
            &dst,
            self.handover.clone(),
            self.checks_callers,
        )
        .await;
    }

    /// Replaces the destination's agent by one (allowed under `root/volumes/dst` still)
    /// that creates volumes under `volume_root`. The running service keeps the old
    /// endpoint; the next [`Bench::crash_and_restart`] uses the new one.
    pub async fn replace_destination_agent(&mut self, volume_root: PathBuf) {
        self.agents[1].cancel();
        let dir = self.root.path().join("volumes/dst");
        let (dst, stop) = agent(self.root.path(), "node-b", dir, volume_root).await;
        self.agents[1] = stop;
        self.agent_endpoints.1 = dst;
    }

    /// Stops the destination's agent and restarts the service with an endpoint nobody
    /// listens on for it.
    pub async fn lose_destination_agent(&mut self) {
        self.agents[1].cancel();
        let free = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.agent_endpoints.1 = format!("http://{}", free.local_addr().unwrap());
        drop(free);
        self.crash_and_restart().await;
    }

    pub fn src_volume(&self, ns: &str, pvc: &str) -> PathBuf {
        self.root.path().join("volumes/src").join(ns).join(pvc)
    }

    /// Where the destination's agent (as started) creates the volume of a claim.
    pub fn dst_volume(&self, ns: &str, pvc: &str) -> PathBuf {
        self.root.path().join("volumes/dst").join(ns).join(pvc)
    }

    /// A fresh namespace named after `prefix` holding the [`application`] on cluster a,
    /// its storage class on both clusters, and about `bytes` of files in the volume of
    /// claim `data-db-0`: the namespace and the files.
    pub async fn with_application(
        &self,
        prefix: &str,
        bytes: usize,
    ) -> (String, BTreeMap<PathBuf, Vec<u8>>) {
        let ns = ferry_testenv::unique_name(prefix);
        let class = format!("sc-{ns}");
        for c in [&self.a, &self.b] {
            create_cluster::<k8s_openapi::api::storage::v1::StorageClass>(c, storage_class(&class))
                .await;
        }
        let src = self.src_volume(&ns, "data-db-0");
        let files = fill_volume(&src, bytes);
        application(&self.a, &ns, &class, &src).await;
        (ns, files)
    }

    /// The claim's new volume on cluster b is a hostPath under the destination agent's
    /// root, and `files` are restored there byte for byte: that directory.
    pub async fn assert_restored(
        &self,
        files: &BTreeMap<PathBuf, Vec<u8>>,
        ns: &str,
        pvc: &str,
    ) -> PathBuf {
        use k8s_openapi::api::core::v1::PersistentVolume;
        let pv = Api::<PersistentVolume>::all(self.b.clone())
            .get(&format!("ferry-{ns}-{pvc}"))
            .await
            .unwrap();
        let dst = self.dst_volume(ns, pvc);
        assert_eq!(
            pv.spec.unwrap().host_path.unwrap().path,
            dst.display().to_string()
        );
        assert_same(files, &dst);
        dst
    }

    pub fn request(&self, ns: &str) -> StartMigrationRequest {
        StartMigrationRequest {
            source: Some(ClusterRef {
                target: Some(cluster_ref::Target::Context("a".into())),
            }),
            destination: Some(ClusterRef {
                target: Some(cluster_ref::Target::Context("b".into())),
            }),
            application: Some(ApplicationSelector {
                namespace: ns.into(),
                ..Default::default()
            }),
            apply: Some(ApplyOptions {
                start_applications: true,
                ..Default::default()
            }),
            repository: Some(RepositoryRef {
                profile: PROFILE.into(),
                repository_id: String::new(),
            }),
            ..Default::default()
        }
    }

    /// An export of namespace `ns` from cluster a through the bench's profile.
    pub fn export_request(&self, ns: &str) -> StartExportRequest {
        StartExportRequest {
            source: Some(ClusterRef {
                target: Some(cluster_ref::Target::Context("a".into())),
            }),
            application: Some(ApplicationSelector {
                namespace: ns.into(),
                ..Default::default()
            }),
            repository: Some(RepositoryRef {
                profile: PROFILE.into(),
                repository_id: String::new(),
            }),
            ..Default::default()
        }
    }

    /// A restore of `restore_point_id` onto cluster b through the bench's profile,
    /// started.
    pub fn restore_request(&self, restore_point_id: &str) -> StartRestoreRequest {
        StartRestoreRequest {
            destination: Some(ClusterRef {
                target: Some(cluster_ref::Target::Context("b".into())),
            }),
            repository: Some(RepositoryRef {
                profile: PROFILE.into(),
                repository_id: String::new(),
            }),
            restore_point_id: restore_point_id.into(),
            apply: Some(ApplyOptions {
                start_applications: true,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub async fn start_export(&self, req: StartExportRequest) -> String {
        job_id(self.service.client.clone().start_export(req).await)
    }

    pub async fn start_restore(&self, req: StartRestoreRequest) -> String {
        job_id(self.service.client.clone().start_restore(req).await)
    }

    pub async fn start_migration(&self, req: StartMigrationRequest) -> String {
        job_id(self.service.client.clone().start_migration(req).await)
    }

    /// `req` carrying the token of the test environment's `user` on cluster a.
    pub async fn as_user<T>(&self, user: &str, req: T) -> tonic::Request<T> {
        let env = ferry_testenv::shared().await.expect("test environment");
        let token = &env.cluster("a").unwrap().user(user).unwrap().token;
        let mut req = tonic::Request::new(req);
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        req
    }

    /// GetJob: the job and, once it is final, its report.
    pub async fn get_job(&self, id: &str) -> GetJobResponse {
        self.service
            .client
            .clone()
            .get_job(GetJobRequest {
                job: Some(JobRef { id: id.into() }),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Changes about 1% of the bytes of `files` in the source volume of `ns` (a few
    /// 4 KiB pages of the big file), in `files` too.
    pub fn change_one_percent(&self, ns: &str, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let total: usize = files.values().map(Vec::len).sum();
        let big = PathBuf::from("pg/base/1/16384");
        let content = files.get_mut(&big).unwrap();
        let pages = (total / 100) / 4096;
        for i in 0..pages {
            let at = (i * 7919 * 4096) % (content.len() - 4096);
            content[at..at + 4096].copy_from_slice(&random_bytes(4096));
        }
        std::fs::write(self.src_volume(ns, "data-db-0").join(&big), &*content).unwrap();
    }

    /// Watches a job to its end: every event, and the report.
    pub async fn watch(&self, id: &str) -> (Vec<JobEvent>, JobReport) {
        watch_until(&self.service.client, id, |_| false).await.1
    }

    /// Restore point ids of an application in the repository.
    pub async fn restore_points(&self, app: &str) -> Vec<String> {
        let fresh = Repository::open(
            self.repository.backend().clone(),
            &std::fs::read(self.root.path().join("profiles/main.key")).unwrap(),
        )
        .await
        .unwrap();
        fresh
            .restore_point_ids(Some(app))
            .await
            .unwrap()
            .into_iter()
            .map(|(_, id)| id.to_string())
            .collect()
    }
}

async fn start_service(
    root: &Path,
    src: &str,
    dst: &str,
    handover: Option<Arc<dyn Handover>>,
    checks_callers: bool,
) -> Service {
    let mut config = TransferConfig::new(root.join("data"), root.join(SERVICE_VOLUME_ROOT));
    if checks_callers {
        config.access = Some(ferry_transfer::AccessPolicy::new("a"));
    }
    // Configurations, not clients alone: jobs write as their caller over them.
    let env = ferry_testenv::shared().await.expect("test environment");
    let mut clusters = StaticClusters::new();
    for (name, cluster) in [("a", "a"), ("b", "b"), ("local", "a")] {
        let config = env
            .config(cluster, "admin")
            .await
            .expect("admin configuration");
        clusters = clusters.with_config(name, config).expect("client");
    }
    let deps = Deps {
        clusters: Arc::new(clusters),
        agents: Arc::new(StaticAgents::new().with("a", src).with("b", dst)),
        repositories: Arc::new(ProfileRepositories::dir(root.join("profiles"))),
        handover,
    };
    let transfer = Transfer::open(config, deps).await.expect("open transfer");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(ferry_transfer::serve_with(
        transfer.clone(),
        listener,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    let client = TransferServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to transfer service");
    Service {
        client,
        transfer,
        shutdown,
    }
}

/// The id of the job a Start* call started.
fn job_id(answer: Result<tonic::Response<StartJobResponse>, tonic::Status>) -> String {
    answer
        .expect("start the job")
        .into_inner()
        .job
        .expect("job")
        .id
}

/// A second run after [`Bench::change_one_percent`] uploaded about the change: more
/// than nothing and under 5% of the `total` bytes.
pub fn assert_uploaded_about_one_percent(what: &str, vol: &VolumeOutcome, total: u64) {
    let ratio = vol.bytes_uploaded as f64 / total as f64;
    eprintln!(
        "{what}: {} of {total} bytes uploaded ({:.2}%)",
        vol.bytes_uploaded,
        ratio * 100.0
    );
    assert!(vol.bytes_uploaded > 0);
    assert!(
        ratio < 0.05,
        "uploaded {:.2}% after a 1% change",
        ratio * 100.0
    );
}

/// Watches `id` until `stop` says so (returns the events so far and false) or the job
/// ends (events and report, true).
pub async fn watch_until(
    client: &TransferServiceClient<Channel>,
    id: &str,
    mut stop: impl FnMut(&JobEvent) -> bool,
) -> (bool, (Vec<JobEvent>, JobReport)) {
    let mut stream = client
        .clone()
        .watch_job(WatchJobRequest {
            job: Some(JobRef { id: id.into() }),
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("job {id} did not finish in time: {events:#?}"))
            .expect("watch stream")
            .unwrap_or_else(|| panic!("watch of {id} ended without a report: {events:#?}"));
        if let Some(job_event::Event::Report(r)) = &ev.event {
            let r = (**r).clone();
            events.push(ev);
            return (true, (events, r));
        }
        let halt = stop(&ev);
        events.push(ev);
        if halt {
            return (false, (events, JobReport::default()));
        }
    }
}

/// `n` fresh random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    ferry_testenv::random_bytes(n, rand::random())
}

/// Generated files under `dir`: nested directories, text and random data, about
/// `total` bytes in all. Returns relative path -> content.
pub fn fill_volume(dir: &Path, total: usize) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(
        PathBuf::from("conf/app.conf"),
        b"listen = 0.0.0.0:5432\nshared_buffers = 128MB\n".repeat(200),
    );
    files.insert(PathBuf::from("empty"), Vec::new());
    let big = total / 2;
    files.insert(PathBuf::from("pg/base/1/16384"), random_bytes(big));
    let rest = total - big;
    for i in 0..8 {
        files.insert(
            PathBuf::from(format!("pg/wal/{:02}/segment-{i:04}", i % 3)),
            random_bytes(rest / 8),
        );
    }
    for (rel, content) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
    }
    files
}

/// Every file of `files` is in `dir` with the same bytes, and nothing else is.
pub fn assert_same(files: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path) {
    for (rel, content) in files {
        let got = std::fs::read(dir.join(rel))
            .unwrap_or_else(|e| panic!("{} in {}: {e}", rel.display(), dir.display()));
        assert!(got == *content, "{} differs", rel.display());
    }
    let mut count = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                count += 1;
            }
        }
    }
    assert_eq!(count, files.len(), "files in {}", dir.display());
}

pub async fn create_in<K>(client: &Client, ns: &str, v: Value) -> K
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    Api::<K>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {obj:?}: {e}"))
}

pub async fn create_cluster<K>(client: &Client, v: Value) -> K
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(v).unwrap();
    Api::<K>::all(client.clone())
        .create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {obj:?}: {e}"))
}

pub async fn namespace_exists(c: &Client, ns: &str) -> bool {
    use k8s_openapi::api::core::v1::Namespace;
    Api::<Namespace>::all(c.clone())
        .get_opt(ns)
        .await
        .unwrap()
        .is_some()
}

pub async fn deployment(
    c: &Client,
    ns: &str,
    name: &str,
) -> k8s_openapi::api::apps::v1::Deployment {
    Api::namespaced(c.clone(), ns).get(name).await.unwrap()
}

pub fn storage_class(name: &str) -> Value {
    json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": name},
           "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"})
}

/// The application on cluster a: a ConfigMap, a Secret, a Service, a Deployment, a
/// StatefulSet whose claim `data-db-0` is bound to a hostPath volume at `volume`.
pub async fn application(a: &Client, ns: &str, class: &str, volume: &Path) {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{
        ConfigMap, Namespace, PersistentVolume, PersistentVolumeClaim, Secret, Service,
    };
    create_cluster::<Namespace>(
        a,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await;
    create_in::<ConfigMap>(a, ns, json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": ns}, "data": {"greeting": "hello", "db": "db.svc"}}))
    .await;
    create_in::<Secret>(
        a,
        ns,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db-password", "namespace": ns}, "type": "Opaque",
        "stringData": {"password": "s3cret"}}),
    )
    .await;
    create_in::<Service>(
        a,
        ns,
        json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"clusterIP": "None", "selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
    )
    .await;
    create_in::<Deployment>(a, ns, json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": ns},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "example.com/web:1"}]}}}}))
    .await;
    create_in::<StatefulSet>(a, ns, json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": ns},
        "spec": {"replicas": 1, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "db", "image": "example.com/db:1",
                                  "volumeMounts": [{"name": "data", "mountPath": "/var/lib/db"}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"},
                     "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class,
                              "resources": {"requests": {"storage": "1Gi"}}}}]}}))
    .await;
    let pv = format!("{ns}-data-db-0");
    create_cluster::<PersistentVolume>(
        a,
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": pv},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "storageClassName": class, "persistentVolumeReclaimPolicy": "Retain",
                 "hostPath": {"path": volume.display().to_string()},
                 "claimRef": {"namespace": ns, "name": "data-db-0"}}}),
    )
    .await;
    create_in::<PersistentVolumeClaim>(
        a,
        ns,
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data-db-0", "namespace": ns, "labels": {"app": "db"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": class, "volumeName": pv,
                 "resources": {"requests": {"storage": "1Gi"}}}}),
    )
    .await;
    wait_bound(a, ns, "data-db-0").await;
}

pub async fn wait_bound(c: &Client, ns: &str, claim: &str) {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let api = Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns);
    eventually(
        &format!("claim {ns}/{claim} to bind"),
        Duration::from_secs(30),
        || async {
            api.get_opt(claim)
                .await
                .ok()
                .flatten()
                .and_then(|c| c.status?.phase)
                .is_some_and(|p| p == "Bound")
        },
    )
    .await;
}

pub use ferry_testenv::eventually;
