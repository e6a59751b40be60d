//! The main job through the `ferry` command, as a user runs it: one real `ferry serve`
//! per cluster of the test environment (a and b), Secrets made with kubectl, profiles,
//! `ferry pair create`, `ferry migrate`, `jobs`, `restore-points`, `activate` and
//! `schedules` — each Ferry found from its kubeconfig context. The SDK reads the job
//! reports back for exact assertions.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::control::{
    assert_sample_app_on_b, cli, jsonpath, key_secret, kubectl, main_profile, migrate, newest_job,
    pair_a_to_b, report, s3_secret, sample_app, serve, storage_class, wait_answering,
};
use common::{assert_same_tree, make_tree, random_bytes};
use ferry_client::{Ferry, proto};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_pairs_migrates_and_activates_with_the_ferry_command() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (serve_a, url_a) = serve(&kc, "a", root);
    let (serve_b, url_b) = serve(&kc, "b", root);

    each_ferry_publishes_its_endpoint(&kc, &url_a);
    a_profile_is_created_on_a_and_found_on_b(&kc, s3, root);
    pairing_checks_the_repository_from_both_sides(&kc);
    let ctx = the_application_with_data(&kc, root);
    a_dry_run_changes_nothing_on_b(&ctx);
    let dst = the_migration_is_followed_to_its_report(&ctx);
    let ferry_a = Ferry::for_context(Some(&kc), Some("a")).await.unwrap();
    let second = the_next_migration_moves_about_what_changed(&ctx, &ferry_a, &dst).await;
    scripts_get_the_apis_messages_as_json(&ctx, &second);
    a_renamed_namespace_waits_on_b_until_activated(&ctx);
    bad_input_is_a_clear_error(&ctx);

    // A Ferry that is down is named as unreachable.
    drop(serve_b);
    let down = cli(&kc, &["--server", &url_b, "pair", "list"]);
    assert_eq!(down.code, Some(1), "{down:?}");
    assert!(down.stderr.contains("cannot reach Ferry at"), "{down:?}");
    let _ = serve_a.log();
}

/// What the phases after setup share: the kubeconfig, the test's directory, and the
/// application's namespace, storage class and volume directory on a.
struct Ctx {
    kc: PathBuf,
    root: PathBuf,
    ns: String,
    class: String,
    src: PathBuf,
}

/// Each Ferry publishes its endpoint; the command finds it from the context alone.
fn each_ferry_publishes_its_endpoint(kc: &Path, url_a: &str) {
    wait_answering(kc, &["a", "b"]);
    let published = jsonpath(
        kc,
        "a",
        "ferry-system",
        "configmap/ferry",
        "{.data.endpoint}",
    );
    assert_eq!(published, url_a);
    let no_pairs = cli(kc, &["--context", "a", "pair", "list"]).ok();
    assert!(no_pairs.stdout.contains("no pairs"), "{no_pairs:?}");
}

/// Credentials and the repository key as Secrets on both clusters; the profile's
/// repository is created from a, and b, which may not create one implicitly, finds it.
fn a_profile_is_created_on_a_and_found_on_b(kc: &Path, s3: &ferry_testenv::S3Info, root: &Path) {
    let key = root.join("repo.key");
    std::fs::write(&key, random_bytes(32, 7)).unwrap();
    for side in ["a", "b"] {
        s3_secret(kc, side, "s3", &s3.access_key, &s3.secret_key);
        key_secret(kc, side, "repo-key", &key);
    }
    let location = format!(
        "{}/{}/{}",
        s3.endpoint,
        s3.bucket,
        ferry_testenv::unique_name("cli-migrate")
    );
    let profile = |side: &str, create: bool| {
        main_profile(kc, side, &location, &s3.region, ("s3", "repo-key"), create)
    };
    // b first: no repository there yet, and b may not create one implicitly.
    let missing = profile("b", false);
    assert_eq!(missing.code, Some(1), "{missing:?}");
    assert!(
        missing.stderr.contains("CreateProfile at") && missing.stderr.contains("main"),
        "{missing:?}"
    );
    let created = profile("a", true).ok();
    assert!(created.stdout.contains("(created)"), "{created:?}");
    profile("b", false).ok();
}

/// Pairing by contexts, with the repository checked from both sides.
fn pairing_checks_the_repository_from_both_sides(kc: &Path) {
    let paired = pair_a_to_b(kc).ok();
    assert!(paired.stdout.contains("paired a (source"), "{paired:?}");
    assert!(paired.stdout.contains("passed"), "{paired:?}");
    assert!(!paired.stdout.contains("failed"), "{paired:?}");
    let listed = cli(kc, &["--context", "a", "pair", "list"]).ok();
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("a-to-b ") && l.contains("source")),
        "{listed:?}"
    );
}

/// The application, with data: a tree of files and one big file (24 MiB) that a later
/// phase changes in place.
fn the_application_with_data(kc: &Path, root: &Path) -> Ctx {
    let (ns, class, src) = sample_app(kc, root, "shop", |src| {
        make_tree(src, 11);
        std::fs::create_dir_all(src.join("base")).unwrap();
        std::fs::write(src.join("base/relation.0"), random_bytes(24 << 20, 12)).unwrap();
    });
    Ctx {
        kc: kc.to_path_buf(),
        root: root.to_path_buf(),
        ns,
        class,
        src,
    }
}

/// A dry run changes nothing on b.
fn a_dry_run_changes_nothing_on_b(ctx: &Ctx) {
    let Ctx { kc, ns, .. } = ctx;
    let dry = migrate(kc, ns, "b", &["--dry-run"]).ok();
    assert!(dry.stdout.contains("succeeded"), "{dry:?}");
    let on_b = kubectl(kc, "b", &["get", "namespaces", "-o", "name"], None);
    assert!(!on_b.contains(&format!("namespace/{ns}\n")), "{on_b}");
}

/// The migration, followed to its report; `--to` is a context here. Returns the
/// volume's directory on b.
fn the_migration_is_followed_to_its_report(ctx: &Ctx) -> PathBuf {
    let Ctx {
        kc, root, ns, src, ..
    } = ctx;
    let migrated = migrate(kc, ns, "b", &[]).ok();
    assert!(migrated.stdout.contains("succeeded"), "{migrated:?}");
    assert!(
        migrated.stdout.contains(&format!("{ns}/data-db-0")),
        "{migrated:?}"
    );
    // Off a terminal the steps are plain lines on stderr.
    assert!(migrated.stderr.contains("✓ capture"), "{migrated:?}");

    let dst = assert_sample_app_on_b(kc, ns, src);
    assert!(dst.starts_with(root.join("volumes-b")), "{}", dst.display());
    assert_eq!(
        jsonpath(kc, "b", ns, "statefulset/db", "{.spec.replicas}"),
        "1"
    );
    dst
}

/// The first migration's report counts every byte; then 1% of the bytes change in place
/// and the next migration (through the pair's name) moves about that much. Returns the
/// second report.
async fn the_next_migration_moves_about_what_changed(
    ctx: &Ctx,
    ferry_a: &Ferry,
    dst: &Path,
) -> proto::JobReport {
    let Ctx { kc, ns, src, .. } = ctx;
    let big = src.join("base/relation.0");
    let first = report(ferry_a, &newest_job(ferry_a).await).await;
    assert_eq!(first.state(), proto::JobState::Succeeded);
    let total: u64 = first.volumes.iter().map(|v| v.bytes_total).sum();
    assert!(total > 24 << 20, "{first:?}");

    // 1% of the bytes change in place; the next migration moves about that much.
    let mut content = std::fs::read(&big).unwrap();
    let changed = (total as usize / 100) / 4096 * 4096;
    let at = content.len() / 3;
    content[at..at + changed].copy_from_slice(&random_bytes(changed, 13));
    std::fs::write(&big, &content).unwrap();
    migrate(kc, ns, "a-to-b", &[]).ok();
    let second = report(ferry_a, &newest_job(ferry_a).await).await;
    let uploaded: u64 = second.volumes.iter().map(|v| v.bytes_uploaded).sum();
    eprintln!("second migration uploaded {uploaded} of {total} bytes after changing {changed}");
    assert!(
        uploaded > 0 && uploaded < total / 20,
        "{uploaded} of {total}"
    );
    assert_same_tree(src, dst);
    second
}

/// Scripts get the API's messages as protobuf JSON; jobs and restore points are listed
/// from either side.
fn scripts_get_the_apis_messages_as_json(ctx: &Ctx, second: &proto::JobReport) {
    let Ctx { kc, ns, .. } = ctx;
    let got = cli(
        kc,
        &[
            "--context",
            "a",
            "-o",
            "json",
            "jobs",
            "get",
            &second.job_id,
        ],
    )
    .ok();
    let got = got.json();
    assert_eq!(got["report"]["state"], "JOB_STATE_SUCCEEDED", "{got:#}");
    assert_eq!(got["job"]["kind"], "JOB_KIND_MIGRATION", "{got:#}");
    assert_eq!(
        got["report"]["restorePointId"],
        second.restore_point_id.as_str()
    );
    let pairs = cli(kc, &["--context", "a", "pair", "list", "-o", "json"])
        .ok()
        .json();
    assert_eq!(pairs["pairs"][0]["name"], "a-to-b", "{pairs:#}");
    let jobs = cli(kc, &["--context", "a", "jobs", "list"]).ok();
    assert_eq!(
        jobs.stdout
            .lines()
            .filter(|l| l.contains(" migration "))
            .count(),
        3,
        "{jobs:?}"
    );
    let points = cli(
        kc,
        &[
            "--context",
            "a",
            "restore-points",
            "--profile",
            "main",
            "-n",
            ns,
        ],
    )
    .ok();
    assert!(
        points.stdout.contains(&second.restore_point_id),
        "{points:?}"
    );
    let point = cli(
        kc,
        &[
            "--context",
            "b",
            "restore-points",
            "--profile",
            "main",
            "--id",
            &second.restore_point_id,
        ],
    )
    .ok();
    assert!(point.stdout.contains("data-db-0"), "{point:?}");
}

/// Into a renamed namespace with a mapped class, stopped until activated on b.
fn a_renamed_namespace_waits_on_b_until_activated(ctx: &Ctx) {
    let Ctx { kc, ns, class, .. } = ctx;
    let renamed = format!("{ns}-copy");
    let class_b = format!("{class}-b");
    storage_class(kc, "b", &class_b);
    let ns_map = format!("{ns}={renamed}");
    let class_map = format!("{class}={class_b}");
    migrate(
        kc,
        ns,
        "b",
        &[
            "--namespace-map",
            &ns_map,
            "--storage-class-map",
            &class_map,
            "--no-start",
        ],
    )
    .ok();
    assert_eq!(
        jsonpath(kc, "b", &renamed, "statefulset/db", "{.spec.replicas}"),
        "0"
    );
    assert_eq!(
        jsonpath(
            kc,
            "b",
            &renamed,
            "pvc/data-db-0",
            "{.spec.storageClassName}"
        ),
        class_b
    );
    let activated = cli(kc, &["--context", "b", "activate", "-n", &renamed]).ok();
    assert!(activated.stdout.contains("StatefulSet/db"), "{activated:?}");
    assert_eq!(
        jsonpath(kc, "b", &renamed, "statefulset/db", "{.spec.replicas}"),
        "1"
    );
}

/// Bad input is a clear error naming the thing and the fix.
fn bad_input_is_a_clear_error(ctx: &Ctx) {
    let Ctx { kc, ns, .. } = ctx;
    let unknown = migrate(kc, ns, "nowhere", &[]);
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(
        unknown.stderr.contains("no pair matches \"nowhere\"")
            && unknown.stderr.contains("ferry pair create"),
        "{unknown:?}"
    );
    let bad_map = migrate(kc, ns, "b", &["--namespace-map", "x"]);
    assert_eq!(bad_map.code, Some(2), "{bad_map:?}");
    let no_job = cli(kc, &["--context", "a", "jobs", "get", "no-such-job"]);
    assert_eq!(no_job.code, Some(1), "{no_job:?}");
    assert!(no_job.stderr.contains("no-such-job"), "{no_job:?}");
}
