//! The catalog over real gRPC, against cluster "a" and the S3 server of the test
//! environment: profiles with their Secrets and agent files, every bad input, restore
//! points written by the engine and read back through the API, the index rebuilt, and
//! the cluster's applications.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{Exported, Harness, app_namespace, expect_error};
use ferry_proto::v1::{
    CheckProfileRequest, CreateProfileRequest, DeleteProfileRequest, ErrorCode, GetProfileRequest,
    GetRestorePointRequest, ListApplicationsRequest, ListProfilesRequest, ListRestorePointsRequest,
    ProfileKind, RebuildIndexRequest, RepositoryRef, SecretRef, StorageBackend,
    rebuild_index_event,
};
use tonic::Code;

/// The agent's file: mode 0600, and the agent itself opens the repository with it;
/// returns its path.
async fn the_agent_file_opens_the_repository(
    h: &Harness,
    key: &[u8],
    repository_id: &str,
) -> PathBuf {
    let file = h.agent_dir.join("prod.yaml");
    let mode = std::fs::metadata(&file)
        .expect("agent file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).expect("read agent file");
    let expected_url = format!("s3:{}/{}/{}", h.s3.endpoint, h.s3.bucket, h.prefix);
    assert!(text.contains(&expected_url), "{text}");
    assert!(
        text.contains(&format!("accessKeyId: {}", h.s3.access_key)),
        "{text}"
    );
    let agent_profile = ferry_profile::ProfileSource::Dir(h.agent_dir.clone())
        .get("prod")
        .await
        .expect("the agent reads the file");
    assert_eq!(agent_profile.key, key);
    agent_profile
        .open(repository_id)
        .await
        .expect("the agent opens the repository with it");

    file
}

/// ListProfiles pages, and filters by kind.
async fn profiles_are_paged_and_listed_by_kind(h: &Harness) {
    let mut client = h.client.clone();
    let first = client
        .list_profiles(ListProfilesRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("page 1")
        .into_inner();
    assert_eq!(first.profiles.len(), 1);
    assert_eq!(first.profiles[0].name, "prod");
    let second = client
        .list_profiles(ListProfilesRequest {
            page_size: 1,
            page_token: first.next_page_token.clone(),
            ..Default::default()
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.profiles.len(), 1);
    assert_eq!(second.profiles[0].name, "prod-mirror");
    assert!(second.next_page_token.is_empty());
    let exports = client
        .list_profiles(ListProfilesRequest {
            kind: ProfileKind::Export as i32,
            ..Default::default()
        })
        .await
        .expect("by kind")
        .into_inner();
    assert_eq!(exports.profiles.len(), 1);
}

/// A directory repository: the agent file names the directory and holds no S3 keys.
async fn a_directory_profile_names_its_directory(h: &Harness) {
    let mut client = h.client.clone();
    let repos = h.data.path().join("repos");
    let local = client
        .create_profile(CreateProfileRequest {
            name: "local".into(),
            backend: StorageBackend::Local as i32,
            endpoint: String::new(),
            bucket: repos.display().to_string(),
            prefix: "team/app".into(),
            region: String::new(),
            credentials_secret: None,
            ..h.request("local", true)
        })
        .await
        .expect("local profile")
        .into_inner();
    assert!(local.repository_created);
    assert!(repos.join("team/app/config").is_file());
    let text = std::fs::read_to_string(h.agent_dir.join("local.yaml")).expect("agent file");
    assert!(
        text.contains(&format!("repository: {}/team/app", repos.display())),
        "{text}"
    );
    assert!(!text.contains("accessKeyId"), "{text}");
    ferry_profile::ProfileSource::Dir(h.agent_dir.clone())
        .get("local")
        .await
        .expect("the agent reads it")
        .open("")
        .await
        .expect("the agent opens the directory repository");
    client
        .delete_profile(DeleteProfileRequest {
            name: "local".into(),
        })
        .await
        .expect("delete local");
}

#[tokio::test]
async fn profiles_are_created_listed_and_deleted_with_their_agent_file() {
    let h = Harness::start("lifecycle").await;
    let key = b"the lifecycle test's repository key".to_vec();
    h.secrets(&key).await;
    let mut client = h.client.clone();

    let created = client
        .create_profile(h.request("prod", true))
        .await
        .expect("create")
        .into_inner();
    assert!(created.repository_created);
    let profile = created.profile.expect("profile");
    assert_eq!(profile.repository_id.len(), 64);
    assert!(profile.verify_tls, "TLS verification is on by default");
    assert_eq!(
        profile
            .credentials_secret
            .as_ref()
            .map(|s| s.namespace.as_str()),
        Some(h.secrets_ns.as_str()),
        "an empty Secret namespace resolves to the catalog's"
    );

    let file = the_agent_file_opens_the_repository(&h, &key, &profile.repository_id).await;

    // A second profile on the same location opens the repository instead of creating it.
    let mut import = h.request("prod-mirror", false);
    import.kind = ProfileKind::Migration as i32;
    let mirror = client
        .create_profile(import)
        .await
        .expect("second profile")
        .into_inner();
    assert!(!mirror.repository_created);
    assert_eq!(
        mirror.profile.map(|p| p.repository_id),
        Some(profile.repository_id.clone())
    );

    let got = client
        .get_profile(GetProfileRequest {
            name: "prod".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .profile
        .expect("profile");
    assert_eq!(got, profile);

    profiles_are_paged_and_listed_by_kind(&h).await;
    a_directory_profile_names_its_directory(&h).await;

    // In-process use by the transfer service.
    let repo = h.service.open_repository("prod").await.expect("open");
    assert_eq!(repo.config().id.to_string(), profile.repository_id);

    client
        .delete_profile(DeleteProfileRequest {
            name: "prod".into(),
        })
        .await
        .expect("delete");
    assert!(!file.exists(), "the agent file goes with the profile");
    let err = client
        .get_profile(GetProfileRequest {
            name: "prod".into(),
        })
        .await
        .expect_err("deleted");
    let d = expect_error(&err, Code::NotFound, ErrorCode::NotFound);
    assert_eq!(d.cluster, "a");
    let err = client
        .delete_profile(DeleteProfileRequest {
            name: "prod".into(),
        })
        .await
        .expect_err("deleted twice");
    expect_error(&err, Code::NotFound, ErrorCode::NotFound);
    assert_eq!(h.profile_names().await, vec!["prod-mirror".to_string()]);
    assert_eq!(h.agent_files(), vec!["prod-mirror.yaml".to_string()]);
}

/// CreateProfile refuses Secrets that are missing, lack their keys or hold the wrong
/// repository key.
async fn refused_for_its_secrets(h: &Harness) {
    let create = |req: CreateProfileRequest| {
        let mut client = h.client.clone();
        async move { client.create_profile(req).await.expect_err("must fail") }
    };

    // The credentials Secret is missing.
    let mut req = h.request("missing-secret", true);
    req.prefix = format!("{}-other", h.prefix);
    req.credentials_secret = Some(SecretRef {
        namespace: String::new(),
        name: "absent".into(),
    });
    let d = expect_error(
        &create(req).await,
        Code::FailedPrecondition,
        ErrorCode::NotFound,
    );
    assert_eq!(d.cluster, "a");
    let object = d.object.expect("names the Secret");
    assert_eq!(
        (object.kind.as_str(), object.name.as_str()),
        ("Secret", "absent")
    );
    assert_eq!(object.namespace, h.secrets_ns);

    // The credentials Secret lacks its keys.
    let mut req = h.request("empty-secret", true);
    req.credentials_secret = Some(SecretRef {
        namespace: String::new(),
        name: "no-keys".into(),
    });
    let d = expect_error(
        &create(req).await,
        Code::FailedPrecondition,
        ErrorCode::InvalidArgument,
    );
    assert!(d.message.contains("access_key_id"), "{}", d.message);

    // The wrong key for the existing repository.
    let mut req = h.request("wrong-key", false);
    req.encryption_key_secret = Some(SecretRef {
        namespace: String::new(),
        name: "wrong-key".into(),
    });
    let d = expect_error(
        &create(req).await,
        Code::FailedPrecondition,
        ErrorCode::WrongKey,
    );
    assert!(d.message.contains("wrong-key"), "{}", d.message);
}

/// CreateProfile refuses a missing bucket, an empty location without
/// create_repository, an endpoint that does not answer or is no URL, and credentials
/// the store does not know.
async fn refused_for_its_location(h: &Harness) {
    let create = |req: CreateProfileRequest| {
        let mut client = h.client.clone();
        async move { client.create_profile(req).await.expect_err("must fail") }
    };

    // A bucket that does not exist.
    let mut req = h.request("no-bucket", true);
    req.bucket = "ferry-no-such-bucket".into();
    let d = expect_error(
        &create(req).await,
        Code::FailedPrecondition,
        ErrorCode::NotFound,
    );
    assert!(d.message.contains("ferry-no-such-bucket"), "{}", d.message);

    // Nothing at the location, and no create_repository.
    let mut req = h.request("no-repo", false);
    req.prefix = format!("{}-empty", h.prefix);
    let d = expect_error(
        &create(req).await,
        Code::FailedPrecondition,
        ErrorCode::NotFound,
    );
    assert!(d.hint.contains("create_repository"), "{}", d.hint);

    // An endpoint nothing listens on, and one that is not a URL.
    // A port that was free a moment ago: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut req = h.request("unreachable", true);
    req.endpoint = format!("http://127.0.0.1:{port}");
    expect_error(
        &create(req).await,
        Code::Unavailable,
        ErrorCode::Unreachable,
    );
    let mut req = h.request("bad-endpoint", true);
    req.endpoint = "minio:9000/bucket".into();
    expect_error(
        &create(req).await,
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
    );

    // Credentials the store does not know.
    h.secret(
        "bad-creds",
        &[("accessKeyId", b"nobody"), ("secretAccessKey", b"nothing")],
    )
    .await;
    let mut req = h.request("bad-creds", true);
    req.credentials_secret = Some(SecretRef {
        namespace: String::new(),
        name: "bad-creds".into(),
    });
    expect_error(
        &create(req).await,
        Code::PermissionDenied,
        ErrorCode::PermissionDenied,
    );
}

#[tokio::test]
async fn bad_inputs_fail_clearly_and_store_nothing() {
    let h = Harness::start("bad").await;
    h.secrets(b"the right key").await;
    h.secret("wrong-key", &[("key", b"some other key")]).await;
    h.secret("no-keys", &[("unrelated", b"x")]).await;
    let mut client = h.client.clone();
    client
        .create_profile(h.request("good", true))
        .await
        .expect("the one good profile");

    let create = |req: CreateProfileRequest| {
        let mut client = h.client.clone();
        async move { client.create_profile(req).await.expect_err("must fail") }
    };

    refused_for_its_secrets(&h).await;
    refused_for_its_location(&h).await;

    // An import profile with write access, and one that asks to create a repository.
    let mut req = h.request("import-rw", false);
    req.kind = ProfileKind::Import as i32;
    expect_error(
        &create(req).await,
        Code::FailedPrecondition,
        ErrorCode::PermissionDenied,
    );
    let mut req = h.request("import-create", true);
    req.kind = ProfileKind::Import as i32;
    expect_error(
        &create(req).await,
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
    );

    // The same name again.
    let d = expect_error(
        &create(h.request("good", true)).await,
        Code::AlreadyExists,
        ErrorCode::AlreadyExists,
    );
    assert!(d.message.contains("good"), "{}", d.message);

    assert_eq!(h.profile_names().await, vec!["good".to_string()]);
    assert_eq!(h.agent_files(), vec!["good.yaml".to_string()]);
    for prefix in [format!("{}-other", h.prefix), format!("{}-empty", h.prefix)] {
        assert!(
            h.objects_under(&prefix).await.is_empty(),
            "nothing was written under {prefix}"
        );
    }
}

/// Every file under `dir`, recursively, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out
}

#[tokio::test]
async fn check_profile_proves_reading_and_writing_and_names_what_fails() {
    let h = Harness::start("check").await;
    let key = b"the check test's repository key";
    h.secrets(key).await;
    let good = h.create(h.request("good", true)).await;
    let check = |name: &str, write: bool| {
        let mut client = h.client.clone();
        let req = CheckProfileRequest {
            name: name.into(),
            write,
        };
        async move { client.check_profile(req).await.map(|r| r.into_inner()) }
    };

    // A working export profile: readable and writable, and the probe is gone again.
    let r = check("good", true).await.expect("check good");
    assert_eq!(r.repository_id, good.repository_id);
    assert!(r.readable && r.writable, "{r:?}");
    assert!(r.message.contains("probe"), "{}", r.message);
    assert!(
        r.message.contains(&h.prefix),
        "names the location: {}",
        r.message
    );
    let probes = h.objects_under(&format!("{}/probes", h.prefix)).await;
    assert!(probes.is_empty(), "probe objects left behind: {probes:?}");
    let r = check("good", false).await.expect("read-only check");
    assert!(r.readable && !r.writable, "{r:?}");

    // An import profile is never written to, even when asked. (S3 import profiles with
    // read-only credentials: tests/migration_token.rs; the rule is the same for a
    // directory.)
    let dir = h.data.path().join("local-repo");
    let mut export = h.request("local-export", true);
    export.backend = StorageBackend::Local as i32;
    export.endpoint.clear();
    export.region.clear();
    export.prefix.clear();
    export.credentials_secret = None;
    export.bucket = dir.display().to_string();
    let exported = h.create(export.clone()).await;
    let mut import = export;
    import.name = "local-import".into();
    import.kind = ProfileKind::Import as i32;
    import.create_repository = false;
    h.create(import).await;
    let before = files_under(&dir);
    let r = check("local-import", true).await.expect("check import");
    assert_eq!(r.repository_id, exported.repository_id);
    assert!(r.readable && !r.writable, "{r:?}");
    assert!(r.message.contains("import"), "{}", r.message);
    assert_eq!(
        files_under(&dir),
        before,
        "the import check wrote something"
    );
    let r = check("local-export", true)
        .await
        .expect("check local export");
    assert!(r.writable, "{r:?}");
    assert_eq!(files_under(&dir), before, "the probe was not removed");

    // No such profile.
    let d = expect_error(
        &check("absent", true).await.expect_err("unknown profile"),
        Code::NotFound,
        ErrorCode::NotFound,
    );
    assert!(d.message.contains("\"absent\""), "{}", d.message);
    assert_eq!(d.cluster, "a");

    // Secrets changed behind the profile's back: a key that no longer opens the
    // repository, and credentials the store refuses.
    h.secret("key2", &[("key", key)]).await;
    h.secret(
        "s3b",
        &[
            ("access_key_id", h.s3.access_key.as_bytes()),
            ("secret_access_key", h.s3.secret_key.as_bytes()),
        ],
    )
    .await;
    let mut rekeyed = h.request("rekeyed", false);
    rekeyed.encryption_key_secret = Some(SecretRef {
        namespace: String::new(),
        name: "key2".into(),
    });
    rekeyed.credentials_secret = Some(SecretRef {
        namespace: String::new(),
        name: "s3b".into(),
    });
    h.create(rekeyed).await;
    h.replace_secret("key2", &[("key", b"not the key")]).await;
    let d = expect_error(
        &check("rekeyed", false).await.expect_err("wrong key"),
        Code::FailedPrecondition,
        ErrorCode::WrongKey,
    );
    assert!(d.message.contains("rekeyed"), "{}", d.message);
    h.replace_secret("key2", &[("key", key)]).await;
    h.replace_secret(
        "s3b",
        &[
            ("access_key_id", b"nobody"),
            ("secret_access_key", b"nothing"),
        ],
    )
    .await;
    let d = expect_error(
        &check("rekeyed", true)
            .await
            .expect_err("credentials refused"),
        Code::PermissionDenied,
        ErrorCode::PermissionDenied,
    );
    assert!(d.message.contains("rekeyed"), "{}", d.message);
}

/// A listed restore point carries what the export recorded, but not its volumes.
fn newest_is_listed_as_exported(
    first: &ferry_proto::v1::RestorePoint,
    exported: &Exported,
    app: &str,
) {
    let captured = &exported.captured;
    assert!(first.volumes.is_empty(), "listings leave volumes out");
    assert_eq!(first.job_id, "job-2");
    assert_eq!(first.object_count, captured.objects.len() as u64);
    assert_eq!(
        first.source.as_ref().map(|s| s.cluster_name.as_str()),
        Some("a")
    );
    assert_eq!(
        first.source.as_ref().map(|s| s.storage_classes.clone()),
        Some(vec!["standard".to_string()])
    );
    assert_eq!(
        first.tags.get("schedule").map(String::as_str),
        Some("nightly")
    );
    assert_eq!(
        first.application.as_ref().map(|a| a.namespace.as_str()),
        Some(app)
    );
}

/// GetRestorePoint answers with the volumes, and refuses an unknown id and another
/// repository than the profile's.
async fn one_restore_point_with_its_volumes(
    h: &Harness,
    repository_id: &str,
    older: &str,
    exported: &Exported,
) {
    let mut client = h.client.clone();
    let got = client
        .get_restore_point(GetRestorePointRequest {
            repository: Some(RepositoryRef {
                profile: "rp".into(),
                repository_id: repository_id.to_string(),
            }),
            id: older.to_string(),
        })
        .await
        .expect("get")
        .into_inner()
        .restore_point
        .expect("restore point");
    assert_eq!(got.job_id, "job-1");
    assert_eq!(got.volumes.len(), 1);
    let v = &got.volumes[0];
    assert_eq!(v.pvc_name, "data");
    assert_eq!(v.snapshot_id, exported.snapshot_id);
    assert_eq!(v.storage_class, "standard");
    assert_eq!(v.capacity_bytes, 1 << 30);
    assert_eq!(v.data_bytes, 27);
    assert_eq!(v.files, 3);

    let err = client
        .get_restore_point(GetRestorePointRequest {
            repository: h.repo("rp"),
            id: "00".repeat(32),
        })
        .await
        .expect_err("unknown id");
    expect_error(&err, Code::NotFound, ErrorCode::NotFound);
    let err = client
        .get_restore_point(GetRestorePointRequest {
            repository: Some(RepositoryRef {
                profile: "rp".into(),
                repository_id: "ff".repeat(32),
            }),
            id: older.to_string(),
        })
        .await
        .expect_err("another repository expected");
    expect_error(&err, Code::FailedPrecondition, ErrorCode::InvalidArgument);
}

/// RebuildIndex's progress events and its summary, which ends the stream.
async fn rebuild_index(
    h: &Harness,
) -> (
    Vec<ferry_proto::v1::Progress>,
    ferry_proto::v1::RebuildIndexSummary,
) {
    let mut client = h.client.clone();
    let mut stream = client
        .rebuild_index(RebuildIndexRequest {
            repository: h.repo("rp"),
        })
        .await
        .expect("rebuild")
        .into_inner();
    let mut progress = Vec::new();
    let mut summary = None;
    while let Some(event) = stream.message().await.expect("stream") {
        match event.event.expect("event") {
            rebuild_index_event::Event::Progress(p) => progress.push(p),
            rebuild_index_event::Event::Done(s) => summary = Some(s),
        }
    }
    (progress, summary.expect("a summary ends the stream"))
}

#[tokio::test]
async fn restore_points_are_listed_read_and_reindexed_from_the_repository() {
    let h = Harness::start("rp").await;
    h.secrets(b"restore point test key").await;
    let profile = h.create(h.request("rp", true)).await;

    // Two restore points written by the engine, as a transfer job would.
    let app = ferry_testenv::unique_name("cat-app");
    let exported = Exported::new(&h, "rp", &app).await;
    let captured = &exported.captured;
    assert_eq!(captured.volumes.len(), 1, "{:?}", captured.volumes);
    let repo = &exported.repo;
    let manifest = |created_at: &str, job: &str| {
        let tags = BTreeMap::from([("schedule".to_string(), "nightly".to_string())]);
        exported.manifest(created_at, job, tags)
    };
    let older = repo
        .save_restore_point(&app, &manifest("2025-01-01T00:00:00Z", "job-1"))
        .await
        .expect("save");
    let newer = repo
        .save_restore_point(&app, &manifest("2025-02-01T00:00:00Z", "job-2"))
        .await
        .expect("save");

    let list = |namespace: &str, page_size: u32, page_token: String| {
        let mut client = h.client.clone();
        let req = ListRestorePointsRequest {
            repository: h.repo("rp"),
            namespace: namespace.into(),
            page_size,
            page_token,
        };
        async move {
            client
                .list_restore_points(req)
                .await
                .map(|r| r.into_inner())
        }
    };
    let all = list("", 0, String::new()).await.expect("list");
    let ids: Vec<&str> = all.restore_points.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, vec![newer.to_hex(), older.to_hex()], "newest first");
    newest_is_listed_as_exported(&all.restore_points[0], &exported, &app);

    // Paged, and by namespace.
    let page1 = list(&app, 1, String::new()).await.expect("page 1");
    assert_eq!(page1.restore_points.len(), 1);
    assert_eq!(page1.restore_points[0].id, newer.to_hex());
    let page2 = list(&app, 1, page1.next_page_token).await.expect("page 2");
    assert_eq!(page2.restore_points[0].id, older.to_hex());
    assert!(page2.next_page_token.is_empty());
    let none = list("other-app", 0, String::new())
        .await
        .expect("other app");
    assert!(none.restore_points.is_empty());

    one_restore_point_with_its_volumes(&h, &profile.repository_id, &older.to_hex(), &exported)
        .await;

    // The applications listing knows when the newest restore point was taken.
    let last_restore_point_at = |apps: Vec<ferry_proto::v1::Application>| {
        apps.into_iter()
            .find(|a| a.namespace == app)
            .expect("the application is listed")
            .last_restore_point_at
    };
    let listed = all_applications(&h).await;
    assert_eq!(
        last_restore_point_at(listed).map(|t| t.seconds),
        Some(1_738_368_000)
    );

    // Lose the index; a damaged restore point appears; RebuildIndex restores the rest.
    let db = ferry_store::rusqlite::Connection::open(h.data.path().join("state/catalog.db"))
        .expect("open catalog.db");
    db.execute("DELETE FROM restore_points", [])
        .expect("delete index rows");
    drop(db);
    assert_eq!(last_restore_point_at(all_applications(&h).await), None);
    let junk_id = "ab".repeat(32);
    repo.backend()
        .put(
            &format!("restorepoints/{app}/{junk_id}"),
            bytes::Bytes::from_static(b"not a sealed restore point"),
        )
        .await
        .expect("put junk");

    let (progress, summary) = rebuild_index(&h).await;
    assert_eq!(summary.restore_points, 3);
    assert_eq!(summary.unreadable, 1);
    assert_eq!(summary.errors.len(), 1);
    assert_eq!(summary.errors[0].code, ErrorCode::Integrity as i32);
    assert!(
        summary.errors[0].message.contains(&junk_id),
        "{:?}",
        summary.errors
    );
    let last = progress.last().expect("progress before the summary");
    assert_eq!((last.objects_done, last.objects_total), (3, 3));
    assert_eq!(
        last_restore_point_at(all_applications(&h).await).map(|t| t.seconds),
        Some(1_738_368_000)
    );
    repo.backend()
        .delete(&format!("restorepoints/{app}/{junk_id}"))
        .await
        .expect("remove junk");

    // The repository is the truth: a restore point deleted there leaves the listing.
    repo.delete_restore_point(&app, &newer)
        .await
        .expect("delete restore point");
    let after = list("", 0, String::new()).await.expect("list");
    let ids: Vec<String> = after.restore_points.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![older.to_hex()]);
}

async fn all_applications(h: &Harness) -> Vec<ferry_proto::v1::Application> {
    let mut client = h.client.clone();
    let mut out = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_applications(ListApplicationsRequest {
                cluster: None,
                page_size: 50,
                page_token,
            })
            .await
            .expect("list applications")
            .into_inner();
        out.extend(page.applications);
        if page.next_page_token.is_empty() {
            return out;
        }
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn applications_show_namespaces_with_their_claims() {
    let h = Harness::start("apps").await;
    let app = ferry_testenv::unique_name("cat-apps");
    app_namespace(&h.kube, &app).await;

    let apps = all_applications(&h).await;
    let names: Vec<&str> = apps.iter().map(|a| a.namespace.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "ordered by namespace");
    for system in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        h.secrets_ns.as_str(),
    ] {
        assert!(!names.contains(&system), "{system} is not an application");
    }
    let a = apps
        .iter()
        .find(|a| a.namespace == app)
        .expect("the test namespace is listed");
    assert_eq!(a.volume_count, 1);
    assert_eq!(a.requested_storage_bytes, 1 << 30);
    // The ConfigMap and the claim; the default ServiceAccount and the root-CA
    // ConfigMap are never captured.
    assert_eq!(a.object_count, 2, "{a:?}");
    assert_eq!(a.last_restore_point_at, None);

    let err = h
        .client
        .clone()
        .list_applications(ListApplicationsRequest {
            cluster: Some(ferry_proto::v1::ClusterRef {
                target: Some(ferry_proto::v1::cluster_ref::Target::PairId("p1".into())),
            }),
            ..Default::default()
        })
        .await
        .expect_err("another cluster");
    expect_error(&err, Code::Unimplemented, ErrorCode::InvalidArgument);
}
