//! `ferry --context a version` reaching an in-cluster gateway through the API server
//! (port-forward), with no port exposed: the real gateway (`ferry service gateway`, the
//! binary under test mounted into a toolbox pod on a real node) serves TLS with a
//! certificate for `ferry-gateway.ferry-system.svc`, which the client verifies;
//! `--tls-server-name` overrides that name, and a name the certificate lacks fails.

mod common;

use std::path::Path;

use common::control::{cli, kubectl};
use common::{ferry, run};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The directories of the shared libraries `bin` loads (from ldd), to mount into a
/// pod whose image lacks them.
fn library_dirs(bin: &Path) -> Vec<String> {
    let out = std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .expect("ldd");
    let mut dirs: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .filter_map(|p| Path::new(p).parent().map(|d| d.display().to_string()))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Namespace ferry-system as the chart makes it, with the gateway's Service, the
/// ConfigMap naming it, and one gateway pod running the binary under test.
fn gateway(toolbox: &str, tls_dir: &Path) -> String {
    let bin = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let mut mounts = String::from(
        "        - { name: ferry, mountPath: /usr/bin/ferry, readOnly: true }\n\
         \x20       - { name: tls, mountPath: /etc/ferry/tls, readOnly: true }\n",
    );
    let mut volumes = format!(
        "    - {{ name: ferry, hostPath: {{ path: {}, type: File }} }}\n\
         \x20   - {{ name: tls, hostPath: {{ path: {}, type: Directory }} }}\n",
        bin.display(),
        tls_dir.display()
    );
    for (i, dir) in library_dirs(bin).iter().enumerate() {
        mounts.push_str(&format!(
            "        - {{ name: lib{i}, mountPath: {dir}, readOnly: true }}\n"
        ));
        volumes.push_str(&format!(
            "    - {{ name: lib{i}, hostPath: {{ path: {dir}, type: Directory }} }}\n"
        ));
    }
    let labels = "app.kubernetes.io/component: gateway, app.kubernetes.io/name: ferry-cli-test";
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{ name: ferry-system }}
---
apiVersion: v1
kind: Service
metadata: {{ name: ferry-gateway, namespace: ferry-system }}
spec:
  selector: {{ {labels} }}
  ports: [{{ name: grpc, port: 7443, targetPort: grpc }}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{ name: ferry, namespace: ferry-system }}
data:
  endpoint: "https://ferry-gateway.ferry-system.svc.cluster.local:7443"
  service: ferry-gateway
  port: "7443"
---
apiVersion: v1
kind: Pod
metadata: {{ name: gateway-0, namespace: ferry-system, labels: {{ {labels} }} }}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: gateway
      image: {toolbox}
      imagePullPolicy: IfNotPresent
      command:
        - /usr/bin/ferry
        - service
        - gateway
        - --listen=0.0.0.0:7443
        - --tls-cert=/etc/ferry/tls/gateway.crt
        - --tls-key=/etc/ferry/tls/gateway.key
        - --pairing-endpoint=http://127.0.0.1:1
        - --catalog-endpoint=http://127.0.0.1:1
        - --transfer-endpoint=http://127.0.0.1:1
        - --scheduler-endpoint=http://127.0.0.1:1
      ports: [{{ name: grpc, containerPort: 7443 }}]
      readinessProbe:
        tcpSocket: {{ port: 7443 }}
        periodSeconds: 1
      volumeMounts:
{mounts}  volumes:
{volumes}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reaches_the_in_cluster_gateway_through_the_api_server() {
    let env = ferry_testenv::shared_with_nodes()
        .await
        .expect("test environment with nodes");
    let kc = env.kubeconfig().to_path_buf();
    let toolbox = ferry_testenv::NodeImages::locate(&ferry_testenv::versions())
        .expect("node images (make testenv)")
        .toolbox;
    let tmp = tempfile::tempdir().expect("tempdir");
    let tls = tmp.path().join("tls");
    run(ferry()
        .args(["certs", "create", "--name", "gateway"])
        .args([
            "--host",
            "ferry-gateway.ferry-system.svc",
            "--dir",
            tls.to_str().expect("utf-8 path"),
        ]))
    .ok();
    let ca = tls.join("ca.crt");
    let ca = ca.to_str().expect("utf-8 path");

    kubectl(
        &kc,
        "a",
        &["apply", "-f", "-"],
        Some(&gateway(&toolbox, &tls)),
    );
    common::control::eventually("the gateway pod to be Ready", || {
        common::control::kubectl_ok(
            &kc,
            "a",
            &[
                "-n",
                "ferry-system",
                "wait",
                "--for=condition=Ready",
                "pod/gateway-0",
                "--timeout=5s",
            ],
        )
    });

    // Found from the context alone, reached through the API server, TLS verified for
    // ferry-gateway.ferry-system.svc; the gateway answers GetVersion itself.
    let out = cli(&kc, &["--context", "a", "--ca-file", ca, "version"]).ok();
    eprintln!("{}", out.stdout);
    assert!(
        out.stdout.contains(&format!("Client: {VERSION}"))
            && out.stdout.contains(&format!("Server: {VERSION} (gateway"))
            && out
                .stdout
                .contains("through the API server of kubeconfig context \"a\""),
        "{out:#?}"
    );
    let json = cli(
        &kc,
        &["--context", "a", "--ca-file", ca, "-o", "json", "version"],
    )
    .ok()
    .json();
    assert_eq!(json["server"]["component"], "gateway", "{json:#}");
    assert_eq!(json["server"]["version"], VERSION, "{json:#}");

    // The certificate is checked: a name it does not hold fails, naming it.
    let out = cli(
        &kc,
        &[
            "--context",
            "a",
            "--ca-file",
            ca,
            "--tls-server-name",
            "elsewhere.example",
            "version",
        ],
    )
    .code(1);
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("Server: unknown") && out.stderr.contains("elsewhere.example"),
        "{out:#?}"
    );
    // Without the CA nothing verifies it.
    let out = cli(&kc, &["--context", "a", "version"]).code(1);
    eprintln!("{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("Server: unknown"), "{out:#?}");

    // What this test made, and nothing else of ferry-system.
    kubectl(
        &kc,
        "a",
        &[
            "-n",
            "ferry-system",
            "delete",
            "--wait=false",
            "pod/gateway-0",
            "service/ferry-gateway",
            "configmap/ferry",
        ],
        None,
    );
}
