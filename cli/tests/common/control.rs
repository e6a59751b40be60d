//! Driving the control plane as a user does: real `ferry serve` processes on the test
//! environment's clusters, the `ferry` command, kubectl, and the SDK for exact checks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_client::{Ferry, proto};

use super::{Run, ferry, run};

/// One `ferry serve`, killed when the test ends however it ends.
pub struct Serve {
    pub child: Child,
    pub log: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub fn serve(kubeconfig: &Path, side: &str, root: &Path) -> (Serve, String) {
    serve_on(kubeconfig, side, root, free_port())
}

/// `ferry serve` for cluster `side` on `port`, its state under `root/data-<side>`: a
/// restart on the same port and directory is the same Ferry.
pub fn serve_on(kubeconfig: &Path, side: &str, root: &Path, port: u16) -> (Serve, String) {
    (
        serve_with(kubeconfig, side, root, port, &[]),
        format!("http://127.0.0.1:{port}"),
    )
}

/// [`serve_on`] with more flags (TLS, say).
pub fn serve_with(
    kubeconfig: &Path,
    side: &str,
    root: &Path,
    port: u16,
    extra: &[String],
) -> Serve {
    let mut flags = vec![
        "--volume-root".to_owned(),
        root.join(format!("volumes-{side}")).display().to_string(),
    ];
    flags.extend_from_slice(extra);
    serve_flags(kubeconfig, side, root, port, &flags)
}

/// `ferry serve` for cluster `side` of an environment with nodes, with no volume root:
/// claims are provisioned through their StorageClass and restored through mover pods
/// running `image` (`sleep`); its agent reaches each node's local-path directory, and
/// pods' CSI volumes under each node's kubelet directory.
pub fn serve_on_nodes(
    env: &ferry_testenv::TestEnv,
    side: &str,
    root: &Path,
    image: &str,
    extra: &[&str],
) -> Serve {
    let mut flags: Vec<String> = [
        "--mover-image",
        image,
        "--mover-command",
        "sleep 86400",
        "--mover-start-timeout-seconds",
        "120",
    ]
    .map(str::to_owned)
    .to_vec();
    for n in &env.cluster(side).unwrap().nodes {
        flags.push("--allow-root".into());
        flags.push(n.dir.join("local-path").display().to_string());
        flags.push("--kubelet-root".into());
        flags.push(format!("{}={}", n.name, n.kubelet_dir().display()));
    }
    flags.extend(extra.iter().map(|s| s.to_string()));
    serve_flags(env.kubeconfig(), side, root, free_port(), &flags)
}

/// Both clusters of the environment with nodes, each served by `ferry serve` beside it
/// ([`serve_on_nodes`]), answering, with the `main` profiles and the pair a-to-b
/// ([`profiles_and_pair`] with `name` and `seed`).
pub struct NodesServed {
    pub kc: PathBuf,
    /// The nodes' toolbox image, for applications and mover pods.
    pub image: String,
    _a: Serve,
    _b: Serve,
    _tmp: tempfile::TempDir,
}

pub async fn serve_and_pair_on_nodes(name: &str, seed: u64) -> NodesServed {
    let env = ferry_testenv::shared_with_nodes()
        .await
        .expect("test environment with nodes");
    serve_and_pair_in(env, name, seed)
}

/// [`serve_and_pair_on_nodes`] in `env`, an environment with nodes.
pub fn serve_and_pair_in(
    env: &'static ferry_testenv::TestEnv,
    name: &str,
    seed: u64,
) -> NodesServed {
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let image = ferry_testenv::NodeImages::locate(&ferry_testenv::versions())
        .unwrap()
        .toolbox;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let a = serve_on_nodes(env, "a", root, &image, &[]);
    let b = serve_on_nodes(env, "b", root, &image, &[]);
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), name, seed);
    NodesServed {
        kc,
        image,
        _a: a,
        _b: b,
        _tmp: tmp,
    }
}

/// Each [`paired`] test runs its own pair of `ferry serve` processes, and two of them for
/// one cluster would both publish their endpoint in ferry-system/ferry: one at a time.
static PAIRED_TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A Ferry on a and b of the API-only environment, the profile `main` on both, the pair
/// `a-to-b`, and a fresh namespace name; see [`paired`].
pub struct Paired {
    pub kc: PathBuf,
    pub ns: String,
    _serves: (Serve, Serve),
    _root: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// [`Paired`]: `tag` keeps the Secrets, the repository prefix and the namespace of each
/// test apart; `seed` makes the repository key.
pub async fn paired(tag: &str, seed: u64) -> Paired {
    let turn = PAIRED_TURN.lock().await;
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let serves = (serve(&kc, "a", root).0, serve(&kc, "b", root).0);
    wait_answering(&kc, &["a", "b"]);
    let names = (format!("s3-{tag}"), format!("key-{tag}"));
    profiles_and_pair(
        &kc,
        s3,
        root,
        (&names.0, &names.1),
        &format!("cli-{tag}"),
        seed,
    );
    Paired {
        kc,
        ns: ferry_testenv::unique_name(tag),
        _serves: serves,
        _root: tmp,
        _turn: turn,
    }
}

/// `ferry --context a migrate -n NS --to b --profile main EXTRA...`, which must succeed;
/// the job and its report, volumes sorted by claim.
pub async fn migrate_to_b(
    kubeconfig: &Path,
    ns: &str,
    extra: &[&str],
) -> (proto::Job, proto::JobReport) {
    let run = migrate(kubeconfig, ns, "b", extra);
    assert_eq!(
        run.code,
        Some(0),
        "ferry migrate:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let ferry = Ferry::for_context(Some(kubeconfig), Some("a"))
        .await
        .unwrap();
    let (job, report) = ferry.job(&newest_job(&ferry).await).get().await.unwrap();
    let mut report = report.expect("a final report");
    report.volumes.sort_by(|a, b| a.pvc_name.cmp(&b.pvc_name));
    (job, report)
}

/// Most tests start jobs without the caller's credential for the destination, as
/// schedules and Migration objects do: their destination trusts its sources' names.
fn serve_flags(kubeconfig: &Path, side: &str, root: &Path, port: u16, extra: &[String]) -> Serve {
    let mut flags = vec!["--trust-source-identities".to_owned()];
    flags.extend_from_slice(extra);
    spawn_serve(kubeconfig, side, root, port, &flags)
}

/// `ferry serve` for cluster `side` whose pairs' sources write there only with their
/// caller's own credential for it, which it verifies (no `--trust-source-identities`).
pub fn serve_verifying_callers(kubeconfig: &Path, side: &str, root: &Path) -> (Serve, String) {
    let port = free_port();
    let flags = [
        "--volume-root".to_owned(),
        root.join(format!("volumes-{side}")).display().to_string(),
    ];
    (
        spawn_serve(kubeconfig, side, root, port, &flags),
        format!("http://127.0.0.1:{port}"),
    )
}

fn spawn_serve(kubeconfig: &Path, side: &str, root: &Path, port: u16, extra: &[String]) -> Serve {
    let data = root.join(format!("data-{side}"));
    let log = root.join(format!("serve-{side}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--ferry-endpoint", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(&data)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", side, "--cluster-name", side])
        .args(["--node-name", &format!("node-{side}")])
        .arg("--allow-root")
        .arg(root)
        .args(["--shutdown-grace-seconds", "2"])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap(),
        )
        .spawn()
        .unwrap();
    Serve { child, log }
}

/// `ferry --kubeconfig K ARGS...`.
pub fn cli(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut cmd = ferry();
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    run(&mut cmd)
}

/// `kubectl --context CONTEXT ARGS`, which must succeed; its stdout.
pub fn kubectl(kubeconfig: &Path, context: &str, args: &[&str], stdin: Option<&str>) -> String {
    kubectl_result(kubeconfig, context, args, stdin)
        .unwrap_or_else(|stderr| panic!("kubectl {args:?}: {stderr}"))
}

/// `kubectl --context CONTEXT ARGS`: its stdout, or its stderr when it fails.
pub fn kubectl_result(
    kubeconfig: &Path,
    context: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, String> {
    let mut cmd =
        Command::new(std::env::var_os("FERRY_KUBECTL").unwrap_or_else(|| "kubectl".into()));
    cmd.arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context])
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .expect("kubectl on PATH (make testenv builds one)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether `kubectl ARGS` succeeds, its output discarded: for polling.
pub fn kubectl_ok(kubeconfig: &Path, context: &str, args: &[&str]) -> bool {
    Command::new(std::env::var_os("FERRY_KUBECTL").unwrap_or_else(|| "kubectl".into()))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--context", context])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn jsonpath(kubeconfig: &Path, context: &str, ns: &str, what: &str, path: &str) -> String {
    kubectl(
        kubeconfig,
        context,
        &["-n", ns, "get", what, "-o", &format!("jsonpath={path}")],
        None,
    )
}

/// The head of the StatefulSet `db` in `ns` (one replica, pods labelled `app: db`) up to
/// its pod spec, whose fields follow at six spaces.
fn statefulset_db(ns: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: db, namespace: {ns}}}\n\
         spec:\n  replicas: 1\n  serviceName: db\n  selector: {{matchLabels: {{app: db}}}}\n  \
         template:\n    metadata: {{labels: {{app: db}}}}\n    spec:\n"
    )
}

/// Where b's claim `data-db-0` in `ns` keeps its data (a hostPath volume).
pub fn volume_on_b(kc: &Path, ns: &str) -> PathBuf {
    let pv = jsonpath(kc, "b", ns, "pvc/data-db-0", "{.spec.volumeName}");
    PathBuf::from(kubectl(
        kc,
        "b",
        &["get", "pv", &pv, "-o", "jsonpath={.spec.hostPath.path}"],
        None,
    ))
}

/// Asserts that [`sample_app`]'s application in `ns` arrived on b: its volume holds the
/// same tree as `src`, and its ConfigMap says what it said on a. Returns b's volume.
pub fn assert_sample_app_on_b(kc: &Path, ns: &str, src: &Path) -> PathBuf {
    let dst = volume_on_b(kc, ns);
    super::assert_same_tree(src, &dst);
    assert_eq!(
        jsonpath(kc, "b", ns, "configmap/settings", "{.data.greeting}"),
        "hello from a"
    );
    dst
}

pub fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A Namespace and a StorageClass without a provisioner, as YAML documents.
pub fn namespace_and_class(ns: &str, class: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {class}}}\n\
         provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate"
    )
}

/// A hostPath PersistentVolume at `volume`, reserved for claim `claim` of `ns`.
pub fn hostpath_volume(ns: &str, class: &str, claim: &str, volume: &Path) -> String {
    format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {ns}-{claim}}}\nspec:\n  \
         capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  \
         storageClassName: {class}\n  persistentVolumeReclaimPolicy: Retain\n  \
         hostPath: {{path: {}}}\n  claimRef: {{namespace: {ns}, name: {claim}}}",
        volume.display()
    )
}

/// The application on cluster a: ConfigMap, Secret, Service and a StatefulSet whose
/// claim is bound to a hostPath volume at `volume`.
pub fn application(kubeconfig: &Path, ns: &str, class: &str, volume: &Path) {
    let yaml = format!(
        r#"{head}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: settings, namespace: {ns}}}
data: {{greeting: "hello from a"}}
---
apiVersion: v1
kind: Secret
metadata: {{name: db-password, namespace: {ns}}}
stringData: {{password: "p4ss"}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {ns}}}
spec: {{clusterIP: None, selector: {{app: db}}, ports: [{{port: 5432}}]}}
---
{sts}      containers: [{{name: db, image: example.com/db:1, volumeMounts: [{{name: data, mountPath: /data}}]}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec: {{accessModes: [ReadWriteOnce], storageClassName: {class}, resources: {{requests: {{storage: 1Gi}}}}}}
---
{pv}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: data-db-0, namespace: {ns}, labels: {{app: db}}}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: {class}
  volumeName: {ns}-data-db-0
  resources: {{requests: {{storage: 1Gi}}}}
"#,
        head = namespace_and_class(ns, class),
        sts = statefulset_db(ns),
        pv = hostpath_volume(ns, class, "data-db-0", volume),
    );
    kubectl(kubeconfig, "a", &["apply", "-f", "-"], Some(&yaml));
    eventually("claim data-db-0 to bind on a", || {
        jsonpath(kubeconfig, "a", ns, "pvc/data-db-0", "{.status.phase}") == "Bound"
    });
}

/// A fresh namespace named from `prefix` with [`application`] in it on cluster a, its
/// volume a directory under `root/disks` that `fill` writes, and the volume's storage
/// class on cluster b too. Returns the namespace, the storage class and the volume
/// directory.
pub fn sample_app(
    kubeconfig: &Path,
    root: &Path,
    prefix: &str,
    fill: impl FnOnce(&Path),
) -> (String, String, PathBuf) {
    let ns = ferry_testenv::unique_name(prefix);
    let class = format!("local-{ns}");
    let src = root.join("disks").join(&ns);
    std::fs::create_dir_all(&src).unwrap();
    fill(&src);
    application(kubeconfig, &ns, &class, &src);
    storage_class(kubeconfig, "b", &class);
    (ns, class, src)
}

pub fn storage_class(kubeconfig: &Path, context: &str, class: &str) {
    let yaml = format!(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {{name: {class}}}\n\
         provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: Immediate\n"
    );
    kubectl(kubeconfig, context, &["apply", "-f", "-"], Some(&yaml));
}

/// `ferry --context a migrate -n NS --to TO --profile main EXTRA...`.
pub fn migrate(kubeconfig: &Path, ns: &str, to: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "--context",
        "a",
        "migrate",
        "-n",
        ns,
        "--to",
        to,
        "--profile",
        "main",
    ];
    args.extend_from_slice(extra);
    cli(kubeconfig, &args)
}

/// A Secret in ferry-system on `context`, from kubectl's `--from-*` flags.
pub fn secret(kubeconfig: &Path, context: &str, name: &str, from: &[String]) {
    let mut args = vec!["-n", "ferry-system", "create", "secret", "generic", name];
    args.extend(from.iter().map(String::as_str));
    kubectl(kubeconfig, context, &args, None);
}

/// The jobs `ferry`'s caller sees, newest first.
pub async fn jobs(ferry: &Ferry) -> Vec<proto::Job> {
    ferry
        .transfer()
        .list_jobs(proto::ListJobsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .jobs
}

/// The job id of the newest job on `ferry`.
pub async fn newest_job(ferry: &Ferry) -> String {
    jobs(ferry).await.first().expect("a job").id.clone()
}

pub async fn report(ferry: &Ferry, id: &str) -> proto::JobReport {
    ferry
        .job(id)
        .get()
        .await
        .unwrap()
        .1
        .expect("a final report")
}

/// Waits until the Ferry of each context answers `ferry pair list`.
pub fn wait_answering(kubeconfig: &Path, contexts: &[&str]) {
    eventually("the Ferries to answer", || {
        contexts
            .iter()
            .all(|c| cli(kubeconfig, &["--context", c, "pair", "list"]).code == Some(0))
    });
}

/// An S3 credentials Secret (`access_key_id`, `secret_access_key`) in ferry-system.
pub fn s3_secret(kubeconfig: &Path, context: &str, name: &str, access: &str, secret_key: &str) {
    let from = [
        format!("--from-literal=access_key_id={access}"),
        format!("--from-literal=secret_access_key={secret_key}"),
    ];
    secret(kubeconfig, context, name, &from);
}

/// A repository key Secret (key `key`, from the file `key`) in ferry-system.
pub fn key_secret(kubeconfig: &Path, context: &str, name: &str, key: &Path) {
    secret(
        kubeconfig,
        context,
        name,
        &[format!("--from-file=key={}", key.display())],
    );
}

/// Everything in the core and apps groups in `ns`, for `user`, on `context`'s cluster.
pub fn grant(kc: &Path, context: &str, ns: &str, user: &str) {
    let yaml = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: {user}-edit, namespace: {ns}}}\n\
         rules: [{{apiGroups: [\"\", apps], resources: [\"*\"], verbs: [\"*\"]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: {user}-edit, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {user}-edit}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: {user}}}]\n"
    );
    kubectl(kc, context, &["apply", "-f", "-"], Some(&yaml));
}

/// alice may write Roles and RoleBindings in `ns` on `context`, without the escalate and
/// bind verbs: RBAC's escalation check limits what they grant to what she holds.
pub fn grant_rbac(kc: &Path, context: &str, ns: &str) {
    let yaml = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: alice-rbac, namespace: {ns}}}\n\
         rules: [{{apiGroups: [rbac.authorization.k8s.io], resources: [roles, rolebindings], \
         verbs: [get, list, watch, create, update, patch, delete]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: alice-rbac, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: alice-rbac}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n"
    );
    kubectl(kc, context, &["apply", "-f", "-"], Some(&yaml));
}

/// ServiceAccount `name` in `ns` on cluster `home` (which must hold `ns`), bound to
/// `cluster-admin` on each of `bound_on` (a ClusterRoleBinding `NS-NAME`): what an
/// administrator's schedule runs as. Every schedule's runs act as a ServiceAccount,
/// judged by the rights RBAC gives it at each run, reading on the source and writing on
/// the destination (which trusts the source's names) as it.
pub fn service_account_with_rights(kc: &Path, home: &str, ns: &str, name: &str, bound_on: &[&str]) {
    kubectl(
        kc,
        home,
        &["-n", ns, "create", "serviceaccount", name],
        None,
    );
    for context in bound_on {
        kubectl(
            kc,
            context,
            &[
                "create",
                "clusterrolebinding",
                &format!("{ns}-{name}"),
                "--clusterrole=cluster-admin",
                &format!("--serviceaccount={ns}:{name}"),
            ],
            None,
        );
    }
}

/// [`service_account_with_rights`] for `runner` in a fresh namespace of its own on
/// `home`; returns it as `NAMESPACE/NAME`, which administrators give `--service-account`.
pub fn runs_service_account(kc: &Path, home: &str, bound_on: &[&str]) -> String {
    let ns = ferry_testenv::unique_name("ferry-runs");
    kubectl(kc, home, &["create", "namespace", &ns], None);
    service_account_with_rights(kc, home, &ns, "runner", bound_on);
    format!("{ns}/runner")
}

/// The administrator's profile `main` on `context` for `location`, with the Secrets
/// `names` (S3 credentials, key); `create` initialises the repository.
pub fn main_profile(
    kubeconfig: &Path,
    context: &str,
    location: &str,
    region: &str,
    names: (&str, &str),
    create: bool,
) -> Run {
    let (s3_name, key_name) = names;
    let mut args = vec![
        "--context",
        context,
        "profile",
        "create",
        "main",
        "--s3",
        location,
        "--region",
        region,
        "--credentials-secret",
        s3_name,
        "--key-secret",
        key_name,
    ];
    if create {
        args.push("--create-repository");
    }
    cli(kubeconfig, &args)
}

/// The usual starting point: the S3 credentials Secret `s3_name` and the key Secret
/// `key_name` (a fresh random key, `seed`) on a and b, the profile `main` on both for
/// a new prefix named after `prefix` (a creates the repository), and the pair `a-to-b`
/// made as the administrator. Returns the profile's location and the key file.
pub fn profiles_and_pair(
    kubeconfig: &Path,
    s3: &ferry_testenv::S3Info,
    root: &Path,
    names: (&str, &str),
    prefix: &str,
    seed: u64,
) -> (String, PathBuf) {
    let made = profiles(kubeconfig, s3, root, names, prefix, seed);
    pair_a_to_b(kubeconfig).ok();
    made
}

/// `ferry pair create --from a --to b --name a-to-b --profile main`, as the
/// administrator.
pub fn pair_a_to_b(kubeconfig: &Path) -> Run {
    let pair = [
        "pair",
        "create",
        "--from",
        "a",
        "--to",
        "b",
        "--name",
        "a-to-b",
        "--profile",
        "main",
    ];
    cli(kubeconfig, &pair)
}

/// The profile `main` on both clusters (created on a) over a fresh prefix of the test
/// bucket, with its credential and key Secrets named by `names`; returns the location
/// and the key file.
pub fn profiles(
    kubeconfig: &Path,
    s3: &ferry_testenv::S3Info,
    root: &Path,
    names: (&str, &str),
    prefix: &str,
    seed: u64,
) -> (String, PathBuf) {
    let (s3_name, key_name) = names;
    let key = root.join(format!("{key_name}.key"));
    std::fs::write(&key, super::random_bytes(32, seed)).unwrap();
    for side in ["a", "b"] {
        s3_secret(kubeconfig, side, s3_name, &s3.access_key, &s3.secret_key);
        key_secret(kubeconfig, side, key_name, &key);
    }
    let location = format!(
        "{}/{}/{}",
        s3.endpoint,
        s3.bucket,
        ferry_testenv::unique_name(prefix)
    );
    for (side, create) in [("a", true), ("b", false)] {
        main_profile(kubeconfig, side, &location, &s3.region, names, create).ok();
    }
    (location, key)
}

/// An export repository over a fresh prefix (named after `prefix`) of the test bucket,
/// reached at `endpoint` (the S3 server's, or a relay in front of it). Cluster a holds
/// the S3 Secret and the key Secret (a fresh key from `seed`) `names` gives first and
/// writes the repository through its profile `out`; b holds only the read-only S3
/// Secret `names` gives last. Returns the location and the key file.
pub fn export_repository(
    kubeconfig: &Path,
    s3: &ferry_testenv::S3Info,
    endpoint: &str,
    root: &Path,
    names: [&str; 3],
    prefix: &str,
    seed: u64,
) -> (String, PathBuf) {
    export_repository_for(kubeconfig, s3, (endpoint, root), names, prefix, seed, None)
}

/// [`export_repository`] with `out` bound to application namespace `bound_to` (what
/// migration tokens need), its `endpoint` and `root` as a pair.
pub fn export_repository_for(
    kubeconfig: &Path,
    s3: &ferry_testenv::S3Info,
    (endpoint, root): (&str, &Path),
    names: [&str; 3],
    prefix: &str,
    seed: u64,
    bound_to: Option<&str>,
) -> (String, PathBuf) {
    let [s3_name, key_name, read_name] = names;
    let reader = s3.readonly.clone().expect("a read-only S3 user");
    let key = root.join(format!("{key_name}.key"));
    std::fs::write(&key, super::random_bytes(32, seed)).unwrap();
    s3_secret(kubeconfig, "a", s3_name, &s3.access_key, &s3.secret_key);
    key_secret(kubeconfig, "a", key_name, &key);
    s3_secret(
        kubeconfig,
        "b",
        read_name,
        &reader.access_key,
        &reader.secret_key,
    );
    let location = format!(
        "{endpoint}/{}/{}",
        s3.bucket,
        ferry_testenv::unique_name(prefix)
    );
    let mut more = vec![
        "--s3",
        &location,
        "--region",
        &s3.region,
        "--credentials-secret",
        s3_name,
        "--key-secret",
        key_name,
        "--create-repository",
    ];
    if let Some(ns) = bound_to {
        more.extend(["--namespace", ns]);
    }
    profile_create(kubeconfig, "a", "out", "export", &more).ok();
    (location, key)
}

/// `ferry --context CONTEXT profile create NAME --kind KIND MORE...`.
pub fn profile_create(
    kubeconfig: &Path,
    context: &str,
    name: &str,
    kind: &str,
    more: &[&str],
) -> Run {
    let mut args = vec![
        "--context",
        context,
        "profile",
        "create",
        name,
        "--kind",
        kind,
    ];
    args.extend_from_slice(more);
    cli(kubeconfig, &args)
}

/// `ferry --context a -o json export -n NS --profile out`, sealed for the import key
/// `recipient` when one is given (the profile of [`export_repository`]).
pub fn export_out(kubeconfig: &Path, ns: &str, recipient: Option<&str>) -> Run {
    export_through(kubeconfig, ns, "out", recipient)
}

/// `ferry --context a -o json export -n NS --profile PROFILE [--recipient-key KEY]`.
pub fn export_through(kubeconfig: &Path, ns: &str, profile: &str, recipient: Option<&str>) -> Run {
    let mut args = vec![
        "--context",
        "a",
        "-o",
        "json",
        "export",
        "-n",
        ns,
        "--profile",
        profile,
    ];
    if let Some(key) = recipient {
        args.extend(["--recipient-key", key]);
    }
    cli(kubeconfig, &args)
}

/// The fingerprint of the key that signed the token in `token_file`: what `ferry export`
/// prints beside it for the destination to pin.
pub fn token_signer(token_file: &Path) -> String {
    let text = std::fs::read_to_string(token_file).unwrap();
    ferry_token::signer_of(&text)
        .unwrap()
        .fingerprint()
        .to_string()
}

/// b's import profile `in` from the migration token in `token_file`, pinned to its
/// signer, reading with the read-only S3 Secret `s3-read` of [`export_repository`].
pub fn import_profile(kubeconfig: &Path, token_file: &Path) {
    let signer = token_signer(token_file);
    let more = [
        "--migration-token-file",
        token_file.to_str().unwrap(),
        "--expect-signer",
        &signer,
        "--credentials-secret",
        "s3-read",
    ];
    profile_create(kubeconfig, "b", "in", "import", &more).ok();
}

/// Records appended until there are 100, each `N PAYLOAD SHA256(PAYLOAD)`. On every start
/// the program first verifies every record already there (numbering and checksum) and
/// only then reports Ready (the readiness probe looks for /tmp/verified).
pub const RECORDS_PROGRAM: &str = r#"set -eu
f=/data/records
n=0
if [ -f "$f" ]; then
  while read -r i payload sum; do
    [ "$i" = "$((n + 1))" ] || { echo "record $((n + 1)) missing (found $i)"; exit 1; }
    [ "$(printf %s "$payload" | sha256sum | cut -c1-64)" = "$sum" ] || { echo "record $i corrupt"; exit 1; }
    n=$i
  done < "$f"
fi
echo "verified $n records"
touch /tmp/verified
while [ "$n" -lt 100 ]; do
  n=$((n + 1))
  payload="r$n-$RANDOM$RANDOM"
  echo "$n $payload $(printf %s "$payload" | sha256sum | cut -c1-64)" >> "$f"
done
sync
echo "holding $n records"
exec sleep 2147483647
"#;

/// The records application of the real-node tests: Namespace `ns`, ConfigMap `records`
/// with `program`, and StatefulSet `db` (one replica, `image`) running it, Ready once
/// the program touched /tmp/verified, with one claim template per `(name, class)`
/// mounted at `/<name>` (no class: the cluster's default). `extra` is appended.
pub fn records_application(
    ns: &str,
    image: &str,
    program: &str,
    claims: &[(&str, Option<&str>)],
    extra: &str,
) -> String {
    let program = program
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n");
    let mounts: String = claims
        .iter()
        .map(|(name, _)| format!("            - {{name: {name}, mountPath: /{name}}}\n"))
        .collect();
    let templates: String = claims
        .iter()
        .map(|(name, class)| {
            let class = class
                .map(|c| format!("storageClassName: {c}, "))
                .unwrap_or_default();
            format!(
                "  - metadata: {{name: {name}}}\n    spec: {{accessModes: [ReadWriteOnce], \
                 {class}resources: {{requests: {{storage: 1Gi}}}}}}\n"
            )
        })
        .collect();
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: {ns}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: records, namespace: {ns}}}
data:
  program.sh: |
{program}
---
{sts}      terminationGracePeriodSeconds: 1
      containers:
        - name: db
          image: {image}
          imagePullPolicy: IfNotPresent
          command: ["sh", "/program/program.sh"]
          readinessProbe:
            exec: {{command: ["test", "-f", "/tmp/verified"]}}
            periodSeconds: 1
          volumeMounts:
{mounts}            - {{name: program, mountPath: /program}}
      volumes:
        - name: program
          configMap: {{name: records}}
  volumeClaimTemplates:
{templates}{extra}"#,
        sts = statefulset_db(ns),
    )
}

/// A CronJob `compact` of `ns`, not suspended, running `true` in `image` nightly: a
/// YAML document to append to an application's.
pub fn compact_cronjob(ns: &str, image: &str) -> String {
    format!(
        r#"---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: compact, namespace: {ns}}}
spec:
  schedule: "0 3 * * *"
  suspend: false
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{{name: compact, image: {image}, imagePullPolicy: IfNotPresent, command: ["true"]}}]
"#
    )
}

/// Asserts that claim `pvc` of `ns` holds the same tree on a and on b (hostPath or local
/// volumes, read on this machine).
pub fn assert_same_claim_data(kubeconfig: &Path, ns: &str, pvc: &str) {
    super::assert_same_tree(
        &claim_dir(kubeconfig, "a", ns, pvc),
        &claim_dir(kubeconfig, "b", ns, pvc),
    );
}

/// The directory of claim `pvc` of `ns` on `side` (a hostPath or local volume, on this
/// machine).
pub fn claim_dir(kubeconfig: &Path, side: &str, ns: &str, pvc: &str) -> PathBuf {
    let pv = jsonpath(
        kubeconfig,
        side,
        ns,
        &format!("pvc/{pvc}"),
        "{.spec.volumeName}",
    );
    let path = kubectl(
        kubeconfig,
        side,
        &[
            "get",
            "pv",
            &pv,
            "-o",
            "jsonpath={.spec.hostPath.path}{.spec.local.path}",
        ],
        None,
    );
    PathBuf::from(path.trim())
}

/// Deletes namespace `ns` on a and b without waiting.
pub fn delete_on_both(kubeconfig: &Path, ns: &str) {
    for side in ["a", "b"] {
        kubectl(
            kubeconfig,
            side,
            &["delete", "namespace", ns, "--wait=false"],
            None,
        );
    }
}

/// Waits until pod db-0 of `ns` exists on `context`, then until it is Ready.
pub fn wait_ready(kubeconfig: &Path, context: &str, ns: &str) {
    // `kubectl wait` fails at once on a pod that does not exist yet, and the StatefulSet
    // controller creates it a moment after the StatefulSet (or its scale-up) arrives.
    eventually(&format!("pod {ns}/db-0 on {context} to exist"), || {
        kubectl_ok(kubeconfig, context, &["-n", ns, "get", "pod", "db-0"])
    });
    kubectl(
        kubeconfig,
        context,
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            "pod/db-0",
            "--timeout=180s",
        ],
        None,
    );
}

/// `grpcurl -plaintext [-H authorization: Bearer TOKEN] -d DATA ADDR METHOD`, its
/// stdout and stderr together (the refusals are on stderr).
pub fn grpcurl(addr: &str, token: Option<&str>, method: &str, data: &str) -> String {
    let header = token.map(|t| format!("authorization: Bearer {t}"));
    let mut args = vec!["-plaintext"];
    if let Some(h) = &header {
        args.extend(["-H", h.as_str()]);
    }
    args.extend(["-d", data, addr, method]);
    ferry_testenv::run_grpcurl(&args).1
}
