//! What a namespace user (alice, who holds a Role in her own namespace and nothing else)
//! or a caller with no token reaches through real `ferry serve` processes on the test
//! environment's clusters: another namespace's restore points, the profile and pair
//! checks, import policies of every namespace, migration tokens, and the ServiceAccounts
//! schedules run as, administrators' too (issue 18, holes 3, 5, 7, 8 and 10).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::control::{
    cli, grant, grant_rbac, grpcurl, jobs, key_secret, kubectl, kubectl_ok, main_profile,
    profiles_and_pair, s3_secret, serve, service_account_with_rights, wait_answering,
};
use common::random_bytes;
use ferry_client::{Ferry, proto};
use tonic::Code;

/// The refusal's code is `code` and its message holds every one of `words`.
fn assert_refused(status: &tonic::Status, code: Code, words: &[&str]) {
    assert_eq!(status.code(), code, "{status:?}");
    for w in words {
        assert!(status.message().contains(w), "{w:?} not in {status:?}");
    }
}

/// The final report of the job a Start* call queued.
async fn finished(
    ferry: &Ferry,
    started: Result<tonic::Response<proto::StartJobResponse>, tonic::Status>,
) -> proto::JobReport {
    let job = started.unwrap().into_inner().job.unwrap();
    ferry.job(&job.id).wait(|_| {}).await.unwrap()
}

/// Runs one at a time: each test's `ferry serve` publishes itself as cluster a's Ferry,
/// which the `ferry` command and the SDK find by context.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn alice_token(env: &ferry_testenv::TestEnv, cluster: &str) -> String {
    env.token(cluster, "alice").unwrap()
}

fn main_repository() -> Option<proto::RepositoryRef> {
    Some(proto::RepositoryRef {
        profile: "main".into(),
        repository_id: String::new(),
    })
}

/// cluster a's Ferry (its `ferry serve` lives as long as the returned process), with
/// the administrator's profile `main` in a fresh prefix named after `test`: what the
/// tests of restore points, tokens and schedules start from. Also its endpoint.
fn ferry_with_main_profile(
    env: &ferry_testenv::TestEnv,
    root: &std::path::Path,
    test: &str,
    seed: u64,
) -> (common::control::Serve, String) {
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig();
    let (serve_a, endpoint) = serve(kc, "a", root);
    wait_answering(kc, &["a"]);
    let (s3_name, key_name) = (
        ferry_testenv::unique_name("s3"),
        ferry_testenv::unique_name("key"),
    );
    let key = root.join("repo.key");
    std::fs::write(&key, random_bytes(32, seed)).unwrap();
    s3_secret(kc, "a", &s3_name, &s3.access_key, &s3.secret_key);
    key_secret(kc, "a", &key_name, &key);
    let location = format!(
        "{}/{}/{}",
        s3.endpoint,
        s3.bucket,
        ferry_testenv::unique_name(test)
    );
    main_profile(kc, "a", &location, &s3.region, (&s3_name, &key_name), true).ok();
    (serve_a, endpoint)
}

/// Hole 3: restore points are copies of a namespace. alice may neither list, look at nor
/// restore those of a namespace she may not read, even into her own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_reads_only_namespaces_the_caller_may_read() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // The administrator's profile on a, in a fresh prefix.
    let (_serve_a, _) = ferry_with_main_profile(env, root, "tenant-restore", 3);

    let (admin, bobs, bobs_point) = bobs_namespace_exported_by_the_administrator(&kc).await;
    let (mine, alice) = alices_namespace_hers_entirely(&kc).await;
    let ctx = Restore {
        kc,
        admin,
        bobs,
        bobs_point,
        mine,
        alice,
    };
    alice_is_shown_nothing_of_bobs_restore_points(&ctx).await;
    alice_may_not_restore_bobs_into_her_own_namespace(&ctx).await;
}

/// What the phases of the restore test share: the kubeconfig; bob's namespace and the
/// administrator's restore point of it; alice's namespace and her Ferry client.
struct Restore {
    kc: std::path::PathBuf,
    admin: Ferry,
    bobs: String,
    bobs_point: String,
    mine: String,
    alice: Ferry,
}

/// bob's namespace, with a Secret, exported by the administrator. Returns the
/// administrator's client, bob's namespace and its restore point.
async fn bobs_namespace_exported_by_the_administrator(
    kc: &std::path::Path,
) -> (Ferry, String, String) {
    let bobs = ferry_testenv::unique_name("bob-shop");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {bobs}}}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {{name: creds, namespace: {bobs}}}\n\
         stringData: {{password: bobs-password}}\n"
    );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    let admin = Ferry::for_context(Some(kc), Some("a")).await.unwrap();
    let export = admin
        .transfer()
        .start_export(proto::StartExportRequest {
            application: Some(proto::ApplicationSelector {
                namespace: bobs.clone(),
                ..Default::default()
            }),
            repository: main_repository(),
            ..Default::default()
        })
        .await;
    let exported = finished(&admin, export).await;
    assert_eq!(
        exported.state,
        proto::JobState::Succeeded as i32,
        "{exported:#?}"
    );
    let bobs_point = exported.restore_point_id.clone();
    assert!(!bobs_point.is_empty(), "{exported:#?}");
    (admin, bobs, bobs_point)
}

/// alice's namespace: hers entirely. Returns it and her client.
async fn alices_namespace_hers_entirely(kc: &std::path::Path) -> (String, Ferry) {
    let mine = ferry_testenv::unique_name("alice-shop");
    kubectl(kc, "a", &["create", "namespace", &mine], None);
    grant(kc, "a", &mine, "alice");
    let alice = Ferry::for_context(Some(kc), Some("a-alice")).await.unwrap();
    (mine, alice)
}

/// Listings show her nothing of bob's; the administrator sees it. Looking at bob's
/// restore point by id is refused her too, and her applications are hers only.
async fn alice_is_shown_nothing_of_bobs_restore_points(ctx: &Restore) {
    let Restore {
        admin,
        bobs,
        bobs_point,
        mine,
        alice,
        ..
    } = ctx;
    let listed = |ferry: &Ferry, namespace: &str| {
        let mut catalog = ferry.catalog();
        let req = proto::ListRestorePointsRequest {
            repository: main_repository(),
            namespace: namespace.into(),
            ..Default::default()
        };
        async move { catalog.list_restore_points(req).await }
    };
    let ids = |r: proto::ListRestorePointsResponse| -> Vec<String> {
        r.restore_points.into_iter().map(|p| p.id).collect()
    };
    let all = ids(listed(admin, "").await.unwrap().into_inner());
    assert!(all.contains(bobs_point), "{all:?}");
    let hers = ids(listed(alice, "").await.unwrap().into_inner());
    assert!(!hers.contains(bobs_point), "alice listed bob's: {hers:?}");
    let named = listed(alice, bobs).await.unwrap_err();
    assert_refused(
        &named,
        Code::PermissionDenied,
        &["alice may not", &format!("list pods in namespace {bobs}")],
    );
    let get = |ferry: &Ferry| {
        let mut catalog = ferry.catalog();
        let req = proto::GetRestorePointRequest {
            repository: main_repository(),
            id: bobs_point.clone(),
        };
        async move { catalog.get_restore_point(req).await }
    };
    assert!(get(admin).await.is_ok());
    let looked = get(alice).await.unwrap_err();
    assert_refused(
        &looked,
        Code::PermissionDenied,
        &[&format!("namespace {bobs}"), "on cluster a"],
    );
    let apps: Vec<String> = alice
        .catalog()
        .list_applications(proto::ListApplicationsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .applications
        .into_iter()
        .map(|a| a.namespace)
        .collect();
    assert!(
        apps.contains(mine) && !apps.contains(bobs),
        "alice's applications: {apps:?}"
    );
}

/// Restoring bob's into her own namespace, where she may create anything, fails before
/// anything of it is applied.
async fn alice_may_not_restore_bobs_into_her_own_namespace(ctx: &Restore) {
    let Restore {
        kc,
        bobs,
        bobs_point,
        mine,
        alice,
        ..
    } = ctx;
    let restore = alice
        .transfer()
        .start_restore(proto::StartRestoreRequest {
            repository: main_repository(),
            restore_point_id: bobs_point.clone(),
            apply: Some(proto::ApplyOptions {
                namespace_mapping: [(bobs.clone(), mine.clone())].into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let report = finished(alice, restore).await;
    assert_eq!(report.state, proto::JobState::Failed as i32, "{report:#?}");
    let error = report.error.clone().unwrap();
    assert_eq!(
        error.code,
        proto::ErrorCode::PermissionDenied as i32,
        "{error:?}"
    );
    assert!(
        error.message.contains("alice may not")
            && error
                .message
                .contains(&format!("get secrets in namespace {bobs}")),
        "{error:?}"
    );
    assert!(
        !kubectl_ok(kc, "a", &["-n", mine, "get", "secret", "creds"]),
        "bob's Secret was restored into alice's namespace"
    );
}

/// Hole 8: the profile and pair checks cost a key derivation, probe writes and a status
/// write; nobody without a token reaches them, and only administrators run them. The
/// pair's two Ferries still check each other, proving the pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_and_pair_checks_need_sign_in_and_an_administrator() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, endpoint_a) = serve(&kc, "a", root);
    let (_serve_b, endpoint_b) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);
    // The pair is made and checked both ways, repository included, by the
    // administrator: each side's half of the checks is asked of the other with the
    // pair's proof.
    let (s3_name, key_name) = (
        ferry_testenv::unique_name("s3"),
        ferry_testenv::unique_name("key"),
    );
    profiles_and_pair(&kc, s3, root, (&s3_name, &key_name), "tenant-checks", 8);
    let addr = endpoint_a.trim_start_matches("http://");
    let alice = alice_token(env, "a");

    nobody_without_a_token_reaches_the_checks(addr);
    let (ferry_alice, pair) = alice_may_look_at_the_pair(&kc).await;
    a_fresh_pair_credential_comes_only_to_the_source(env, &endpoint_b, &pair);
    alice_may_check_neither_the_pair_nor_a_profile(&ferry_alice, addr, &alice).await;
    the_administrators_check_from_either_side(&kc).await;
}

/// No token: nothing answers. A made-up pair proof is no way in either.
fn nobody_without_a_token_reaches_the_checks(addr: &str) {
    for (method, data) in [
        (
            "ferry.v1.CatalogService/CheckProfile",
            r#"{"name":"main","write":true}"#,
        ),
        ("ferry.v1.PairingService/CheckPair", r#"{"pair":"a-to-b"}"#),
        ("ferry.v1.PairingService/GetPair", r#"{"pair":"a-to-b"}"#),
    ] {
        let answer = grpcurl(addr, None, method, data);
        assert!(answer.contains("Unauthenticated"), "{method}: {answer}");
    }
    // A made-up pair proof is no way in either.
    let (_, forged) = ferry_testenv::run_grpcurl(&[
        "-plaintext",
        "-H",
        "x-ferry-pair-proof: 0123456789abcdef",
        "-d",
        r#"{"pair":"a-to-b"}"#,
        addr,
        "ferry.v1.PairingService/CheckPair",
    ]);
    assert!(forged.contains("Unauthenticated"), "{forged}");
}

/// alice may look at the pair. Returns her client and the pair.
async fn alice_may_look_at_the_pair(kc: &std::path::Path) -> (Ferry, proto::Pair) {
    let ferry_alice = Ferry::for_context(Some(kc), Some("a-alice")).await.unwrap();
    let pair = ferry_alice
        .pairing()
        .get_pair(proto::GetPairRequest {
            pair: "a-to-b".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .pair
        .unwrap();
    assert_eq!(pair.name, "a-to-b");
    (ferry_alice, pair)
}

/// A fresh credential for the pair comes only to its source, proving the pair with the
/// token's id: neither an anonymous caller nor alice (who knows the pair's id, not its
/// proof) gets one from b.
fn a_fresh_pair_credential_comes_only_to_the_source(
    env: &ferry_testenv::TestEnv,
    endpoint_b: &str,
    pair: &proto::Pair,
) {
    let renew = format!(
        r#"{{"pair_id":"{}","token_id":"0123456789abcdef"}}"#,
        pair.id
    );
    let alice_b = alice_token(env, "b");
    for token in [None, Some(alice_b.as_str())] {
        let answer = grpcurl(
            endpoint_b.trim_start_matches("http://"),
            token,
            "ferry.v1.PairingService/RenewPairCredential",
            &renew,
        );
        assert!(
            answer.contains("refusing to renew the credential of pair a-to-b")
                && !answer.contains("bearer_token"),
            "{token:?}: {answer}"
        );
    }
}

/// alice may not check the pair or a profile, through the SDK or grpcurl (with her
/// token `alice`).
async fn alice_may_check_neither_the_pair_nor_a_profile(
    ferry_alice: &Ferry,
    addr: &str,
    alice: &str,
) {
    let checked = ferry_alice
        .pairing()
        .check_pair(proto::CheckPairRequest {
            pair: "a-to-b".into(),
            repository: main_repository(),
        })
        .await
        .unwrap_err();
    assert_refused(
        &checked,
        Code::PermissionDenied,
        &[
            "alice is not an administrator of cluster a",
            "checking a pair",
        ],
    );
    let profile = ferry_alice
        .catalog()
        .check_profile(proto::CheckProfileRequest {
            name: "main".into(),
            write: true,
        })
        .await
        .unwrap_err();
    assert_refused(
        &profile,
        Code::PermissionDenied,
        &[
            "alice is not an administrator of cluster a",
            "checking a profile",
        ],
    );
    let by_grpcurl = grpcurl(
        addr,
        Some(alice),
        "ferry.v1.CatalogService/CheckProfile",
        r#"{"name":"main"}"#,
    );
    assert!(by_grpcurl.contains("PermissionDenied"), "{by_grpcurl}");
}

/// The administrators check from either side, each through the other's Ferry: nothing
/// fails, the repository and reachability checks pass both ways, and the pair is Ready.
async fn the_administrators_check_from_either_side(kc: &std::path::Path) {
    for side in ["a", "b"] {
        let ferry = Ferry::for_context(Some(kc), Some(side)).await.unwrap();
        let resp = ferry
            .pairing()
            .check_pair(proto::CheckPairRequest {
                pair: "a-to-b".into(),
                repository: main_repository(),
            })
            .await
            .unwrap()
            .into_inner();
        for c in &resp.checks {
            assert_ne!(c.status, proto::CheckStatus::Failed as i32, "{side}: {c:?}");
        }
        // Each side's repository check is its own, the other's asked of its Ferry.
        let own = match side {
            "a" => (
                "ferry-reachable",
                proto::CheckDirection::SourceToDestination,
            ),
            _ => (
                "credential-valid",
                proto::CheckDirection::SourceToDestination,
            ),
        };
        for (name, direction) in [
            (
                "repository-writable",
                proto::CheckDirection::SourceToDestination,
            ),
            (
                "repository-readable",
                proto::CheckDirection::DestinationToSource,
            ),
            (
                "ferry-reachable",
                proto::CheckDirection::DestinationToSource,
            ),
            own,
        ] {
            let found = resp
                .checks
                .iter()
                .find(|c| c.name == name && c.direction == direction as i32)
                .unwrap_or_else(|| panic!("{side}: no {name} {direction:?} in {resp:#?}"));
            assert_eq!(
                found.status,
                proto::CheckStatus::Passed as i32,
                "{side}: {found:?}"
            );
        }
        assert_eq!(
            resp.pair.unwrap().status,
            proto::PairStatus::Ready as i32,
            "{side}"
        );
    }
}

/// Hole 10: an import policy with no namespace restores whatever anyone exported into
/// its repository; only administrators may create one. Having no namespace of its own,
/// it names its ServiceAccount with its namespace (hole 7: every schedule acts as one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_policies_of_every_namespace_are_for_administrators() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let (_serve_a, _) = serve(&kc, "a", tmp.path());
    wait_answering(&kc, &["a"]);

    let policy =
        |name: &str, namespace: &str, service_account: &str| proto::CreateScheduleRequest {
            name: name.into(),
            trigger: Some(proto::create_schedule_request::Trigger::Interval(
                prost_types::Duration {
                    seconds: 900,
                    nanos: 0,
                },
            )),
            spec: Some(proto::create_schedule_request::Spec::ImportPolicy(
                proto::ImportPolicySpec {
                    repository: Some(proto::RepositoryRef {
                        profile: "no-such-profile".into(),
                        repository_id: String::new(),
                    }),
                    application: Some(proto::ApplicationSelector {
                        namespace: namespace.into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )),
            service_account: service_account.into(),
            ..Default::default()
        };
    let alice = Ferry::for_context(Some(&kc), Some("a-alice"))
        .await
        .unwrap();
    let every = alice
        .scheduler()
        .create_schedule(policy("every", "", "ops/runner"))
        .await
        .unwrap_err();
    assert_refused(
        &every,
        Code::PermissionDenied,
        &[
            "alice is not an administrator of cluster a",
            "import policy with no namespace",
        ],
    );
    let by_cli = cli(
        &kc,
        &[
            "--context",
            "a-alice",
            "import-policy",
            "create",
            "every",
            "--profile",
            "no-such-profile",
            "--every",
            "15m",
        ],
    );
    assert_eq!(by_cli.code, Some(1), "{by_cli:?}");
    assert!(
        by_cli.stderr.contains("is not an administrator")
            && by_cli.stderr.contains("import policy with no namespace"),
        "{by_cli:?}"
    );

    // Naming a namespace, she gets past that, to the next thing her policy needs: a
    // ServiceAccount to run as.
    let named = alice
        .scheduler()
        .create_schedule(policy("hers", "alice-shop", ""))
        .await
        .unwrap_err();
    assert_eq!(named.code(), Code::InvalidArgument, "{named:?}");
    assert!(named.message().contains("service_account"), "{named:?}");
    the_administrators_policy_of_every_namespace_names_its_service_accounts_namespace(
        &kc,
        |name, service_account| policy(name, "", service_account),
    )
    .await;
}

/// The administrator's import policy of every namespace needs a ServiceAccount too, and
/// one named with its namespace: a bare name has no namespace to be in. So named, it
/// gets past that, to the profile (which does not exist here; cli/tests/import_policy.rs
/// creates one on a real import profile).
async fn the_administrators_policy_of_every_namespace_names_its_service_accounts_namespace(
    kc: &std::path::Path,
    policy: impl Fn(&str, &str) -> proto::CreateScheduleRequest,
) {
    let admin = Ferry::for_context(Some(kc), Some("a")).await.unwrap();
    let create = |service_account: &str| {
        let mut scheduler = admin.scheduler();
        let request = policy("every", service_account);
        async move { scheduler.create_schedule(request).await.unwrap_err() }
    };
    assert_refused(
        &create("").await,
        Code::InvalidArgument,
        &[
            "service_account",
            "every schedule's runs act as a ServiceAccount",
        ],
    );
    assert_refused(
        &create("runner").await,
        Code::InvalidArgument,
        &["service_account", "\"runner\" names no namespace"],
    );
    assert_refused(
        &create("ops/runner").await,
        Code::InvalidArgument,
        &["no-such-profile"],
    );
}

/// Hole 5: a migration token carries the key of its profile's whole repository, which
/// opens every namespace exported into it, wrapped for whatever recipient key the
/// request names (alice could name one of her own and unwrap it). So alice may export
/// her own namespace, but not have a token made; nobody without a token exports at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_user_gets_no_key_that_opens_other_namespaces() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, endpoint_a) = ferry_with_main_profile(env, root, "tenant-token", 5);
    // Her namespace, all of which she may read (its Roles and RoleBindings too).
    let mine = ferry_testenv::unique_name("alice-shop");
    kubectl(&kc, "a", &["create", "namespace", &mine], None);
    grant(&kc, "a", &mine, "alice");
    grant_rbac(&kc, "a", &mine);
    let recipient = ferry_token::ImportKey::generate()
        .unwrap()
        .public_key()
        .to_text();
    let export = proto::StartExportRequest {
        application: Some(proto::ApplicationSelector {
            namespace: mine.clone(),
            ..Default::default()
        }),
        repository: main_repository(),
        recipient_key: recipient.clone(),
        ..Default::default()
    };

    // alice, of her own namespace, with a recipient key: refused before a job exists.
    let alice = Ferry::for_context(Some(&kc), Some("a-alice"))
        .await
        .unwrap();
    let refused = alice
        .transfer()
        .start_export(export.clone())
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::PermissionDenied,
        &[
            "alice is not an administrator of cluster a",
            "migration token",
            "every namespace",
        ],
    );
    let queued = jobs(&alice).await;
    assert!(
        queued.is_empty(),
        "a refused export queued a job: {queued:#?}"
    );

    // With no token at all: not even the question is looked at.
    let data = format!(
        r#"{{"application":{{"namespace":"{mine}"}},"repository":{{"profile":"main"}},"recipient_key":"{recipient}"}}"#
    );
    let answer = grpcurl(
        endpoint_a.trim_start_matches("http://"),
        None,
        "ferry.v1.TransferService/StartExport",
        &data,
    );
    assert!(answer.contains("Unauthenticated"), "{answer}");

    // The other ways to a token or a bound export profile (`ferry migration-token`,
    // `ferry profile create -n`): refused to her, and to nobody's token unanswered.
    let addr = endpoint_a.trim_start_matches("http://");
    let token_request =
        format!(r#"{{"profile":"main","namespace":"{mine}","recipient_key":"{recipient}"}}"#);
    let bound_profile = format!(
        r#"{{"name":"hers","kind":"PROFILE_KIND_EXPORT","backend":"STORAGE_BACKEND_LOCAL","bucket":"/tmp","namespace":"{mine}"}}"#
    );
    for (method, data) in [
        (
            "ferry.v1.CatalogService/IssueMigrationToken",
            &token_request,
        ),
        ("ferry.v1.CatalogService/CreateProfile", &bound_profile),
    ] {
        let anonymous = grpcurl(addr, None, method, data);
        assert!(
            anonymous.contains("Unauthenticated"),
            "{method}: {anonymous}"
        );
        let hers = grpcurl(addr, Some(&alice_token(env, "a")), method, data);
        assert!(
            hers.contains("PermissionDenied") && hers.contains("not an administrator"),
            "{method}: {hers}"
        );
    }

    // Without a recipient her export runs: the refusal is about the key, not the export.
    let report = finished(
        &alice,
        alice
            .transfer()
            .start_export(proto::StartExportRequest {
                recipient_key: String::new(),
                ..export
            })
            .await,
    )
    .await;
    assert_eq!(
        report.state,
        proto::JobState::Succeeded as i32,
        "{report:#?}"
    );
    assert!(report.migration_token.is_empty(), "{report:#?}");
}

/// The runs of schedule `name`, newest first, once one has ended.
async fn ended_run(ferry: &Ferry, name: &str, after: usize) -> proto::ScheduleRun {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let runs = ferry
            .scheduler()
            .list_runs(proto::ListRunsRequest {
                schedule: name.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .runs;
        let ended: Vec<&proto::ScheduleRun> = runs
            .iter()
            .filter(|r| r.state != proto::RunState::Running as i32)
            .collect();
        if ended.len() > after {
            return ended[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run of {name} ended: {runs:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
}

/// Hole 7, schedules: a run is judged by the rights its identity holds when it starts,
/// not by groups recorded at creation. alice's schedule runs as a ServiceAccount of her
/// namespace that she may act as (one of another namespace she may not name); take its
/// RoleBinding away and the next run is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_judged_at_every_run_by_the_rights_of_their_service_account() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, _) = ferry_with_main_profile(env, root, "tenant-schedule", 7);
    let mine = ferry_testenv::unique_name("alice-shop");
    let bobs = ferry_testenv::unique_name("bob-shop");
    for ns in [&mine, &bobs] {
        kubectl(&kc, "a", &["create", "namespace", ns], None);
    }
    grant(&kc, "a", &mine, "alice");
    grant_rbac(&kc, "a", &mine);
    let alice = Ferry::for_context(Some(&kc), Some("a-alice"))
        .await
        .unwrap();

    a_users_schedule_needs_a_service_account_she_may_act_as(&alice, &mine, &bobs).await;
    her_own_service_account_runs_her_schedule(&kc, &alice, &mine).await;
    its_rights_taken_away_the_next_run_is_refused(&kc, &alice, &mine).await;
}

/// An hourly schedule `name` exporting `namespace` as `service_account`, tried once.
fn export_schedule(
    name: &str,
    namespace: &str,
    service_account: &str,
) -> proto::CreateScheduleRequest {
    proto::CreateScheduleRequest {
        name: name.into(),
        trigger: Some(proto::create_schedule_request::Trigger::Interval(
            prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            },
        )),
        spec: Some(proto::create_schedule_request::Spec::Export(
            proto::StartExportRequest {
                application: Some(proto::ApplicationSelector {
                    namespace: namespace.into(),
                    ..Default::default()
                }),
                repository: main_repository(),
                ..Default::default()
            },
        )),
        retry: Some(proto::RetryPolicy {
            max_attempts: 1,
            ..Default::default()
        }),
        service_account: service_account.into(),
        ..Default::default()
    }
}

/// Runs the schedule `name` now, as the caller of `ferry`.
async fn run_now(ferry: &Ferry, name: &str) {
    ferry
        .scheduler()
        .run_now(proto::RunNowRequest {
            schedule: name.into(),
        })
        .await
        .unwrap();
}

/// A namespace user's schedule needs a ServiceAccount of its own namespace that she may
/// act as: not one of bob's namespace, nor one of his named for her own schedule.
async fn a_users_schedule_needs_a_service_account_she_may_act_as(
    alice: &Ferry,
    mine: &str,
    bobs: &str,
) {
    // A namespace user's schedule needs a ServiceAccount...
    let none = alice
        .scheduler()
        .create_schedule(export_schedule("hers", mine, ""))
        .await
        .unwrap_err();
    assert_refused(
        &none,
        Code::InvalidArgument,
        &[
            "service_account",
            "every schedule's runs act as a ServiceAccount",
        ],
    );
    // ...of the schedule's own namespace: only administrators name another's...
    let elsewhere = alice
        .scheduler()
        .create_schedule(export_schedule("hers", mine, &format!("{bobs}/default")))
        .await
        .unwrap_err();
    assert_refused(
        &elsewhere,
        Code::InvalidArgument,
        &[
            "service_account",
            &format!("{bobs}/default is a ServiceAccount of namespace {bobs}"),
            "alice is not an administrator",
        ],
    );
    // ...that she may act as: not one of bob's namespace.
    let bobs_sa = alice
        .scheduler()
        .create_schedule(export_schedule("bobs", bobs, "default"))
        .await
        .unwrap_err();
    assert_refused(
        &bobs_sa,
        Code::PermissionDenied,
        &[&format!(
            "alice may not create serviceaccounts/token of default in namespace {bobs}"
        )],
    );
}

/// Her own ServiceAccount, bound to the Roles she holds (RBAC lets her grant no more),
/// runs her schedule: the first run succeeds, its job requested by the ServiceAccount.
async fn her_own_service_account_runs_her_schedule(
    kc: &std::path::Path,
    alice: &Ferry,
    mine: &str,
) {
    let binding = format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: mover, namespace: {mine}}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: mover, namespace: {mine}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: alice-edit}}\n\
         subjects: [{{kind: ServiceAccount, name: mover, namespace: {mine}}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: mover-rbac, namespace: {mine}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: alice-rbac}}\n\
         subjects: [{{kind: ServiceAccount, name: mover, namespace: {mine}}}]\n"
    );
    kubectl(kc, "a-alice", &["apply", "-f", "-"], Some(&binding));
    let created = alice
        .scheduler()
        .create_schedule(export_schedule("hers", mine, "mover"))
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(created.service_account, format!("{mine}/mover"));
    assert_eq!(created.created_by, "alice");
    run_now(alice, "hers").await;
    let first = ended_run(alice, "hers", 0).await;
    assert_eq!(first.state, proto::RunState::Succeeded as i32, "{first:#?}");
    let (job, _) = alice.job(&first.job_ids[0]).get().await.unwrap();
    assert_eq!(
        job.requested_by,
        format!("system:serviceaccount:{mine}:mover")
    );
}

/// Its rights taken away, the next run is refused as the ServiceAccount's.
async fn its_rights_taken_away_the_next_run_is_refused(
    kc: &std::path::Path,
    alice: &Ferry,
    mine: &str,
) {
    kubectl(
        kc,
        "a",
        &["-n", mine, "delete", "rolebinding", "mover", "mover-rbac"],
        None,
    );
    run_now(alice, "hers").await;
    let second = ended_run(alice, "hers", 1).await;
    assert_eq!(second.state, proto::RunState::Failed as i32, "{second:#?}");
    let error = second.error.clone().unwrap_or_default();
    assert!(
        error
            .message
            .contains(&format!("system:serviceaccount:{mine}:mover may not")),
        "{second:#?}"
    );
}

/// Hole 7, administrators: Kubernetes cannot tell Ferry a user's groups again later, so
/// no schedule acts with groups recorded at creation; an administrator's names a
/// ServiceAccount too. Without one it is refused, through the SDK and the `ferry`
/// command alike, saying why and what to do, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrators_schedule_needs_a_service_account_too() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let (_serve_a, _) = serve(&kc, "a", tmp.path());
    wait_answering(&kc, &["a"]);
    let ops = ferry_testenv::unique_name("ops-shop");
    kubectl(&kc, "a", &["create", "namespace", &ops], None);
    let admin = Ferry::for_context(Some(&kc), Some("a")).await.unwrap();

    let refused = admin
        .scheduler()
        .create_schedule(export_schedule("ops-nightly", &ops, ""))
        .await
        .unwrap_err();
    assert_refused(
        &refused,
        Code::InvalidArgument,
        &[
            "invalid service_account: empty",
            "every schedule's runs act as a ServiceAccount, administrators' too",
            "as it judges a CronJob's pods",
            "never with the groups admin had",
        ],
    );
    let hint = ferry_rpc::detail(&refused).unwrap_or_default().hint;
    for fix in [
        "--service-account",
        "serviceAccountName",
        "create serviceaccount",
        "RoleBinding",
    ] {
        assert!(hint.contains(fix), "{fix:?} not in {hint:?}");
    }
    let stored: Vec<String> = admin
        .scheduler()
        .list_schedules(proto::ListSchedulesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .schedules
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert!(!stored.contains(&"ops-nightly".to_owned()), "{stored:?}");

    // The `ferry` command says the same (an import policy needs no pair to ask).
    let by_cli = cli(
        &kc,
        &[
            "--context",
            "a",
            "import-policy",
            "create",
            "ops-in",
            "--profile",
            "no-such-profile",
            "-n",
            &ops,
            "--every",
            "15m",
        ],
    );
    assert_eq!(by_cli.code, Some(1), "{by_cli:?}");
    assert!(
        by_cli.stderr.contains("service_account") && by_cli.stderr.contains("--service-account"),
        "{by_cli:?}"
    );
}

/// Hole 7, administrators: an administrator's schedule acts as its ServiceAccount, so
/// RBAC judges each run when it starts. Its first run's job is the ServiceAccount's;
/// with the ServiceAccount's rights taken away, the next run is refused
/// (PERMISSION_DENIED), whatever the administrator who created it holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrators_schedule_runs_as_its_service_account_judged_at_every_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let (_serve_a, _) = ferry_with_main_profile(env, tmp.path(), "tenant-admin-schedule", 11);
    let ops = ferry_testenv::unique_name("ops-shop");
    kubectl(&kc, "a", &["create", "namespace", &ops], None);
    let admin = Ferry::for_context(Some(&kc), Some("a")).await.unwrap();

    let runner = format!("system:serviceaccount:{ops}:runner");
    the_administrators_schedule_runs_as_its_service_account(&kc, &admin, &ops, &runner).await;
    its_service_accounts_rights_taken_away_the_next_run_is_refused(&kc, &admin, &ops, &runner)
        .await;
}

/// The administrator's ServiceAccount `runner` of `ops`, bound to cluster-admin, runs
/// the schedule `ops-nightly` exporting `ops`: its job is requested by `runner` (the
/// ServiceAccount's user name), not by the administrator.
async fn the_administrators_schedule_runs_as_its_service_account(
    kc: &std::path::Path,
    admin: &Ferry,
    ops: &str,
    runner: &str,
) {
    service_account_with_rights(kc, "a", ops, "runner", &["a"]);
    let created = admin
        .scheduler()
        .create_schedule(export_schedule("ops-nightly", ops, "runner"))
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    assert_eq!(created.service_account, format!("{ops}/runner"));
    assert_eq!(created.created_by, "admin");
    run_now(admin, "ops-nightly").await;
    let first = ended_run(admin, "ops-nightly", 0).await;
    assert_eq!(first.state, proto::RunState::Succeeded as i32, "{first:#?}");
    let (job, _) = admin.job(&first.job_ids[0]).get().await.unwrap();
    assert_eq!(job.requested_by, runner, "{job:#?}");
}

/// With the ServiceAccount's ClusterRoleBinding gone, the next run of `ops-nightly` is
/// refused as the ServiceAccount's.
async fn its_service_accounts_rights_taken_away_the_next_run_is_refused(
    kc: &std::path::Path,
    admin: &Ferry,
    ops: &str,
    runner: &str,
) {
    kubectl(
        kc,
        "a",
        &["delete", "clusterrolebinding", &format!("{ops}-runner")],
        None,
    );
    run_now(admin, "ops-nightly").await;
    let second = ended_run(admin, "ops-nightly", 1).await;
    assert_eq!(second.state, proto::RunState::Failed as i32, "{second:#?}");
    let error = second.error.clone().unwrap_or_default();
    assert_eq!(
        error.code,
        proto::ErrorCode::PermissionDenied as i32,
        "{second:#?}"
    );
    assert!(
        error.message.contains(&format!("{runner} may not")),
        "{second:#?}"
    );
}
