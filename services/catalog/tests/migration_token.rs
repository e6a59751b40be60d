//! Migration tokens across two real clusters and the real S3 server: the destination
//! (cluster b) makes an import key, the source (cluster a) issues a token for it from an
//! export profile, and the destination turns the token into an import profile that uses
//! a MinIO user with a read-only policy. Altered, expired and other-destination tokens,
//! and read-write credentials, are refused with nothing stored, as are tokens from a
//! source other than the pinned one (`expected_signer`). A profile created without a
//! key gets a generated one, with a warning.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Exported, Harness, expect_error};
use ferry_catalog::CatalogService;
use ferry_proto::v1::catalog_service_server::CatalogService as _;
use ferry_proto::v1::{
    CheckProfileRequest, CreateImportKeyRequest, CreateProfileRequest, CreateProfileResponse,
    DeleteProfileRequest, ErrorCode, GetImportKeyRequest, GetRestorePointRequest, ImportKey,
    IssueMigrationTokenRequest, IssueMigrationTokenResponse, ListProfilesRequest,
    ListRestorePointsRequest, ProfileKind, SecretRef, StorageBackend,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tonic::{Code, Status};

fn secret_ref(name: &str) -> Option<SecretRef> {
    Some(SecretRef {
        namespace: String::new(),
        name: name.into(),
    })
}

async fn get_secret(h: &Harness, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(h.kube.clone(), &h.secrets_ns)
        .get_opt(name)
        .await
        .expect("get Secret")
}

/// The key bytes of Secret `name`.
async fn secret_key(h: &Harness, name: &str) -> Vec<u8> {
    get_secret(h, name)
        .await
        .and_then(|s| s.data)
        .and_then(|d| d.get("key").cloned())
        .map(|b| b.0)
        .unwrap_or_else(|| panic!("Secret {name} with key \"key\""))
}

/// Credentials Secret `name` with the test S3 server's read-only user.
/// The destination's import key (made now) and its read-only S3 Secret `reader`.
async fn import_key_and_reader(dst: &Harness) -> ImportKey {
    let key = dst
        .client
        .clone()
        .create_import_key(CreateImportKeyRequest {})
        .await
        .expect("import key")
        .into_inner()
        .key
        .expect("key");
    reader_secret(dst, "reader").await;
    key
}

async fn reader_secret(h: &Harness, name: &str) {
    let reader =
        h.s3.readonly
            .clone()
            .expect("the S3 server's read-only user");
    h.secret(
        name,
        &[
            ("access_key_id", reader.access_key.as_bytes()),
            ("secret_access_key", reader.secret_key.as_bytes()),
        ],
    )
    .await;
}

/// One restore point of namespace `app` in profile `profile`'s repository, written by
/// the engine as an export job would.
async fn export_restore_point(h: &Harness, profile: &str, app: &str) -> String {
    export_restore_points(h, profile, app, 1).await.remove(0)
}

/// `n` restore points of `app` (captured once) in profile `profile`'s repository, each
/// its own export job.
async fn export_restore_points(h: &Harness, profile: &str, app: &str, n: usize) -> Vec<String> {
    let exported = Exported::new(h, profile, app).await;
    let mut ids = Vec::new();
    for i in 0..n {
        let manifest = exported.manifest(
            "2025-03-01T00:00:00Z",
            &format!("export-{i}"),
            BTreeMap::new(),
        );
        let id = exported
            .repo
            .save_restore_point(app, &manifest)
            .await
            .expect("save restore point");
        ids.push(id.to_hex());
    }
    ids
}

/// `req` bound to application namespace `app`, as export profiles that tokens are
/// issued for are.
fn bound(mut req: CreateProfileRequest, app: &str) -> CreateProfileRequest {
    req.namespace = app.into();
    req
}

/// A token's key opens the whole repository, so a profile bound to no namespace (here
/// over the same repository) gets none, naming the fix.
async fn only_a_bound_profile_gets_tokens(src: &Harness, app: &str, recipient: &str) {
    src.create(src.request("unbound", false)).await;
    let err = src
        .client
        .clone()
        .issue_migration_token(IssueMigrationTokenRequest {
            profile: "unbound".into(),
            namespace: app.to_string(),
            recipient_key: recipient.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("an unbound profile");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::InvalidArgument);
    assert!(
        d.message.contains("is bound to no namespace") && d.hint.contains("--namespace"),
        "{d:?}"
    );
}

/// Once the repository holds another namespace, neither a token nor a new profile bound
/// to `app` is had for it: both name what is in the way.
async fn a_repository_holding_others_gets_no_token(
    src: &Harness,
    app: &str,
    other_app: &str,
    recipient: &str,
) {
    let err = src
        .client
        .clone()
        .issue_migration_token(IssueMigrationTokenRequest {
            profile: "prod".into(),
            namespace: app.to_string(),
            recipient_key: recipient.to_string(),
            ..Default::default()
        })
        .await
        .expect_err("a repository holding another namespace");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::InvalidArgument);
    assert!(d.message.contains("other namespaces"), "{d:?}");
    let err = src
        .client
        .clone()
        .create_profile(bound(src.request("late", false), app))
        .await
        .expect_err("bound over another namespace");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::InvalidArgument);
    assert!(d.message.contains(other_app), "{d:?}");
}

/// An import profile request from `token` with credentials Secret `credentials`,
/// accepting any signer (the refusals these tests show come before or after that check;
/// [`pinned`] is how a destination takes a token).
fn import_request(name: &str, token: &str, credentials: &str) -> CreateProfileRequest {
    CreateProfileRequest {
        name: name.into(),
        kind: ProfileKind::Import as i32,
        credentials_secret: secret_ref(credentials),
        migration_token: token.into(),
        unsafe_skip_signer_verification: true,
        namespace: String::new(),
        ..Default::default()
    }
}

/// `req` pinned to `signer`, as the destination's administrator gives it.
fn pinned(mut req: CreateProfileRequest, signer: &str) -> CreateProfileRequest {
    req.expected_signer = signer.into();
    req.unsafe_skip_signer_verification = false;
    req
}

async fn import(h: &Harness, req: CreateProfileRequest) -> Result<CreateProfileResponse, Status> {
    h.client
        .clone()
        .create_profile(req)
        .await
        .map(|r| r.into_inner())
}

/// The profile and its key Secret were not stored.
async fn nothing_stored(h: &Harness, profile: &str) {
    assert!(
        !h.profile_names().await.contains(&profile.to_string()),
        "profile {profile} was stored"
    );
    assert!(
        get_secret(h, &format!("{profile}-key")).await.is_none(),
        "Secret {profile}-key was stored"
    );
    assert!(
        !h.agent_files().contains(&format!("{profile}.yaml")),
        "agent file of {profile} was written"
    );
}

#[tokio::test]
async fn the_import_key_is_made_once_and_kept() {
    let h = Harness::start_on("b", "import-key").await;
    let mut client = h.client.clone();
    let err = client
        .get_import_key(GetImportKeyRequest {})
        .await
        .expect_err("no key yet");
    let d = expect_error(&err, Code::NotFound, ErrorCode::NotFound);
    assert!(d.message.contains("CreateImportKey"), "{}", d.message);
    assert_eq!(d.cluster, "b");

    let first = client
        .create_import_key(CreateImportKeyRequest {})
        .await
        .expect("create")
        .into_inner();
    assert!(first.created);
    let key = first.key.expect("key");
    let parsed = ferry_token::RecipientKey::parse(&key.public_key).expect("public key text");
    assert_eq!(parsed.fingerprint().to_string(), key.fingerprint);

    let again = client
        .create_import_key(CreateImportKeyRequest {})
        .await
        .expect("create again")
        .into_inner();
    assert!(!again.created, "the existing key is returned");
    assert_eq!(again.key.as_ref(), Some(&key));
    let got = client
        .get_import_key(GetImportKeyRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(got.key.as_ref(), Some(&key));

    // A restarted catalog on the same data directory has the same key.
    let mut config =
        ferry_catalog::CatalogConfig::new(h.kube.clone(), "b", h.data.path().join("state"));
    config.secrets_namespace = h.secrets_ns.clone();
    let restarted = CatalogService::new(config).await.expect("restart");
    let got = restarted
        .get_import_key(tonic::Request::new(GetImportKeyRequest {}))
        .await
        .expect("get after restart")
        .into_inner();
    assert_eq!(got.key, Some(key));
}

/// IssueMigrationToken on the source for `restore_point` of `app` from profile "prod".
async fn issue_token(
    src: &Harness,
    restore_point: &str,
    app: &str,
    recipient: String,
    ttl_seconds: i64,
) -> Result<IssueMigrationTokenResponse, Status> {
    let req = IssueMigrationTokenRequest {
        profile: "prod".into(),
        restore_point_id: restore_point.to_string(),
        namespace: app.to_string(),
        recipient_key: recipient,
        ttl: Some(prost_types::Duration {
            seconds: ttl_seconds,
            nanos: 0,
        }),
    };
    src.client
        .clone()
        .issue_migration_token(req)
        .await
        .map(|r| r.into_inner())
}

/// None of `secrets` appears in the token's text.
fn no_secret_in(token: &str, secrets: &[&[u8]]) {
    for secret in secrets {
        let text = String::from_utf8_lossy(secret);
        assert!(!token.contains(text.as_ref()), "a secret in the token");
    }
}

/// The source refuses to issue a token for a restore point or a profile it does not have.
async fn unknown_restore_point_or_profile(src: &Harness, app: &str, recipient: &str) {
    let mut unknown_point = IssueMigrationTokenRequest {
        profile: "prod".into(),
        restore_point_id: "00".repeat(32),
        namespace: app.to_string(),
        recipient_key: recipient.to_string(),
        ttl: None,
    };
    let err = src
        .client
        .clone()
        .issue_migration_token(unknown_point.clone())
        .await
        .expect_err("unknown restore point");
    expect_error(&err, Code::NotFound, ErrorCode::NotFound);
    unknown_point.profile = "absent".into();
    let err = src
        .client
        .clone()
        .issue_migration_token(unknown_point)
        .await
        .expect_err("unknown profile");
    expect_error(&err, Code::NotFound, ErrorCode::NotFound);
}

/// An altered token (one character of its body changed) is refused, storing nothing.
async fn an_altered_token_stores_nothing(dst: &Harness, token: &str) {
    let body_start = token.find('\n').expect("a line break") + 1;
    let mut tampered = token.to_string().into_bytes();
    let i = body_start + 30;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let err = import(dst, import_request("tampered", &tampered, "reader"))
        .await
        .expect_err("tampered");
    let d = expect_error(&err, Code::InvalidArgument, ErrorCode::Integrity);
    assert!(d.message.contains("signature"), "{}", d.message);
    nothing_stored(dst, "tampered").await;
}

/// A good token with credentials that can write is refused (import profiles must be
/// read-only), and so is one combined with a location of the request's own.
async fn writable_or_located_imports_store_nothing(dst: &Harness, token: &str) {
    dst.secret(
        "writer",
        &[
            ("access_key_id", dst.s3.access_key.as_bytes()),
            ("secret_access_key", dst.s3.secret_key.as_bytes()),
        ],
    )
    .await;
    let err = import(dst, import_request("writable", token, "writer"))
        .await
        .expect_err("read-write credentials");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::PermissionDenied);
    assert!(d.message.contains("can write"), "{}", d.message);
    nothing_stored(dst, "writable").await;

    // The token may not be combined with a location of the request's own.
    let mut located = import_request("located", token, "reader");
    located.bucket = "elsewhere".into();
    let err = import(dst, located).await.expect_err("location given");
    expect_error(&err, Code::InvalidArgument, ErrorCode::InvalidArgument);
    nothing_stored(dst, "located").await;
}

/// The import profile lists what the source exported and never writes; deleting it
/// removes the key Secret the token brought.
async fn the_import_lists_never_writes_and_its_key_goes_with_it(
    dst: &Harness,
    app: &str,
    restore_point: &str,
) {
    // It lists what the source exported, and never writes.
    let listed = dst
        .client
        .clone()
        .list_restore_points(ListRestorePointsRequest {
            repository: dst.repo("imported"),
            namespace: app.to_string(),
            ..Default::default()
        })
        .await
        .expect("list on the destination")
        .into_inner();
    let ids: Vec<String> = listed.restore_points.into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![restore_point.to_string()]);
    let check = dst
        .client
        .clone()
        .check_profile(CheckProfileRequest {
            name: "imported".into(),
            write: true,
        })
        .await
        .expect("check")
        .into_inner();
    assert!(check.readable && !check.writable, "{check:?}");

    // Deleting the profile removes the key Secret the token brought.
    dst.client
        .clone()
        .delete_profile(DeleteProfileRequest {
            name: "imported".into(),
        })
        .await
        .expect("delete");
    assert!(get_secret(dst, "imported-key").await.is_none());
}

/// A token made for another destination's key is refused, naming both keys, storing
/// nothing.
async fn another_destinations_token_stores_nothing(
    dst: &Harness,
    token: &str,
    own_fingerprint: &str,
    other_fingerprint: &str,
) {
    let err = import(dst, import_request("elsewhere", token, "reader"))
        .await
        .expect_err("other recipient");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::WrongKey);
    assert!(
        d.message.contains("another destination key"),
        "{}",
        d.message
    );
    assert!(d.message.contains(own_fingerprint), "{}", d.message);
    assert!(d.message.contains(other_fingerprint), "{}", d.message);
    nothing_stored(dst, "elsewhere").await;
}

/// An expired token is refused as such, storing nothing.
async fn an_expired_token_stores_nothing(dst: &Harness, token: &str) {
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let err = import(dst, import_request("late", token, "reader"))
        .await
        .expect_err("expired");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::Timeout);
    assert!(d.message.contains("expired at"), "{}", d.message);
    nothing_stored(dst, "late").await;
}

#[tokio::test]
async fn a_token_makes_a_read_only_import_profile_and_bad_tokens_store_nothing() {
    // Source: an export profile with one restore point.
    let src = Harness::start_on("a", "token-src").await;
    let repo_key = b"the source repository's key".to_vec();
    src.secrets(&repo_key).await;
    let app = ferry_testenv::unique_name("cat-token-app");
    let export = src.create(bound(src.request("prod", true), &app)).await;
    // Two restore points of the application: a token for the first opens nothing of the
    // second.
    let points = export_restore_points(&src, "prod", &app, 2).await;
    let (restore_point, later) = (points[0].clone(), points[1].clone());
    assert_ne!(later, restore_point);

    // Destination: an import key and read-only credentials.
    let dst = Harness::start_on("b", "token-dst").await;
    let import_key = import_key_and_reader(&dst).await;

    let issue = |recipient: String, ttl_seconds: i64| {
        issue_token(&src, &restore_point, &app, recipient, ttl_seconds)
    };
    let issued = issue(import_key.public_key.clone(), 3600)
        .await
        .expect("issue");
    a_token_names_its_recipient_and_holds_no_secret(
        &src,
        &issued,
        &import_key,
        &export.repository_id,
        &repo_key,
    );

    // Tokens the source refuses to issue.
    bad_recipients_and_lifetimes_get_no_token(&src, &restore_point, &app, &import_key).await;
    unknown_restore_point_or_profile(&src, &app, &import_key.public_key).await;

    only_a_bound_profile_gets_tokens(&src, &app, &import_key.public_key).await;

    an_altered_token_stores_nothing(&dst, &issued.token).await;

    // A token made for another destination's key.
    let stranger = ferry_token::ImportKey::generate().expect("another key");
    let elsewhere = issue(stranger.public_key().to_text(), 3600)
        .await
        .expect("issue for another destination");
    another_destinations_token_stores_nothing(
        &dst,
        &elsewhere.token,
        &import_key.fingerprint,
        stranger.public_key().fingerprint().as_str(),
    )
    .await;

    // An expired token.
    let short = issue(import_key.public_key.clone(), 1)
        .await
        .expect("issue a short-lived token");
    an_expired_token_stores_nothing(&dst, &short.token).await;

    // Another namespace written into the bucket past the binding (any bucket writer
    // can): no more tokens for the profile, nor a profile bound over it; the tokens
    // issued before still open only what they name on the destination (below).
    let other_app = ferry_testenv::unique_name("cat-token-other");
    let others = export_restore_point(&src, "prod", &other_app).await;
    a_repository_holding_others_gets_no_token(&src, &app, &other_app, &import_key.public_key).await;

    writable_or_located_imports_store_nothing(&dst, &issued.token).await;
    an_unpinned_import_stores_nothing(&dst, &issued.token).await;
    the_good_token_makes_a_read_only_import_profile(
        (&src, &dst),
        &issued,
        &export.repository_id,
        (&app, &restore_point),
        &repo_key,
    )
    .await;

    a_token_opens_only_what_it_names(&dst, &app, (&restore_point, &later), (&other_app, &others))
        .await;
    a_token_makes_one_profile(&dst, &issued).await;
    the_import_lists_never_writes_and_its_key_goes_with_it(&dst, &app, &restore_point).await;
    // Its profile gone, the token still makes no other.
    a_token_makes_one_profile(&dst, &issued).await;
}

/// The token `issued` for `import_key` names that key and the source's repository, is
/// armored, and holds neither the repository's key nor the S3 credentials.
fn a_token_names_its_recipient_and_holds_no_secret(
    src: &Harness,
    issued: &IssueMigrationTokenResponse,
    import_key: &ImportKey,
    repository_id: &str,
    repo_key: &[u8],
) {
    assert_eq!(issued.recipient_fingerprint, import_key.fingerprint);
    assert_eq!(issued.repository_id, repository_id);
    assert!(
        issued
            .token
            .starts_with("-----BEGIN FERRY MIGRATION TOKEN-----")
    );
    no_secret_in(
        &issued.token,
        &[
            repo_key,
            src.s3.secret_key.as_bytes(),
            src.s3.access_key.as_bytes(),
        ],
    );
}

/// The source refuses a recipient that is not an import key, and a lifetime of 0.
async fn bad_recipients_and_lifetimes_get_no_token(
    src: &Harness,
    restore_point: &str,
    app: &str,
    import_key: &ImportKey,
) {
    let bad_recipient = issue_token(
        src,
        restore_point,
        app,
        "ferry-import-key-v1:nope".into(),
        3600,
    )
    .await
    .expect_err("bad recipient");
    expect_error(
        &bad_recipient,
        Code::InvalidArgument,
        ErrorCode::InvalidArgument,
    );
    let bad_ttl = issue_token(src, restore_point, app, import_key.public_key.clone(), 0)
        .await
        .expect_err("ttl 0");
    expect_error(&bad_ttl, Code::InvalidArgument, ErrorCode::InvalidArgument);
}

/// A token is pinned to its signer unless the request skips that by name: an import
/// that does neither is refused, naming both ways, and stores nothing.
async fn an_unpinned_import_stores_nothing(dst: &Harness, token: &str) {
    let mut unpinned = import_request("unpinned", token, "reader");
    unpinned.unsafe_skip_signer_verification = false;
    let err = import(dst, unpinned).await.expect_err("no pinned signer");
    let d = expect_error(&err, Code::InvalidArgument, ErrorCode::InvalidArgument);
    assert!(
        d.message.contains("expected_signer") && d.message.contains("unsafe_skip"),
        "{}",
        d.message
    );
    nothing_stored(dst, "unpinned").await;
}

/// The good token with the read-only user, pinned to its signer, makes import profile
/// "imported" for the source's repository, with the repository's key in a Secret Ferry
/// manages, and says what the token named (`restore_point` of `app`).
async fn the_good_token_makes_a_read_only_import_profile(
    (src, dst): (&Harness, &Harness),
    issued: &IssueMigrationTokenResponse,
    repository_id: &str,
    (app, restore_point): (&str, &str),
    repo_key: &[u8],
) {
    let created = import(
        dst,
        pinned(
            import_request("imported", &issued.token, "reader"),
            &issued.signer_fingerprint,
        ),
    )
    .await
    .expect("import profile from the token");
    let profile = created.profile.expect("profile");
    assert_eq!(profile.kind, ProfileKind::Import as i32);
    assert_eq!(profile.backend, StorageBackend::S3 as i32);
    assert_eq!(profile.bucket, src.s3.bucket);
    assert_eq!(profile.prefix, src.prefix);
    assert_eq!(profile.repository_id, repository_id);
    assert_eq!(profile.token_signer_fingerprint, issued.signer_fingerprint);
    assert!(created.warnings.is_empty(), "{:?}", created.warnings);
    let info = created.migration_token.expect("what the token said");
    assert_eq!(info.namespace, app);
    assert_eq!(info.restore_point_id, restore_point);
    assert_eq!(info.issuer, "a");
    assert_eq!(info.signer_fingerprint, issued.signer_fingerprint);
    let key_secret = profile.encryption_key_secret.clone().expect("key Secret");
    assert_eq!(key_secret.name, "imported-key");
    assert_eq!(secret_key(dst, "imported-key").await, repo_key);
    let labels = get_secret(dst, "imported-key")
        .await
        .and_then(|s| s.metadata.labels)
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("ferry")
    );
}

/// Hole 5: profile "imported" was made from a token naming `named` of `app`; the
/// repository also holds a later restore point of `app` and one of another namespace.
/// Listing and reading through it reach only the named one.
async fn a_token_opens_only_what_it_names(
    dst: &Harness,
    app: &str,
    (named, later): (&str, &str),
    (other_app, others): (&str, &str),
) {
    let list = |namespace: &str| {
        let req = ListRestorePointsRequest {
            repository: dst.repo("imported"),
            namespace: namespace.to_string(),
            ..Default::default()
        };
        let mut client = dst.client.clone();
        async move { client.list_restore_points(req).await }
    };
    for namespace in ["", app] {
        let ids: Vec<String> = list(namespace)
            .await
            .expect("list")
            .into_inner()
            .restore_points
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids, vec![named.to_string()], "listing {namespace:?}");
    }
    let err = list(other_app).await.expect_err("another namespace");
    let d = expect_error(&err, Code::PermissionDenied, ErrorCode::PermissionDenied);
    assert!(
        d.message.contains(&format!("namespace {other_app}")) && d.message.contains(named),
        "{}",
        d.message
    );
    for id in [later, others] {
        let err = dst
            .client
            .clone()
            .get_restore_point(GetRestorePointRequest {
                repository: dst.repo("imported"),
                id: id.to_string(),
            })
            .await
            .expect_err("outside the token");
        let d = expect_error(&err, Code::PermissionDenied, ErrorCode::PermissionDenied);
        assert!(
            d.message.contains(id) && d.message.contains("migration token"),
            "{}",
            d.message
        );
    }
    dst.client
        .clone()
        .get_restore_point(GetRestorePointRequest {
            repository: dst.repo("imported"),
            id: named.to_string(),
        })
        .await
        .expect("the named restore point");
}

/// A token the destination accepted once makes no second profile, naming the first.
async fn a_token_makes_one_profile(dst: &Harness, issued: &IssueMigrationTokenResponse) {
    let again = pinned(
        import_request("again", &issued.token, "reader"),
        &issued.signer_fingerprint,
    );
    let err = import(dst, again).await.expect_err("used before");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::Conflict);
    assert!(
        d.message.contains("already used") && d.message.contains("\"imported\""),
        "{}",
        d.message
    );
    nothing_stored(dst, "again").await;
}

#[tokio::test]
async fn a_pinned_signer_accepts_its_own_tokens_only() {
    // Source: an export profile; destination: an import key and read-only credentials.
    let src = Harness::start_on("a", "token-pin-src").await;
    src.secrets(b"the pinned source's key").await;
    let app = ferry_testenv::unique_name("cat-pin-app");
    src.create(bound(src.request("prod", true), &app)).await;
    let dst = Harness::start_on("b", "token-pin-dst").await;
    let import_key = import_key_and_reader(&dst).await;
    let issued = src
        .client
        .clone()
        .issue_migration_token(IssueMigrationTokenRequest {
            profile: "prod".into(),
            namespace: app,
            recipient_key: import_key.public_key.clone(),
            ..Default::default()
        })
        .await
        .expect("issue")
        .into_inner();
    // The fingerprint the source reports is the token's signer, as `ferry export` shows.
    assert_eq!(
        ferry_token::signer_of(&issued.token)
            .expect("signer")
            .fingerprint()
            .to_string(),
        issued.signer_fingerprint
    );

    // Pinned to another source's key: refused, naming both keys, nothing stored.
    let other_source = ferry_token::SigningKey::generate()
        .expect("another signing key")
        .public_key()
        .fingerprint()
        .to_string();
    let req = pinned(
        import_request("pinned-elsewhere", &issued.token, "reader"),
        &other_source,
    );
    let err = import(&dst, req).await.expect_err("another signer");
    let d = expect_error(&err, Code::PermissionDenied, ErrorCode::PermissionDenied);
    assert!(
        d.message.contains(&other_source) && d.message.contains(&issued.signer_fingerprint),
        "names the pinned and the actual signer: {}",
        d.message
    );
    nothing_stored(&dst, "pinned-elsewhere").await;

    // Not a fingerprint: refused before the token is looked at.
    let req = pinned(
        import_request("pinned-garbage", &issued.token, "reader"),
        "SHA256:not-a-key",
    );
    let err = import(&dst, req).await.expect_err("not a fingerprint");
    let d = expect_error(&err, Code::InvalidArgument, ErrorCode::InvalidArgument);
    assert!(d.message.contains("expected_signer"), "{}", d.message);
    nothing_stored(&dst, "pinned-garbage").await;

    // A pin without a token pins nothing: refused too.
    let mut req = dst.request("pinned-no-token", false);
    req.expected_signer = issued.signer_fingerprint.clone();
    let err = import(&dst, req).await.expect_err("no token to pin");
    expect_error(&err, Code::InvalidArgument, ErrorCode::InvalidArgument);
    assert!(
        !dst.profile_names()
            .await
            .contains(&"pinned-no-token".to_string())
    );

    // Pinned to the source's own key: accepted, and the profile shows it.
    let req = pinned(
        import_request("pinned", &issued.token, "reader"),
        &issued.signer_fingerprint,
    );
    let created = import(&dst, req).await.expect("the pinned signer's token");
    let profile = created.profile.expect("profile");
    assert_eq!(profile.token_signer_fingerprint, issued.signer_fingerprint);
    let listed = dst
        .client
        .clone()
        .list_profiles(ListProfilesRequest::default())
        .await
        .expect("list")
        .into_inner();
    let shown = listed
        .profiles
        .iter()
        .find(|p| p.name == "pinned")
        .expect("listed");
    assert_eq!(shown.token_signer_fingerprint, issued.signer_fingerprint);
}

#[tokio::test]
async fn a_token_needs_an_import_key() {
    let src = Harness::start_on("a", "token-nokey-src").await;
    src.secrets(b"key").await;
    let app = ferry_testenv::unique_name("cat-nokey-app");
    src.create(bound(src.request("prod", true), &app)).await;
    let recipient = ferry_token::ImportKey::generate().expect("key");
    let issued = src
        .client
        .clone()
        .issue_migration_token(IssueMigrationTokenRequest {
            profile: "prod".into(),
            namespace: app,
            recipient_key: recipient.public_key().to_text(),
            ..Default::default()
        })
        .await
        .expect("issue")
        .into_inner();

    let dst = Harness::start_on("b", "token-nokey-dst").await;
    reader_secret(&dst, "reader").await;
    let err = import(&dst, import_request("imported", &issued.token, "reader"))
        .await
        .expect_err("no import key");
    let d = expect_error(&err, Code::NotFound, ErrorCode::NotFound);
    assert!(d.message.contains("CreateImportKey"), "{}", d.message);
    nothing_stored(&dst, "imported").await;
}

#[tokio::test]
async fn a_profile_without_a_key_gets_a_generated_one_and_a_warning() {
    let h = Harness::start("genkey").await;
    h.secrets(b"unused").await;
    let mut req = h.request("gen", true);
    req.encryption_key_secret = None;
    let created = import(&h, req.clone()).await.expect("create");
    assert!(created.repository_created);
    let warning = created.warnings.join("\n");
    assert!(warning.contains("generated"), "{warning}");
    assert!(warning.contains("Back it up"), "{warning}");
    assert!(
        warning.contains(&format!("{}/gen-key", h.secrets_ns)),
        "{warning}"
    );
    let profile = created.profile.expect("profile");
    assert_eq!(
        profile.encryption_key_secret.map(|s| s.name),
        Some("gen-key".to_string())
    );
    let key = secret_key(&h, "gen-key").await;
    assert_eq!(key.len(), 32);
    h.service
        .open_repository("gen")
        .await
        .expect("the generated key opens the repository");

    // A Secret of that name that Ferry did not make is never overwritten.
    h.secret("taken-key", &[("key", b"somebody's key")]).await;
    let mut req = h.request("taken", true);
    req.encryption_key_secret = None;
    req.prefix = format!("{}-taken", h.prefix);
    let err = import(&h, req).await.expect_err("Secret exists");
    let d = expect_error(&err, Code::AlreadyExists, ErrorCode::AlreadyExists);
    assert_eq!(
        d.object.map(|o| o.name),
        Some("taken-key".to_string()),
        "names the Secret"
    );
    assert_eq!(secret_key(&h, "taken-key").await, b"somebody's key");
    assert!(
        h.objects_under(&format!("{}-taken", h.prefix))
            .await
            .is_empty()
    );

    // A generated key cannot open a repository that is already there.
    let mut req = h.request("again", true);
    req.encryption_key_secret = None;
    let err = import(&h, req)
        .await
        .expect_err("a repository exists there");
    let d = expect_error(&err, Code::InvalidArgument, ErrorCode::InvalidArgument);
    assert!(
        d.message.contains("already holds a repository"),
        "{}",
        d.message
    );
    assert!(
        get_secret(&h, "again-key").await.is_none(),
        "its Secret is removed"
    );

    // Without create_repository a generated key could not open anything.
    let mut req = h.request("nocreate", false);
    req.encryption_key_secret = None;
    let err = import(&h, req)
        .await
        .expect_err("no key, no new repository");
    expect_error(&err, Code::InvalidArgument, ErrorCode::InvalidArgument);
    assert!(get_secret(&h, "nocreate-key").await.is_none());

    // The key changed later: the error names the Secret that must hold the old key.
    h.replace_secret("gen-key", &[("key", b"a different key")])
        .await;
    let err = h
        .client
        .clone()
        .check_profile(CheckProfileRequest {
            name: "gen".into(),
            write: false,
        })
        .await
        .expect_err("wrong key");
    let d = expect_error(&err, Code::FailedPrecondition, ErrorCode::WrongKey);
    assert!(
        d.message.contains(&format!("{}/gen-key", h.secrets_ns)),
        "{}",
        d.message
    );
}
