//! Real nodes: a StatefulSet's pod runs and keeps its volume's data across a restart,
//! Services resolve through CoreDNS, a pod of cluster a reaches a NodePort of cluster b,
//! `kubectl logs` and `exec` work, and the teardown leaves nothing behind.

mod common;

use std::time::{Duration, Instant};

use common::{
    exec_eventually, kubectl, one_cluster, start_kept, stop_and_find_nothing_left, wait_ready,
};
use ferry_testenv::{EnvSpec, NodeInfo, TestEnv};

/// The application both clusters run: a StatefulSet whose pod writes a greeting into its
/// claim (from the default StorageClass) once, prints it, and serves its volume over HTTP.
fn app(image: &str, ns: &str, cluster: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{ name: {ns} }}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{ name: web, namespace: {ns} }}
spec:
  serviceName: web
  replicas: 1
  selector: {{ matchLabels: {{ app: web }} }}
  template:
    metadata: {{ labels: {{ app: web }} }}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {image}
          imagePullPolicy: IfNotPresent
          command: ["sh", "-c"]
          args:
            - |
              [ -f /data/greeting ] || {{ echo "greeting from $(hostname) in {cluster} at $(date +%s), $RANDOM" > /data/g.tmp && mv /data/g.tmp /data/greeting; }}
              echo "serving: $(cat /data/greeting)"
              exec httpd -f -p 8080 -h /data
          ports: [{{ containerPort: 8080 }}]
          readinessProbe:
            tcpSocket: {{ port: 8080 }}
            periodSeconds: 1
          volumeMounts: [{{ name: data, mountPath: /data }}]
  volumeClaimTemplates:
    - metadata: {{ name: data }}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {{ requests: {{ storage: 16Mi }} }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web, namespace: {ns} }}
spec:
  selector: {{ app: web }}
  ports: [{{ port: 80, targetPort: 8080 }}]
---
apiVersion: v1
kind: Service
metadata: {{ name: web-nodeport, namespace: {ns} }}
spec:
  type: NodePort
  selector: {{ app: web }}
  ports: [{{ port: 80, targetPort: 8080 }}]
---
apiVersion: v1
kind: Pod
metadata: {{ name: client, namespace: {ns} }}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: client
      image: {image}
      imagePullPolicy: IfNotPresent
      command: ["sleep", "3600"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_keep_their_volume_resolve_services_and_reach_the_other_cluster() {
    let spec = EnvSpec {
        s3: false,
        ..EnvSpec::with_nodes()
    };
    let (env, dir, toolbox) = start_kept("ferry-nodes-test-", &spec).await;

    assert_each_cluster_lists_a_ready_node(&env);

    let ns = "nodes-test";
    deploy_app_on_both(&env, &toolbox, ns);

    let greeting = assert_pod_wrote_into_its_claim(&env, ns);
    assert_recreated_pod_reads_it_back(&env, ns, &greeting);
    assert_service_resolves_by_dns(&env, ns, &greeting);
    assert_a_reaches_b_node_port(&env, ns, &greeting);

    stop_and_find_nothing_left(env, &dir, 2);
}

/// A Ready node per cluster, listed by the real kubectl.
fn assert_each_cluster_lists_a_ready_node(env: &TestEnv) {
    for c in ["a", "b"] {
        let nodes = kubectl(env, c, &["get", "nodes", "--no-headers"], None);
        assert!(
            nodes.contains(&format!("{c}-node0")) && nodes.contains(" Ready "),
            "{c}: {nodes}"
        );
    }
}

fn deploy_app_on_both(env: &TestEnv, toolbox: &str, ns: &str) {
    for c in ["a", "b"] {
        kubectl(env, c, &["apply", "-f", "-"], Some(&app(toolbox, ns, c)));
    }
    for c in ["a", "b"] {
        wait_ready(env, c, ns, "pod/web-0");
        wait_ready(env, c, ns, "pod/client");
    }
}

/// The pod wrote into its claim, which the default StorageClass provisioned; returns what
/// cluster a's pod wrote.
fn assert_pod_wrote_into_its_claim(env: &TestEnv, ns: &str) -> String {
    let pvc = kubectl(
        env,
        "a",
        &[
            "-n",
            ns,
            "get",
            "pvc",
            "data-web-0",
            "-o",
            "jsonpath={.status.phase} {.spec.storageClassName}",
        ],
        None,
    );
    assert_eq!(pvc, "Bound local-path");
    let greeting = kubectl(
        env,
        "a",
        &["-n", ns, "exec", "web-0", "--", "cat", "/data/greeting"],
        None,
    );
    assert!(
        greeting.starts_with("greeting from web-0 in a at "),
        "{greeting}"
    );
    let logs = kubectl(env, "a", &["-n", ns, "logs", "web-0"], None);
    assert!(logs.contains(&format!("serving: {greeting}")), "{logs}");
    greeting
}

/// Deleted, recreated by the StatefulSet controller, and the new pod reads it back.
fn assert_recreated_pod_reads_it_back(env: &TestEnv, ns: &str, greeting: &str) {
    // The pod's uid, or None while no pod of that name exists.
    let uid = || {
        env.kubectl("a")
            .args([
                "-n",
                ns,
                "get",
                "pod",
                "web-0",
                "-o",
                "jsonpath={.metadata.uid}",
            ])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .filter(|u| !u.is_empty())
    };
    let first = uid().expect("web-0 exists");
    kubectl(
        env,
        "a",
        &["-n", ns, "delete", "pod", "web-0", "--wait=true"],
        None,
    );
    let start = Instant::now();
    while uid().is_none_or(|now| now == first) {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "web-0 not recreated"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    wait_ready(env, "a", ns, "pod/web-0");
    let again = exec_eventually(env, "a", ns, "web-0", &["cat", "/data/greeting"]);
    assert_eq!(
        again, greeting,
        "the recreated pod reads what the first wrote"
    );
}

/// A second pod reaches the first through the Service, by its DNS name.
fn assert_service_resolves_by_dns(env: &TestEnv, ns: &str, greeting: &str) {
    let via_dns = exec_eventually(
        env,
        "a",
        ns,
        "client",
        &[
            "http-get",
            &format!("http://web.{ns}.svc.cluster.local/greeting"),
        ],
    );
    assert_eq!(via_dns, greeting);
}

/// A pod of cluster a reaches cluster b's NodePort at b's node address.
fn assert_a_reaches_b_node_port(env: &TestEnv, ns: &str, greeting: &str) {
    let b_node = &env.cluster("b").expect("cluster b").nodes[0];
    let node_port = kubectl(
        env,
        "b",
        &[
            "-n",
            ns,
            "get",
            "service",
            "web-nodeport",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ],
        None,
    );
    let b_greeting = kubectl(
        env,
        "b",
        &["-n", ns, "exec", "web-0", "--", "cat", "/data/greeting"],
        None,
    );
    assert_ne!(b_greeting, greeting, "each cluster's pod wrote its own");
    let across = exec_eventually(
        env,
        "a",
        ns,
        "client",
        &[
            "http-get",
            &format!("http://{}:{node_port}/greeting", b_node.ip),
        ],
    );
    assert_eq!(across, b_greeting);
}

/// Two nodes in one cluster: the scheduler places pods on either, and a pod on one node
/// reaches a pod on the other through the host's routes between node namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_per_cluster_place_pods_on_each_and_route_between_them() {
    let (env, dir, toolbox) = start_kept("ferry-two-nodes-test-", &one_cluster(2)).await;
    let nodes = kubectl(&env, "m", &["get", "nodes", "--no-headers"], None);
    assert_eq!(nodes.matches(" Ready ").count(), 2, "{nodes}");

    let pod = |name: &str, node: &str, cmd: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: default, labels: {{ app: {name} }} }}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {toolbox}
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", "{cmd}"]
"#
        )
    };
    let manifest = [
        pod(
            "server",
            "m-node1",
            "mkdir -p /www && hostname > /www/name && exec httpd -f -p 8080 -h /www",
        ),
        pod("client", "m-node0", "exec sleep 3600"),
    ]
    .join("---\n");
    kubectl(&env, "m", &["apply", "-f", "-"], Some(&manifest));
    wait_ready(&env, "m", "default", "pod/server");
    wait_ready(&env, "m", "default", "pod/client");
    let server_ip = kubectl(
        &env,
        "m",
        &["get", "pod", "server", "-o", "jsonpath={.status.podIP}"],
        None,
    );
    let answer = exec_eventually(
        &env,
        "m",
        "default",
        "client",
        &["http-get", &format!("http://{server_ip}:8080/name")],
    );
    assert_eq!(answer.trim(), "server");

    let nodes: Vec<NodeInfo> = env.state.clusters[0].nodes.clone();
    assert!(
        server_ip.starts_with(&nodes[1].pod_cidr[..nodes[1].pod_cidr.len() - 4]),
        "server {server_ip} is not on m-node1 ({})",
        nodes[1].pod_cidr
    );
    stop_and_find_nothing_left(env, &dir, 2);
}
