//! Ferry driven with kubectl, across two real clusters (one `ferry serve` each) and the
//! test environment's MinIO, with the controller (`ferry service controller`) and its
//! admission webhook beside cluster a:
//!
//! - the ClusterPair and Migration examples of docs/crds.md, applied with kubectl, pair
//!   the clusters and move a namespace with its data; `kubectl get migration -o yaml`
//!   shows Succeeded with the volume's result, and every byte arrived;
//! - the webhook records who created each object and keeps it on updates;
//! - a namespace user's Migration of a namespace they cannot read is refused, with the
//!   reason in its condition, and starts no job;
//! - the documented Profile makes a profile in the catalog (its repository created),
//!   and deleting it deletes the profile; alice's is refused;
//! - the documented Restore puts the Migration's restore point back into another
//!   namespace on b, every byte; alice's Restore of it is refused;
//! - the documented MigrationSchedule runs on its interval, twice and more, as its
//!   ServiceAccount (`serviceAccountName`, which its creator, the administrator, granted
//!   rights on both clusters); its status records the runs; suspend and resume reach the scheduler; the
//!   second run carries what changed in between; deleting it deletes the schedule;
//! - a second controller replica waits on the Lease and takes over when the first stops.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::control::{
    cli, eventually, free_port, jsonpath, kubectl, kubectl_ok, kubectl_result, profile_create,
    profiles, sample_app, serve_with, service_account_with_rights, wait_answering,
};
use common::{assert_same_tree, make_tree};
use serde_json::Value;

const DOC: &str = include_str!("../../docs/crds.md");
const CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/ferry/crds/ferry.dev.yaml"
);

/// The YAML block of docs/crds.md marked `<!-- example: NAME -->`.
fn example(name: &str) -> String {
    let marker = format!("<!-- example: {name} -->");
    let after = DOC
        .split_once(&marker)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no example {name} in docs/crds.md"));
    let body = after.split_once("```yaml\n").map(|(_, rest)| rest).unwrap();
    body.split_once("```")
        .map(|(yaml, _)| yaml.to_owned())
        .unwrap()
}

/// A `ferry service controller` process for cluster a.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Controller {
    fn start(
        kc: &Path,
        root: &Path,
        id: &str,
        serve: u16,
        webhook: u16,
        token: &Path,
    ) -> Controller {
        let log = root.join(format!("controller-{id}.log"));
        let endpoint = format!("http://127.0.0.1:{serve}");
        let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
            .args(["service", "controller"])
            .args([
                "--transfer-endpoint",
                &endpoint,
                "--pairing-endpoint",
                &endpoint,
                "--scheduler-endpoint",
                &endpoint,
                "--catalog-endpoint",
                &endpoint,
            ])
            .arg("--internal-token-file")
            .arg(token)
            .args(["--webhook-listen", &format!("127.0.0.1:{webhook}")])
            .arg("--webhook-cert")
            .arg(root.join("certs/webhook.crt"))
            .arg("--webhook-key")
            .arg(root.join("certs/webhook.key"))
            .arg("--kubeconfig")
            .arg(kc)
            .args([
                "--context",
                "a",
                "--cluster-name",
                "a",
                "--namespace",
                "ferry-system",
            ])
            .args(["--identity", id, "--lease-seconds", "6"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Controller { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MutatingWebhookConfiguration the chart installs, pointing at a process here.
fn webhook_configuration(ca: &str, port: u16) -> String {
    use base64::Engine as _;
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca);
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\n\
         metadata: {{name: ferry}}\nwebhooks:\n\
         - name: requester.ferry.dev\n  admissionReviewVersions: [v1]\n  sideEffects: None\n  \
         failurePolicy: Fail\n  timeoutSeconds: 10\n  \
         clientConfig: {{url: \"https://127.0.0.1:{port}/mutate\", caBundle: {bundle}}}\n  \
         rules: [{{apiGroups: [ferry.dev], apiVersions: [\"*\"], operations: [CREATE, UPDATE], \
         resources: [clusterpairs, profiles, migrations, restores, migrationschedules, \
         importpolicies], scope: \"*\"}}]\n"
    )
}

fn get_json(kc: &Path, context: &str, args: &[&str]) -> Value {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(kc, context, &all, None)).unwrap()
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// Waits until `kind/name` has condition `type_` other than Unknown, and returns it.
fn settled(kc: &Path, context: &str, ns: Option<&str>, what: &str, type_: &str) -> Value {
    let mut last = Value::Null;
    eventually(&format!("{what} to settle its {type_} condition"), || {
        let mut args = vec![what];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        last = get_json(kc, context, &args);
        condition(&last, type_).is_some_and(|c| c["status"] != "Unknown")
    });
    last
}

#[tokio::test]
async fn kubectl_apply_of_a_cluster_pair_and_a_migration_moves_a_namespace_with_its_data() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();

    // One internal credential for a's Ferry and its controller, as the chart shares it.
    let token = root.join("internal-token");
    std::fs::write(&token, "controller-test-internal-credential\n").unwrap();
    let port_a = free_port();
    // Schedules may run every few seconds here, so two runs fit in a test.
    let with_token = [
        "--internal-token-file".to_string(),
        token.display().to_string(),
        "--schedule-min-interval-seconds".to_string(),
        "1".to_string(),
    ];
    let _serve_a = serve_with(&kc, "a", root, port_a, &with_token);
    let _serve_b = serve_with(&kc, "b", root, free_port(), &[]);
    wait_answering(&kc, &["a", "b"]);
    profiles(&kc, s3, root, ("s3-crd", "repo-key-crd"), "cli-crds", 71);

    let (first, ca) = the_crds_and_the_webhook(&kc, root, port_a, &token);
    the_documented_cluster_pair_pairs_a_with_b(&kc);
    let (ns, done, src) =
        the_documented_migration_moves_a_namespace_with_its_data(&kc, root, &first);
    the_requester_cannot_be_edited_away_nor_the_spec_changed(&kc, &ns, &done);
    a_profile_object_makes_a_profile_for_administrators_only(&kc, s3);
    a_restore_puts_the_migrations_restore_point_back(&kc, &done, &src);
    a_migration_schedule_runs_on_its_interval_and_records_its_runs(&kc, root, &first);
    an_import_policy_imports_what_is_new(&kc, s3, root, &first);
    a_namespace_users_migration_of_a_namespace_she_cannot_read_is_refused(&kc, &ns);
    a_namespace_users_cluster_pair_is_refused(&kc);
    a_warm_migration_syncs_until_its_cutover_annotation(&kc, root);
    deleting_a_running_migration_cancels_its_job(&kc, root);
    // Last: it stops the first controller.
    a_second_replica_takes_over_when_the_first_stops(&kc, root, first, port_a, &token, &ca);
}

/// The CRDs the chart ships, the first controller replica and its webhook, which the
/// API server calls for every Ferry object from now on. Returns the replica and the
/// webhook's CA.
fn the_crds_and_the_webhook(
    kc: &Path,
    root: &Path,
    port_a: u16,
    token: &Path,
) -> (Controller, String) {
    kubectl(kc, "a", &["apply", "--server-side", "-f", CRDS], None);
    kubectl(
        kc,
        "a",
        &[
            "wait",
            "--for=condition=Established",
            "crd/migrations.ferry.dev",
            "crd/clusterpairs.ferry.dev",
            "crd/migrationschedules.ferry.dev",
            "crd/restores.ferry.dev",
            "crd/profiles.ferry.dev",
            "crd/importpolicies.ferry.dev",
        ],
        None,
    );
    let certs = root.join("certs");
    common::run(
        common::ferry()
            .args([
                "certs",
                "create",
                "--name",
                "webhook",
                "--host",
                "127.0.0.1",
                "--dir",
            ])
            .arg(&certs),
    )
    .ok();
    let webhook = free_port();
    let first = Controller::start(kc, root, "first", port_a, webhook, token);
    let ca = std::fs::read_to_string(certs.join("ca.crt")).unwrap();
    kubectl(
        kc,
        "a",
        &["apply", "-f", "-"],
        Some(&webhook_configuration(&ca, webhook)),
    );
    (first, ca)
}

/// The documented ClusterPair, its token in a Secret: Ready, paired with b, and
/// annotated by the webhook with the administrator who applied it.
fn the_documented_cluster_pair_pairs_a_with_b(kc: &Path) {
    let pairing = cli(
        kc,
        &[
            "--context",
            "b",
            "pair",
            "token",
            "create",
            "--name",
            "a-to-b",
        ],
    )
    .ok();
    let literal = format!("--from-literal=token={}", pairing.stdout.trim());
    kubectl(
        kc,
        "a",
        &[
            "-n",
            "ferry-system",
            "create",
            "secret",
            "generic",
            "b-pairing-token",
            &literal,
        ],
        None,
    );
    // The webhook must answer before the API server takes Ferry objects.
    let pair_yaml = example("clusterpair");
    eventually("the webhook to answer the API server", || {
        kubectl_result(kc, "a", &["apply", "-f", "-"], Some(&pair_yaml)).is_ok()
    });
    let pair = settled(kc, "a", None, "clusterpair/a-to-b", "Ready");
    let ready = condition(&pair, "Ready").unwrap();
    assert_eq!(ready["status"], "True", "{pair:#}");
    assert_eq!(pair["status"]["destination"], "b", "{pair:#}");
    let pair_id = pair["status"]["pairId"].as_str().unwrap().to_owned();
    let listed = cli(kc, &["--context", "a", "-o", "json", "pair", "list"]).ok();
    assert!(listed.stdout.contains(&pair_id), "{listed:?}");
    // Recorded by the webhook: the administrator who applied it.
    let requester: Value = serde_json::from_str(
        pair["metadata"]["annotations"]["ferry.dev/requester"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(requester["username"], "admin", "{requester}");
}

/// The documented Migration, of a namespace with data: Succeeded, its status following
/// the job's events, every byte on b. Returns the namespace, the Migration as it
/// ended and the source volume.
fn the_documented_migration_moves_a_namespace_with_its_data(
    kc: &Path,
    root: &Path,
    first: &Controller,
) -> (String, Value, PathBuf) {
    let (ns, _, src) = sample_app(kc, root, "crd-shop", |src| {
        make_tree(src, 72);
    });
    let migration = example("migration").replace("namespace: shop", &format!("namespace: {ns}"));
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&migration));
    let done = settled(kc, "a", Some(&ns), "migration/shop-to-b", "Succeeded");
    let succeeded = condition(&done, "Succeeded").unwrap();
    assert_eq!(succeeded["status"], "True", "{done:#}\n{}", first.log());
    let status = &done["status"];
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["observedGeneration"], done["metadata"]["generation"]);
    let volumes = status["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1, "{status:#}");
    assert_eq!(volumes[0]["claim"], "data-db-0");
    assert_eq!(volumes[0]["result"], "Succeeded");
    assert!(volumes[0]["bytes"].as_u64().unwrap() > 0, "{status:#}");
    assert!(
        status["objects"]["created"].as_u64().unwrap() >= 5,
        "{status:#}"
    );
    let job = status["jobs"][0]["id"].as_str().unwrap();
    let shown = cli(kc, &["--context", "a", "-o", "json", "jobs", "get", job]).ok();
    assert!(shown.stdout.contains("JOB_STATE_SUCCEEDED"), "{shown:?}");
    // The status followed the job's own event stream: the outcome was written within
    // seconds of the job's end, not at the next refresh of the 15 s timer.
    let job_json: Value = serde_json::from_str(&shown.stdout).unwrap();
    let time = |v: &Value| -> k8s_openapi::jiff::Timestamp {
        v.as_str()
            .unwrap_or_else(|| panic!("no time in {v}"))
            .parse()
            .unwrap()
    };
    let lag = time(&status["finishedAt"]).duration_since(time(&job_json["report"]["finishedAt"]));
    assert!(
        lag.as_secs_f64() < 5.0,
        "the status took {lag:?} to follow the job: {status:#}\n{job_json:#}"
    );
    assert!(
        shown.stdout.contains("\"requestedBy\": \"admin\""),
        "{shown:?}"
    );
    let dst = PathBuf::from(kubectl(
        kc,
        "b",
        &[
            "get",
            "pv",
            &jsonpath(kc, "b", &ns, "pvc/data-db-0", "{.spec.volumeName}"),
            "-o",
            "jsonpath={.spec.hostPath.path}",
        ],
        None,
    ));
    assert_same_tree(&src, &dst);
    // The Migration itself stayed behind: Ferry's own objects drive the source's Ferry.
    let report = cli(
        kc,
        &["--context", "a", "jobs", "get", job, "--show-objects"],
    )
    .ok();
    assert!(
        report
            .stdout
            .contains("Ferry's own objects drive the source's Ferry"),
        "{report:?}"
    );
    // The printer columns.
    let table = kubectl(kc, "a", &["-n", &ns, "get", "migrations"], None);
    assert!(
        table.contains("PHASE") && table.contains("Succeeded"),
        "{table}"
    );
    (ns, done, src)
}

/// The webhook keeps the requester of the Migration `done` in `ns` through an edit, and
/// the spec cannot change.
fn the_requester_cannot_be_edited_away_nor_the_spec_changed(kc: &Path, ns: &str, done: &Value) {
    kubectl(
        kc,
        "a",
        &[
            "-n",
            ns,
            "annotate",
            "--overwrite",
            "migration/shop-to-b",
            "ferry.dev/requester={\"username\":\"mallory\"}",
        ],
        None,
    );
    let after = get_json(kc, "a", &["-n", ns, "migration/shop-to-b"]);
    assert_eq!(
        after["metadata"]["annotations"]["ferry.dev/requester"],
        done["metadata"]["annotations"]["ferry.dev/requester"]
    );
    let changed = kubectl_result(
        kc,
        "a",
        &[
            "-n",
            ns,
            "patch",
            "migration/shop-to-b",
            "--type=merge",
            "-p",
            "{\"spec\":{\"dryRun\":true}}",
        ],
        None,
    );
    assert!(
        changed.as_ref().is_err_and(|e| e.contains("cannot change")),
        "{changed:?}"
    );
}

/// alice, in her own namespace, asks for a Migration of `ns`, which she cannot read:
/// refused, with the reason in its condition, and no job.
fn a_namespace_users_migration_of_a_namespace_she_cannot_read_is_refused(kc: &Path, ns: &str) {
    let hers = ferry_testenv::unique_name("alice-crd");
    kubectl(kc, "a", &["create", "namespace", &hers], None);
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: alice-migrations, namespace: {hers}}}\n\
         rules: [{{apiGroups: [ferry.dev], resources: [migrations], verbs: [\"*\"]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: alice-migrations, namespace: {hers}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: alice-migrations}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n"
    );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&role));
    let jobs_before = cli(kc, &["--context", "a", "-o", "json", "jobs", "list"])
        .ok()
        .stdout;
    let theirs = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Migration\n\
         metadata: {{name: take-shop, namespace: {hers}}}\n\
         spec: {{clusterPair: a-to-b, profile: main, namespaces: [{ns}]}}\n"
    );
    kubectl(kc, "a-alice", &["apply", "-f", "-"], Some(&theirs));
    let refused = settled(kc, "a", Some(&hers), "migration/take-shop", "Succeeded");
    let why = condition(&refused, "Succeeded").unwrap();
    assert_eq!(why["status"], "False", "{refused:#}");
    assert_eq!(why["reason"], "Forbidden", "{refused:#}");
    let message = why["message"].as_str().unwrap();
    assert!(
        message.contains("alice may not") && message.contains(ns),
        "{message}"
    );
    assert_eq!(refused["status"]["phase"], "Failed");
    assert!(refused["status"]["jobs"].is_null(), "{refused:#}");
    let jobs_after = cli(kc, &["--context", "a", "-o", "json", "jobs", "list"])
        .ok()
        .stdout;
    assert_eq!(jobs_before, jobs_after, "a refused Migration started a job");
}

/// alice, allowed by RBAC to create ClusterPairs, is still no Ferry administrator: the
/// controller refuses to pair for her.
fn a_namespace_users_cluster_pair_is_refused(kc: &Path) {
    let pairs_role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
         metadata: {name: alice-clusterpairs}\n\
         rules: [{apiGroups: [ferry.dev], resources: [clusterpairs], verbs: [create, get]}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {name: alice-clusterpairs}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: alice-clusterpairs}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n";
    kubectl(kc, "a", &["apply", "-f", "-"], Some(pairs_role));
    let hers_pair = "apiVersion: ferry.dev/v1alpha1\nkind: ClusterPair\n\
                     metadata: {name: alices-pair}\n\
                     spec: {tokenSecretRef: {name: b-pairing-token}}\n";
    kubectl(kc, "a-alice", &["apply", "-f", "-"], Some(hers_pair));
    let refused_pair = settled(kc, "a", None, "clusterpair/alices-pair", "Ready");
    let why = condition(&refused_pair, "Ready").unwrap();
    assert_eq!(why["status"], "False", "{refused_pair:#}");
    assert_eq!(why["reason"], "Forbidden", "{refused_pair:#}");
    assert!(
        why["message"]
            .as_str()
            .unwrap()
            .contains("alice may not pair clusters"),
        "{refused_pair:#}"
    );
    assert!(
        refused_pair["status"]["pairId"].is_null(),
        "{refused_pair:#}"
    );
}

/// Deleting a Migration whose job runs cancels the job; the object goes once it has
/// stopped, and the destination has nothing of the namespace.
fn deleting_a_running_migration_cancels_its_job(kc: &Path, root: &Path) {
    let (big, _, _) = sample_app(kc, root, "crd-cancel", |src| {
        std::fs::write(src.join("big.bin"), common::random_bytes(256 << 20, 73)).unwrap();
    });
    let doomed = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Migration\n\
         metadata: {{name: cancel-me, namespace: {big}}}\n\
         spec: {{clusterPair: a-to-b, profile: main, quiesceSource: true}}\n"
    );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&doomed));
    let mut running = Value::Null;
    eventually("the doomed Migration's job to start", || {
        running = get_json(kc, "a", &["-n", &big, "migration/cancel-me"]);
        running["status"]["jobs"][0]["id"].is_string()
    });
    assert_eq!(running["status"]["phase"], "Running", "{running:#}");
    let doomed_job = running["status"]["jobs"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    kubectl(
        kc,
        "a",
        &["-n", &big, "delete", "migration/cancel-me", "--wait=false"],
        None,
    );
    eventually("the deleted Migration to go", || {
        kubectl_result(kc, "a", &["-n", &big, "get", "migration/cancel-me"], None).is_err()
    });
    let ended = cli(
        kc,
        &["--context", "a", "-o", "json", "jobs", "get", &doomed_job],
    )
    .ok();
    assert!(ended.stdout.contains("JOB_STATE_CANCELLED"), "{ended:?}");
    assert!(ended.stdout.contains("was deleted"), "{ended:?}");
    let on_b = kubectl(kc, "b", &["get", "namespaces", "-o", "name"], None);
    assert!(
        !on_b.lines().any(|l| l == format!("namespace/{big}")),
        "{on_b}"
    );
}

/// A warm Migration syncs (its status counts the syncs) until `ferry.dev/cutover` is
/// set on it, then moves the application; one whose sync interval is no duration is
/// refused, naming the field.
fn a_warm_migration_syncs_until_its_cutover_annotation(kc: &Path, root: &Path) {
    let (ns, _, _) = sample_app(kc, root, "crd-warm", |src| {
        make_tree(src, 74);
    });
    let warm = |name: &str, interval: &str| {
        format!(
            "apiVersion: ferry.dev/v1alpha1\nkind: Migration\n\
             metadata: {{name: {name}, namespace: {ns}}}\n\
             spec: {{clusterPair: a-to-b, profile: main, startApplications: false, \
             warm: {{syncInterval: {interval}}}}}\n"
        )
    };
    kubectl(
        kc,
        "a",
        &["apply", "-f", "-"],
        Some(&warm("bad-warm", "soon")),
    );
    let refused = settled(kc, "a", Some(&ns), "migration/bad-warm", "Succeeded");
    let why = condition(&refused, "Succeeded").unwrap();
    assert_eq!(why["reason"], "Invalid", "{refused:#}");
    assert!(
        why["message"]
            .as_str()
            .unwrap()
            .contains("spec.warm.syncInterval"),
        "{refused:#}"
    );

    kubectl(kc, "a", &["apply", "-f", "-"], Some(&warm("warm", "1s")));
    let mut syncing = Value::Null;
    eventually("the warm Migration to sync twice", || {
        syncing = get_json(kc, "a", &["-n", &ns, "migration/warm"]);
        syncing["status"]["warm"]["syncs"].as_u64() >= Some(2)
    });
    assert_eq!(syncing["status"]["phase"], "Running", "{syncing:#}");
    assert!(
        !kubectl_ok(kc, "b", &["-n", &ns, "get", "statefulset", "db"]),
        "the application reached b before its cutover"
    );
    kubectl(
        kc,
        "a",
        &[
            "-n",
            &ns,
            "annotate",
            "migration/warm",
            "ferry.dev/cutover=now",
        ],
        None,
    );
    let done = settled(kc, "a", Some(&ns), "migration/warm", "Succeeded");
    assert_eq!(
        condition(&done, "Succeeded").unwrap()["status"],
        "True",
        "{done:#}"
    );
    assert_eq!(done["status"]["warm"]["cutoverRequested"], true, "{done:#}");
    // startApplications false: on b at zero replicas, and the source runs on.
    let replicas = jsonpath(kc, "b", &ns, "statefulset/db", "{.spec.replicas}");
    assert_eq!(replicas, "0");
    assert_eq!(
        jsonpath(kc, "a", &ns, "statefulset/db", "{.spec.replicas}"),
        "1"
    );
}

/// A second replica waits on the Lease; when the `first` stops, it takes over and acts,
/// with its own webhook.
fn a_second_replica_takes_over_when_the_first_stops(
    kc: &Path,
    root: &Path,
    first: Controller,
    port_a: u16,
    token: &Path,
    ca: &str,
) {
    let webhook_second = free_port();
    let second = Controller::start(kc, root, "second", port_a, webhook_second, token);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let holder = kubectl(
        kc,
        "a",
        &[
            "-n",
            "ferry-system",
            "get",
            "lease",
            "ferry-controller",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    assert_eq!(holder, "first");
    assert!(
        !second.log().contains("holding the lease"),
        "{}",
        second.log()
    );
    drop(first);
    eventually("the second replica to take the lease", || {
        second.log().contains("holding the lease")
    });
    // It acts: a ClusterPair whose token Secret is missing is told so, by it.
    kubectl(
        kc,
        "a",
        &["apply", "-f", "-"],
        Some(&webhook_configuration(ca, webhook_second)),
    );
    let orphan = "apiVersion: ferry.dev/v1alpha1\nkind: ClusterPair\nmetadata: {name: no-secret}\n\
                  spec: {tokenSecretRef: {name: missing-token}}\n";
    eventually("the second replica's webhook to answer", || {
        kubectl_result(kc, "a", &["apply", "-f", "-"], Some(orphan)).is_ok()
    });
    let waiting = settled(kc, "a", None, "clusterpair/no-secret", "Ready");
    let why = condition(&waiting, "Ready").unwrap();
    assert_eq!(why["reason"], "SecretNotFound", "{waiting:#}");
    assert!(
        why["message"].as_str().unwrap().contains("missing-token"),
        "{waiting:#}"
    );
    assert!(second.log().contains("holding the lease"));
}

/// The documented MigrationSchedule, on an interval of a few seconds: it runs as its
/// ServiceAccount (created by the administrator who creates the object, with rights on
/// both clusters), its status records the runs, `suspend` reaches the scheduler, a run
/// after resuming carries what changed on the source, and deleting the object deletes
/// the schedule.
fn a_migration_schedule_runs_on_its_interval_and_records_its_runs(
    kc: &Path,
    root: &Path,
    controller: &Controller,
) {
    let (ns, _, src) = sample_app(kc, root, "crd-sched", |src| {
        make_tree(src, 74);
    });
    let documented = example("migrationschedule");
    assert!(
        documented.contains("schedule: \"0 2 * * *\""),
        "{documented}"
    );
    assert!(
        documented.contains("serviceAccountName: shop-mover"),
        "{documented}"
    );
    service_account_with_rights(kc, "a", &ns, "shop-mover", &["a", "b"]);
    let yaml = documented
        .replace("namespace: shop", &format!("namespace: {ns}"))
        .replace(
            "  schedule: \"0 2 * * *\"\n  timeZone: Europe/Paris\n",
            "  interval: 6s\n",
        );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    let what = "migrationschedule/shop-nightly";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let object = loop {
        let object = get_json(kc, "a", &["-n", &ns, what]);
        if succeeded_runs(&object).len() >= 2 {
            break object;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for two runs of the MigrationSchedule to succeed:\n{object:#}\n{}",
            controller
                .log()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    let status = object["status"].clone();
    let ready = condition(&object, "Ready").unwrap();
    assert_eq!(ready["status"], "True", "{object:#}");
    assert_eq!(ready["reason"], "Scheduled", "{object:#}");
    assert_eq!(status["trigger"], "every 6s", "{object:#}");
    assert!(status["lastSuccessTime"].is_string(), "{object:#}");
    let runs = succeeded_runs(&object);
    // Two distinct runs, newest first, each with its own job and restore point.
    assert_ne!(runs[0]["id"], runs[1]["id"], "{object:#}");
    assert_ne!(runs[0]["jobs"][0], runs[1]["jobs"][0], "{object:#}");
    assert_ne!(
        runs[0]["restorePoint"], runs[1]["restorePoint"],
        "{object:#}"
    );
    assert!(
        runs[0]["scheduledAt"].as_str() > runs[1]["scheduledAt"].as_str(),
        "{object:#}"
    );
    // The scheduler holds it under the derived name, created by the object's creator,
    // and the runs' jobs acted as its ServiceAccount.
    let name = format!("migrationschedule.{ns}.shop-nightly");
    let id = status["scheduleId"].as_str().unwrap().to_owned();
    let id = id.as_str();
    let shown = scheduled(kc, id);
    assert_eq!(shown["name"], name.as_str(), "{shown:#}");
    assert_eq!(shown["createdBy"], "admin", "{shown:#}");
    assert_eq!(
        shown["serviceAccount"],
        format!("{ns}/shop-mover").as_str(),
        "{shown:#}"
    );
    let job = runs[0]["jobs"][0].as_str().unwrap();
    let job = cli(kc, &["--context", "a", "-o", "json", "jobs", "get", job]).ok();
    assert!(
        job.stdout.contains(&format!(
            "\"requestedBy\": \"system:serviceaccount:{ns}:shop-mover\""
        )),
        "{job:?}"
    );
    a_suspended_schedule_resumes_with_what_changed(kc, &ns, &src, what, id, object);
}

/// The runs of a MigrationSchedule `object` that succeeded, newest first.
fn succeeded_runs(object: &Value) -> Vec<Value> {
    object["status"]["runs"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter(|r| r["state"] == "succeeded")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Suspending the MigrationSchedule `what` in `ns` (scheduler `id`, last seen as
/// `object`) reaches the scheduler; new data on `src` while suspended goes with the first
/// run after resuming; deleting the object then deletes the schedule.
fn a_suspended_schedule_resumes_with_what_changed(
    kc: &Path,
    ns: &str,
    src: &Path,
    what: &str,
    id: &str,
    mut object: Value,
) {
    // Suspended: the scheduler says so, and the status too.
    let patch = |suspend: bool| {
        kubectl(
            kc,
            "a",
            &[
                "-n",
                ns,
                "patch",
                what,
                "--type=merge",
                "-p",
                &format!("{{\"spec\":{{\"suspend\":{suspend}}}}}"),
            ],
            None,
        );
    };
    patch(true);
    eventually(
        "the MigrationSchedule to be suspended, no run in progress",
        || {
            object = get_json(kc, "a", &["-n", ns, what]);
            let suspended = condition(&object, "Ready").is_some_and(|c| c["reason"] == "Suspended");
            let running = object["status"]["runs"]
                .as_array()
                .is_some_and(|runs| runs.iter().any(|r| r["state"] == "running"));
            suspended && !running
        },
    );
    let shown = scheduled(kc, id);
    assert_eq!(shown["suspended"], true, "{shown:#}");
    let before: Vec<Value> = object["status"]["runs"]
        .as_array()
        .map(|runs| runs.iter().map(|r| r["id"].clone()).collect())
        .unwrap_or_default();

    // New data while suspended; the first run after resuming carries it.
    std::fs::write(
        src.join("between-runs.bin"),
        common::random_bytes(3 << 20, 75),
    )
    .unwrap();
    patch(false);
    eventually("a run after resuming to succeed", || {
        object = get_json(kc, "a", &["-n", ns, what]);
        succeeded_runs(&object)
            .iter()
            .any(|r| !before.contains(&r["id"]))
    });
    assert_same_tree(src, &common::control::volume_on_b(kc, ns));

    // Deleting the object deletes the schedule.
    kubectl(kc, "a", &["-n", ns, "delete", what], None);
    assert_eq!(scheduled(kc, id), Value::Null);
}

/// The schedule `id` as `ferry schedules list` shows it; Null when it is not there.
fn scheduled(kc: &Path, id: &str) -> Value {
    let listed = cli(kc, &["--context", "a", "-o", "json", "schedules", "list"]).ok();
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    listed["schedules"]
        .as_array()
        .and_then(|all| all.iter().find(|s| s["id"] == id).cloned())
        .unwrap_or(Value::Null)
}

/// The documented Restore, of the restore point the Migration `done` wrote, onto b
/// under another namespace: every byte arrives. alice, who may not read the namespace
/// it was captured from, is refused and starts nothing.
fn a_restore_puts_the_migrations_restore_point_back(kc: &Path, done: &Value, src: &Path) {
    let ns = done["metadata"]["namespace"].as_str().unwrap();
    let point = done["status"]["jobs"][0]["restorePoint"].as_str().unwrap();
    assert!(!point.is_empty(), "{done:#}");
    let restored = format!("{ns}-restored");
    let yaml = example("restore")
        .replace("namespace: shop\n", &format!("namespace: {ns}\n"))
        .replace("rp-0123456789abcdef", point)
        .replace("    shop: shop-restored", &format!("    {ns}: {restored}"))
        .replace("spec:\n", "spec:\n  clusterPair: a-to-b\n");
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    let what = "restore/shop-as-it-was";
    let ended = settled(kc, "a", Some(ns), what, "Succeeded");
    let succeeded = condition(&ended, "Succeeded").unwrap();
    assert_eq!(succeeded["status"], "True", "{ended:#}");
    assert_eq!(ended["status"]["phase"], "Succeeded", "{ended:#}");
    assert_eq!(
        ended["status"]["jobs"][0]["restorePoint"], point,
        "{ended:#}"
    );
    assert_eq!(
        ended["status"]["volumes"][0]["result"], "Succeeded",
        "{ended:#}"
    );
    assert_same_tree(src, &common::control::volume_on_b(kc, &restored));

    // alice, in her own namespace, names that restore point: refused (when the job has
    // read the restore point and finds she may not read its namespace), nothing restored.
    let hers = ferry_testenv::unique_name("alice-restore");
    kubectl(kc, "a", &["create", "namespace", &hers], None);
    let role = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: alice-restores, namespace: {hers}}}\n\
         rules: [{{apiGroups: [ferry.dev], resources: [restores], verbs: [\"*\"]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: alice-restores, namespace: {hers}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: alice-restores}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n"
    );
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&role));
    let theirs = format!(
        "apiVersion: ferry.dev/v1alpha1\nkind: Restore\n\
         metadata: {{name: take-it, namespace: {hers}}}\n\
         spec: {{restorePoint: {point}, profile: main, namespaceMapping: {{{ns}: {hers}}}}}\n"
    );
    kubectl(kc, "a-alice", &["apply", "-f", "-"], Some(&theirs));
    let refused = settled(kc, "a", Some(&hers), "restore/take-it", "Succeeded");
    let why = condition(&refused, "Succeeded").unwrap();
    assert_eq!(why["reason"], "Forbidden", "{refused:#}");
    assert!(
        why["message"].as_str().unwrap().contains("alice may not"),
        "{refused:#}"
    );
    assert_eq!(refused["status"]["phase"], "Failed", "{refused:#}");
    let objects = kubectl(
        kc,
        "a",
        &["-n", &hers, "get", "configmaps,pvc", "-o", "name"],
        None,
    );
    assert!(
        !objects.contains("persistentvolumeclaim/"),
        "alice's namespace got the restore point's objects: {objects}"
    );
}

/// The documented Profile, pointed at the test bucket: the catalog holds it with a new
/// repository, and deleting the object deletes it. alice, allowed by RBAC to create
/// Profiles, is no Ferry administrator: refused, no profile.
fn a_profile_object_makes_a_profile_for_administrators_only(kc: &Path, s3: &ferry_testenv::S3Info) {
    let prefix = ferry_testenv::unique_name("crd-profile");
    let yaml = example("profile")
        .replace("https://minio.example:9000", &s3.endpoint)
        .replace("bucket: ferry", &format!("bucket: {}", s3.bucket))
        .replace("prefix: nightly", &format!("prefix: {prefix}"))
        .replace("region: us-east-1", &format!("region: {}", s3.region))
        .replace("name: s3-credentials", "name: s3-crd")
        .replace("name: repository-key", "name: repo-key-crd");
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    let made = settled(kc, "a", None, "profile/nightly", "Ready");
    let ready = condition(&made, "Ready").unwrap();
    assert_eq!(ready["status"], "True", "{made:#}");
    let repository = made["status"]["repositoryId"].as_str().unwrap_or_default();
    assert!(!repository.is_empty(), "{made:#}");
    let listed = profile_named(kc, "nightly");
    assert_eq!(listed["repositoryId"], repository, "{listed:#}");
    assert_eq!(listed["prefix"], prefix.as_str(), "{listed:#}");

    kubectl(kc, "a", &["delete", "profile/nightly"], None);
    assert_eq!(profile_named(kc, "nightly"), Value::Null);

    let role = "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\n\
         metadata: {name: alice-profiles}\n\
         rules: [{apiGroups: [ferry.dev], resources: [profiles], verbs: [create, get]}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\n\
         metadata: {name: alice-profiles}\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: alice-profiles}\n\
         subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]\n";
    kubectl(kc, "a", &["apply", "-f", "-"], Some(role));
    let hers = yaml.replace("name: nightly", "name: alices");
    kubectl(kc, "a-alice", &["apply", "-f", "-"], Some(&hers));
    let refused = settled(kc, "a", None, "profile/alices", "Ready");
    let why = condition(&refused, "Ready").unwrap();
    assert_eq!(why["reason"], "Forbidden", "{refused:#}");
    assert!(
        why["message"]
            .as_str()
            .unwrap()
            .contains("alice may not create repository profiles"),
        "{refused:#}"
    );
    assert_eq!(profile_named(kc, "alices"), Value::Null);
}

/// The profile `name` as `ferry profile list` shows it on a; Null when it is not there.
fn profile_named(kc: &Path, name: &str) -> Value {
    let listed = cli(kc, &["--context", "a", "-o", "json", "profile", "list"]).ok();
    let listed: Value = serde_json::from_str(&listed.stdout).unwrap();
    listed["profiles"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or(Value::Null)
}

/// An ImportPolicy on a, polling an import profile made from a migration token of an
/// export of a namespace for a itself (any cluster can import; the one with the
/// controller here is a): its run imports the export's restore point, labelled with
/// the policy, and the status records the run.
fn an_import_policy_imports_what_is_new(
    kc: &Path,
    s3: &ferry_testenv::S3Info,
    root: &Path,
    controller: &Controller,
) {
    let (ns, _, _) = sample_app(kc, root, "crd-import", |src| {
        make_tree(src, 75);
    });
    let restore_point = an_export_and_an_import_profile_from_its_token(kc, s3, root, &ns);

    let documented = example("importpolicy");
    assert!(documented.contains("interval: 15m"), "{documented}");
    // It restores into its namespace here (the documented mapping names `shop`), so
    // `importer` is a ServiceAccount of that namespace.
    assert!(
        documented.contains("serviceAccountName: importer"),
        "{documented}"
    );
    service_account_with_rights(kc, "a", &ns, "importer", &["a"]);
    let yaml = documented
        .replace("namespace: shop\n", &format!("namespace: {ns}\n"))
        .replace("sourceNamespace: shop", &format!("sourceNamespace: {ns}"))
        .replace("profile: in\n", "profile: crd-in\n")
        .replace("interval: 15m", "interval: 6s")
        // Import only: the restore half is the Restore's and the import test's.
        .replace("restore: true", "restore: false");
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    let what = "importpolicy/shop-in";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let object = loop {
        let object = get_json(kc, "a", &["-n", &ns, what]);
        let done = object["status"]["runs"]
            .as_array()
            .is_some_and(|runs| runs.iter().any(|r| r["state"] == "succeeded"));
        if done {
            break object;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for a run of the ImportPolicy to succeed:\n{object:#}\n{}",
            controller.log()
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    };
    let ready = condition(&object, "Ready").unwrap();
    assert_eq!(ready["status"], "True", "{object:#}");
    assert!(
        ready["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(
                "as ServiceAccount {ns}/importer, created by admin"
            )),
        "{object:#}"
    );
    let id = object["status"]["scheduleId"].as_str().unwrap().to_owned();
    let policy = scheduled(kc, &id);
    assert_eq!(
        policy["importPolicy"]["application"]["namespace"], ns,
        "{policy:#}"
    );
    // The export's restore point, imported under the policy's name.
    let imported = cli(
        kc,
        &[
            "--context",
            "a",
            "-o",
            "json",
            "restore-points",
            "--profile",
            "crd-in",
        ],
    )
    .ok()
    .stdout;
    assert!(imported.contains(&restore_point), "{imported}");
    assert!(
        imported.contains(&format!("importpolicy.{ns}.shop-in")),
        "not labelled with the policy: {imported}"
    );

    kubectl(kc, "a", &["-n", &ns, "delete", what], None);
    let listed = cli(kc, &["--context", "a", "import-policy", "list"]).ok();
    assert!(!listed.stdout.contains(&id), "{listed:?}");
}

/// An export of `ns` to a new export profile for a's own import key, and the import
/// profile `crd-in` made from its migration token, reading as MinIO's read-only user.
/// Returns the export's restore point.
fn an_export_and_an_import_profile_from_its_token(
    kc: &Path,
    s3: &ferry_testenv::S3Info,
    root: &Path,
    ns: &str,
) -> String {
    // Migration tokens hand over what an export profile writes.
    let location = format!(
        "{}/{}/{}",
        s3.endpoint,
        s3.bucket,
        ferry_testenv::unique_name("cli-crds-out")
    );
    let more = [
        "--s3",
        &location,
        "--region",
        &s3.region,
        "--credentials-secret",
        "s3-crd",
        "--key-secret",
        "repo-key-crd",
        "--create-repository",
        // Tokens are issued only for an export profile bound to their namespace.
        "--namespace",
        ns,
    ];
    profile_create(kc, "a", "crd-out", "export", &more).ok();
    let recipient = cli(kc, &["--context", "a", "import-key"]).ok().stdout;
    let exported = common::control::export_through(kc, ns, "crd-out", Some(recipient.trim()))
        .ok()
        .json();
    let restore_point = exported["restorePointId"].as_str().unwrap().to_owned();
    // An import profile reads only: MinIO's read-only user.
    let reader = s3.readonly.clone().expect("a read-only S3 user");
    common::control::s3_secret(
        kc,
        "a",
        "s3-read-crd",
        &reader.access_key,
        &reader.secret_key,
    );
    let token_file = root.join("crd-import.token");
    std::fs::write(&token_file, exported["migrationToken"].as_str().unwrap()).unwrap();
    let token = token_file.to_str().unwrap();
    let signer = common::control::token_signer(&token_file);
    let more = [
        "--migration-token-file",
        token,
        "--expect-signer",
        &signer,
        "--credentials-secret",
        "s3-read-crd",
    ];
    profile_create(kc, "a", "crd-in", "import", &more).ok();
    restore_point
}
