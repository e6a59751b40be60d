//! The Helm chart `charts/ferry`: the real helm lints it strictly, renders it with the
//! defaults and with the CI values files, and a real API server accepts every object it
//! renders (server-side dry run); its values schema refuses what it does not know; and an
//! install, upgrades and an uninstall on a real API server keep what must be kept.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ferry_testenv::{TestEnv, shared, unique_name};
use serde::Deserialize;
use serde_yaml_ng::Value;

const CONTROL_PLANE: [&str; 5] = ["gateway", "pairing", "catalog", "transfer", "scheduler"];
const STATEFUL: [&str; 4] = ["pairing", "catalog", "transfer", "scheduler"];
const ALL_ON: &str = "ci/all-on-values.yaml";
const MESH: &str = "ci/mesh-values.yaml";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn chart() -> PathBuf {
    repo_root().join("charts").join("ferry")
}

fn helm() -> Command {
    let bin = ferry_testenv::helm().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = Command::new(bin);
    // Keep helm's own files (repository cache, plugins) out of the user's home.
    let home = std::env::temp_dir().join("ferry-chart-test-helm");
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"));
    cmd
}

fn output(cmd: &mut Command, stdin: Option<&str>) -> Output {
    let what = format!("{cmd:?}");
    if let Some(input) = stdin {
        cmd.stdin(Stdio::piped());
        cmd.stdout(Stdio::piped());
        cmd.stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("writing to {what}: {e}"));
        child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("running {what}: {e}"))
    } else {
        cmd.output()
            .unwrap_or_else(|e| panic!("running {what}: {e}"))
    }
}

/// Runs `cmd`; its stdout, or a panic with everything it printed.
fn run_ok(cmd: &mut Command, stdin: Option<&str>) -> String {
    let what = format!("{cmd:?}");
    let out = output(cmd, stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `helm template ferry charts/ferry -n <namespace> [-f <values>] [args]`.
fn template(namespace: &str, values: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = helm();
    cmd.arg("template").arg("ferry").arg(chart());
    cmd.args(["--namespace", namespace]);
    if let Some(file) = values {
        cmd.arg("--values").arg(chart().join(file));
    }
    cmd.args(args);
    output(&mut cmd, None)
}

/// The objects of one rendering.
struct Rendered {
    yaml: String,
    docs: Vec<Value>,
}

fn render(namespace: &str, values: Option<&str>) -> Rendered {
    let out = template(namespace, values, &[]);
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm template with {values:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| Value::deserialize(d).expect("helm renders valid YAML"))
        .filter(|v| !v.is_null())
        .collect();
    Rendered { yaml, docs }
}

impl Rendered {
    fn names(&self, kind: &str) -> BTreeSet<String> {
        self.docs
            .iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .map(|d| str_at(d, &["metadata", "name"]))
            .collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.docs
            .iter()
            .find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
            .unwrap_or_else(|| panic!("no {kind} {name} in:\n{}", self.yaml))
    }

    /// The first container's args of a Deployment or DaemonSet.
    fn args(&self, kind: &str, name: &str) -> Vec<String> {
        let args = &self.get(kind, name)["spec"]["template"]["spec"]["containers"][0]["args"];
        strings(args)
    }
}

fn str_at(v: &Value, path: &[&str]) -> String {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_str()
        .unwrap_or_else(|| panic!("no string at {path:?} of {v:?}"))
        .to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap_or_else(|| panic!("not a list: {v:?}"))
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn prefixed(names: &[&str], suffix: &str) -> BTreeSet<String> {
    names.iter().map(|n| format!("ferry-{n}{suffix}")).collect()
}

/// The controller: its webhook Service and configuration, and what it is started with.
fn check_controller(r: &Rendered, ns: &str) {
    let svc = r.get("Service", "ferry-controller");
    let webhook = &svc["spec"]["ports"][0];
    assert_eq!(webhook["name"].as_str(), Some("webhook"));
    assert_eq!(webhook["port"].as_u64(), Some(443));
    let config = r.get(
        "MutatingWebhookConfiguration",
        &format!("{ns}-ferry-controller"),
    );
    let hook = &config["webhooks"][0];
    assert_eq!(hook["failurePolicy"].as_str(), Some("Fail"));
    assert_eq!(
        hook["clientConfig"]["service"]["name"].as_str(),
        Some("ferry-controller")
    );
    // The CA the API server checks the webhook with is the one in its Secret.
    let secret = r.get("Secret", "ferry-controller-webhook");
    assert_eq!(
        hook["clientConfig"]["caBundle"].as_str(),
        secret["data"]["ca.crt"].as_str()
    );
    // Every Ferry kind gets its requester recorded: the controller acts for no other.
    let mut kinds: Vec<String> = ferry_crd::all()
        .into_iter()
        .map(|crd| crd.spec.names.plural)
        .collect();
    let mut hooked = strings(&hook["rules"][0]["resources"]);
    kinds.sort();
    hooked.sort();
    assert_eq!(hooked, kinds);
    let args = r.args("Deployment", "ferry-controller");
    assert_eq!(args[..2], ["service".to_string(), "controller".to_string()]);
    for flag in [
        "--internal-token-file=/etc/ferry/internal/token".to_string(),
        format!("--namespace={ns}"),
        "--webhook-cert=/etc/ferry/webhook/tls.crt".to_string(),
    ] {
        assert!(args.contains(&flag), "{flag}: {args:?}");
    }
    let pod = &r.get("Deployment", "ferry-controller")["spec"]["template"]["spec"];
    assert_eq!(
        pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
}

/// What every rendering holds, whatever the values.
fn check_common(r: &Rendered, ns: &str) {
    check_workloads_and_service_ports(r, ns);
    // The internal credential: 48 characters, base64 in the Secret (64 characters).
    let token = str_at(r.get("Secret", "ferry-internal"), &["data", "token"]);
    assert_eq!(token.len(), 64, "{token}");

    check_control_plane_deployments(r);
    check_transfer_finds_the_agents(r, ns);
    check_agent_daemonset(r);
    check_gateway_and_agent_hold_no_role(r);
}

/// One Deployment per component (and the controller), the agent's DaemonSet, a Service
/// and ServiceAccount each, gRPC named as such, and each component's port.
fn check_workloads_and_service_ports(r: &Rendered, ns: &str) {
    let mut deployments = prefixed(&CONTROL_PLANE, "");
    deployments.insert("ferry-controller".into());
    assert_eq!(r.names("Deployment"), deployments);
    assert_eq!(r.names("DaemonSet"), set(&["ferry-agent"]));
    let mut services = prefixed(&CONTROL_PLANE, "");
    services.insert("ferry-agent".into());
    services.insert("ferry-controller".into());
    assert_eq!(r.names("Service"), services);
    assert_eq!(r.names("ServiceAccount"), services);
    check_controller(r, ns);
    services.remove("ferry-controller");
    for name in &services {
        let svc = r.get("Service", name);
        let ports = svc["spec"]["ports"].as_sequence().expect("ports");
        let grpc = ports
            .iter()
            .find(|p| p["name"].as_str() == Some("grpc"))
            .unwrap_or_else(|| panic!("Service {name} has no port named grpc"));
        assert_eq!(grpc["appProtocol"].as_str(), Some("grpc"), "Service {name}");
    }
    let ports = |c: &str| {
        r.get("Service", &format!("ferry-{c}"))["spec"]["ports"][0]["port"]
            .as_u64()
            .expect("a port number")
    };
    let expected = [
        ("gateway", 7443),
        ("transfer", 7444),
        ("catalog", 7445),
        ("scheduler", 7446),
        ("pairing", 7447),
        ("agent", 7448),
    ];
    for (component, port) in expected {
        assert_eq!(ports(component), port, "{component}'s port");
    }
}

/// Each control-plane Deployment: recreated, non-root and locked down, probed on its
/// health port, rolled on config changes, and given the internal credential if it uses it.
fn check_control_plane_deployments(r: &Rendered) {
    for c in CONTROL_PLANE {
        let name = format!("ferry-{c}");
        let d = r.get("Deployment", &name);
        assert_eq!(
            str_at(d, &["spec", "strategy", "type"]),
            "Recreate",
            "{name}"
        );
        let pod = &d["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
        assert_eq!(pod["securityContext"]["runAsUser"].as_u64(), Some(65532));
        let container = &pod["containers"][0];
        let sc = &container["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{name}");
        for probe in ["readinessProbe", "livenessProbe"] {
            assert_eq!(
                container[probe]["grpc"]["port"].as_u64(),
                Some(8090),
                "{name} {probe}"
            );
        }
        assert!(
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                .as_str()
                .is_some_and(|s| s.len() == 64),
            "{name} has a checksum annotation"
        );
        let args = r.args("Deployment", &name);
        assert_eq!(args[..2], ["service".to_string(), c.to_string()], "{name}");
        let credential = "--internal-token-file=/etc/ferry/internal/token";
        assert!(
            args.iter().any(|a| a == "--health-listen=0.0.0.0:8090"),
            "{name} lacks its health port: {args:?}"
        );
        // Every component but the gateway, which passes each caller's own token on.
        assert_eq!(
            args.iter().any(|a| a == credential),
            c != "gateway",
            "{name}: {args:?}"
        );
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(c != "gateway"),
            "{name}"
        );
    }
}

/// The transfer service finds the agents by their labels and checks them by Service name.
fn check_transfer_finds_the_agents(r: &Rendered, ns: &str) {
    let transfer = r.args("Deployment", "ferry-transfer");
    for flag in [
        format!("--agent-namespace={ns}"),
        "--agent-selector=app.kubernetes.io/component=agent,app.kubernetes.io/instance=ferry,\
         app.kubernetes.io/name=ferry"
            .to_string(),
        "--agent-port=7448".to_string(),
    ] {
        assert!(
            transfer.contains(&flag),
            "transfer lacks {flag}: {transfer:?}"
        );
    }
    // With the chart's TLS, agents (called at pod IPs) are checked by their Service name.
    let plaintext = transfer.iter().any(|a| a == "--insecure-plaintext");
    assert_eq!(
        transfer.contains(&format!("--agent-server-name=ferry-agent.{ns}.svc")),
        !plaintext,
        "{transfer:?}"
    );
}

/// The agent's pods: labelled as selected, the capabilities to write any file's owner and
/// mode, its node's name, and every hostPath mounted at its own path and allowed.
fn check_agent_daemonset(r: &Rendered) {
    // The agent's pods carry exactly what the transfer service selects them by.
    let agent = r.get("DaemonSet", "ferry-agent");
    let labels = &agent["spec"]["template"]["metadata"]["labels"];
    for (k, v) in [
        ("app.kubernetes.io/component", "agent"),
        ("app.kubernetes.io/instance", "ferry"),
        ("app.kubernetes.io/name", "ferry"),
    ] {
        assert_eq!(labels[k].as_str(), Some(v), "agent pod label {k}");
    }
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["automountServiceAccountToken"].as_bool(), Some(false));
    let container = &pod["containers"][0];
    assert_eq!(
        strings(&container["securityContext"]["capabilities"]["add"]),
        [
            "CHOWN",
            "DAC_OVERRIDE",
            "DAC_READ_SEARCH",
            "FOWNER",
            "FSETID"
        ]
    );
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    let node_name = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .find(|e| e["name"].as_str() == Some("NODE_NAME"))
        .expect("NODE_NAME in the agent's env");
    assert_eq!(
        node_name["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("spec.nodeName")
    );
    // Every hostPath is mounted at its own path.
    let mounts = container["volumeMounts"].as_sequence().expect("mounts");
    for v in pod["volumes"].as_sequence().expect("volumes") {
        if let Some(path) = v["hostPath"]["path"].as_str() {
            let name = v["name"].as_str().expect("volume name");
            let mount = mounts
                .iter()
                .find(|m| m["name"].as_str() == Some(name))
                .unwrap_or_else(|| panic!("hostPath {path} not mounted"));
            assert_eq!(mount["mountPath"].as_str(), Some(path));
            let flag = if name == "kubelet" {
                format!("--kubelet-root={path}")
            } else {
                format!("--allow-root={path}")
            };
            assert!(
                r.args("DaemonSet", "ferry-agent").contains(&flag),
                "agent lacks {flag}"
            );
        }
    }
}

fn check_gateway_and_agent_hold_no_role(r: &Rendered) {
    // Least privilege: the gateway and the agent have no Kubernetes rights.
    for d in &r.docs {
        if matches!(
            d["kind"].as_str(),
            Some("ClusterRoleBinding" | "RoleBinding")
        ) {
            let subject = str_at(&d["subjects"][0], &["name"]);
            assert!(
                subject != "ferry-gateway" && subject != "ferry-agent",
                "{subject} is bound to a role"
            );
        }
    }
}

/// The endpoint ConfigMap `ferry` publishes.
fn published(r: &Rendered) -> String {
    str_at(r.get("ConfigMap", "ferry"), &["data", "endpoint"])
}

fn kubectl_apply_dry_run(env: &TestEnv, yaml: &str, what: &str) {
    let out = output(
        env.kubectl("a")
            .args(["apply", "--dry-run=server", "-f", "-"]),
        Some(yaml),
    );
    assert!(
        out.status.success(),
        "the API server refused the chart rendered with {what}:\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn chart_lints_strict() {
    for values in [None, Some(ALL_ON), Some(MESH)] {
        let mut cmd = helm();
        cmd.args(["lint", "--strict"]).arg(chart());
        if let Some(file) = values {
            cmd.arg("--values").arg(chart().join(file));
        }
        let out = run_ok(&mut cmd, None);
        assert!(out.contains("0 chart(s) failed"), "{values:?}:\n{out}");
    }
}

#[test]
fn the_values_schema_refuses_unknown_and_invalid_values() {
    for (args, expected) in [
        (&["--set", "nonsense=1"][..], "nonsense"),
        (&["--set", "gateway.service.typo=NodePort"][..], "typo"),
        (&["--set", "agent.hostPath[0]=/data"][..], "hostPath"),
        (&["--set", "tls.mode=plain"][..], "/tls/mode"),
        (
            &["--set", "gateway.service.type=Ingress"][..],
            "/gateway/service/type",
        ),
        (
            &["--set", "agent.volumeRoot=relative/dir"][..],
            "/agent/volumeRoot",
        ),
        (
            &["--set", "tls.mode=existingSecret"][..],
            "tls.existingSecret",
        ),
        (
            &["--set", "metrics.serviceMonitor.enabled=true"][..],
            "metrics.enabled",
        ),
        (
            &["--set", "metrics.prometheusRule.enabled=true"][..],
            "metrics.enabled",
        ),
    ] {
        let out = template("ferry-system", None, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} rendered");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[tokio::test]
async fn chart_renders_with_defaults_and_every_option_and_the_api_server_accepts_it() {
    let env = shared()
        .await
        .unwrap_or_else(|e| panic!("test environment: {e}"));
    let ns = unique_name("ferry-chart");
    run_ok(env.kubectl("a").args(["create", "namespace", &ns]), None);
    install_prometheus_operator_crds(env);

    // Defaults: the chart's own TLS, persistence, the NetworkPolicy; no metrics.
    let r = render(&ns, None);
    check_common(&r, &ns);
    check_defaults(&r, &ns);
    kubectl_apply_dry_run(env, &r.yaml, "the defaults");

    // Every option on.
    let r = render(&ns, Some(ALL_ON));
    check_common(&r, &ns);
    check_all_on_objects(&r);
    check_all_on_flags(&r);
    kubectl_apply_dry_run(env, &r.yaml, ALL_ON);

    // A mesh secures the traffic: plaintext, http:// endpoints, nothing TLS.
    let r = render(&ns, Some(MESH));
    check_common(&r, &ns);
    check_mesh(&r, &ns);
    kubectl_apply_dry_run(env, &r.yaml, MESH);

    run_ok(
        env.kubectl("a")
            .args(["delete", "namespace", &ns, "--wait=false"]),
        None,
    );
}

/// The ServiceMonitor and PrometheusRule kinds, so that the API server accepts the
/// renderings that have them.
fn install_prometheus_operator_crds(env: &TestEnv) {
    let crd = repo_root().join("tests/fixtures/prometheus-operator-crds.yaml");
    run_ok(env.kubectl("a").args(["apply", "-f"]).arg(&crd), None);
    run_ok(
        env.kubectl("a").args([
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
            "crd/prometheusrules.monitoring.coreos.com",
        ]),
        None,
    );
}

fn check_defaults(r: &Rendered, ns: &str) {
    // Claims are provisioned by their class and restored through mover pods of Ferry's
    // own image; the agent reaches CSI volumes under the kubelet's directory.
    let transfer = r.args("Deployment", "ferry-transfer");
    let image = str_at(
        &r.get("Deployment", "ferry-transfer")["spec"]["template"]["spec"]["containers"][0],
        &["image"],
    );
    assert!(
        transfer.contains(&format!("--mover-image={image}"))
            && !transfer.iter().any(|a| a.starts_with("--volume-root")),
        "{transfer:?}"
    );
    let agent = r.args("DaemonSet", "ferry-agent");
    assert!(
        agent.contains(&"--kubelet-root=/var/lib/kubelet".to_owned())
            && !agent.iter().any(|a| a.starts_with("--volume-root")),
        "{agent:?}"
    );
    assert_eq!(r.names("NetworkPolicy"), set(&["ferry-agent"]));
    assert!(r.names("ServiceMonitor").is_empty());
    assert!(r.names("PrometheusRule").is_empty());
    let mut secrets = prefixed(
        &[&CONTROL_PLANE[..], &["agent", "controller"]].concat(),
        "-tls",
    );
    secrets.extend(set(&[
        "ferry-internal",
        "ferry-ca",
        "ferry-controller-webhook",
    ]));
    assert_eq!(r.names("Secret"), secrets);
    assert_eq!(
        r.names("PersistentVolumeClaim"),
        prefixed(&STATEFUL, "-data")
    );
    for name in r.names("PersistentVolumeClaim") {
        let pvc = r.get("PersistentVolumeClaim", &name);
        assert_eq!(
            pvc["metadata"]["annotations"]["helm.sh/resource-policy"].as_str(),
            Some("keep"),
            "{name}"
        );
    }
    assert_eq!(
        str_at(r.get("Service", "ferry-gateway"), &["spec", "type"]),
        "ClusterIP"
    );
    for c in CONTROL_PLANE {
        let args = r.args("Deployment", &format!("ferry-{c}"));
        assert!(args.contains(&"--tls-cert=/etc/ferry/tls/tls.crt".to_string()));
        assert!(!args.iter().any(|a| a.starts_with("--metrics-listen")));
        assert!(!args.iter().any(|a| a.contains("http://")), "{c}: {args:?}");
    }
    let pairing = r.args("Deployment", "ferry-pairing");
    assert!(
        pairing.contains(&format!(
            "--ferry-endpoint=ferry-gateway.{ns}.svc.cluster.local:7443"
        )),
        "{pairing:?}"
    );
    assert_eq!(
        published(r),
        format!("https://ferry-gateway.{ns}.svc.cluster.local:7443")
    );
    // The gateway's Service and port, which clients port-forward to.
    let cm = r.get("ConfigMap", "ferry");
    assert_eq!(str_at(cm, &["data", "service"]), "ferry-gateway");
    assert_eq!(str_at(cm, &["data", "port"]), "7443");
}

/// The objects the options add or change: metrics' ServiceMonitor and alerts, a NodePort
/// gateway, a metrics port on every Service, and claims of the configured class.
fn check_all_on_objects(r: &Rendered) {
    assert_eq!(r.names("NetworkPolicy"), set(&["ferry-agent"]));
    assert_eq!(r.names("ServiceMonitor"), set(&["ferry"]));
    assert_eq!(r.names("PrometheusRule"), set(&["ferry"]));
    let rules = &r.get("PrometheusRule", "ferry")["spec"]["groups"][0]["rules"];
    let alerts: Vec<&str> = rules
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|rule| rule["alert"].as_str())
        .collect();
    assert_eq!(
        alerts,
        [
            "FerryScheduleMissedRun",
            "FerryScheduleLastSuccessTooOld",
            "FerryMigrationsFailing"
        ]
    );
    let too_old = rules[1]["expr"].as_str().unwrap_or_default();
    assert_eq!(
        too_old,
        "time() - ferry_last_success_timestamp_seconds > 7200"
    );
    // Prometheus's own templating survives Helm's.
    assert!(
        rules[0]["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("{{ $labels.schedule }}")),
        "{rules:?}"
    );
    let gateway = r.get("Service", "ferry-gateway");
    assert_eq!(str_at(gateway, &["spec", "type"]), "NodePort");
    assert_eq!(
        gateway["spec"]["ports"][0]["nodePort"].as_u64(),
        Some(30443)
    );
    for name in r.names("Service") {
        let ports = r.get("Service", &name)["spec"]["ports"]
            .as_sequence()
            .expect("ports")
            .clone();
        assert!(
            ports
                .iter()
                .any(|p| p["name"].as_str() == Some("metrics") && p["port"].as_u64() == Some(9090)),
            "Service {name} names no metrics port"
        );
    }
    for name in r.names("PersistentVolumeClaim") {
        assert_eq!(
            str_at(
                r.get("PersistentVolumeClaim", &name),
                &["spec", "storageClassName"]
            ),
            "fast-ssd"
        );
    }
}

/// What the options pass the pods: extra roots, cluster name, admin group, metrics
/// listener, peer endpoint, client certificates and JSON logs.
fn check_all_on_flags(r: &Rendered) {
    let agent = r.args("DaemonSet", "ferry-agent");
    assert_eq!(
        agent
            .iter()
            .filter(|a| a.starts_with("--allow-root="))
            .count(),
        4,
        "{agent:?}"
    );
    let transfer = r.args("Deployment", "ferry-transfer");
    for flag in [
        "--volume-root=/var/lib/ferry/volumes",
        "--cluster-name=east",
        "--admin-group=ferry-admins",
        "--metrics-listen=0.0.0.0:9090",
    ] {
        assert!(transfer.iter().any(|a| a == flag), "{flag}: {transfer:?}");
    }
    assert!(
        r.args("Deployment", "ferry-pairing")
            .contains(&"--ferry-endpoint=ferry.east.example.com:30443".to_string())
    );
    for component in ["pairing", "catalog", "controller"] {
        let args = r.args("Deployment", &format!("ferry-{component}"));
        assert!(
            args.iter().any(|a| a == "--admin-group=ferry-admins"),
            "{component}: {args:?}"
        );
    }
    assert!(
        r.args("Deployment", "ferry-gateway")
            .contains(&"--tls-client-ca=/etc/ferry/tls/ca.crt".to_string()),
        "requireClientCertificate"
    );
    assert_eq!(published(r), "https://ferry.east.example.com:30443");
    // Every pod logs as logFormat says.
    for kind in ["Deployment", "DaemonSet"] {
        for name in r.names(kind) {
            let env = &r.get(kind, &name)["spec"]["template"]["spec"]["containers"][0]["env"];
            let format = env
                .as_sequence()
                .and_then(|e| {
                    e.iter()
                        .find(|v| v["name"].as_str() == Some("FERRY_LOG_FORMAT"))
                })
                .and_then(|v| v["value"].as_str());
            assert_eq!(format, Some("json"), "{kind} {name}");
        }
    }
}

fn check_mesh(r: &Rendered, ns: &str) {
    assert!(r.names("NetworkPolicy").is_empty());
    assert!(r.names("ServiceMonitor").is_empty());
    assert!(r.names("PersistentVolumeClaim").is_empty());
    // The webhook speaks TLS whatever the mode: the API server calls it over HTTPS.
    assert_eq!(
        r.names("Secret"),
        set(&["ferry-internal", "ferry-controller-webhook"])
    );
    assert!(!r.yaml.contains("/etc/ferry/tls"), "{}", r.yaml);
    for c in CONTROL_PLANE {
        let args = r.args("Deployment", &format!("ferry-{c}"));
        assert!(args.contains(&"--insecure-plaintext".to_string()), "{c}");
        assert!(
            !args.iter().any(|a| a.contains("https://")),
            "{c}: {args:?}"
        );
    }
    assert!(r.args("Deployment", "ferry-gateway").contains(&format!(
        "--catalog-endpoint=http://ferry-catalog.{ns}.svc:7445"
    )));
    assert_eq!(published(r), "http://192.0.2.10:7443");
}

fn kubectl_json(env: &TestEnv, args: &[&str]) -> serde_json::Value {
    let out = run_ok(env.kubectl("a").args(args).args(["-o", "json"]), None);
    serde_json::from_str(&out).expect("kubectl prints JSON")
}

fn helm_on_a(env: &TestEnv, ns: &str) -> Command {
    let mut cmd = helm();
    cmd.arg("--kubeconfig")
        .arg(env.kubeconfig())
        .args(["--kube-context", "a", "--namespace", ns]);
    cmd
}

#[tokio::test]
async fn upgrade_keeps_the_internal_secret_and_certificates_and_uninstall_keeps_the_claims() {
    let env = shared()
        .await
        .unwrap_or_else(|e| panic!("test environment: {e}"));
    let ns = unique_name("ferry-chart-upgrade");
    run_ok(
        helm_on_a(env, &ns)
            .args(["install", "ferry"])
            .arg(chart())
            .arg("--create-namespace"),
        None,
    );
    let state = || {
        let secret = |name: &str, key: &str| {
            kubectl_json(env, &["-n", &ns, "get", "secret", name])["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("Secret {name} has no {key}"))
                .to_owned()
        };
        let checksum = kubectl_json(env, &["-n", &ns, "get", "deployment", "ferry-gateway"])
            ["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .expect("checksum annotation")
            .to_owned();
        (
            secret("ferry-internal", "token"),
            secret("ferry-ca", "tls.crt"),
            secret("ferry-gateway-tls", "tls.crt"),
            checksum,
        )
    };
    let first = state();

    // The same values again: nothing changes, so no pod would roll.
    run_ok(
        helm_on_a(env, &ns).args(["upgrade", "ferry"]).arg(chart()),
        None,
    );
    assert_eq!(state(), first, "an upgrade with the same values");

    // A changed value rolls the pods; the credential, the CA and the certificates stay.
    run_ok(
        helm_on_a(env, &ns)
            .args(["upgrade", "ferry"])
            .arg(chart())
            .args(["--set", "logLevel=debug"]),
        None,
    );
    let second = state();
    assert_eq!(second.0, first.0, "the internal credential is kept");
    assert_eq!(second.1, first.1, "the CA is kept");
    assert_eq!(second.2, first.2, "the gateway's certificate is kept");
    assert_ne!(second.3, first.3, "the changed value changes the checksum");

    // New names for the gateway: a new certificate from the same CA.
    run_ok(
        helm_on_a(env, &ns)
            .args(["upgrade", "ferry"])
            .arg(chart())
            .args(["--set", "peer.endpoint=ferry.example.com:30443"]),
        None,
    );
    let third = state();
    assert_eq!(third.0, first.0);
    assert_eq!(third.1, first.1);
    assert_ne!(
        third.2, first.2,
        "the gateway's certificate names the peer endpoint"
    );

    run_ok(helm_on_a(env, &ns).args(["uninstall", "ferry"]), None);
    let left = kubectl_json(env, &["-n", &ns, "get", "persistentvolumeclaims"]);
    let claims: BTreeSet<String> = left["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| c["metadata"]["name"].as_str().expect("name").to_owned())
        .collect();
    assert_eq!(
        claims,
        prefixed(&STATEFUL, "-data"),
        "uninstall keeps the claims"
    );
    let deployments = kubectl_json(env, &["-n", &ns, "get", "deployments"]);
    assert_eq!(deployments["items"].as_array().map(Vec::len), Some(0));
    let role = env
        .kubectl("a")
        .args(["get", "clusterrole", &format!("{ns}-ferry-transfer")])
        .output()
        .expect("kubectl");
    assert!(!role.status.success(), "uninstall removes the ClusterRoles");

    run_ok(
        env.kubectl("a")
            .args(["delete", "namespace", &ns, "--wait=false"]),
        None,
    );
}

/// Whether `user` may do `args` (`kubectl auth can-i`) on cluster a.
fn can(env: &TestEnv, user: &str, args: &[&str]) -> bool {
    let out = output(
        env.kubectl("a")
            .args(["auth", "can-i"])
            .args(args)
            .arg(format!("--as={user}")),
        None,
    );
    String::from_utf8_lossy(&out.stdout).trim() == "yes"
}

/// ClusterRole `name` with rules the pairing service does not hold itself.
fn migrator_role(name: &str) -> String {
    format!(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {name}
rules:
  - apiGroups: [""]
    resources: ["namespaces", "secrets", "persistentvolumes", "persistentvolumeclaims"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
  - apiGroups: ["apps"]
    resources: ["deployments", "statefulsets", "deployments/scale"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
  - apiGroups: ["example.com"]
    resources: ["*"]
    verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
"#
    )
}

#[tokio::test]
async fn each_component_holds_the_rights_it_uses_and_no_more() {
    let env = shared()
        .await
        .unwrap_or_else(|e| panic!("test environment: {e}"));
    let ns = unique_name("ferry-chart-rbac");
    run_ok(
        helm_on_a(env, &ns)
            .args(["install", "ferry"])
            .arg(chart())
            .args(["--create-namespace", "--set", "persistence.enabled=false"]),
        None,
    );

    assert_pairing_writes_only_ferry_migrator(env, &ns);
    assert_each_component_may_what_it_uses_and_no_more(env, &ns);
    assert_signed_in_users_may_only_reach_the_gateway(env, &ns);

    run_ok(helm_on_a(env, &ns).args(["uninstall", "ferry"]), None);
    run_ok(
        env.kubectl("a")
            .args(["delete", "namespace", &ns, "--wait=false"]),
        None,
    );
}

/// The ServiceAccount user of component `c` of the release in `ns`.
fn sa(ns: &str, c: &str) -> String {
    format!("system:serviceaccount:{ns}:ferry-{c}")
}

fn assert_pairing_writes_only_ferry_migrator(env: &TestEnv, ns: &str) {
    // Pairing writes ClusterRole ferry-migrator (server-side apply) with rules it does not
    // hold itself (escalate), binds pairs to it (bind), and touches no other ClusterRole.
    let pairing = sa(ns, "pairing");
    run_ok(
        env.kubectl("a").args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=ferry-pairing",
            &format!("--as={pairing}"),
            "-f",
            "-",
        ]),
        Some(&migrator_role("ferry-migrator")),
    );
    run_ok(
        env.kubectl("a").args([
            "create",
            "clusterrolebinding",
            "ferry-pair-0123456789",
            "--clusterrole=ferry-migrator",
            &format!("--serviceaccount={ns}:ferry-pair-0123456789"),
            "--dry-run=server",
            &format!("--as={pairing}"),
        ]),
        None,
    );
    let other = output(
        env.kubectl("a").args([
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=ferry-pairing",
            &format!("--as={pairing}"),
            "-f",
            "-",
        ]),
        Some(&migrator_role("not-ferry-migrator")),
    );
    assert!(
        !other.status.success(),
        "pairing wrote another ClusterRole: {}",
        String::from_utf8_lossy(&other.stdout)
    );
    let other_binding = output(
        env.kubectl("a").args([
            "create",
            "clusterrolebinding",
            "ferry-pair-admin",
            "--clusterrole=cluster-admin",
            &format!("--serviceaccount={ns}:ferry-pair-admin"),
            "--dry-run=server",
            &format!("--as={pairing}"),
        ]),
        None,
    );
    assert!(
        !other_binding.status.success(),
        "pairing bound cluster-admin"
    );
}

fn assert_each_component_may_what_it_uses_and_no_more(env: &TestEnv, ns: &str) {
    let review = ["create", "tokenreviews.authentication.k8s.io"];
    let access_review = ["create", "subjectaccessreviews.authorization.k8s.io"];
    for (component, args, expected) in [
        ("pairing", &review[..], true),
        ("pairing", &access_review[..], true),
        (
            "pairing",
            &["create", "serviceaccounts", "-n", ns][..],
            true,
        ),
        (
            "pairing",
            &["create", "serviceaccounts/token", "-n", ns][..],
            true,
        ),
        ("pairing", &["create", "secrets", "-n", ns][..], true),
        ("pairing", &["get", "namespaces/kube-system"][..], true),
        (
            "pairing",
            &["list", "customresourcedefinitions.apiextensions.k8s.io"][..],
            true,
        ),
        ("pairing", &["get", "secrets", "-n", "default"][..], false),
        ("pairing", &["list", "namespaces"][..], false),
        ("catalog", &review[..], true),
        ("catalog", &["create", "secrets", "-n", ns][..], true),
        ("catalog", &["get", "secrets", "-n", ns][..], true),
        ("catalog", &["get", "secrets", "-n", "default"][..], false),
        (
            "catalog",
            &["list", "persistentvolumeclaims", "-A"][..],
            true,
        ),
        ("catalog", &["list", "namespaces"][..], true),
        (
            "catalog",
            &["create", "deployments.apps", "-n", "default"][..],
            false,
        ),
        ("transfer", &review[..], true),
        ("transfer", &access_review[..], true),
        // Jobs write the application's objects as their caller; nobody else may.
        ("transfer", &["impersonate", "users"][..], true),
        ("transfer", &["impersonate", "groups"][..], true),
        ("transfer", &["impersonate", "serviceaccounts"][..], true),
        ("catalog", &["impersonate", "users"][..], false),
        ("scheduler", &["impersonate", "users"][..], false),
        ("transfer", &["list", "pods", "-n", ns][..], true),
        (
            "transfer",
            &["list", "widgets.example.com", "-n", "default"][..],
            true,
        ),
        (
            "transfer",
            &["create", "statefulsets.apps", "-n", "default"][..],
            true,
        ),
        (
            "transfer",
            &["patch", "deployments.apps/scale", "-n", "default"][..],
            true,
        ),
        ("transfer", &["create", "persistentvolumes"][..], true),
        (
            "transfer",
            &["create", "clusterroles.rbac.authorization.k8s.io"][..],
            false,
        ),
        (
            "transfer",
            &["create", "widgets.example.com", "-n", "default"][..],
            false,
        ),
        ("scheduler", &review[..], true),
        ("scheduler", &access_review[..], true),
        ("scheduler", &["get", "secrets", "-n", ns][..], false),
        // Every signed-in user may list pods in the release namespace (port-forward to
        // the gateway), so elsewhere.
        ("scheduler", &["list", "pods", "-n", "default"][..], false),
        ("gateway", &review[..], false),
        ("gateway", &["get", "secrets", "-n", ns][..], false),
        ("agent", &review[..], false),
        ("agent", &["get", "secrets", "-n", ns][..], false),
        ("agent", &["list", "pods", "-n", "default"][..], false),
        ("agent", &["delete", "pods", "-n", ns][..], false),
    ] {
        assert_eq!(
            can(env, &sa(ns, component), args),
            expected,
            "may {component} {args:?}?"
        );
    }
}

fn assert_signed_in_users_may_only_reach_the_gateway(env: &TestEnv, ns: &str) {
    // Every signed-in user may read the published endpoint and port-forward to the
    // gateway (its Service, the pods, pods/portforward), and nothing else there.
    for (args, expected) in [
        (&["get", "configmaps/ferry", "-n", ns][..], true),
        (&["get", "configmaps/other", "-n", ns][..], false),
        (&["list", "configmaps", "-n", ns][..], false),
        (&["get", "services/ferry-gateway", "-n", ns][..], true),
        (&["get", "services/ferry-pairing", "-n", ns][..], false),
        (&["list", "services", "-n", ns][..], false),
        (&["list", "pods", "-n", ns][..], true),
        (&["get", "pods", "-n", ns][..], true),
        (
            &["create", "pods", "--subresource=portforward", "-n", ns][..],
            true,
        ),
        (
            &["create", "pods", "--subresource=exec", "-n", ns][..],
            false,
        ),
        (&["get", "pods", "--subresource=log", "-n", ns][..], false),
        (&["create", "pods", "-n", ns][..], false),
        (&["delete", "pods", "-n", ns][..], false),
        (&["get", "secrets", "-n", ns][..], false),
        (&["list", "pods", "-n", "default"][..], false),
        (
            &[
                "create",
                "pods",
                "--subresource=portforward",
                "-n",
                "default",
            ][..],
            false,
        ),
    ] {
        assert_eq!(can(env, "alice", args), expected, "may alice {args:?}?");
    }
}
