//! Import policies with the `ferry` command, across two real clusters and MinIO: cluster a
//! exports to a bucket, cluster b (MinIO user `reader`: read and list only) holds an
//! import profile made from the migration token and an import policy on it. Each run of
//! the policy lists the bucket, imports what it has not imported before and restores it.
//! The test asserts what each run did (restore points found and imported, jobs started),
//! not only that it succeeded: an unchanged bucket means no work at all, a second export
//! is imported and restored alone, and an unreachable bucket fails the run with nothing
//! applied on b.
//!
//! The bucket is reached through a relay on a port of this test, so the test can make it
//! unreachable for these Ferries only (MinIO is shared with the other tests).

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use common::control::{
    Serve, cli, export_out, export_repository_for, import_profile, jsonpath, kubectl,
    runs_service_account, sample_app, serve, wait_answering,
};
use common::{Run, assert_same_tree, make_tree, num, random_bytes};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// A TCP relay from a loopback port to the S3 server, on a thread of its own. Cutting it
/// closes the open connections and the port: the bucket is unreachable, as behind a
/// dead network.
struct Relay {
    endpoint: String,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(target: &str) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let target = target.to_owned();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let mut connections = tokio::task::JoinSet::new();
                loop {
                    tokio::select! {
                        () = token.cancelled() => break,
                        accepted = listener.accept() => {
                            let Ok((mut inbound, _)) = accepted else { continue };
                            let target = target.clone();
                            connections.spawn(async move {
                                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                                }
                            });
                        }
                    }
                }
                connections.abort_all();
            });
        });
        Relay {
            endpoint,
            stop,
            thread: Some(thread),
        }
    }

    /// From now on the bucket does not answer: open connections are dropped, new ones
    /// refused.
    fn cut(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `ferry --context b -o json ARGS...`, parsed.
fn b_json(kc: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--context", "b", "-o", "json"];
    all.extend_from_slice(args);
    cli(kc, &all).ok().json()
}

/// An export of `ns` from a for b's import key, as its JSON report.
fn export(kc: &Path, ns: &str, recipient: &str) -> Value {
    let report = export_out(kc, ns, Some(recipient)).ok().json();
    assert_eq!(report["state"], "JOB_STATE_SUCCEEDED", "{report:#}");
    report
}

/// `ferry --context b -o json import-policy run-now NAME --wait`, as the finished run.
fn run_now(kc: &Path, policy: &str) -> (Run, Value) {
    let args = [
        "--context",
        "b",
        "-o",
        "json",
        "import-policy",
        "run-now",
        policy,
        "--wait",
    ];
    let run = cli(kc, &args);
    let json = run.json();
    (run, json)
}

/// The ids of b's jobs, newest first, with their JSON.
fn jobs_on_b(kc: &Path) -> Vec<Value> {
    let listed = b_json(kc, &["jobs", "list"]);
    listed["jobs"].as_array().cloned().unwrap_or_default()
}

/// A uint64 field of protobuf JSON, which writes them as strings.
#[track_caller]
fn uint64(v: &Value, field: &str) -> u64 {
    match &v[field] {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => 0,
        n => n.as_u64().unwrap_or_else(|| panic!("{field} in {v:#}")),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Where b's claim `data-db-0` in `ns` keeps its data, and the volume's name.
fn volume_on_b(kc: &Path, ns: &str) -> (String, PathBuf) {
    let pv = jsonpath(kc, "b", ns, "pvc/data-db-0", "{.spec.volumeName}");
    let path = kubectl(
        kc,
        "b",
        &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
        None,
    );
    (pv, PathBuf::from(path))
}

fn copy_tree(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_policy_restores_each_new_export_once_and_nothing_from_an_unreachable_bucket() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let reader = s3.readonly.clone().expect("a read-only S3 user");
    let (_serve_a, _) = serve(&kc, "a", root);
    let (serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);
    let mut relay = Relay::start(s3.endpoint.trim_start_matches("http://"));

    let ctx = a_namespace_with_data_and_bs_import_key(&kc, root);
    // a writes, through a profile bound to the namespace (tokens are issued for no
    // other); b may only read and list, through the relay like a.
    export_repository_for(
        &kc,
        s3,
        (&relay.endpoint, root),
        ["s3", "repo-key", "s3-read"],
        "import-policy",
        77,
        Some(&ctx.ns),
    );
    let rp1 = the_first_export_and_bs_import_profile_from_a_token(&ctx, root);
    let policy_id = an_import_policy_on_b(&ctx);
    a_policy_of_every_namespace_names_its_service_accounts_namespace(&ctx);
    let volume = the_first_run_imports_and_restores_the_export(&ctx, &rp1, &policy_id);
    an_unchanged_bucket_means_no_work(&ctx);
    let restored =
        a_second_export_is_imported_alone_and_restored_over_the_first(&ctx, root, &rp1, &volume);
    let fresh = a_third_export_waits_and_a_second_policy_maps_a_new_namespace(&ctx);
    // From here on the bucket does not answer these Ferries.
    relay.cut();
    an_unreachable_bucket_fails_the_runs_and_nothing_is_applied(&ctx, &fresh, volume, &restored);
    the_run_history_tells_the_story_and_deleting_a_policy_keeps_what_it_restored(
        &ctx, &serve_b, &reader,
    );
}

/// What the phases share: the kubeconfig, the exported namespace and the directory
/// behind its volume on a, b's import key, which every export is for, and the
/// administrator's ServiceAccount on b (`NAMESPACE/NAME`) that the policies' runs act as.
struct Ctx {
    kc: PathBuf,
    ns: String,
    src: PathBuf,
    recipient: String,
    runner: String,
}

/// The application to export, with data, on a; and b's import key.
fn a_namespace_with_data_and_bs_import_key(kc: &Path, root: &Path) -> Ctx {
    let (ns, _, src) = sample_app(kc, root, "shop", |src| {
        make_tree(src, 51);
    });
    let recipient = cli(kc, &["--context", "b", "import-key"])
        .ok()
        .stdout
        .trim()
        .to_string();
    Ctx {
        kc: kc.to_path_buf(),
        ns,
        src,
        recipient,
        runner: runs_service_account(kc, "b", &["b"]),
    }
}

/// First export, and b's import profile from a token for the whole namespace: the
/// export's own token names its one restore point, and the policy is to import the
/// later ones too. Returns the first export's restore point.
fn the_first_export_and_bs_import_profile_from_a_token(ctx: &Ctx, root: &Path) -> String {
    let Ctx {
        kc, ns, recipient, ..
    } = ctx;
    let first = export(kc, ns, recipient);
    let rp1 = first["restorePointId"].as_str().unwrap().to_string();
    let token = cli(
        kc,
        &[
            "--context",
            "a",
            "migration-token",
            "-n",
            ns,
            "--profile",
            "out",
            "--recipient-key",
            recipient,
        ],
    )
    .ok();
    assert!(
        token.stderr.contains("--expect-signer SHA256:"),
        "{token:?}"
    );
    let token_file = root.join("token.txt");
    std::fs::write(&token_file, token.stdout.trim()).unwrap();
    import_profile(kc, &token_file);
    rp1
}

/// An import policy on b, `shop-in`, pinned to the profile's repository, its runs
/// acting as the administrator's ServiceAccount; only RunNow starts its runs here.
/// Returns its id.
fn an_import_policy_on_b(ctx: &Ctx) -> String {
    let Ctx { kc, ns, runner, .. } = ctx;
    let created = b_json(
        kc,
        &[
            "import-policy",
            "create",
            "shop-in",
            "--profile",
            "in",
            "-n",
            ns,
            "--every",
            "1h",
            "--restore",
            "--max-attempts",
            "1",
            "--service-account",
            runner,
        ],
    );
    let policy_id = created["schedule"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["schedule"]["serviceAccount"], runner.as_str());
    let spec = &created["schedule"]["importPolicy"];
    assert_eq!(spec["restore"], true, "{created:#}");
    assert!(
        !spec["repository"]["repositoryId"]
            .as_str()
            .unwrap_or_default()
            .is_empty(),
        "pinned to the profile's repository: {created:#}"
    );
    let listed = cli(kc, &["--context", "b", "import-policy", "list"]).ok();
    assert!(listed.stdout.contains("shop-in"), "{listed:?}");
    assert!(listed.stdout.contains("import+restore"), "{listed:?}");
    policy_id
}

/// A policy of every namespace (the administrator's) has no namespace of its own for a
/// bare ServiceAccount name to be in: it names one as `NAMESPACE/NAME`, and is then
/// created. Created suspended and deleted again, it never runs.
fn a_policy_of_every_namespace_names_its_service_accounts_namespace(ctx: &Ctx) {
    let Ctx { kc, runner, .. } = ctx;
    let every = |service_account: &str| {
        cli(
            kc,
            &[
                "--context",
                "b",
                "-o",
                "json",
                "import-policy",
                "create",
                "every",
                "--profile",
                "in",
                "--every",
                "1h",
                "--suspended",
                "--service-account",
                service_account,
            ],
        )
    };
    let (_, bare) = runner.split_once('/').unwrap();
    let refused = every(bare).code(1);
    assert!(
        refused.stderr.contains("service_account")
            && refused.stderr.contains(&format!("NAMESPACE/{bare}")),
        "{refused:?}"
    );
    let created = every(runner).ok().json();
    let schedule = &created["schedule"];
    assert_eq!(schedule["serviceAccount"], runner.as_str(), "{created:#}");
    assert!(
        schedule["importPolicy"]["application"]["namespace"].is_null(),
        "{created:#}"
    );
    cli(kc, &["--context", "b", "import-policy", "delete", "every"]).ok();
}

/// Run 1: the export `rp1` is imported and restored, byte for byte, by a job of the
/// policy `policy_id`. Returns b's volume: its name and where it keeps its data.
fn the_first_run_imports_and_restores_the_export(
    ctx: &Ctx,
    rp1: &str,
    policy_id: &str,
) -> (String, PathBuf) {
    let Ctx { kc, ns, src, .. } = ctx;
    let (_, run1) = run_now(kc, "shop-in");
    assert_eq!(run1["state"], "RUN_STATE_SUCCEEDED", "{run1:#}");
    assert_eq!(num(&run1, "restorePointsFound"), 1, "{run1:#}");
    assert_eq!(num(&run1, "restorePointsImported"), 1, "{run1:#}");
    assert_eq!(
        strings(&run1["importedRestorePointIds"]),
        vec![rp1.to_owned()]
    );
    let run1_jobs = strings(&run1["jobIds"]);
    assert_eq!(run1_jobs.len(), 1, "{run1:#}");
    let jobs = jobs_on_b(kc);
    assert_eq!(jobs.len(), 1, "{jobs:#?}");
    assert_eq!(jobs[0]["id"], run1_jobs[0].as_str());
    assert_eq!(jobs[0]["kind"], "JOB_KIND_IMPORT", "{jobs:#?}");
    assert_eq!(jobs[0]["scheduleId"], policy_id);
    let (pv, dst) = volume_on_b(kc, ns);
    assert_same_tree(src, &dst);
    assert_eq!(
        jsonpath(kc, "b", ns, "configmap/settings", "{.data.greeting}"),
        "hello from a"
    );
    // b's catalog says which policy brought the restore point.
    let points = b_json(kc, &["restore-points", "--profile", "in"]);
    assert_eq!(
        points["restorePoints"][0]["localLabels"]["ferry.dev/import-policy"], "shop-in",
        "{points:#}"
    );
    let table = cli(kc, &["--context", "b", "restore-points", "--profile", "in"]).ok();
    assert!(table.stdout.contains("IMPORTED BY"), "{table:?}");
    assert!(table.stdout.contains("shop-in"), "{table:?}");
    (pv, dst)
}

/// Run 2, the bucket unchanged: the repository was listed, nothing imported, no job.
fn an_unchanged_bucket_means_no_work(ctx: &Ctx) {
    let Ctx { kc, .. } = ctx;
    let (_, run2) = run_now(kc, "shop-in");
    assert_eq!(run2["state"], "RUN_STATE_NOTHING_TO_DO", "{run2:#}");
    assert_eq!(num(&run2, "restorePointsFound"), 1, "{run2:#}");
    assert!(run2.get("restorePointsImported").is_none(), "{run2:#}");
    assert!(run2.get("jobIds").is_none(), "{run2:#}");
    assert_eq!(jobs_on_b(kc).len(), 1, "no new job on b");
}

/// A change on a and a second export: imported alone and restored over the first, into
/// the same `volume` on b. Returns a copy of what b then holds, the source as exported.
fn a_second_export_is_imported_alone_and_restored_over_the_first(
    ctx: &Ctx,
    root: &Path,
    rp1: &str,
    volume: &(String, PathBuf),
) -> PathBuf {
    let Ctx {
        kc,
        ns,
        src,
        recipient,
        ..
    } = ctx;
    let (pv, dst) = volume;
    std::fs::write(src.join("text/README.md"), b"# readme\nchanged on a\n").unwrap();
    std::fs::write(src.join("added.bin"), random_bytes(256 << 10, 52)).unwrap();
    std::fs::remove_file(src.join("many/f03")).unwrap();
    kubectl(
        kc,
        "a",
        &[
            "-n",
            ns,
            "patch",
            "configmap",
            "settings",
            "-p",
            r#"{"data":{"greeting":"second export"}}"#,
        ],
        None,
    );
    let second = export(kc, ns, recipient);
    let rp2 = second["restorePointId"].as_str().unwrap().to_string();
    assert_ne!(rp2, rp1);
    // Incremental on the source: only the changed data went to the bucket.
    let volume = &second["volumes"][0];
    assert!(
        uint64(volume, "bytesNew") < uint64(volume, "bytesTotal") / 4,
        "second export not incremental: {volume:#}"
    );
    let (_, run3) = run_now(kc, "shop-in");
    assert_eq!(run3["state"], "RUN_STATE_SUCCEEDED", "{run3:#}");
    assert_eq!(num(&run3, "restorePointsFound"), 2, "{run3:#}");
    assert_eq!(num(&run3, "restorePointsImported"), 1, "{run3:#}");
    assert_eq!(strings(&run3["importedRestorePointIds"]), vec![rp2.clone()]);
    assert_eq!(run3["restorePointId"], rp2.as_str());
    let run3_jobs = strings(&run3["jobIds"]);
    assert_eq!(run3_jobs.len(), 1, "{run3:#}");
    assert_eq!(jobs_on_b(kc).len(), 2);
    let (pv_after, dst_after) = volume_on_b(kc, ns);
    assert_eq!(
        (&pv_after, &dst_after),
        (pv, dst),
        "the same volume, updated"
    );
    assert_same_tree(src, dst);
    assert_eq!(
        jsonpath(kc, "b", ns, "configmap/settings", "{.data.greeting}"),
        "second export"
    );
    let restored = root.join("after-second-export");
    copy_tree(src, &restored);
    restored
}

/// A third export waits in the bucket, and a second policy would restore it into a
/// namespace b does not have yet. Returns that namespace.
fn a_third_export_waits_and_a_second_policy_maps_a_new_namespace(ctx: &Ctx) -> String {
    let Ctx {
        kc,
        ns,
        src,
        recipient,
        ..
    } = ctx;
    std::fs::write(src.join("text/README.md"), b"# readme\nthird\n").unwrap();
    let third = export(kc, ns, recipient);
    assert!(third["restorePointId"].as_str().is_some());
    // A second policy that would restore into a namespace b does not have yet.
    let fresh = format!("{ns}-fresh");
    cli(
        kc,
        &[
            "--context",
            "b",
            "import-policy",
            "create",
            "fresh",
            "--profile",
            "in",
            "-n",
            ns,
            "--every",
            "1h",
            "--restore",
            "--namespace-map",
            &format!("{ns}={fresh}"),
            "--max-attempts",
            "1",
            "--service-account",
            &ctx.runner,
        ],
    )
    .ok();
    fresh
}

/// With the bucket unreachable, the runs fail, clearly; they do not conclude that nothing
/// is new. Nothing was applied: no job, b's `volume` still holds the second export
/// (`restored`), and the namespace `fresh` was never made, nor any volume for it.
fn an_unreachable_bucket_fails_the_runs_and_nothing_is_applied(
    ctx: &Ctx,
    fresh: &str,
    volume: (String, PathBuf),
    restored: &Path,
) {
    let Ctx { kc, ns, .. } = ctx;
    let (pv, dst) = volume;
    let (failed_cli, run4) = run_now(kc, "shop-in");
    assert_eq!(failed_cli.code, Some(13), "{failed_cli:?}");
    assert!(failed_cli.stderr.contains("ended failed"), "{failed_cli:?}");
    assert_eq!(run4["state"], "RUN_STATE_FAILED", "{run4:#}");
    assert_eq!(run4["error"]["code"], "ERROR_CODE_UNREACHABLE", "{run4:#}");
    let message = run4["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("listing the restore points of profile \"in\""),
        "{run4:#}"
    );
    assert!(message.contains("unreachable"), "{run4:#}");
    assert!(
        !run4["error"]["hint"].as_str().unwrap().is_empty(),
        "{run4:#}"
    );
    assert!(run4.get("jobIds").is_none(), "{run4:#}");
    assert!(run4.get("restorePointsImported").is_none(), "{run4:#}");
    let (_, fresh_run) = run_now(kc, "fresh");
    assert_eq!(fresh_run["state"], "RUN_STATE_FAILED", "{fresh_run:#}");
    // Nothing was applied: no job, b's volume still holds the second export, and the
    // namespace the other policy maps to was never made, nor any volume for it.
    assert_eq!(jobs_on_b(kc).len(), 2, "no job started");
    assert_eq!(volume_on_b(kc, ns), (pv, dst.clone()));
    assert_same_tree(restored, &dst);
    let namespaces = kubectl(kc, "b", &["get", "namespaces", "-o", "name"], None);
    assert!(!namespaces.contains(fresh), "{namespaces}");
    let volumes = kubectl(kc, "b", &["get", "pv", "-o", "name"], None);
    assert!(!volumes.contains(fresh), "{volumes}");
}

/// The run history of `shop-in` tells the story, newest first. Deleting a policy keeps
/// what it restored; b's log never held the `reader`'s S3 secret.
fn the_run_history_tells_the_story_and_deleting_a_policy_keeps_what_it_restored(
    ctx: &Ctx,
    serve_b: &Serve,
    reader: &ferry_testenv::S3Credentials,
) {
    let Ctx { kc, .. } = ctx;
    let runs = b_json(kc, &["import-policy", "runs", "shop-in"]);
    let states: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "RUN_STATE_FAILED",
            "RUN_STATE_SUCCEEDED",
            "RUN_STATE_NOTHING_TO_DO",
            "RUN_STATE_SUCCEEDED"
        ],
        "{runs:#}"
    );
    let text = cli(kc, &["--context", "b", "import-policy", "runs", "shop-in"]).ok();
    assert!(text.stdout.contains("IMPORTED"), "{text:?}");
    assert!(text.stdout.contains("nothing-to-do"), "{text:?}");

    // Deleting a policy keeps what it restored.
    cli(kc, &["--context", "b", "import-policy", "delete", "fresh"]).ok();
    let left = cli(kc, &["--context", "b", "import-policy", "list"]).ok();
    assert!(!left.stdout.contains("fresh"), "{left:?}");
    assert!(
        !serve_b.log().contains(&reader.secret_key),
        "b's log holds the S3 secret"
    );
}
