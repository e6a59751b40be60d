//! The harness of the catalog's tests: a catalog served over real gRPC for one cluster
//! of the test environment, with its own secrets namespace, data directory and bucket
//! prefix, and helpers to make Secrets, requests and applications.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_catalog::{CatalogConfig, CatalogService, status_detail};
use ferry_kube::{
    CaptureSpec, Captured, Cluster, RESTORE_POINT_FORMAT, RestorePointManifest, VolumeSnapshot,
};
use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::{
    CreateProfileRequest, ErrorCode, ListProfilesRequest, ProfileKind, RepositoryRef, SecretRef,
    StorageBackend,
};
use ferry_repo::backend::{Backend, S3Backend, S3Options};
use ferry_repo::{BackupOptions, InitOptions, Repository};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PersistentVolumeClaim, Secret};
use kube::Api;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

pub struct Harness {
    pub client: CatalogServiceClient<Channel>,
    pub service: CatalogService,
    pub kube: kube::Client,
    /// The cluster the catalog serves.
    pub cluster: String,
    /// Namespace of this harness's Secrets (the catalog's secrets namespace).
    pub secrets_ns: String,
    pub s3: ferry_testenv::S3Info,
    /// A prefix of the test bucket no other test uses.
    pub prefix: String,
    pub data: tempfile::TempDir,
    pub agent_dir: PathBuf,
    pub shutdown: CancellationToken,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn create_namespace(kube: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": { "name": name }
    }))
    .expect("namespace");
    Api::<Namespace>::all(kube.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create namespace");
}

impl Harness {
    /// A catalog of cluster "a".
    pub async fn start(test: &str) -> Harness {
        Self::start_on("a", test).await
    }

    /// A catalog of `cluster` with its own secrets namespace and data directory.
    pub async fn start_on(cluster: &str, test: &str) -> Harness {
        let env = ferry_testenv::shared().await.expect("test environment");
        let s3 = env.s3().expect("S3 server").clone();
        let kube = env.client(cluster, "admin").await.expect("cluster client");
        let secrets_ns = ferry_testenv::unique_name(&format!("cat-{test}"));
        create_namespace(&kube, &secrets_ns).await;
        let data = tempfile::tempdir().expect("tempdir");
        let agent_dir = data.path().join("agent-profiles");
        let mut config = CatalogConfig::new(kube.clone(), cluster, data.path().join("state"));
        config.secrets_namespace = secrets_ns.clone();
        config.agent_profiles_dir = Some(agent_dir.clone());
        // Cheap KDF: each test opens repositories many times.
        config.init_options = InitOptions::small_for_tests();
        let service = CatalogService::new(config).await.expect("catalog");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        tokio::spawn(ferry_catalog::serve(
            service.clone(),
            listener,
            shutdown.clone(),
        ));
        let client = CatalogServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to catalog");
        Harness {
            client,
            service,
            kube,
            cluster: cluster.to_string(),
            secrets_ns,
            prefix: ferry_testenv::unique_name(&format!("catalog-{test}")),
            s3,
            data,
            agent_dir,
            shutdown,
        }
    }

    pub async fn secret(&self, name: &str, data: &[(&str, &[u8])]) {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        Api::<Secret>::namespaced(self.kube.clone(), &self.secrets_ns)
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }

    /// Creates a profile that must be accepted.
    pub async fn create(&self, req: CreateProfileRequest) -> ferry_proto::v1::Profile {
        self.client
            .clone()
            .create_profile(req)
            .await
            .expect("create profile")
            .into_inner()
            .profile
            .expect("profile")
    }

    /// Replaces the data of Secret `name`.
    pub async fn replace_secret(&self, name: &str, data: &[(&str, &[u8])]) {
        let api = Api::<Secret>::namespaced(self.kube.clone(), &self.secrets_ns);
        let mut secret = api.get(name).await.expect("get Secret");
        secret.data = Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                .collect(),
        );
        api.replace(name, &PostParams::default(), &secret)
            .await
            .expect("replace Secret");
    }

    /// The S3 credentials Secret `s3` and key Secret `key` (with `key_bytes`).
    pub async fn secrets(&self, key_bytes: &[u8]) {
        self.secret(
            "s3",
            &[
                ("access_key_id", self.s3.access_key.as_bytes()),
                ("secret_access_key", self.s3.secret_key.as_bytes()),
            ],
        )
        .await;
        self.secret("key", &[("key", key_bytes)]).await;
    }

    /// An export profile request on this harness's prefix with Secrets `s3` and `key`.
    pub fn request(&self, name: &str, create: bool) -> CreateProfileRequest {
        CreateProfileRequest {
            name: name.into(),
            kind: ProfileKind::Export as i32,
            backend: StorageBackend::S3 as i32,
            endpoint: self.s3.endpoint.clone(),
            bucket: self.s3.bucket.clone(),
            prefix: self.prefix.clone(),
            region: self.s3.region.clone(),
            credentials_secret: Some(SecretRef {
                namespace: String::new(),
                name: "s3".into(),
            }),
            verify_tls: None,
            encryption_key_secret: Some(SecretRef {
                namespace: String::new(),
                name: "key".into(),
            }),
            create_repository: create,
            migration_token: String::new(),
            expected_signer: String::new(),
            unsafe_skip_signer_verification: false,
            namespace: String::new(),
        }
    }

    pub async fn profile_names(&self) -> Vec<String> {
        self.client
            .clone()
            .list_profiles(ListProfilesRequest::default())
            .await
            .expect("list profiles")
            .into_inner()
            .profiles
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    pub fn agent_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.agent_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// Keys in the test bucket under `prefix`.
    pub async fn objects_under(&self, prefix: &str) -> Vec<String> {
        let mut options = S3Options::new(
            Some(self.s3.endpoint.clone()),
            &self.s3.bucket,
            prefix,
            &self.s3.region,
        );
        options.access_key_id = self.s3.access_key.clone();
        options.secret_access_key = self.s3.secret_key.clone();
        S3Backend::new(options)
            .list("")
            .await
            .expect("list the bucket")
            .into_iter()
            .map(|o| o.key)
            .collect()
    }

    pub fn repo(&self, profile: &str) -> Option<RepositoryRef> {
        Some(RepositoryRef {
            profile: profile.into(),
            repository_id: String::new(),
        })
    }
}

/// The status's gRPC code, detail code, and a hint that is not empty.
pub fn expect_error(
    status: &Status,
    code: Code,
    detail: ErrorCode,
) -> ferry_proto::v1::ErrorDetail {
    assert_eq!(status.code(), code, "{status:?}");
    let d = status_detail(status).expect("status carries an ErrorDetail");
    assert_eq!(d.code, detail as i32, "{d:?}");
    assert!(!d.hint.is_empty(), "no hint: {d:?}");
    d
}

/// A small namespace: a ConfigMap and a 1Gi claim.
pub async fn app_namespace(kube: &kube::Client, name: &str) {
    create_namespace(kube, name).await;
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "settings" },
        "data": { "mode": "test" }
    }))
    .expect("configmap");
    Api::<ConfigMap>::namespaced(kube.clone(), name)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create configmap");
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "data" },
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "standard",
            "resources": { "requests": { "storage": "1Gi" } }
        }
    }))
    .expect("claim");
    Api::<PersistentVolumeClaim>::namespaced(kube.clone(), name)
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create claim");
}

pub fn write_files(dir: &Path) {
    std::fs::create_dir_all(dir).expect("volume dir");
    for i in 0..3 {
        std::fs::write(dir.join(format!("file-{i}")), format!("content {i}")).expect("file");
    }
}

/// An application captured and a volume backed up, as an export job does before it
/// writes a restore point.
pub struct Exported {
    /// The profile's repository, opened for the engine.
    pub repo: Repository,
    pub captured: Captured,
    /// The volume snapshot of claim "data".
    pub snapshot_id: String,
}

impl Exported {
    /// Namespace `app` made (see [`app_namespace`]) and captured on the harness's cluster,
    /// and a small directory backed up into profile `profile`'s repository.
    pub async fn new(h: &Harness, profile: &str, app: &str) -> Exported {
        app_namespace(&h.kube, app).await;
        let captured = ferry_kube::capture(
            &Cluster::new(&h.cluster, h.kube.clone()),
            &CaptureSpec::new(app),
        )
        .await
        .expect("capture");
        let repo = h.service.open_repository(profile).await.expect("open");
        let volume = h.data.path().join("volume");
        write_files(&volume);
        let backup = repo
            .backup(&volume, BackupOptions::default())
            .await
            .expect("backup");
        Exported {
            repo,
            captured,
            snapshot_id: backup.snapshot_id.to_hex(),
        }
    }

    /// A restore point manifest of it.
    pub fn manifest(
        &self,
        created_at: &str,
        job: &str,
        tags: BTreeMap<String, String>,
    ) -> RestorePointManifest {
        RestorePointManifest {
            format: RESTORE_POINT_FORMAT,
            created_at: created_at.into(),
            job_id: job.into(),
            tags,
            captured: self.captured.clone(),
            volumes: vec![VolumeSnapshot {
                pvc: "data".into(),
                snapshot_id: self.snapshot_id.clone(),
                bytes: 27,
            }],
        }
    }
}
