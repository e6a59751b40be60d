//! The pairing service over real gRPC: two in-process services, one per real cluster of
//! the test environment (`a` the source, `b` the destination), each with its own data
//! directory. Pair, list, check, use, delete; refused tokens store nothing; credentials
//! are sealed at rest and survive a restart. With a catalog on each side (profiles on
//! the S3 server of the test environment), CheckPair's repository checks in both
//! directions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ferry_catalog::{CatalogConfig, CatalogService};
use ferry_pairing::{
    CatalogProbe, CredentialKind, PAIR_LABEL, PairingConfig, PairingService, Pairs,
};
use ferry_proto::v1::catalog_service_server::CatalogService as CatalogApi;
use ferry_proto::v1::pairing_service_client::PairingServiceClient;
use ferry_proto::v1::pairing_service_server::PairingServiceServer;
use ferry_proto::v1::{
    AcceptPairingTokenRequest, CheckDirection, CheckPairRequest, CheckPairResponse, CheckStatus,
    CreatePairingTokenRequest, CreateProfileRequest, DeletePairRequest, DeleteProfileRequest,
    ErrorCode, GetPairRequest, ListPairsRequest, Pair, PairCheck, PairRole, PairStatus,
    ProfileKind, RenewPairCredentialRequest, RepositoryRef, SecretRef, StorageBackend,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, ListParams, PostParams};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// One pairing service on one cluster.
struct Side {
    client: PairingServiceClient<Channel>,
    pairs: Pairs,
    addr: SocketAddr,
    data_dir: PathBuf,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), ferry_pairing::ServeError>>,
}

struct Options {
    credential_kind: CredentialKind,
    /// Address to bind; port 0 picks one.
    bind: String,
    /// A catalog served on the same port and used for repository checks, as in
    /// `ferry serve`.
    catalog: Option<CatalogService>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            credential_kind: CredentialKind::Secret,
            bind: "127.0.0.1:0".into(),
            catalog: None,
        }
    }
}

impl Side {
    async fn start(cluster: &'static str, data_dir: &Path, options: Options) -> Side {
        let env = ferry_testenv::shared().await.expect("test environment");
        let info = env.cluster(cluster).expect("cluster");
        let kube = env.client(cluster, "admin").await.expect("admin client");
        let listener = tokio::net::TcpListener::bind(&options.bind)
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = PairingConfig::new(
            cluster,
            kube,
            &info.server,
            &info.ca_pem,
            addr.to_string(),
            data_dir,
        );
        config.credential_kind = options.credential_kind;
        if let Some(catalog) = &options.catalog {
            config.profile_probe = Some(Arc::new(CatalogProbe::new(catalog.clone(), cluster)));
        }
        let service = PairingService::new(config).await.expect("pairing service");
        let pairs = service.pairs();
        let shutdown = CancellationToken::new();
        let server = match options.catalog {
            None => tokio::spawn(ferry_pairing::serve(service, listener, shutdown.clone())),
            Some(catalog) => {
                let stop = shutdown.clone();
                let server = ferry_rpc::Server::new()
                    .expect("server")
                    .with_service(PairingServiceServer::new(service))
                    .with_service(catalog.into_server());
                tokio::spawn(server.serve(listener, async move { stop.cancelled().await }))
            }
        };
        let client = PairingServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("connect");
        Side {
            client,
            pairs,
            addr,
            data_dir: data_dir.to_path_buf(),
            shutdown,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server
            .await
            .expect("server task")
            .expect("server stopped cleanly");
    }

    async fn create_token(&self, req: CreatePairingTokenRequest) -> Result<String, Status> {
        Ok(self
            .client
            .clone()
            .create_pairing_token(req)
            .await?
            .into_inner()
            .token)
    }

    async fn token(&self, pair_name: &str) -> String {
        self.create_token(CreatePairingTokenRequest {
            pair_name: pair_name.into(),
            ..Default::default()
        })
        .await
        .expect("create token")
    }

    async fn accept(&self, token: &str) -> Result<Pair, Status> {
        let resp = self
            .client
            .clone()
            .accept_pairing_token(AcceptPairingTokenRequest {
                token: token.into(),
                pair_name: String::new(),
            })
            .await?;
        Ok(resp.into_inner().pair.expect("pair"))
    }

    async fn list(&self) -> Vec<Pair> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let resp = self
                .client
                .clone()
                .list_pairs(ListPairsRequest {
                    page_size: 0,
                    page_token,
                })
                .await
                .expect("list pairs")
                .into_inner();
            all.extend(resp.pairs);
            if resp.next_page_token.is_empty() {
                return all;
            }
            page_token = resp.next_page_token;
        }
    }

    async fn get(&self, pair: &str) -> Result<Pair, Status> {
        Ok(self
            .client
            .clone()
            .get_pair(GetPairRequest { pair: pair.into() })
            .await?
            .into_inner()
            .pair
            .expect("pair"))
    }
}

/// Both sides, each with its own data directory.
struct Both {
    a: Side,
    b: Side,
    a_dir: tempfile::TempDir,
    b_dir: tempfile::TempDir,
}

async fn both() -> Both {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a = Side::start("a", a_dir.path(), Options::default()).await;
    let b = Side::start("b", b_dir.path(), Options::default()).await;
    Both { a, b, a_dir, b_dir }
}

fn payload(token: &str) -> Value {
    let body = token
        .strip_prefix(ferry_pairing::token::PREFIX)
        .expect("prefix");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).expect("base64")).expect("json")
}

/// The token with its payload changed by `f`, re-encoded as a tamperer would.
fn tamper(token: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v = payload(token);
    f(&mut v);
    format!(
        "{}{}",
        ferry_pairing::token::PREFIX,
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&v).expect("json"))
    )
}

fn bearer(token: &str) -> String {
    ferry_pairing::token::decode(token)
        .expect("decode")
        .payload
        .bearer_token
        .expose()
        .to_string()
}

/// Asserts a refusal: gRPC code, detail code, and a hint for the user.
fn assert_refused(result: Result<Pair, Status>, code: Code, detail: ErrorCode, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
    let d = ferry_pairing::status_detail(&status).expect("error detail");
    assert_eq!(d.code, detail as i32, "{what}: {d:?}");
    assert!(!d.hint.is_empty(), "{what}: no hint in {d:?}");
    assert!(!d.message.is_empty(), "{what}: no message");
}

/// The ServiceAccounts made for `pair_id` on cluster `cluster`.
async fn service_accounts(cluster: &str, pair_id: &str) -> Vec<String> {
    let env = ferry_testenv::shared().await.expect("env");
    let client = env.client(cluster, "admin").await.expect("client");
    Api::<ServiceAccount>::namespaced(client, "ferry-system")
        .list(&ListParams::default().labels(&format!("{PAIR_LABEL}={pair_id}")))
        .await
        .expect("list service accounts")
        .items
        .into_iter()
        .filter_map(|sa| sa.metadata.name)
        .collect()
}

/// A client for cluster `cluster` that authenticates with `token` alone.
async fn client_with_token(cluster: &str, token: &str) -> kube::Client {
    let env = ferry_testenv::shared().await.expect("env");
    let info = env.cluster(cluster).expect("cluster");
    let doc = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": info.server,
            "certificate-authority-data":
                base64::engine::general_purpose::STANDARD.encode(&info.ca_pem)}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "c",
    });
    let kc: kube::config::Kubeconfig = serde_json::from_value(doc).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// The credential can do nothing on b any more: 403 at once (its binding goes first),
/// 401 once the API server's token cache (10 s by default) has forgotten it.
async fn assert_revoked(token: &str) {
    let revoked = client_with_token("b", token).await;
    let err = Api::<Namespace>::all(revoked)
        .list(&ListParams::default())
        .await
        .expect_err("revoked credential");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 401 || s.code == 403),
        "{err}"
    );
}

async fn check(side: &Side, pair: &str) -> ferry_proto::v1::CheckPairResponse {
    side.client
        .clone()
        .check_pair(CheckPairRequest {
            pair: pair.into(),
            repository: None,
        })
        .await
        .expect("check")
        .into_inner()
}

fn find_check(checks: &[PairCheck], name: &str, direction: CheckDirection) -> PairCheck {
    checks
        .iter()
        .find(|c| c.name == name && c.direction == direction as i32)
        .unwrap_or_else(|| panic!("no check {name} {direction:?} in {checks:?}"))
        .clone()
}

/// Every file of a data directory (the database, its WAL, the key) as bytes.
fn data_files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("read data dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            (p, bytes)
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Check from the source: both directions, every check timed, repository skipped; the
/// pair is Ready on both sides afterwards.
async fn checked_from_the_source(a: &Side, b: &Side, pair_id: &str) {
    let resp = check_profile(a, "a-to-b", "main").await;
    for c in &resp.checks {
        assert!(c.duration.is_some(), "{} not timed", c.name);
        assert_ne!(c.status, CheckStatus::Failed as i32, "{c:?}");
    }
    let names: Vec<(&str, i32)> = resp
        .checks
        .iter()
        .map(|c| (c.name.as_str(), c.direction))
        .collect();
    let s2d = CheckDirection::SourceToDestination as i32;
    let d2s = CheckDirection::DestinationToSource as i32;
    for want in [
        ("api-reachable", s2d),
        ("permissions", s2d),
        ("writes-as-users", s2d),
        ("ferry-reachable", s2d),
        ("ferry-reachable", d2s),
        ("repository-writable", s2d),
    ] {
        assert!(names.contains(&want), "{want:?} missing from {names:?}");
    }
    // b was started without trusting a's users: the check says how jobs write there.
    let mode = find_check(
        &resp.checks,
        "writes-as-users",
        CheckDirection::SourceToDestination,
    );
    assert!(
        mode.message.contains("verifies who writes there itself")
            && mode.message.contains("--to-context"),
        "{}",
        mode.message
    );
    // No catalog in this process: the repository checks are skipped, saying why.
    for (name, direction) in [
        ("repository-writable", CheckDirection::SourceToDestination),
        ("repository-readable", CheckDirection::DestinationToSource),
    ] {
        let repo = find_check(&resp.checks, name, direction);
        assert_eq!(repo.status, CheckStatus::Skipped as i32);
        assert!(
            repo.message.contains("without a catalog") && repo.message.contains("\"main\""),
            "{}",
            repo.message
        );
    }
    let checked = resp.pair.expect("pair");
    assert_eq!(checked.status, PairStatus::Ready as i32);
    assert!(checked.last_checked_at.is_some());
    // The destination ran its half and recorded it too.
    let on_b = b.get(pair_id).await.expect("b");
    assert_eq!(on_b.status, PairStatus::Ready as i32);
    assert!(on_b.last_checked_at.is_some());
}

/// The transfer service's way in: a client for the destination with the scoped
/// credential, which may not write ClusterRoles; the destination holds none for the
/// source.
async fn the_destination_client_is_scoped(a: &Side, b: &Side, destination_id: &str) {
    let client = a.pairs.destination_client("a-to-b").await.expect("client");
    let namespaces = Api::<Namespace>::all(client.clone());
    let kube_system = namespaces
        .get("kube-system")
        .await
        .expect("get kube-system");
    assert_eq!(kube_system.metadata.uid.as_deref(), Some(destination_id));
    let listed = namespaces.list(&ListParams::default()).await.expect("list");
    assert!(listed.items.len() >= 3);
    // Scoped: it may not write ClusterRoles (that would let it grant itself anything).
    let role = ClusterRole {
        metadata: kube::api::ObjectMeta {
            name: Some(ferry_testenv::unique_name("escalate")),
            ..Default::default()
        },
        ..Default::default()
    };
    let err = Api::<ClusterRole>::all(client)
        .create(&PostParams::default(), &role)
        .await
        .expect_err("ferry-migrator must not create ClusterRoles");
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 403),
        "{err}"
    );
    // The destination's own Pairs refuses: it holds no credential for the source.
    let Err(err) = b.pairs.destination_client("a-to-b").await else {
        panic!("the destination holds no client for the source");
    };
    assert!(err.to_string().contains("destination"), "{err}");
}

/// Credentials are sealed at rest: no data file holds the bearer token in clear.
fn credentials_are_sealed_at_rest(dirs: &[&Path], secret: &str) {
    for dir in dirs {
        let files = data_files(dir);
        assert!(files.iter().any(|(p, _)| p.ends_with("pairing.db")));
        for (path, bytes) in files {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "bearer token in clear in {}",
                path.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pair_list_check_use_and_delete() {
    let Both { a, b, a_dir, b_dir } = both().await;

    let token = b.token("a-to-b").await;
    assert!(token.starts_with("ferry-pair-v1."), "{token}");
    let secret = bearer(&token);
    let pair = a.accept(&token).await.expect("accept");
    assert_eq!(pair.name, "a-to-b");
    assert_eq!(pair.role, PairRole::Source as i32);
    assert_eq!(pair.status, PairStatus::Unknown as i32);
    let (src, dst) = (
        pair.source.clone().unwrap(),
        pair.destination.clone().unwrap(),
    );
    assert_eq!((src.name.as_str(), dst.name.as_str()), ("a", "b"));
    assert_ne!(src.cluster_id, dst.cluster_id);
    assert!(dst.kubernetes_version.starts_with('v'), "{dst:?}");
    assert_eq!(dst.ferry_endpoint, b.addr.to_string());

    // Both sides list it, under the same id, each in its own role.
    let on_a = a.list().await;
    let on_b = b.list().await;
    assert_eq!(on_a.len(), 1);
    assert_eq!(on_b.len(), 1);
    assert_eq!(on_b[0].id, pair.id);
    assert_eq!(on_b[0].role, PairRole::Destination as i32);
    assert_eq!(on_b[0].source.as_ref().unwrap().cluster_id, src.cluster_id);
    assert_eq!(a.get(&pair.id).await.expect("by id").name, "a-to-b");
    assert_eq!(b.get("a-to-b").await.expect("by name").id, pair.id);
    let sas = service_accounts("b", &pair.id).await;
    assert_eq!(sas.len(), 1, "{sas:?}");

    checked_from_the_source(&a, &b, &pair.id).await;
    the_destination_client_is_scoped(&a, &b, &dst.cluster_id).await;
    credentials_are_sealed_at_rest(&[a_dir.path(), b_dir.path()], &secret);

    // Delete on the source: gone on both sides, and the credential no longer works.
    let resp = a
        .client
        .clone()
        .delete_pair(DeletePairRequest {
            pair: "a-to-b".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(resp.remote_deleted);
    assert!(a.list().await.is_empty());
    assert!(b.list().await.is_empty());
    let status = b.get(&pair.id).await.expect_err("gone on b");
    assert_eq!(status.code(), Code::NotFound);
    assert!(service_accounts("b", &pair.id).await.is_empty());
    assert_revoked(&secret).await;
    let Err(err) = a.pairs.destination_client(&pair.id).await else {
        panic!("a deleted pair has no client");
    };
    assert!(err.to_string().contains("not found"), "{err}");

    a.stop().await;
    b.stop().await;
}

/// Malformed tokens are refused as invalid, each naming what is wrong.
async fn malformed_tokens_name_what_is_wrong(a: &Side, good: &str) {
    let cases = [
        ("garbage".to_string(), "does not start with"),
        (good[..good.len() / 2].to_string(), "malformed"),
        (format!("{}%%%", ferry_pairing::token::PREFIX), "base64url"),
        ("ferry-pair-v9.e30".to_string(), "version 9"),
        (
            tamper(good, |v| {
                v.as_object_mut().expect("an object").remove("bearer_token");
            }),
            "bearer_token",
        ),
    ];
    for (text, want) in &cases {
        let status = a.accept(text).await.expect_err(want);
        assert_eq!(status.code(), Code::InvalidArgument, "{want}: {status:?}");
        let d = ferry_pairing::status_detail(&status).expect("detail");
        assert_eq!(d.code, ErrorCode::InvalidArgument as i32);
        assert!(d.message.contains(want), "{want}: {}", d.message);
        assert!(d.hint.contains("ferry pair token create") || d.hint.contains("version"));
    }
}

/// Expired: refused on the source, and the destination revokes its credential (the
/// next token made there reaps it), so even a forged expiry is refused.
async fn expired_tokens_are_refused_and_revoked(a: &Side, b: &Side) {
    let short = b
        .create_token(CreatePairingTokenRequest {
            pair_name: "short".into(),
            ttl: Some(prost_types::Duration {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("short token");
    let short_id = payload(&short)["pair_id"]
        .as_str()
        .expect("pair_id")
        .to_string();
    assert_eq!(service_accounts("b", &short_id).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let status = a.accept(&short).await.expect_err("expired");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let d = ferry_pairing::status_detail(&status).expect("detail");
    assert!(d.message.contains("expired"), "{}", d.message);
    assert!(d.hint.contains("create a new token"), "{}", d.hint);
    assert_eq!(a.list().await.len(), 1);
    // The next token made on b reaps the expired one's credential.
    b.token("after-expiry").await;
    assert!(service_accounts("b", &short_id).await.is_empty());
    // Even with a forged expiry, the destination refuses it.
    let extended = tamper(&short, |v| v["expires_at"] = "2999-01-01T00:00:00Z".into());
    let status = a.accept(&extended).await.expect_err("extended");
    assert_eq!(
        status.code(),
        Code::PermissionDenied,
        "revoked credential: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_tokens_are_refused_with_a_hint_and_store_nothing() {
    let Both {
        a,
        b,
        a_dir: _a_dir,
        b_dir: _b_dir,
    } = both().await;

    // Malformed: each names what is wrong.
    let good = b.token("first").await;
    malformed_tokens_name_what_is_wrong(&a, &good).await;
    assert!(a.list().await.is_empty());

    // Tampered: the destination sees the payload is not what it issued; the token is
    // not spent by the attempt.
    let renamed = tamper(&good, |v| v["pair_name"] = "mine-now".into());
    assert_refused(
        a.accept(&renamed).await,
        Code::InvalidArgument,
        ErrorCode::Integrity,
        "tampered token",
    );
    // A changed credential is refused by the destination's API before anything else.
    let forged = tamper(&good, |v| v["bearer_token"] = "forged".into());
    assert_refused(
        a.accept(&forged).await,
        Code::PermissionDenied,
        ErrorCode::PermissionDenied,
        "forged credential",
    );
    assert!(a.list().await.is_empty());
    assert!(b.list().await.is_empty());

    // Reused: the first accept pairs, the second is refused and adds nothing.
    let pair = a
        .accept(&good)
        .await
        .expect("the untampered token still works");
    let status = a.accept(&good).await.expect_err("reuse");
    assert_eq!(status.code(), Code::AlreadyExists);
    let d = ferry_pairing::status_detail(&status).expect("detail");
    assert!(d.message.contains("already used"), "{}", d.message);
    assert!(!d.hint.is_empty());
    // Reused from another source (another data dir, same cluster): the destination refuses.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = Side::start("a", other_dir.path(), Options::default()).await;
    let status = other.accept(&good).await.expect_err("reuse elsewhere");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    let d = ferry_pairing::status_detail(&status).expect("detail");
    assert_eq!(d.code, ErrorCode::AlreadyExists as i32);
    assert!(d.message.contains("already used"), "{}", d.message);
    assert_eq!(d.cluster, "b");
    assert!(other.list().await.is_empty());
    assert_eq!(a.list().await.len(), 1);
    assert_eq!(b.list().await.len(), 1);
    other.stop().await;

    expired_tokens_are_refused_and_revoked(&a, &b).await;

    // A taken name.
    let again = b.token("again").await;
    let status = a
        .client
        .clone()
        .accept_pairing_token(AcceptPairingTokenRequest {
            token: again,
            pair_name: pair.name.clone(),
        })
        .await
        .expect_err("name taken");
    assert_eq!(status.code(), Code::AlreadyExists);
    assert_eq!(a.list().await.len(), 1);

    // TTL bounds.
    let status = b
        .create_token(CreatePairingTokenRequest {
            pair_name: "forever".into(),
            ttl: Some(prost_types::Duration {
                seconds: 365 * 86_400,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect_err("ttl too long");
    assert_eq!(status.code(), Code::InvalidArgument);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unreachable_destination_stores_nothing_and_leaves_the_token_usable() {
    let Both {
        a,
        b,
        a_dir: _a_dir,
        b_dir: _b_dir,
    } = both().await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };

    let token = b
        .create_token(CreatePairingTokenRequest {
            pair_name: "no-ferry".into(),
            ferry_endpoint: format!("127.0.0.1:{closed}"),
            ..Default::default()
        })
        .await
        .expect("token");
    assert_refused(
        a.accept(&token).await,
        Code::Unavailable,
        ErrorCode::Unreachable,
        "destination Ferry unreachable",
    );

    let token = b
        .create_token(CreatePairingTokenRequest {
            pair_name: "no-api".into(),
            api_server_url: format!("https://127.0.0.1:{closed}"),
            ..Default::default()
        })
        .await
        .expect("token");
    assert_refused(
        a.accept(&token).await,
        Code::Unavailable,
        ErrorCode::Unreachable,
        "destination API unreachable",
    );
    assert!(a.list().await.is_empty());
    assert!(b.list().await.is_empty());

    // The destination's Ferry stopped after issuing the token: nothing stored, and once
    // it is back the same token pairs.
    let token = b.token("later").await;
    let b_dir = b.data_dir.clone();
    let b_addr = b.addr;
    b.stop().await;
    assert_refused(
        a.accept(&token).await,
        Code::Unavailable,
        ErrorCode::Unreachable,
        "destination Ferry stopped",
    );
    assert!(a.list().await.is_empty());
    let b = Side::start(
        "b",
        &b_dir,
        Options {
            bind: b_addr.to_string(),
            ..Default::default()
        },
    )
    .await;
    let pair = a.accept(&token).await.expect("accept once b is back");
    assert_eq!(pair.name, "later");

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_source_keeps_its_pairs_and_their_credentials() {
    let Both {
        a,
        b,
        a_dir,
        b_dir: _b_dir,
    } = both().await;
    for name in ["p1", "p2", "p3"] {
        let token = b.token(name).await;
        a.accept(&token).await.expect("accept");
    }
    // Pages of two, by name.
    let first = a
        .client
        .clone()
        .list_pairs(ListPairsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page 1")
        .into_inner();
    let names: Vec<_> = first.pairs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["p1", "p2"]);
    let second = a
        .client
        .clone()
        .list_pairs(ListPairsRequest {
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.pairs.len(), 1);
    assert_eq!(second.pairs[0].name, "p3");
    assert!(second.next_page_token.is_empty());

    let addr = a.addr;
    a.stop().await;
    let a = Side::start(
        "a",
        a_dir.path(),
        Options {
            bind: addr.to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(a.list().await.len(), 3);
    let client = a.pairs.destination_client("p2").await.expect("client");
    let ns = Api::<Namespace>::all(client)
        .get("kube-system")
        .await
        .expect("reach b after restart");
    let pair = a.pairs.get("p2").await.expect("pair");
    assert_eq!(
        ns.metadata.uid.as_deref(),
        pair.destination.as_ref().map(|d| d.cluster_id.as_str())
    );
    let resp = a
        .client
        .clone()
        .check_pair(CheckPairRequest {
            pair: "p2".into(),
            repository: None,
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(
        resp.pair.unwrap().status,
        PairStatus::Ready as i32,
        "{:?}",
        resp.checks
    );

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_on_the_destination_revokes_and_tells_the_source() {
    let Both {
        a,
        b,
        a_dir: _a_dir,
        b_dir: _b_dir,
    } = both().await;
    let token = b.token("from-b").await;
    let secret = bearer(&token);
    let pair = a.accept(&token).await.expect("accept");

    // A credential revoked behind Ferry's back shows up in CheckPair, with a hint. The
    // binding first: RBAC changes apply at once.
    let env = ferry_testenv::shared().await.expect("env");
    let sa = service_accounts("b", &pair.id).await.remove(0);
    let admin_b = env.client("b", "admin").await.expect("client");
    Api::<ClusterRoleBinding>::all(admin_b.clone())
        .delete(&sa, &Default::default())
        .await
        .expect("delete binding");
    let resp = check(&a, &pair.id).await;
    assert_eq!(resp.pair.unwrap().status, PairStatus::Degraded as i32);
    let perms = find_check(
        &resp.checks,
        "permissions",
        CheckDirection::SourceToDestination,
    );
    assert_eq!(perms.status, CheckStatus::Failed as i32, "{perms:?}");
    let e = perms.error.as_ref().expect("error");
    assert_eq!(e.code, ErrorCode::PermissionDenied as i32);
    assert_eq!(e.cluster, "b");
    assert!(e.hint.contains("ferry-migrator"), "{}", e.hint);
    let back = find_check(
        &resp.checks,
        "ferry-reachable",
        CheckDirection::DestinationToSource,
    );
    assert_eq!(back.status, CheckStatus::Passed as i32, "{back:?}");

    // Then the ServiceAccount: the token stops authenticating once the API server's
    // token cache (10 s by default) lets go of it.
    Api::<ServiceAccount>::namespaced(admin_b, "ferry-system")
        .delete(&sa, &Default::default())
        .await
        .expect("delete service account");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let api = loop {
        let resp = check(&a, &pair.id).await;
        let api = find_check(
            &resp.checks,
            "api-reachable",
            CheckDirection::SourceToDestination,
        );
        if api.status == CheckStatus::Failed as i32 || std::time::Instant::now() > deadline {
            break api;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(api.status, CheckStatus::Failed as i32, "{api:?}");
    let e = api.error.as_ref().expect("error");
    assert_eq!(e.code, ErrorCode::PermissionDenied as i32);
    assert!(e.hint.contains("revoked"), "{}", e.hint);

    let resp = b
        .client
        .clone()
        .delete_pair(DeletePairRequest {
            pair: "from-b".into(),
        })
        .await
        .expect("delete")
        .into_inner();
    assert!(resp.remote_deleted);
    assert!(a.list().await.is_empty());
    assert!(b.list().await.is_empty());
    assert_revoked(&secret).await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn token_request_credentials_pair_and_the_source_renews_them() {
    let a_dir = tempfile::tempdir().expect("tempdir");
    let b_dir = tempfile::tempdir().expect("tempdir");
    let a = Side::start("a", a_dir.path(), Options::default()).await;
    let b = Side::start(
        "b",
        b_dir.path(),
        Options {
            credential_kind: CredentialKind::TokenRequest,
            ..Default::default()
        },
    )
    .await;
    let token = b.token("short-lived").await;
    let pair = a.accept(&token).await.expect("accept");
    let client = a.pairs.destination_client(&pair.id).await.expect("client");
    Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect("list namespaces on b");
    let resp = b
        .client
        .clone()
        .check_pair(CheckPairRequest {
            pair: pair.id.clone(),
            repository: None,
        })
        .await
        .expect("check on the destination")
        .into_inner();
    let valid = resp
        .checks
        .iter()
        .find(|c| c.name == "credential-valid")
        .expect("credential check");
    assert_eq!(valid.status, CheckStatus::Passed as i32, "{valid:?}");
    assert!(valid.message.contains("valid until"), "{}", valid.message);
    assert_eq!(
        resp.pair.unwrap().status,
        PairStatus::Ready as i32,
        "{:?}",
        resp.checks
    );

    // The source renews the credential with the destination; the old token's expiry
    // is in the past of the new one's, and the pair goes on working with the new one.
    let before = expiry_on_b(&b, &pair.id).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let renewed = a
        .pairs
        .renew_expiring(Some(std::time::Duration::from_secs(10 * 86_400)))
        .await;
    assert_eq!(renewed.len(), 1, "{renewed:?}");
    let expires = *renewed[0].1.as_ref().expect("renewed");
    assert!(expires > 0);
    let after = expiry_on_b(&b, &pair.id).await;
    assert_ne!(before, after, "the destination records the new expiry");
    let client = a.pairs.destination_client(&pair.id).await.expect("client");
    Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await
        .expect("list namespaces on b with the renewed credential");
    // Nothing to renew while a third of the lifetime is left.
    assert!(a.pairs.renew_expiring(None).await.is_empty());
    // Only the pair's source, proving the pair, gets a credential.
    let refused = b
        .client
        .clone()
        .renew_pair_credential(RenewPairCredentialRequest {
            pair_id: pair.id.clone(),
            token_id: "not the pair's token id".into(),
        })
        .await
        .expect_err("a wrong token id is refused");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert!(
        refused
            .message()
            .contains("does not come from the pair's source"),
        "{refused:?}"
    );
    a.stop().await;
    b.stop().await;
}

/// The expiry of `pair`'s credential as the destination's CheckPair reports it.
async fn expiry_on_b(b: &Side, pair: &str) -> String {
    let resp = b
        .client
        .clone()
        .check_pair(CheckPairRequest {
            pair: pair.to_string(),
            repository: None,
        })
        .await
        .expect("check on the destination")
        .into_inner();
    resp.checks
        .iter()
        .find(|c| c.name == "credential-valid")
        .map(|c| c.message.clone())
        .expect("credential check")
}

/// A catalog on `cluster` with Secrets `s3` (the test S3 server's credentials) and `key`
/// in a namespace of its own, its state in `dir`.
async fn catalog(cluster: &str, dir: &Path) -> CatalogService {
    let env = ferry_testenv::shared().await.expect("env");
    let s3 = env.s3().expect("S3 server").clone();
    let kube = env.client(cluster, "admin").await.expect("client");
    let ns = ferry_testenv::unique_name(&format!("pair-cat-{cluster}"));
    let namespace: Namespace =
        serde_json::from_value(serde_json::json!({ "metadata": { "name": ns } }))
            .expect("namespace");
    Api::<Namespace>::all(kube.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    let secrets = Api::<Secret>::namespaced(kube.clone(), &ns);
    for (name, data) in [
        (
            "s3",
            vec![
                ("access_key_id", s3.access_key.as_bytes()),
                ("secret_access_key", s3.secret_key.as_bytes()),
            ],
        ),
        (
            "key",
            vec![("key", &b"the pairing test's repository key"[..])],
        ),
    ] {
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            data: Some(
                data.into_iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }
    let mut config = CatalogConfig::new(kube, cluster, dir.to_path_buf());
    config.secrets_namespace = ns;
    config.init_options = ferry_repo::InitOptions::small_for_tests();
    CatalogService::new(config).await.expect("catalog")
}

/// Profile `name` (migration: read-write from both clusters) on `prefix` of the test
/// bucket; returns its repository id.
async fn create_profile(catalog: &CatalogService, name: &str, prefix: &str) -> String {
    let env = ferry_testenv::shared().await.expect("env");
    let s3 = env.s3().expect("S3 server");
    let secret = |name: &str| {
        Some(SecretRef {
            namespace: String::new(),
            name: name.into(),
        })
    };
    let req = CreateProfileRequest {
        name: name.into(),
        kind: ProfileKind::Migration as i32,
        backend: StorageBackend::S3 as i32,
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        prefix: prefix.into(),
        region: s3.region.clone(),
        credentials_secret: secret("s3"),
        verify_tls: None,
        encryption_key_secret: secret("key"),
        create_repository: true,
        migration_token: String::new(),
        expected_signer: String::new(),
        unsafe_skip_signer_verification: false,
        namespace: String::new(),
    };
    CatalogApi::create_profile(catalog, tonic::Request::new(req))
        .await
        .expect("create profile")
        .into_inner()
        .profile
        .expect("profile")
        .repository_id
}

async fn delete_profile(catalog: &CatalogService, name: &str) {
    CatalogApi::delete_profile(
        catalog,
        tonic::Request::new(DeleteProfileRequest { name: name.into() }),
    )
    .await
    .expect("delete profile");
}

async fn check_profile(side: &Side, pair: &str, profile: &str) -> CheckPairResponse {
    let resp = side
        .client
        .clone()
        .check_pair(CheckPairRequest {
            pair: pair.into(),
            repository: Some(RepositoryRef {
                profile: profile.into(),
                repository_id: String::new(),
            }),
        })
        .await
        .expect("check")
        .into_inner();
    for c in &resp.checks {
        eprintln!(
            "check {} {:?} {:?}: {}",
            c.name,
            CheckDirection::try_from(c.direction),
            CheckStatus::try_from(c.status),
            c.message
        );
    }
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn repository_checks_go_through_both_catalogs() {
    let (a_dir, b_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let cat_a = catalog("a", &a_dir.path().join("catalog")).await;
    let cat_b = catalog("b", &b_dir.path().join("catalog")).await;
    let with = |catalog: &CatalogService| Options {
        catalog: Some(catalog.clone()),
        ..Default::default()
    };
    let a = Side::start("a", a_dir.path(), with(&cat_a)).await;
    let b = Side::start("b", b_dir.path(), with(&cat_b)).await;
    let token = b.token("repo-check").await;
    let pair = a.accept(&token).await.expect("accept");
    let s2d = CheckDirection::SourceToDestination;
    let d2s = CheckDirection::DestinationToSource;

    // The same repository behind profile "main" on both clusters.
    let prefix = ferry_testenv::unique_name("pair-repo");
    let id = create_profile(&cat_a, "main", &prefix).await;
    assert_eq!(create_profile(&cat_b, "main", &prefix).await, id);
    for side in [&a, &b] {
        let resp = check_profile(side, &pair.id, "main").await;
        for c in &resp.checks {
            assert_ne!(c.status, CheckStatus::Failed as i32, "{c:?}");
        }
        let writable = find_check(&resp.checks, "repository-writable", s2d);
        let readable = find_check(&resp.checks, "repository-readable", d2s);
        for c in [&writable, &readable] {
            assert_eq!(c.status, CheckStatus::Passed as i32, "{c:?}");
            assert!(c.message.contains(&id), "{}", c.message);
        }
        assert!(writable.message.contains("probe"), "{}", writable.message);
        assert_eq!(resp.pair.expect("pair").status, PairStatus::Ready as i32);
    }

    // The destination's "main" points at another prefix: another repository.
    delete_profile(&cat_b, "main").await;
    let other = create_profile(&cat_b, "main", &format!("{prefix}-other")).await;
    assert_ne!(other, id);
    let resp = check_profile(&a, &pair.id, "main").await;
    let writable = find_check(&resp.checks, "repository-writable", s2d);
    assert_eq!(writable.status, CheckStatus::Passed as i32, "{writable:?}");
    let readable = find_check(&resp.checks, "repository-readable", d2s);
    assert_eq!(readable.status, CheckStatus::Failed as i32, "{readable:?}");
    assert!(
        readable.message.contains(&id) && readable.message.contains(&other),
        "names both repositories: {}",
        readable.message
    );
    let e = readable.error.as_ref().expect("error");
    assert_eq!(e.cluster, "b");
    assert!(
        e.hint.contains("create profile main on cluster b") && e.hint.contains("bucket/prefix"),
        "{}",
        e.hint
    );
    assert_eq!(resp.pair.expect("pair").status, PairStatus::Degraded as i32);

    // The destination has no "main" at all.
    delete_profile(&cat_b, "main").await;
    let resp = check_profile(&a, &pair.id, "main").await;
    let readable = find_check(&resp.checks, "repository-readable", d2s);
    assert_eq!(readable.status, CheckStatus::Failed as i32, "{readable:?}");
    assert!(
        readable.message.contains("\"main\"") && readable.message.contains("cluster b"),
        "{}",
        readable.message
    );
    let e = readable.error.as_ref().expect("error");
    assert_eq!(e.code, ErrorCode::NotFound as i32);
    assert!(
        e.hint.contains("ferry --context b profile create main"),
        "{}",
        e.hint
    );
    // From the destination's end, its own check names the missing profile too.
    let resp = check_profile(&b, &pair.id, "main").await;
    let local = find_check(&resp.checks, "repository-readable", d2s);
    assert_eq!(local.status, CheckStatus::Failed as i32, "{local:?}");
    assert!(
        local
            .error
            .as_ref()
            .is_some_and(|e| e.hint.contains("--context b")),
        "{local:?}"
    );

    a.stop().await;
    b.stop().await;
}
