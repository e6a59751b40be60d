//! A profile's `verifyTls` switch, over gRPC against the real S3 server of the test
//! environment reached through HTTPS with a self-signed certificate (a TLS proxy in this
//! test in front of MinIO): a profile that verifies is refused with an error naming the
//! certificate and the switch; the same location with `verifyTls: false` backs up.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use ferry_agent::{AgentConfig, ProfileSource, status_detail};
use ferry_proto::v1::agent_service_client::AgentServiceClient;
use ferry_proto::v1::{BackupRequest, BackupSummary, ErrorCode, RepositoryRef, backup_event};
use ferry_repo::{InitOptions, Repository};
use rand::RngCore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

fn write_volume(dir: &Path) -> u64 {
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    let mut data = vec![0u8; 300_000];
    rand::rng().fill_bytes(&mut data);
    std::fs::write(dir.join("data.bin"), &data).unwrap();
    std::fs::write(dir.join("conf/app.conf"), b"listen = 5432\n").unwrap();
    data.len() as u64 + 14
}

async fn backup(
    client: &mut AgentServiceClient<Channel>,
    op: &str,
    profile: &str,
    path: &Path,
) -> Result<BackupSummary, Status> {
    let mut stream = client
        .backup(BackupRequest {
            operation_id: op.into(),
            path: path.display().to_string(),
            repository: Some(RepositoryRef {
                profile: profile.into(),
                repository_id: String::new(),
            }),
            ..Default::default()
        })
        .await?
        .into_inner();
    while let Some(event) = stream.message().await? {
        if let Some(backup_event::Event::Done(summary)) = event.event {
            return Ok(summary);
        }
    }
    panic!("backup stream ended without a summary or an error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_s3_endpoint_needs_verify_tls_false_in_the_profile() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().expect("S3 server");
    let upstream = s3
        .endpoint
        .strip_prefix("http://")
        .expect("the test S3 server speaks plain HTTP")
        .to_string();
    let endpoint = ferry_testenv::tls::self_signed_proxy(&upstream)
        .await
        .expect("TLS proxy");

    let root = tempfile::tempdir().unwrap();
    let volumes = root.path().join("volumes");
    let (source, repo, prefix) =
        two_profiles_for_the_tls_endpoint(root.path(), s3, &endpoint).await;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ferry_agent::serve(
        AgentConfig {
            node_name: "node-tls".into(),
            profiles: source,
            allowed_roots: vec![volumes.clone()],
            max_concurrent_operations: 2,
            shutdown_grace: std::time::Duration::from_secs(1),
            volume_root: None,
            kubelet: Default::default(),
            access: ferry_agent::AgentAccess::Unchecked,
        },
        listener,
        shutdown.clone(),
    ));
    let mut client = AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to agent");
    let vol = volumes.join("pvc-1");
    let bytes = write_volume(&vol);

    a_verifying_profile_is_refused_naming_the_switch(&mut client, &vol, &endpoint, s3).await;
    an_unverifying_profile_backs_up_into_the_store(&mut client, &vol, bytes, &repo, s3, &prefix)
        .await;

    shutdown.cancel();
    server.await.expect("join").expect("clean shutdown");
}

/// Profiles `verified` and `selfsigned` (with `verifyTls: false`) under `root/profiles`,
/// for one fresh location behind `endpoint`, and the repository initialised there
/// through the second. The profiles, the repository and the location's prefix.
async fn two_profiles_for_the_tls_endpoint(
    root: &Path,
    s3: &ferry_testenv::S3Info,
    endpoint: &str,
) -> (ProfileSource, Repository, String) {
    let profiles = root.join("profiles");
    std::fs::create_dir_all(&profiles).unwrap();
    let prefix = ferry_testenv::unique_name("agent-tls");
    let url = format!("s3:{endpoint}/{}/{prefix}", s3.bucket);
    let mut key = vec![0u8; 32];
    rand::rng().fill_bytes(&mut key);
    std::fs::write(profiles.join("repo.key"), &key).unwrap();
    // The same location twice: as a profile verifies by default, and switched off.
    for (name, extra) in [("verified", ""), ("selfsigned", "verifyTls: false\n")] {
        std::fs::write(
            profiles.join(format!("{name}.yaml")),
            format!(
                "repository: {url}\nregion: {}\naccessKeyId: {}\nsecretAccessKey: {}\n\
                 keyFile: repo.key\n{extra}",
                s3.region, s3.access_key, s3.secret_key
            ),
        )
        .unwrap();
    }
    let source = ProfileSource::Dir(profiles.clone());
    let insecure = source.get("selfsigned").await.expect("profile");
    assert!(!insecure.verify_tls);
    assert!(source.get("verified").await.expect("profile").verify_tls);
    let repo = Repository::init(
        insecure.backend().expect("backend"),
        &key,
        InitOptions::small_for_tests(),
    )
    .await
    .expect("init the repository through the TLS endpoint");
    (source, repo, prefix)
}

/// Verifying (the default): refused, with the certificate and the switch named, the
/// TLS library's reason kept and no secret shown.
async fn a_verifying_profile_is_refused_naming_the_switch(
    client: &mut AgentServiceClient<Channel>,
    vol: &Path,
    endpoint: &str,
    s3: &ferry_testenv::S3Info,
) {
    let err = backup(client, "tls-verified", "verified", vol)
        .await
        .expect_err("a self-signed certificate must be refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let detail = status_detail(&err).unwrap_or_else(|| panic!("no ErrorDetail in {err:?}"));
    assert_eq!(detail.code, ErrorCode::Unreachable as i32, "{detail:?}");
    assert!(
        detail.message.contains("TLS certificate") && detail.message.contains(endpoint),
        "{}",
        detail.message
    );
    assert!(
        detail
            .message
            .to_lowercase()
            .contains("invalid peer certificate"),
        "the TLS library's reason is kept: {}",
        detail.message
    );
    assert!(
        detail.message.contains("verifyTls: false") && detail.hint.contains("verifyTls"),
        "{detail:?}"
    );
    assert!(
        !detail.message.contains(&s3.secret_key),
        "no secret in the error"
    );
}

/// verifyTls: false: the backup goes through the TLS endpoint into the real store,
/// where both the repository and a direct listing of the bucket see it.
async fn an_unverifying_profile_backs_up_into_the_store(
    client: &mut AgentServiceClient<Channel>,
    vol: &Path,
    bytes: u64,
    repo: &Repository,
    s3: &ferry_testenv::S3Info,
    prefix: &str,
) {
    let summary = backup(client, "tls-insecure", "selfsigned", vol)
        .await
        .expect("backup with verifyTls: false");
    assert_eq!(summary.files_new, 2);
    assert_eq!(summary.bytes_total, bytes);
    assert!(summary.bytes_uploaded > 0);
    let snapshots = repo.snapshot_ids().await.expect("list snapshots");
    assert!(
        snapshots
            .iter()
            .any(|id| id.to_string() == summary.snapshot_id),
        "the snapshot is in the repository"
    );
    let listed = s3
        .client()
        .list_objects_v2()
        .bucket(&s3.bucket)
        .prefix(format!("{prefix}/"))
        .send()
        .await
        .expect("list the bucket directly");
    assert!(
        listed.key_count().unwrap_or_default() > 1,
        "the repository's objects are in MinIO"
    );
}
