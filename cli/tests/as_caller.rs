//! Writes on the destination are the caller's, and the destination decides who that is.
//! A job writes the application's objects as the user who started it, so the
//! destination's RBAC, its escalation check and its admission judge each one as that
//! user's, never as the pair's credential; and a destination that does not trust the
//! names its sources give takes writes only with the caller's own token for it, which
//! it verifies itself. alice holds a Role in her namespace on both clusters; the
//! administrator is in system:masters.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::control::{
    cli, grant, grant_rbac, jsonpath, kubectl, kubectl_result, profiles_and_pair, serve,
    serve_verifying_callers, wait_answering,
};

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

/// `ferry --context a-alice migrate -n NS --to b` with `extra` flags.
fn alice_migrates(kc: &Path, ns: &str, extra: &[&str]) -> common::Run {
    let mut args = vec![
        "--context",
        "a-alice",
        "migrate",
        "-n",
        ns,
        "--to",
        "b",
        "--profile",
        "main",
    ];
    args.extend_from_slice(extra);
    cli(kc, &args)
}

// One test: the destination's ClusterRole ferry-migrator is one per cluster, and here
// it must stay without impersonation while every step runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_verifies_the_caller_and_judges_writes_as_theirs() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let s3 = env.s3().unwrap();
    let kc = env.kubeconfig().to_path_buf();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (_serve_a, _) = serve(&kc, "a", root);
    // b does not trust the names a gives: it verifies every writer itself.
    let (_serve_b, _) = serve_verifying_callers(&kc, "b", root);
    wait_answering(&kc, &["a", "b"]);
    profiles_and_pair(&kc, s3, root, ("s3", "repo-key"), "cli-as-caller", 6);
    let ns = alices_namespace_with_a_role_b_never_gave_her(&kc);
    the_destination_judges_an_identity_it_verified_itself(&kc, root, &ns);
    writes_on_the_destination_are_the_callers_not_the_pairs(&kc, &ns);
}

/// On a, the administrator gave alice NetworkPolicy rights in her namespace with a Role
/// and RoleBinding of the namespace. On b nobody did: migrating that Role and its
/// binding must not hand them to her, though the pair's credential holds them.
fn alices_namespace_with_a_role_b_never_gave_her(kc: &Path) -> String {
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
    kubectl(kc, "a", &["apply", "-f", "-"], Some(&yaml));
    kubectl(kc, "b", &["create", "namespace", &ns], None);
    for side in ["a", "b"] {
        grant(kc, side, &ns, "alice");
        grant_rbac(kc, side, &ns);
    }
    assert!(alice_may_write_network_policies(kc, "a", &ns));
    assert!(!alice_may_write_network_policies(kc, "b", &ns));
    ns
}

/// Hole 7: b does not take the name "alice" that a verified; without her own
/// credential for b, verified by b, the job stops before writing anything, saying what
/// to do; a token b does not accept is refused before any job starts.
fn the_destination_judges_an_identity_it_verified_itself(kc: &Path, root: &Path, ns: &str) {
    let asserted = alice_migrates(kc, ns, &[]);
    assert_ne!(asserted.code, Some(0), "{asserted:?}");
    let report = &asserted.stdout;
    assert!(
        report.contains("may not write there as user alice")
            && report.contains("no impersonate right")
            && report.contains("--to-context")
            && report.contains("--trust-source-identities"),
        "{asserted:?}"
    );
    let settings = ["get", "configmap", "settings", "-n", ns];
    assert!(kubectl_result(kc, "b", &settings, None).is_err());
    let forged = root.join("forged.token");
    std::fs::write(&forged, "not-a-token-of-b\n").unwrap();
    let forged_arg = forged.display().to_string();
    let refused = alice_migrates(kc, ns, &["--to-token-file", &forged_arg]);
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("cluster b") && refused.stderr.contains("does not accept"),
        "{refused:?}"
    );
    assert!(kubectl_result(kc, "b", &settings, None).is_err());
}

/// Hole 6: with her own token for b (the context b-alice), b verifies her and takes
/// the job's writes as hers: what she may write arrives; the Role granting what she
/// lacks there is refused by b's own escalation check, so she gains nothing, and the
/// report says why.
fn writes_on_the_destination_are_the_callers_not_the_pairs(kc: &Path, ns: &str) {
    let run = alice_migrates(kc, ns, &["--to-context", "b-alice"]);
    let said = format!("{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        jsonpath(kc, "b", ns, "configmap/settings", "{.data.greeting}"),
        "alice's",
        "{run:?}"
    );
    assert!(!alice_may_write_network_policies(kc, "b", ns), "{run:?}");
    assert!(
        kubectl_result(kc, "b", &["get", "role", "netpol-admin", "-n", ns], None).is_err(),
        "the Role arrived: {run:?}"
    );
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        said.contains("netpol-admin") && said.contains("alice"),
        "the refusal is not named: {run:?}"
    );
}
