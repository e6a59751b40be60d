//! Objects arrive as they left (issue 19): an application's own Role and RoleBinding, a
//! CronJob's suspend flag, a custom resource whose type was installed after pairing, and
//! what a report and its messages say when pre-flight stops a migration. Each test
//! migrates through the pair `a-to-b` as the administrator: the job writes on b as them
//! (b trusts a's names), so b's RBAC judges each object as the administrator's, not as
//! the pair's ClusterRole ferry-migrator, which lists the custom resource groups present
//! when the pair was made.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::Run;
use common::control::{cli, jsonpath, kubectl, migrate, paired};

fn apply_on(kc: &Path, context: &str, yaml: &str) {
    kubectl(kc, context, &["apply", "-f", "-"], Some(yaml));
}

/// `ferry migrate` through the pair, its report on stdout.
fn migrate_through_pair(kc: &Path, ns: &str, extra: &[&str]) -> Run {
    migrate(kc, ns, "a-to-b", extra)
}

fn namespace(ns: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n")
}

/// A RoleBinding `name` of `ns` granting Role `role` to the namespace's default
/// ServiceAccount and to the user reporter.
fn role_binding(ns: &str, name: &str, role: &str) -> String {
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n\
         metadata: {{name: {name}, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {role}}}\n\
         subjects:\n\
         - {{kind: ServiceAccount, name: default, namespace: {ns}}}\n\
         - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: reporter}}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_role_and_rolebinding_both_arrive() {
    let p = paired("rbac", 31).await;
    let (kc, ns) = (&p.kc, &p.ns);
    // Several bindings of one Role: every one of them is written while the Role may not
    // be there yet, unless the Role is applied first.
    let mut yaml = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\n\
         data: {{greeting: hello}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n\
         metadata: {{name: settings-reader, namespace: {ns}}}\n\
         rules: [{{apiGroups: [\"\"], resources: [configmaps], resourceNames: [settings], \
         verbs: [get, watch]}}]\n",
        namespace(ns)
    );
    for i in 0..4 {
        yaml.push_str("---\n");
        yaml.push_str(&role_binding(ns, &format!("read-{i}"), "settings-reader"));
    }
    apply_on(kc, "a", &yaml);

    let migrated = migrate_through_pair(kc, ns, &[]);
    assert_eq!(migrated.code, Some(0), "{migrated:#?}");
    // Clusters named as their Ferries were (--cluster-name), and the pair.
    let steps = &migrated.stderr;
    assert!(steps.contains("on cluster b (pair a-to-b)"), "{steps}");
    assert!(
        !steps.contains("pair/") && !steps.contains("cluster local"),
        "{steps}"
    );
    assert_eq!(
        jsonpath(
            kc,
            "b",
            ns,
            "role/settings-reader",
            "{.rules[0].resources[0]} {.rules[0].resourceNames[0]} {.rules[0].verbs}"
        ),
        r#"configmaps settings ["get","watch"]"#
    );
    for i in 0..4 {
        assert_eq!(
            jsonpath(
                kc,
                "b",
                ns,
                &format!("rolebinding/read-{i}"),
                "{.roleRef.kind}/{.roleRef.name} {.subjects[0].kind}/{.subjects[0].name} \
                 {.subjects[1].kind}/{.subjects[1].name}"
            ),
            "Role/settings-reader ServiceAccount/default User/reporter"
        );
    }

    // A binding of a Role that exists nowhere, which the administrator (who may bind
    // anything) made on a: written as them on b, it arrives as it left, as kubectl
    // would write it there.
    apply_on(kc, "a", &role_binding(ns, "dangling", "nowhere"));
    let again = migrate_through_pair(kc, ns, &[]);
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert_eq!(
        jsonpath(kc, "b", ns, "rolebinding/dangling", "{.roleRef.name}"),
        "nowhere"
    );
}

/// The CustomResourceDefinition of ShopSettings in `group`, established on `context`.
fn install_shop_settings(kc: &Path, context: &str, group: &str) {
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
         metadata: {{name: shopsettings.{group}}}\n\
         spec:\n  group: {group}\n  scope: Namespaced\n\
         \x20 names: {{plural: shopsettings, singular: shopsetting, kind: ShopSetting}}\n\
         \x20 versions:\n  - name: v1\n    served: true\n    storage: true\n\
         \x20   schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
    );
    apply_on(kc, context, &crd);
    kubectl(
        kc,
        context,
        &[
            "wait",
            "--for=condition=Established",
            &format!("crd/shopsettings.{group}"),
            "--timeout=60s",
        ],
        None,
    );
}

/// A namespace with a ConfigMap and the ShopSetting `currency` (EUR) of `group`.
fn shop_with_settings(ns: &str, group: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings, namespace: {ns}}}\n\
         data: {{greeting: hello}}\n---\n\
         apiVersion: {group}/v1\nkind: ShopSetting\nmetadata: {{name: currency, namespace: {ns}}}\n\
         spec: {{value: EUR}}\n",
        namespace(ns)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_installed_after_pairing_migrates() {
    let p = paired("late-type", 34).await;
    let (kc, ns) = (&p.kc, &p.ns);
    // Installed on both clusters after the pair was made: ClusterRole ferry-migrator on
    // b does not list its group, and need not, since the job writes as its user.
    let group = format!("{ns}.example.com");
    for side in ["a", "b"] {
        install_shop_settings(kc, side, &group);
    }
    apply_on(kc, "a", &shop_with_settings(ns, &group));
    let migrated = migrate_through_pair(kc, ns, &[]);
    assert_eq!(migrated.code, Some(0), "{migrated:#?}");
    assert_eq!(
        jsonpath(
            kc,
            "b",
            ns,
            &format!("shopsetting.{group}/currency"),
            "{.spec.value}"
        ),
        "EUR"
    );
    assert!(
        migrated.stderr.contains("on cluster b (pair a-to-b)")
            && !migrated.stderr.contains("pair/"),
        "{migrated:#?}"
    );
}

/// A CronJob `name` of `ns`, suspended or not.
fn cron_job(ns: &str, name: &str, suspend: bool) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  schedule: \"0 3 * * *\"\n  suspend: {suspend}\n  jobTemplate:\n    spec:\n\
         \x20     template:\n        spec:\n          restartPolicy: Never\n\
         \x20         containers: [{{name: report, image: example.com/report:1}}]\n"
    )
}

fn suspend_state(kc: &Path, ns: &str, name: &str) -> String {
    jsonpath(
        kc,
        "b",
        ns,
        &format!("cronjob/{name}"),
        "{.spec.suspend} {.metadata.annotations.ferry\\.dev/suspend}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cronjob_keeps_its_suspend_state() {
    let p = paired("cron", 32).await;
    let (kc, ns) = (&p.kc, &p.ns);
    let yaml = format!(
        "{}---\n{}---\n{}",
        namespace(ns),
        cron_job(ns, "nightly", false),
        cron_job(ns, "paused", true)
    );
    apply_on(kc, "a", &yaml);

    // A normal migration: each CronJob as on the source, nothing left to activate.
    migrate_through_pair(kc, ns, &[]).ok();
    assert_eq!(suspend_state(kc, ns, "nightly"), "false ");
    assert_eq!(suspend_state(kc, ns, "paused"), "true ");

    // Also when an object fails and the start step does not run (here a ConfigMap that
    // someone else made on b, with the existing-object policy fail): the CronJob was
    // never suspended to wait for it.
    let failing = format!("{ns}-failing");
    let map = format!("{ns}={failing}");
    kubectl(kc, "b", &["create", "namespace", &failing], None);
    for (side, n) in [("b", &failing), ("a", ns)] {
        kubectl(kc, side, &["-n", n, "create", "configmap", "clash"], None);
    }
    let partial = migrate_through_pair(kc, ns, &["--namespace-map", &map, "--existing", "fail"]);
    assert_eq!(partial.code, Some(13), "{partial:#?}");
    assert!(
        partial.stdout.contains("failed ConfigMap/clash"),
        "{partial:#?}"
    );
    assert_eq!(suspend_state(kc, &failing, "nightly"), "false ");
    assert_eq!(suspend_state(kc, &failing, "paused"), "true ");
    kubectl(kc, "a", &["-n", ns, "delete", "configmap", "clash"], None);

    // --no-start: both wait suspended, each with its own state kept aside, and
    // activation gives each its own back.
    let stopped = format!("{ns}-stopped");
    let map = format!("{ns}={stopped}");
    migrate_through_pair(kc, ns, &["--namespace-map", &map, "--no-start"]).ok();
    assert_eq!(suspend_state(kc, &stopped, "nightly"), "true false");
    assert_eq!(suspend_state(kc, &stopped, "paused"), "true true");
    let activated = cli(kc, &["--context", "b", "activate", "-n", &stopped]).ok();
    assert!(
        activated.stdout.contains("CronJob/nightly"),
        "{activated:#?}"
    );
    assert_eq!(suspend_state(kc, &stopped, "nightly"), "false ");
    assert_eq!(suspend_state(kc, &stopped, "paused"), "true ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_failure_report_says_what_was_captured() {
    let p = paired("late-crd", 33).await;
    let (kc, ns) = (&p.kc, &p.ns);
    // A type installed on a only: b does not serve it, which pre-flight finds.
    let group = format!("{ns}.example.com");
    install_shop_settings(kc, "a", &group);
    apply_on(kc, "a", &shop_with_settings(ns, &group));

    let failed = migrate_through_pair(kc, ns, &[]);
    eprintln!("{}", failed.stdout);
    assert_eq!(failed.code, Some(13), "{failed:#?}");
    let out = &failed.stdout;
    // Captured: the ConfigMap and the ShopSetting; left out, among others, the
    // namespace's default ServiceAccount and its kube-root-ca.crt ConfigMap; would have
    // been applied: the namespace and the two captured objects.
    let counts = out
        .lines()
        .find(|l| l.starts_with("objects: "))
        .unwrap_or_else(|| panic!("no objects line: {failed:#?}"));
    assert!(counts.contains("(2 captured, "), "{counts}");
    assert!(counts.contains(" excluded)"), "{counts}");
    let left_out = out
        .lines()
        .find(|l| l.starts_with("  left out: "))
        .unwrap_or_else(|| panic!("no left-out line: {failed:#?}"));
    assert!(
        left_out.contains("ServiceAccount/default (ServiceAccounts are never moved"),
        "{left_out}"
    );
    assert!(
        left_out.contains("ConfigMap/kube-root-ca.crt ("),
        "{left_out}"
    );
    assert!(
        out.contains(&format!(
            "nothing was written (3 object(s) would have been applied into namespace {ns}: \
             Namespace/{ns}, ConfigMap/settings, ShopSetting/currency)"
        )),
        "{failed:#?}"
    );
    // Named as users name them, with the fix.
    let error = out
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {failed:#?}"));
    assert!(error.contains(&format!("shopsettings.{group}")), "{error}");
    assert!(error.contains("cluster b (pair a-to-b)"), "{error}");
    assert!(
        error.contains("install the CustomResourceDefinition on the destination"),
        "{error}"
    );
    assert!(!error.contains("pair/"), "{error}");
    assert!(!error.contains("may not"), "{error}");
}
