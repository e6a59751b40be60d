//! The agent over gRPC, in process, against the real S3 server of the test environment:
//! backup, restore, verify, cancel, errors with details, and draining on shutdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_agent::{AgentConfig, ProfileSource, status_detail};
use ferry_proto::v1::agent_service_client::AgentServiceClient;
use ferry_proto::v1::{
    BackupRequest, BackupSummary, CancelRequest, ErrorCode, GetInfoRequest, Progress,
    RepositoryRef, RestoreRequest, RestoreSummary, VerifyRequest, VerifySummary, backup_event,
    restore_event, verify_event,
};
use ferry_repo::{InitOptions, Repository};
use rand::RngCore;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

struct Harness {
    client: AgentServiceClient<Channel>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), ferry_agent::ServeError>>,
    root: tempfile::TempDir,
    repository_id: String,
    profiles: PathBuf,
}

impl Harness {
    /// A fresh repository under a unique prefix of the test bucket, profiles `main`
    /// (right key) and `stale` (wrong key), and an agent allowed under `root/volumes`.
    async fn start(grace: std::time::Duration) -> Harness {
        let env = ferry_testenv::shared().await.expect("test environment");
        let s3 = env.s3().expect("S3 server");
        let root = tempfile::tempdir().expect("tempdir");
        let profiles = root.path().join("profiles");
        std::fs::create_dir_all(&profiles).expect("profiles dir");
        std::fs::create_dir_all(root.path().join("volumes")).expect("volumes dir");
        let url = format!(
            "s3:{}/{}/{}",
            s3.endpoint,
            s3.bucket,
            ferry_testenv::unique_name("agent")
        );
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        std::fs::write(profiles.join("main.key"), &key).expect("key");
        std::fs::write(profiles.join("stale.key"), b"not the key").expect("key");
        for (name, key_file) in [("main", "main.key"), ("stale", "stale.key")] {
            std::fs::write(
                profiles.join(format!("{name}.yaml")),
                format!(
                    "repository: {url}\nregion: {}\naccessKeyId: {}\nsecretAccessKey: {}\nkeyFile: {key_file}\n",
                    s3.region, s3.access_key, s3.secret_key
                ),
            )
            .expect("profile");
        }
        let source = ProfileSource::Dir(profiles.clone());
        let backend = source
            .get("main")
            .await
            .expect("profile")
            .backend()
            .expect("backend");
        let repo = Repository::init(backend, &key, InitOptions::small_for_tests())
            .await
            .expect("init repository");
        let config = AgentConfig {
            node_name: "node-1".into(),
            profiles: source,
            allowed_roots: vec![root.path().join("volumes")],
            max_concurrent_operations: 2,
            shutdown_grace: grace,
            volume_root: Some(root.path().join("volumes/restored")),
            kubelet: Default::default(),
            access: ferry_agent::AgentAccess::Unchecked,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(ferry_agent::serve(config, listener, shutdown.clone()));
        let client = AgentServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect to agent");
        Harness {
            client,
            shutdown,
            server,
            repository_id: repo.config().id.to_string(),
            root,
            profiles,
        }
    }

    fn volume(&self, name: &str) -> PathBuf {
        self.root.path().join("volumes").join(name)
    }

    fn repo(&self, profile: &str) -> Option<RepositoryRef> {
        Some(RepositoryRef {
            profile: profile.into(),
            repository_id: self.repository_id.clone(),
        })
    }

    /// Starts a full backup of `path` without reading its stream.
    async fn start_backup(
        &self,
        op: &str,
        path: &Path,
    ) -> Result<tonic::Response<tonic::Streaming<ferry_proto::v1::BackupEvent>>, Status> {
        self.client
            .clone()
            .backup(BackupRequest {
                operation_id: op.into(),
                path: path.display().to_string(),
                repository: self.repo("main"),
                ..Default::default()
            })
            .await
    }

    async fn backup(
        &mut self,
        op: &str,
        path: &Path,
        parent: &str,
    ) -> Result<(Vec<Progress>, BackupSummary), Status> {
        let mut stream = self
            .client
            .backup(BackupRequest {
                operation_id: op.into(),
                path: path.display().to_string(),
                repository: self.repo("main"),
                parent_snapshot_id: parent.into(),
                tags: [("pvc".to_string(), "data-db-0".to_string())].into(),
                pod_volume: None,
            })
            .await?
            .into_inner();
        let mut progress = Vec::new();
        while let Some(event) = stream.message().await? {
            match event.event {
                Some(backup_event::Event::Progress(p)) => progress.push(p),
                Some(backup_event::Event::Done(s)) => {
                    assert!(
                        stream.message().await?.is_none(),
                        "nothing after the summary"
                    );
                    return Ok((progress, s));
                }
                None => panic!("empty event"),
            }
        }
        panic!("backup stream ended without a summary or an error")
    }

    async fn restore(
        &mut self,
        op: &str,
        snapshot: &str,
        target: &Path,
    ) -> Result<(Vec<Progress>, RestoreSummary), Status> {
        let mut stream = self
            .client
            .restore(RestoreRequest {
                operation_id: op.into(),
                repository: self.repo("main"),
                snapshot_id: snapshot.into(),
                target_path: target.display().to_string(),
                delete_extraneous: false,
                target_pod_volume: None,
                overwrite_changes: false,
            })
            .await?
            .into_inner();
        let mut progress = Vec::new();
        while let Some(event) = stream.message().await? {
            match event.event {
                Some(restore_event::Event::Progress(p)) => progress.push(p),
                Some(restore_event::Event::Done(s)) => return Ok((progress, s)),
                None => panic!("empty event"),
            }
        }
        panic!("restore stream ended without a summary or an error")
    }

    async fn verify(
        &mut self,
        op: &str,
        snapshot: &str,
        read_data: bool,
    ) -> Result<VerifySummary, Status> {
        let mut stream = self
            .client
            .verify(VerifyRequest {
                operation_id: op.into(),
                repository: self.repo("main"),
                snapshot_id: snapshot.into(),
                read_data,
            })
            .await?
            .into_inner();
        while let Some(event) = stream.message().await? {
            if let Some(verify_event::Event::Done(s)) = event.event {
                return Ok(s);
            }
        }
        panic!("verify stream ended without a summary or an error")
    }
}

/// 128 MiB of random data: a backup long enough to interrupt.
fn big_volume(h: &Harness) -> PathBuf {
    let vol = h.volume("big");
    std::fs::create_dir_all(&vol).expect("mkdir");
    for i in 0..16 {
        std::fs::write(vol.join(format!("f{i}")), random_bytes(8 << 20)).expect("write");
    }
    vol
}

/// `n` fresh random bytes.
fn random_bytes(n: usize) -> Vec<u8> {
    ferry_testenv::random_bytes(n, rand::random())
}

/// A small volume: text, random data, a nested directory and a symlink.
fn fill_volume(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    files.insert(PathBuf::from("pg/base/1.dat"), random_bytes(3 << 20));
    files.insert(
        PathBuf::from("pg/postgresql.conf"),
        b"shared_buffers = 128MB\n".repeat(2000),
    );
    files.insert(PathBuf::from("empty"), Vec::new());
    for i in 0..40 {
        files.insert(
            PathBuf::from(format!("wal/{i:04}")),
            random_bytes(10_000 + i * 97),
        );
    }
    for (rel, content) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write");
    }
    std::os::unix::fs::symlink("pg/postgresql.conf", dir.join("conf")).expect("symlink");
    files
}

fn assert_same(files: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path) {
    for (rel, content) in files {
        let got = std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
        assert!(got == *content, "{} differs after restore", rel.display());
    }
    assert_eq!(
        std::fs::read_link(dir.join("conf")).expect("symlink restored"),
        PathBuf::from("pg/postgresql.conf")
    );
}

fn detail_code(status: &Status) -> ErrorCode {
    let detail = status_detail(status).unwrap_or_else(|| panic!("no ErrorDetail in {status:?}"));
    assert!(!detail.hint.is_empty(), "detail without a hint: {detail:?}");
    ErrorCode::try_from(detail.code).expect("known code")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restore_and_verify_over_grpc() {
    let mut h = Harness::start(std::time::Duration::from_secs(5)).await;
    let vol = h.volume("pvc-1");
    let files = fill_volume(&vol);
    let total: u64 =
        files.values().map(|c| c.len() as u64).sum::<u64>() + "pg/postgresql.conf".len() as u64;

    let (progress, first) = h.backup("b1", &vol, "").await.expect("first backup");
    assert_eq!(first.files_new, files.len() as u64);
    assert_eq!(first.files_unmodified, 0);
    assert_eq!(
        first.bytes_total,
        total - "pg/postgresql.conf".len() as u64,
        "symlinks carry no bytes"
    );
    assert!(first.bytes_uploaded > 0 && first.bytes_uploaded < first.bytes_total + (1 << 20));
    assert!(first.duration.is_some() && first.started_at.is_some());
    if let Some(last) = progress.last() {
        assert_eq!(last.step, "backup");
        assert!(last.bytes_read <= first.bytes_total);
    }

    // Nothing changed: nothing read, nearly nothing uploaded (one tree and manifest).
    let (_, second) = h
        .backup("b2", &vol, &first.snapshot_id)
        .await
        .expect("second backup");
    assert_eq!(second.files_unmodified, files.len() as u64);
    assert_eq!(second.bytes_read, 0);
    assert_eq!(second.chunks_new, 0);

    // One file changed, one added.
    std::fs::write(vol.join("wal/0003"), random_bytes(10_291)).expect("rewrite");
    std::fs::write(vol.join("wal/new"), b"fresh").expect("add");
    let (_, third) = h
        .backup("b3", &vol, &second.snapshot_id)
        .await
        .expect("third backup");
    assert_eq!((third.files_changed, third.files_new), (1, 1));
    assert_eq!(third.files_unmodified, files.len() as u64 - 1);

    let target = h.volume("restored");
    let (_, restored) = h
        .restore("r1", &first.snapshot_id, &target)
        .await
        .expect("restore");
    assert_same(&files, &target);
    assert_eq!(restored.files_restored, files.len() as u64);
    assert_eq!(restored.bytes_written, first.bytes_total);

    let verified = h
        .verify("v1", &third.snapshot_id, true)
        .await
        .expect("verify");
    assert!(verified.ok, "problems: {:?}", verified.problems);
    assert!(verified.chunks_checked > 0 && verified.bytes_read > 0);

    let info = h
        .client
        .get_info(GetInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.node_name, "node-1");
    assert_eq!(
        info.volume_root,
        h.root.path().join("volumes/restored").display().to_string()
    );
    assert_eq!(info.running_operations, 0);
    assert!(info.capabilities.iter().any(|c| c == "s3"));

    h.shutdown.cancel();
    h.server.await.expect("join").expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_names_a_damaged_pack_and_restore_fails_cleanly() {
    let mut h = Harness::start(std::time::Duration::from_secs(5)).await;
    let vol = h.volume("pvc-2");
    fill_volume(&vol);
    let (_, first) = h.backup("b", &vol, "").await.expect("backup");

    // Damage one pack in the bucket: flip a byte in the middle.
    let env = ferry_testenv::shared().await.expect("env");
    let s3 = env.s3().expect("s3");
    let client = s3.client();
    let text = std::fs::read_to_string(h.profiles.join("main.yaml")).expect("profile");
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("repository: "))
        .and_then(|u| u.rsplit('/').next())
        .expect("prefix")
        .to_string();
    let listed = client
        .list_objects_v2()
        .bucket(&s3.bucket)
        .prefix(format!("{prefix}/packs/"))
        .send()
        .await
        .expect("list packs");
    let biggest = listed
        .contents()
        .iter()
        .max_by_key(|o| o.size().unwrap_or(0))
        .and_then(|o| o.key())
        .expect("a pack")
        .to_string();
    let mut body = client
        .get_object()
        .bucket(&s3.bucket)
        .key(&biggest)
        .send()
        .await
        .expect("get pack")
        .body
        .collect()
        .await
        .expect("read pack")
        .to_vec();
    let mid = body.len() / 2;
    body[mid] ^= 0x40;
    client
        .put_object()
        .bucket(&s3.bucket)
        .key(&biggest)
        .body(body.into())
        .send()
        .await
        .expect("put damaged pack");
    let pack_id = biggest.rsplit('/').next().expect("id").to_string();

    let structural = h
        .verify("v0", &first.snapshot_id, false)
        .await
        .expect("verify");
    assert!(
        structural.ok,
        "a flipped byte keeps the size: only read_data can see it"
    );
    let verified = h
        .verify("v1", &first.snapshot_id, true)
        .await
        .expect("verify");
    assert!(!verified.ok);
    assert!(
        verified
            .problems
            .iter()
            .any(|p| p.message.contains(&pack_id) && p.code == ErrorCode::Integrity as i32),
        "no problem names pack {pack_id}: {:?}",
        verified.problems
    );

    let target = h.volume("restore-damaged");
    let err = h
        .restore("r", &first.snapshot_id, &target)
        .await
        .expect_err("restore of a damaged snapshot must fail");
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert_eq!(detail_code(&err), ErrorCode::Integrity);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_backup_and_leaves_no_snapshot() {
    let mut h = Harness::start(std::time::Duration::from_secs(5)).await;
    let vol = big_volume(&h);
    let mut stream = h
        .start_backup("long", &vol)
        .await
        .expect("start")
        .into_inner();
    // Wait for the backup to be under way, then cancel it from another call.
    let first = stream.message().await.expect("stream").expect("an event");
    assert!(matches!(
        first.event,
        Some(backup_event::Event::Progress(_))
    ));
    let again = h
        .start_backup("long", &vol)
        .await
        .expect_err("same id twice");
    assert_eq!(again.code(), Code::AlreadyExists);
    let cancelled = h
        .client
        .cancel(CancelRequest {
            operation_id: "long".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert!(cancelled.cancelled);
    let end = loop {
        match stream.message().await {
            Ok(Some(e)) => assert!(
                !matches!(e.event, Some(backup_event::Event::Done(_))),
                "a cancelled backup must not finish"
            ),
            Ok(None) => panic!("stream ended without the cancellation status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Cancelled, "{end:?}");
    let again = h
        .client
        .cancel(CancelRequest {
            operation_id: "long".into(),
        })
        .await
        .expect("cancel")
        .into_inner();
    assert!(!again.cancelled, "finished operations are not cancellable");

    let profile = ProfileSource::Dir(h.profiles.clone())
        .get("main")
        .await
        .expect("profile");
    let repo = profile.open("").await.expect("open");
    assert!(
        repo.snapshots().await.expect("list").is_empty(),
        "no snapshot after cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_codes_details_and_hints() {
    let mut h = Harness::start(std::time::Duration::from_secs(5)).await;
    let vol = h.volume("pvc-3");
    fill_volume(&vol);
    bad_backup_requests_get_codes_and_details(&h, &vol).await;

    let e = h
        .verify("v", &"ab".repeat(32), false)
        .await
        .expect_err("unknown snapshot");
    assert_eq!(
        (e.code(), detail_code(&e)),
        (Code::NotFound, ErrorCode::NotFound)
    );

    let (busy, snapshot_id) = restore_over_data_needs_delete_extraneous(&mut h, &vol).await;
    a_changed_destination_is_refused_unless_overwritten(&h, &busy, &snapshot_id).await;
}

/// Backups of `vol` that name an unknown profile, a profile with the wrong key, another
/// repository, a relative, forbidden or missing path, or no operation id: each refused
/// with its code and detail.
async fn bad_backup_requests_get_codes_and_details(h: &Harness, vol: &Path) {
    let base = BackupRequest {
        operation_id: "x".into(),
        path: vol.display().to_string(),
        repository: h.repo("main"),
        ..Default::default()
    };
    let call = |req: BackupRequest| {
        let mut client = h.client.clone();
        async move {
            let mut stream = client.backup(req).await?.into_inner();
            while stream.message().await?.is_some() {}
            Ok::<(), Status>(())
        }
    };

    let e = call(BackupRequest {
        repository: Some(RepositoryRef {
            profile: "nope".into(),
            ..Default::default()
        }),
        ..base.clone()
    })
    .await
    .expect_err("unknown profile");
    assert_eq!(
        (e.code(), detail_code(&e)),
        (Code::NotFound, ErrorCode::NotFound)
    );
    assert!(e.message().contains("nope"), "{e:?}");

    let e = call(BackupRequest {
        repository: h.repo("stale"),
        ..base.clone()
    })
    .await
    .expect_err("wrong key");
    assert_eq!(
        (e.code(), detail_code(&e)),
        (Code::FailedPrecondition, ErrorCode::WrongKey)
    );

    let e = call(BackupRequest {
        repository: Some(RepositoryRef {
            profile: "main".into(),
            repository_id: "0".repeat(64),
        }),
        ..base.clone()
    })
    .await
    .expect_err("other repository");
    assert!(e.message().contains("expects"), "{e:?}");

    let e = call(BackupRequest {
        path: "relative/dir".into(),
        ..base.clone()
    })
    .await
    .expect_err("relative path");
    assert_eq!(
        (e.code(), detail_code(&e)),
        (Code::InvalidArgument, ErrorCode::InvalidArgument)
    );

    let e = call(BackupRequest {
        path: "/etc".into(),
        ..base.clone()
    })
    .await
    .expect_err("outside the allowed roots");
    assert_eq!(
        (e.code(), detail_code(&e)),
        (Code::PermissionDenied, ErrorCode::PermissionDenied)
    );

    let e = call(BackupRequest {
        path: h.volume("missing").display().to_string(),
        ..base.clone()
    })
    .await
    .expect_err("missing volume");
    assert_eq!(detail_code(&e), ErrorCode::Volume);

    let e = call(BackupRequest {
        operation_id: String::new(),
        ..base.clone()
    })
    .await
    .expect_err("no operation id");
    assert_eq!(e.code(), Code::InvalidArgument);
}

/// A restore of `snapshot_id` (by a 12-character prefix) into `busy`, emptying what is
/// not in the snapshot when `delete_extraneous` is set.
fn restore_over(
    h: &Harness,
    snapshot_id: &str,
    busy: &Path,
    op: &str,
    overwrite_changes: bool,
) -> RestoreRequest {
    RestoreRequest {
        operation_id: op.into(),
        repository: h.repo("main"),
        snapshot_id: snapshot_id[..12].into(),
        target_path: busy.display().to_string(),
        delete_extraneous: true,
        target_pod_volume: None,
        overwrite_changes,
    }
}

/// Reads a restore's stream to its end: `Ok` once it finished, its error otherwise.
async fn finish(mut stream: tonic::Streaming<ferry_proto::v1::RestoreEvent>) -> Result<(), Status> {
    while stream.message().await?.is_some() {}
    Ok::<_, Status>(())
}

/// Restoring over existing data is refused unless delete_extraneous empties it. The
/// restored directory and the snapshot it holds.
async fn restore_over_data_needs_delete_extraneous(
    h: &mut Harness,
    vol: &Path,
) -> (PathBuf, String) {
    let (_, done) = h.backup("ok", vol, "").await.expect("backup");
    let busy = h.volume("busy");
    std::fs::create_dir_all(&busy).expect("mkdir");
    std::fs::write(busy.join("old"), b"old").expect("write");
    h.restore("r1", &done.snapshot_id, &busy)
        .await
        .expect_err("non-empty target");
    let stream = h
        .client
        .clone()
        .restore(restore_over(h, &done.snapshot_id, &busy, "r2", false))
        .await;
    finish(stream.expect("restore").into_inner())
        .await
        .expect("restore with delete_extraneous");
    assert!(!busy.join("old").exists(), "extraneous file removed");
    assert!(busy.join("pg/postgresql.conf").exists());
    (busy, done.snapshot_id)
}

/// Someone writes into the restored volume: the next restore over it is refused,
/// naming the file, and nothing changes; asked to, it overwrites.
async fn a_changed_destination_is_refused_unless_overwritten(
    h: &Harness,
    busy: &Path,
    snapshot_id: &str,
) {
    let over = |op: &str, overwrite_changes: bool| {
        restore_over(h, snapshot_id, busy, op, overwrite_changes)
    };
    std::fs::write(
        busy.join("pg/postgresql.conf"),
        b"edited on the destination",
    )
    .expect("edit");
    let refused = match h.client.clone().restore(over("r3", false)).await {
        Ok(stream) => finish(stream.into_inner()).await.expect_err("refused"),
        Err(status) => status,
    };
    assert_eq!(
        (refused.code(), detail_code(&refused)),
        (Code::FailedPrecondition, ErrorCode::Conflict),
        "{refused:?}"
    );
    assert!(
        refused.message().contains("pg/postgresql.conf"),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read(busy.join("pg/postgresql.conf")).expect("read"),
        b"edited on the destination"
    );
    let stream = h.client.clone().restore(over("r4", true)).await;
    finish(stream.expect("restore").into_inner())
        .await
        .expect("restore overwriting the destination's change");
    assert_ne!(
        std::fs::read(busy.join("pg/postgresql.conf")).expect("read"),
        b"edited on the destination"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_operations_after_the_grace_period() {
    let h = Harness::start(std::time::Duration::from_millis(200)).await;
    let vol = big_volume(&h);
    let mut stream = h
        .start_backup("during-shutdown", &vol)
        .await
        .expect("start")
        .into_inner();
    stream
        .message()
        .await
        .expect("stream")
        .expect("first event");
    h.shutdown.cancel();
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), Code::Cancelled, "{end:?}");
    tokio::time::timeout(std::time::Duration::from_secs(30), h.server)
        .await
        .expect("server stops after draining")
        .expect("join")
        .expect("clean shutdown");
}
