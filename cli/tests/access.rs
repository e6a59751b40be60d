//! Who may migrate what, with the test environment's real users and real tokens: alice
//! holds a Role in her own namespace on both clusters and nothing else; the admin is in
//! system:masters. Every `ferry` call carries the context user's token, and the Ferries
//! decide with TokenReviews and SubjectAccessReviews on the clusters themselves.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::control::{
    application, assert_sample_app_on_b, cli, grant, grpcurl, jsonpath, kubectl, migrate,
    profiles_and_pair, serve, storage_class, wait_answering,
};
use common::make_tree;
use ferry_client::{Ferry, proto};

/// A namespace with one ConfigMap, on cluster a.
fn small_app(kc: &Path, ns: &str, greeting: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\n\
         data: {{greeting: \"{greeting}\"}}\n"
    );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
}

fn namespace_exists(kc: &Path, context: &str, ns: &str) -> bool {
    kubectl(kc, context, &["get", "namespaces", "-o", "name"], None)
        .lines()
        .any(|l| l == format!("namespace/{ns}"))
}

async fn all_jobs(ferry: &Ferry) -> Vec<proto::Job> {
    ferry
        .transfer()
        .list_jobs(proto::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_users_migrate_their_own_namespaces_and_administrators_any() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, url_a) = serve(&kc, "a", root);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);

    // The administrator sets up the repository and the pair.
    let (location, _) = profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "cli-access", 3);
    let ctx = namespaces_of_alice_and_someone_else(&kc, root);
    pairing_and_profiles_are_the_administrators(&ctx, s3, &location);

    let ferry_a = Ferry::for_context(Some(&kc), Some("a")).await.unwrap();
    let jobs_before = all_jobs(&ferry_a).await.len();
    a_namespace_user_is_refused_a_namespace_she_cannot_read(&ctx);
    a_token_file_is_its_owner_and_an_empty_one_is_refused(&ctx, env, root);
    all_namespaces_is_for_administrators(&ctx, &ferry_a, jobs_before).await;
    a_namespace_user_migrates_her_own_namespace_without_its_rbac(&ctx);
    let admins = a_namespace_user_sees_her_jobs_and_not_the_administrators(&ctx, &ferry_a).await;
    nobody_cuts_over_a_job_they_cannot_see(&ctx, &ferry_a, &url_a, &admins).await;
    schedules_act_as_a_service_account_their_creator_may_use(&ctx, &admins);
}

/// What the phases share: the kubeconfig, alice's namespace with its data on a (and
/// the directory behind its volume), and someone else's namespace.
struct Ctx {
    kc: PathBuf,
    mine: String,
    src: PathBuf,
    theirs: String,
}

/// alice's namespace, with data, on a; on b it exists, empty, and is hers too. And
/// someone else's namespace, on a.
fn namespaces_of_alice_and_someone_else(kc: &Path, root: &Path) -> Ctx {
    let mine = ferry_testenv::unique_name("alice-shop");
    let class = format!("local-{mine}");
    let src = root.join("disks").join(&mine);
    std::fs::create_dir_all(&src).unwrap();
    make_tree(&src, 21);
    application(kc, &mine, &class, &src);
    storage_class(kc, "b", &class);
    kubectl(kc, "b", &["create", "namespace", &mine], None);
    for side in ["a", "b"] {
        grant(kc, side, &mine, "alice");
    }
    let theirs = ferry_testenv::unique_name("bob-shop");
    small_app(kc, &theirs, "bob's");
    Ctx {
        kc: kc.to_path_buf(),
        mine,
        src,
        theirs,
    }
}

/// Pairing and profiles are the administrators': alice may list them, not make or
/// remove them (her profile would be at `location`).
fn pairing_and_profiles_are_the_administrators(
    ctx: &Ctx,
    s3: &ferry_testenv::S3Info,
    location: &str,
) {
    let Ctx { kc, .. } = ctx;
    let listed = cli(kc, &["--context", "a-alice", "pair", "list"]).ok();
    assert!(listed.stdout.contains("a-to-b"), "{listed:?}");
    not_admin(
        kc,
        "b",
        &["pair", "token", "create"],
        "creating a pairing token",
    );
    let delete = cli(kc, &["--context", "a-alice", "pair", "delete", "a-to-b"]);
    assert_eq!(delete.code, Some(1), "{delete:?}");
    assert!(delete.stderr.contains("deleting a pair"), "{delete:?}");

    // So are profiles: she may see them, not make or remove them.
    let profiles = cli(kc, &["--context", "a-alice", "profile", "list"]).ok();
    assert!(profiles.stdout.contains("main"), "{profiles:?}");
    let hers = [
        "profile",
        "create",
        "hers",
        "--s3",
        location,
        "--region",
        &s3.region,
        "--credentials-secret",
        "s3",
        "--key-secret",
        "repo-key",
    ];
    not_admin(kc, "a", &hers, "creating a profile");
}

/// alice is refused another namespace, told what she lacks, and nothing starts.
fn a_namespace_user_is_refused_a_namespace_she_cannot_read(ctx: &Ctx) {
    let Ctx { kc, theirs, .. } = ctx;
    let refused = cli(
        kc,
        &[
            "--context",
            "a-alice",
            "migrate",
            "-n",
            theirs,
            "--to",
            "b",
            "--profile",
            "main",
        ],
    );
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("alice may not")
            && refused
                .stderr
                .contains(&format!("list pods in namespace {theirs}"))
            && refused.stderr.contains("configmaps")
            && refused.stderr.contains("on cluster a"),
        "{refused:?}"
    );
    assert!(!namespace_exists(kc, "b", theirs));
}

/// Her token from a file (kept out of the process list) is her, whatever the context's
/// own user may do; an empty file is refused by name.
fn a_token_file_is_its_owner_and_an_empty_one_is_refused(
    ctx: &Ctx,
    env: &ferry_testenv::TestEnv,
    root: &Path,
) {
    let Ctx { kc, theirs, .. } = ctx;
    let token_file = root.join("alice.token");
    let alice = env.token("a", "alice").unwrap();
    std::fs::write(&token_file, format!("{alice}\n")).unwrap();
    let file_arg = token_file.display().to_string();
    let as_alice = migrate(kc, theirs, "b", &["--bearer-token-file", &file_arg]);
    assert!(
        as_alice.code == Some(1) && as_alice.stderr.contains("alice may not"),
        "{as_alice:?}"
    );
    std::fs::write(&token_file, "\n").unwrap();
    let empty = cli(
        kc,
        &[
            "--context",
            "a",
            "--bearer-token-file",
            &file_arg,
            "pair",
            "list",
        ],
    );
    assert!(
        empty.code == Some(2)
            && empty.stderr.contains("--bearer-token-file")
            && empty.stderr.contains("empty"),
        "{empty:?}"
    );
}

/// --all-namespaces is for administrators; no job was started by any refusal since
/// `jobs_before` were counted.
async fn all_namespaces_is_for_administrators(ctx: &Ctx, ferry_a: &Ferry, jobs_before: usize) {
    let Ctx { kc, .. } = ctx;
    let all = [
        "migrate",
        "--all-namespaces",
        "--to",
        "b",
        "--profile",
        "main",
    ];
    not_admin(kc, "a", &all, "--all-namespaces");
    assert_eq!(
        all_jobs(ferry_a).await.len(),
        jobs_before,
        "a job was started"
    );
}

/// Her own namespace she migrates, data and all; her Role there is the administrators' to
/// manage, and she may not read it, so she leaves it out. Asked to take it, she is
/// refused.
fn a_namespace_user_migrates_her_own_namespace_without_its_rbac(ctx: &Ctx) {
    let Ctx { kc, mine, src, .. } = ctx;
    let migrate_hers = |extra: &[&str]| {
        let mut args = vec![
            "--context",
            "a-alice",
            "migrate",
            "-n",
            mine,
            "--to",
            "b",
            "--profile",
            "main",
        ];
        args.extend_from_slice(extra);
        cli(kc, &args)
    };
    let with_rbac = migrate_hers(&[]);
    assert_eq!(with_rbac.code, Some(1), "{with_rbac:?}");
    assert!(
        with_rbac.stderr.contains(&format!(
            "list rolebindings.rbac.authorization.k8s.io in namespace {mine}"
        )),
        "{with_rbac:?}"
    );
    let migrated = migrate_hers(&[
        "--exclude",
        "roles.rbac.authorization.k8s.io",
        "--exclude",
        "rolebindings.rbac.authorization.k8s.io",
    ])
    .ok();
    assert!(migrated.stdout.contains("succeeded"), "{migrated:?}");
    assert_sample_app_on_b(kc, mine, src);
}

/// Jobs: alice sees hers and not the administrator's in other namespaces, where the
/// administrator migrates two at once. Returns the administrator's first namespace.
async fn a_namespace_user_sees_her_jobs_and_not_the_administrators(
    ctx: &Ctx,
    ferry_a: &Ferry,
) -> String {
    let Ctx { kc, mine, .. } = ctx;
    let admins = ferry_testenv::unique_name("ops");
    small_app(kc, &admins, "ops");
    let other = ferry_testenv::unique_name("billing");
    small_app(kc, &other, "billing");

    // The administrator migrates two namespaces at once.
    let two = cli(
        kc,
        &[
            "--context",
            "a",
            "migrate",
            "-n",
            &admins,
            "-n",
            &other,
            "--to",
            "b",
            "--profile",
            "main",
        ],
    )
    .ok();
    assert!(two.stdout.matches("succeeded").count() >= 2, "{two:?}");
    for (ns, greeting) in [(&admins, "ops"), (&other, "billing")] {
        assert_eq!(
            jsonpath(kc, "b", ns, "configmap/settings", "{.data.greeting}"),
            greeting
        );
    }

    let admin_view = all_jobs(ferry_a).await;
    let namespaces_of = |jobs: &[proto::Job]| -> Vec<String> {
        jobs.iter()
            .map(|j| j.application.clone().unwrap_or_default().namespace)
            .collect()
    };
    let seen_by_admin = namespaces_of(&admin_view);
    for ns in [mine, &admins, &other] {
        assert!(seen_by_admin.contains(ns), "{seen_by_admin:?}");
    }
    let alice_job = admin_view
        .iter()
        .find(|j| j.application.clone().unwrap_or_default().namespace == *mine)
        .unwrap();
    assert_eq!(alice_job.requested_by, "alice");
    let ferry_alice = Ferry::for_context(Some(kc), Some("a-alice")).await.unwrap();
    let seen_by_alice = namespaces_of(&all_jobs(&ferry_alice).await);
    assert!(seen_by_alice.contains(mine), "{seen_by_alice:?}");
    assert!(
        !seen_by_alice.contains(&admins) && !seen_by_alice.contains(&other),
        "{seen_by_alice:?}"
    );
    // An administrator's job is "not found" for her, by id too.
    let admin_job = admin_view
        .iter()
        .find(|j| j.application.clone().unwrap_or_default().namespace == admins)
        .unwrap();
    let hidden = ferry_alice.job(&admin_job.id).get().await.unwrap_err();
    assert_eq!(hidden.code(), Some(tonic::Code::NotFound), "{hidden}");
    let list = cli(kc, &["--context", "a-alice", "jobs", "list"]).ok();
    assert!(
        list.stdout.contains(mine) && !list.stdout.contains(&admins),
        "{list:?}"
    );
    admins
}

/// Cutover, as CancelJob: with no token nothing answers, and alice, who cannot see the
/// administrator's job in `admins`, gets NOT_FOUND (by the SDK and by `ferry cutover`).
async fn nobody_cuts_over_a_job_they_cannot_see(
    ctx: &Ctx,
    ferry_a: &Ferry,
    url: &str,
    admins: &str,
) {
    let job = all_jobs(ferry_a)
        .await
        .into_iter()
        .find(|j| j.application.clone().unwrap_or_default().namespace == admins)
        .unwrap();
    let addr = url.trim_start_matches("http://");
    let data = format!(r#"{{"job":{{"id":"{}"}}}}"#, job.id);
    let anonymous = grpcurl(addr, None, "ferry.v1.TransferService/Cutover", &data);
    assert!(anonymous.contains("Unauthenticated"), "{anonymous}");
    let ferry_alice = Ferry::for_context(Some(&ctx.kc), Some("a-alice"))
        .await
        .unwrap();
    let hidden = ferry_alice.job(&job.id).cutover().await.unwrap_err();
    assert_eq!(hidden.code(), Some(tonic::Code::NotFound), "{hidden}");
    let by_cli = cli(&ctx.kc, &["--context", "a-alice", "cutover", &job.id]);
    assert_ne!(by_cli.code, Some(0), "{by_cli:?}");
    assert!(by_cli.stderr.contains("not found"), "{by_cli:?}");
    // The administrator may ask, and is told the job is not a warm migration.
    let not_warm = ferry_a.job(&job.id).cutover().await.unwrap_err();
    assert_eq!(
        not_warm.code(),
        Some(tonic::Code::FailedPrecondition),
        "{not_warm}"
    );
}

/// A schedule's runs act as a ServiceAccount its creator may act as: alice can name none
/// of bob's namespace, so her schedule of it is refused before it exists, and none
/// without one (the scheduler's own rights never stand in). The administrator's own
/// schedule, of `admins` (acting as a ServiceAccount too), is not alice's to see or run.
fn schedules_act_as_a_service_account_their_creator_may_use(ctx: &Ctx, admins: &str) {
    let Ctx { kc, theirs, .. } = ctx;
    let sneaky = |service_account: Option<&str>| {
        let mut args = vec![
            "--context",
            "a-alice",
            "schedules",
            "create",
            "sneaky",
            "--every",
            "1h",
            "-n",
            theirs,
            "--to",
            "b",
            "--profile",
            "main",
        ];
        if let Some(sa) = service_account {
            args.extend(["--service-account", sa]);
        }
        cli(kc, &args)
    };
    let refused = sneaky(Some("default"));
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains(&format!(
            "alice may not create serviceaccounts/token of default in namespace {theirs}"
        )),
        "{refused:?}"
    );
    let refused = sneaky(None);
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("--service-account"), "{refused:?}");
    let by_admin = cli(kc, &["--context", "a", "-o", "json", "schedules", "list"]).ok();
    assert!(!by_admin.stdout.contains("sneaky"), "{by_admin:?}");
    // The administrator's own schedule is not alice's to see or run.
    cli(
        kc,
        &[
            "--context",
            "a",
            "schedules",
            "create",
            "ops-nightly",
            "--every",
            "1h",
            "-n",
            admins,
            "--to",
            "b",
            "--profile",
            "main",
            "--service-account",
            "default",
        ],
    )
    .ok();
    let mine_only = cli(kc, &["--context", "a-alice", "schedules", "list"]).ok();
    assert!(!mine_only.stdout.contains("ops-nightly"), "{mine_only:?}");
    let not_hers = cli(
        kc,
        &[
            "--context",
            "a-alice",
            "schedules",
            "run-now",
            "ops-nightly",
        ],
    );
    assert_eq!(not_hers.code, Some(1), "{not_hers:?}");
    assert!(
        not_hers
            .stderr
            .contains("alice did not create schedule \"ops-nightly\""),
        "{not_hers:?}"
    );
}

/// Runs `args` as alice on `cluster` and asserts that it is refused because she is not
/// an administrator there, naming `what` she asked for.
fn not_admin(kc: &Path, cluster: &str, args: &[&str], what: &str) {
    let context = format!("{cluster}-alice");
    let mut all = vec!["--context", context.as_str()];
    all.extend_from_slice(args);
    let run = cli(kc, &all);
    assert_eq!(run.code, Some(1), "{run:?}");
    let admin = format!("alice is not an administrator of cluster {cluster}");
    assert!(
        run.stderr.contains(&admin) && run.stderr.contains(what),
        "{run:?}"
    );
}
