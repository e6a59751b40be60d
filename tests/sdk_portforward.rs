//! Reaching pods through the Kubernetes API server (port-forward), on real nodes: bytes
//! go both ways through the channel connector to a pod that really runs, a port nothing
//! listens on fails with the API server's reason; the client finds the gateway Service
//! that ConfigMap `ferry-system/ferry` names, picks the Ready pod behind it (again for
//! each connection, so a pod that went away is replaced), and says what to check when
//! no pod is Ready or a right is missing.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use ferry_client::{ClientError, Ferry, Forwarded, PortForward, PortForwardError};
use ferry_testenv::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn env() -> &'static TestEnv {
    ferry_testenv::shared_with_nodes()
        .await
        .expect("test environment with nodes")
}

fn toolbox() -> String {
    ferry_testenv::NodeImages::locate(&ferry_testenv::versions())
        .expect("node images (make testenv)")
        .toolbox
}

/// `kubectl --context C ARGS` with `stdin`; panics with its stderr on failure.
fn kubectl(env: &TestEnv, context: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = env
        .kubectl(context)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl on PATH (make testenv builds one)");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("writing to kubectl");
    }
    let out = child.wait_with_output().expect("kubectl");
    assert!(
        out.status.success(),
        "kubectl --context {context} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apply(env: &TestEnv, context: &str, yaml: &str) {
    kubectl(env, context, &["apply", "-f", "-"], Some(yaml));
}

/// Waits until pod `ns/name` exists and is Ready.
fn wait_ready(env: &TestEnv, context: &str, ns: &str, name: &str) {
    let start = Instant::now();
    while !env
        .kubectl(context)
        .args(["-n", ns, "get", "pod", name])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{ns}/{name} never appeared"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    kubectl(
        env,
        context,
        &[
            "-n",
            ns,
            "wait",
            "--for=condition=Ready",
            &format!("pod/{name}"),
            "--timeout=180s",
        ],
        None,
    );
}

/// A pod serving its own name over HTTP on port 8080 (named `web`), Ready once it
/// listens; with `serve` false it never listens, so it never gets Ready.
fn pod(ns: &str, name: &str, labels: &str, serve: bool) -> String {
    let image = toolbox();
    let cmd = if serve {
        "mkdir -p /www && hostname > /www/name && exec httpd -f -p 8080 -h /www"
    } else {
        "exec sleep 3600"
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: {ns}, labels: {{ {labels} }} }}
spec:
  terminationGracePeriodSeconds: 0
  containers:
    - name: main
      image: {image}
      imagePullPolicy: IfNotPresent
      command: ["sh", "-c", "{cmd}"]
      ports: [{{ name: web, containerPort: 8080 }}]
      readinessProbe:
        tcpSocket: {{ port: 8080 }}
        periodSeconds: 1
"#
    )
}

/// One connection of the connector, as tonic makes it.
async fn connect(forward: &mut PortForward) -> Result<Forwarded, PortForwardError> {
    use tower::Service;
    poll_fn(|cx| forward.poll_ready(cx)).await?;
    let io = forward
        .call(http::Uri::from_static("http://not-dialled.invalid"))
        .await?;
    Ok(io.into_inner())
}

/// GET /name over `stream`: the answering pod's name.
async fn name_over(mut stream: Forwarded) -> String {
    stream
        .write_all(b"GET /name HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .expect("writing the request through the port-forward");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("reading the answer through the port-forward");
    assert!(
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
        "{answer}"
    );
    answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The error of `Ferry::for_context(context)` once it mentions `wanted`.
async fn error_eventually(kc: &std::path::Path, context: &str, wanted: &str) -> String {
    let start = Instant::now();
    loop {
        let text = match Ferry::for_context(Some(kc), Some(context)).await {
            Ok(_) => "connected".to_owned(),
            Err(e) => e.to_string(),
        };
        if text.contains(wanted) || start.elapsed() > Duration::from_secs(20) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_go_both_ways_through_the_connector_and_a_closed_port_says_why() {
    let env = env().await;
    let ns = ferry_testenv::unique_name("pf-bytes");
    apply(
        env,
        "a",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{ name: {ns} }}\n---\n{}---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{ name: web, namespace: {ns} }}\n\
             spec:\n  selector: {{ app: web }}\n  ports: [{{ port: 80, targetPort: web }}]\n",
            pod(&ns, "web-0", "app: web", true)
        ),
    );
    wait_ready(env, "a", &ns, "web-0");

    let client = env.client("a", "admin").await.expect("client of a");
    let mut forward = PortForward::new(client, Some("a"), &ns, "web", Some(80));
    // Service port 80 goes to the pod's port named web, 8080.
    let picked = forward.pick().await.expect("a Ready pod");
    assert_eq!((picked.pod.as_str(), picked.port), ("web-0", 8080));
    // Two connections, two streams, each a full request and answer.
    for _ in 0..2 {
        let stream = connect(&mut forward).await.expect("a port-forward stream");
        assert_eq!(name_over(stream).await, "web-0");
    }

    // Nothing listens on 9: the API server's reason comes back from the stream.
    let mut closed = forward
        .open_to(&ferry_client::Picked {
            pod: "web-0".into(),
            port: 9,
        })
        .await
        .expect("the stream opens; the pod's port is dialled on first use");
    let _ = closed.write_all(b"hello").await;
    let mut buf = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(60), closed.read_to_end(&mut buf))
        .await
        .expect("the stream to a closed port ends")
        .expect_err("nothing listens on port 9");
    let inner = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<PortForwardError>())
        .unwrap_or_else(|| panic!("not a port-forward error: {err:?}"));
    let text = inner.to_string();
    eprintln!("closed port: {text}");
    assert!(
        text.contains(&format!("port-forward to pod {ns}/web-0 port 9"))
            && text.contains("connection refused")
            && text.contains(&format!("kubectl --context a -n {ns} describe pod web-0")),
        "{text}"
    );

    kubectl(
        env,
        "a",
        &["delete", "namespace", &ns, "--wait=false"],
        None,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_picks_a_ready_pod_behind_the_published_gateway_and_explains_when_none() {
    let env = env().await;
    let kc = env.kubeconfig().to_path_buf();
    let labels = "app.kubernetes.io/component: gateway, app.kubernetes.io/name: pf-test";
    publish_a_gateway_with_one_ready_pod(env, labels);
    // Held to the end of the test, so no later phase runs with it dropped.
    let _forward = the_ready_pod_is_picked_and_replaced_when_it_goes(env, &kc, labels).await;
    no_ready_pod_is_explained(env, &kc).await;
    missing_rights_are_named_one_at_a_time(env, &kc, labels).await;

    // What this test made, and nothing else of ferry-system.
    for what in [
        "pods -l app.kubernetes.io/name=pf-test",
        "service ferry-gateway",
        "configmap ferry",
        "role pf-test-reader",
        "rolebinding pf-test-reader",
    ] {
        let mut args = vec!["-n", "ferry-system", "delete", "--wait=false"];
        args.extend(what.split(' '));
        kubectl(env, "b", &args, None);
    }
}

/// Cluster b, namespace ferry-system: what the chart makes there, with the toolbox
/// serving HTTP in place of the gateway; pod gw-a Ready behind it, gw-0-unready not.
fn publish_a_gateway_with_one_ready_pod(env: &TestEnv, labels: &str) {
    let base = format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{ name: ferry-system }}
---
apiVersion: v1
kind: Service
metadata: {{ name: ferry-gateway, namespace: ferry-system }}
spec:
  selector: {{ {labels} }}
  ports: [{{ name: grpc, port: 7443, targetPort: web }}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{ name: ferry, namespace: ferry-system }}
data:
  endpoint: "http://ferry-gateway.ferry-system.svc:7443"
  service: ferry-gateway
  port: "7443"
---
{}---
{}"#,
        pod("ferry-system", "gw-0-unready", labels, false),
        pod("ferry-system", "gw-a", labels, true),
    );
    apply(env, "b", &base);
    wait_ready(env, "b", "ferry-system", "gw-a");
}

/// The gateway that ConfigMap ferry-system/ferry names leads to the Ready pod gw-a;
/// once gw-a goes and gw-b comes, the next connection reaches gw-b. The forwarder.
async fn the_ready_pod_is_picked_and_replaced_when_it_goes(
    env: &TestEnv,
    kc: &std::path::Path,
    labels: &str,
) -> PortForward {
    let mut forward = ferry_client::gateway_of(Some(kc), Some("b"))
        .await
        .expect("reading ConfigMap ferry-system/ferry")
        .expect("it names a Service");
    // Of the two pods behind the Service, the Ready one (the other sorts first), every
    // time.
    for _ in 0..3 {
        let picked = forward.pick().await.expect("a Ready pod");
        assert_eq!((picked.pod.as_str(), picked.port), ("gw-a", 8080));
    }
    let stream = connect(&mut forward).await.expect("a stream to gw-a");
    assert_eq!(name_over(stream).await, "gw-a");

    // The pod goes away and another comes: the next connection goes to it.
    kubectl(
        env,
        "b",
        &["-n", "ferry-system", "delete", "pod", "gw-a", "--wait=true"],
        None,
    );
    apply(env, "b", &pod("ferry-system", "gw-b", labels, true));
    wait_ready(env, "b", "ferry-system", "gw-b");
    let stream = connect(&mut forward).await.expect("a stream to gw-b");
    assert_eq!(name_over(stream).await, "gw-b");
    forward
}

/// No Ready pod (gw-b deleted): the SDK says which Service, which context, and what to
/// run.
async fn no_ready_pod_is_explained(env: &TestEnv, kc: &std::path::Path) {
    kubectl(
        env,
        "b",
        &["-n", "ferry-system", "delete", "pod", "gw-b", "--wait=true"],
        None,
    );
    let err = Ferry::for_context(Some(kc), Some("b"))
        .await
        .expect_err("no Ready pod behind the gateway");
    assert!(
        matches!(&err, ClientError::PortForward(e) if matches!(**e, PortForwardError::NoReadyPod { .. })),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("kubeconfig context \"b\"")
            && text.contains("no Ready pod behind Service ferry-system/ferry-gateway")
            && text.contains("its one pod is not Ready")
            && text.contains(
                "check `kubectl --context b -n ferry-system get pods -l \
                 app.kubernetes.io/component=gateway,app.kubernetes.io/name=pf-test`"
            ),
        "{text}"
    );
    assert!(err.is_unreachable());
}

/// A user who may read the ConfigMap but nothing more: the missing right is named,
/// first the Service, then (with a Ready pod gw-c there) the port-forward.
async fn missing_rights_are_named_one_at_a_time(env: &TestEnv, kc: &std::path::Path, labels: &str) {
    apply(
        env,
        "b",
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: pf-test-reader, namespace: ferry-system }
rules:
  - { apiGroups: [""], resources: [configmaps], resourceNames: [ferry], verbs: [get] }
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: pf-test-reader, namespace: ferry-system }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: pf-test-reader }
subjects: [{ apiGroup: rbac.authorization.k8s.io, kind: User, name: alice }]
"#,
    );
    apply(env, "b", &pod("ferry-system", "gw-c", labels, true));
    wait_ready(env, "b", "ferry-system", "gw-c");
    // (Role changes take a moment to reach the authorizer.)
    let text = error_eventually(kc, "b-alice", "may not get services").await;
    assert!(
        text.contains("the user may not get services/ferry-gateway in namespace ferry-system"),
        "{text}"
    );
    apply(
        env,
        "b",
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: pf-test-reader, namespace: ferry-system }
rules:
  - { apiGroups: [""], resources: [configmaps], resourceNames: [ferry], verbs: [get] }
  - { apiGroups: [""], resources: [services], resourceNames: [ferry-gateway], verbs: [get] }
  - { apiGroups: [""], resources: [pods], verbs: [get, list] }
"#,
    );
    let text = error_eventually(kc, "b-alice", "pods/portforward").await;
    assert!(
        text.contains("the user may not create pods/portforward in namespace ferry-system")
            && text.contains("ferry-endpoint-reader"),
        "{text}"
    );
}
