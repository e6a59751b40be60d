//! Writes on the destination are the caller's: a job writes the application's objects
//! as the user who started it (Kubernetes impersonation), so the destination's RBAC,
//! its escalation check and its admission judge each one as that user's, never as the
//! pair's credential. alice holds a Role in her namespace on both clusters; the
//! administrator is in system:masters.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::control::{
    cli, grant, jsonpath, kubectl, kubectl_result, profiles_and_pair, serve, wait_answering,
};

/// alice may write Roles and RoleBindings in `ns` on `context`, without the escalate and
/// bind verbs: RBAC's escalation check limits what they grant to what she holds.
fn grant_rbac(kc: &Path, context: &str, ns: &str) {
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

/// Whether alice may create NetworkPolicies in `ns` on `context`.
fn alice_may_write_network_policies(kc: &Path, context: &str, ns: &str) -> bool {
    let args = [
        "auth",
        "can-i",
        "create",
        "networkpolicies.networking.k8s.io",
        "-n",
        ns,
        "--as",
        "alice",
    ];
    // can-i answers "no" with exit code 1.
    kubectl_result(kc, context, &args, None).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_writes_are_judged_as_the_caller_not_the_pair() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, _) = serve(&kc, "a", root);
    let (_serve_b, _) = serve(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "cli-as-caller", 6);

    // On a, the administrator gave alice NetworkPolicy rights in her namespace with a
    // Role and RoleBinding of the namespace. On b nobody did: migrating that Role and
    // its binding must not hand them to her, though the pair's credential holds them.
    let ns = ferry_testenv::unique_name("alice-rbac");
    let yaml = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\n\
         data: {{greeting: \"alice's\"}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: netpol-admin, namespace: {ns}}}\n\
         rules: [{{apiGroups: [networking.k8s.io], resources: [networkpolicies], \
         verbs: [get, list, create, patch]}}]\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: netpol-admin, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: netpol-admin}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}}]\n"
    );
    kubectl(&kc, "a", &["apply", "-f", "-"], Some(&yaml));
    kubectl(&kc, "b", &["create", "namespace", &ns], None);
    for side in ["a", "b"] {
        grant(&kc, side, &ns, "alice");
        grant_rbac(&kc, side, &ns);
    }
    assert!(alice_may_write_network_policies(&kc, "a", &ns));
    assert!(!alice_may_write_network_policies(&kc, "b", &ns));

    let run = cli(
        &kc,
        &[
            "--context",
            "a-alice",
            "migrate",
            "-n",
            &ns,
            "--to",
            "b",
            "--profile",
            "main",
        ],
    );
    let said = format!("{}\n{}", run.stdout, run.stderr);

    // What she may write arrived, written as her.
    assert_eq!(
        jsonpath(&kc, "b", &ns, "configmap/settings", "{.data.greeting}"),
        "alice's",
        "{run:?}"
    );
    // The Role granting what she lacks there was refused by the destination's own
    // escalation check, as hers; so she gained nothing, and the report says why.
    assert!(!alice_may_write_network_policies(&kc, "b", &ns), "{run:?}");
    assert!(
        kubectl_result(&kc, "b", &["get", "role", "netpol-admin", "-n", &ns], None).is_err(),
        "the Role arrived: {run:?}"
    );
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        said.contains("netpol-admin") && said.contains("alice"),
        "the refusal is not named: {run:?}"
    );
}
