//! Migrations between two real clusters: capture on "a", plan, pre-flight and apply on
//! "b", then object-by-object checks of what arrived.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use ferry_kube::{
    ApplyOptions, CaptureSpec, Captured, Cluster, ClusterFacts, ExclusionReason, ExistingPolicy,
    MIGRATION_LABEL, ObjectResult, Outcome, PatchRule, PreflightOptions, ProblemKind,
    REPLICAS_ANNOTATION, RestoredVolume, SUSPEND_ANNOTATION, Subject, Summary, TransformSpec,
    ZONE_LABEL,
};
use serde_json::json;

const RBAC: &str = "rbac.authorization.k8s.io/v1";

fn restored(pv: &str) -> RestoredVolume {
    RestoredVolume {
        pv_name: pv.to_owned(),
        source: json!({"hostPath": {"path": format!("/tmp/ferry-restored/{pv}")}})
            .as_object()
            .unwrap()
            .clone(),
        reclaim_policy: None,
    }
}

fn outcome_of<'a>(results: &'a [ObjectResult], kind: &str, name: &str) -> &'a Outcome {
    &results
        .iter()
        .find(|r| r.object.kind == kind && r.object.name == name)
        .unwrap_or_else(|| panic!("no result for {kind} {name}: {results:#?}"))
        .outcome
}

fn exclusion<'a>(c: &'a Captured, kind: &str, name: Option<&str>) -> &'a ExclusionReason {
    &c.excluded
        .iter()
        .find(|e| e.kind == kind && e.name.as_deref() == name)
        .unwrap_or_else(|| panic!("{kind} {name:?} not excluded: {:#?}", c.excluded))
        .reason
}

fn captured_names(c: &Captured, kind: &str) -> Vec<String> {
    c.objects
        .iter()
        .filter(|o| o.resource.kind == kind)
        .map(|o| o.object.metadata.name.clone().unwrap_or_default())
        .collect()
}

fn assert_no_failures(results: &[ObjectResult]) {
    let failed: Vec<_> = results.iter().filter(|r| r.is_failed()).collect();
    assert!(failed.is_empty(), "failed objects: {failed:#?}");
}

/// The same namespace on both clusters: capture, dry run, apply scaled to zero, check
/// every object, apply again (all unchanged), activate.
#[tokio::test]
async fn rich_application_moves_to_the_same_namespace() {
    let env = env().await;
    let (a, b) = clients(env).await;
    let n = Names::new("rich-same");
    for c in [&a, &b] {
        cluster_dependencies(c, &n).await;
        storage_class(c, &n.class).await;
    }
    // The destination has workers in the source's zone.
    node(&b, &format!("node-{}", n.tag), &n.zone).await;
    rich_application(&a, &n).await;
    let ns = n.ns.as_str();

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(ns))
        .await
        .unwrap();

    assert_capture_of_rich_application(&captured, &n);
    // The capture is a plain document: it survives a round trip through JSON.
    let captured: Captured =
        serde_json::from_str(&serde_json::to_string(&captured).unwrap()).unwrap();

    let facts = ClusterFacts::gather(&dst).await.unwrap();
    let migration = n.tag.clone();
    let spec = TransformSpec {
        migration_id: migration.clone(),
        scale_to_zero: true,
        restored_volumes: [
            ("data-db-0".to_owned(), restored(&format!("r-{}-db", n.tag))),
            ("uploads".to_owned(), restored(&format!("r-{}-up", n.tag))),
        ]
        .into(),
        ..Default::default()
    };
    let plan = ferry_kube::plan(&captured, &spec, &facts).unwrap();
    assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    let problems = ferry_kube::preflight(&dst, &plan).await.unwrap();
    assert!(problems.is_empty(), "{problems:#?}");

    // A dry run reports a creation for every object and writes nothing.
    let dry = ApplyOptions {
        dry_run: true,
        ..Default::default()
    };
    assert_dry_run_writes_nothing(&dst, &b, &plan, &dry, &n).await;

    // The real thing.
    let seen = std::sync::atomic::AtomicUsize::new(0);
    let opts = ApplyOptions {
        qps: 20.0,
        burst: 10,
        concurrency: 4,
        ..Default::default()
    };
    let results = ferry_kube::apply(&dst, &plan, &opts, |_| {
        seen.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .await
    .unwrap();
    assert_no_failures(&results);
    assert_eq!(
        seen.into_inner(),
        results.len(),
        "progress saw every result"
    );
    let summary = Summary::of(&results);
    assert_eq!(summary.created, plan.objects.len(), "{summary}");
    assert!(summary.succeeded());

    assert_rich_application_on_b(&a, &b, &n, &plan, &migration).await;

    // The same migration again changes nothing.
    let again = ferry_kube::apply(&dst, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    for r in &again {
        assert_eq!(r.outcome, Outcome::Unchanged, "{r:#?}");
    }
    // A dry run of it says so too.
    let dry_again = ferry_kube::apply(&dst, &plan, &dry, |_| {}).await.unwrap();
    for r in &dry_again {
        assert_eq!(r.outcome, Outcome::Unchanged, "{r:#?}");
    }

    // Activation restores what scale-to-zero kept.
    let activated = ferry_kube::activate(&dst, ns).await.unwrap();
    assert_no_failures(&activated);
    assert_eq!(activated.len(), 3, "{activated:#?}");
    let web = must_get(&b, "apps/v1", "Deployment", Some(ns), "web").await;
    assert_eq!(web["spec"]["replicas"], 2);
    assert!(
        web["metadata"]["annotations"]
            .get(REPLICAS_ANNOTATION)
            .is_none()
    );
    let db = must_get(&b, "apps/v1", "StatefulSet", Some(ns), "db").await;
    assert_eq!(db["spec"]["replicas"], 1);
    let cron = must_get(&b, "batch/v1", "CronJob", Some(ns), "nightly").await;
    assert_eq!(cron["spec"]["suspend"], false);
    // Activating twice finds nothing left to do.
    assert!(ferry_kube::activate(&dst, ns).await.unwrap().is_empty());
}

/// What a capture of [`rich_application`] holds, and what it left behind and why.
fn assert_capture_of_rich_application(captured: &Captured, n: &Names) {
    // What was left behind, and why.
    assert_eq!(
        *exclusion(captured, "ServiceAccount", Some("app-sa")),
        ExclusionReason::ServiceAccount
    );
    assert_eq!(
        *exclusion(captured, "ServiceAccount", Some("default")),
        ExclusionReason::ServiceAccount
    );
    assert_eq!(
        *exclusion(captured, "Secret", Some("app-sa-token")),
        ExclusionReason::ServiceAccountToken {
            service_account: "app-sa".into()
        }
    );
    assert_eq!(
        *exclusion(captured, "ConfigMap", Some("kube-root-ca.crt")),
        ExclusionReason::RootCaConfigMap
    );
    assert!(
        matches!(exclusion(captured, "ReplicaSet", Some("web-5d4f")), ExclusionReason::OwnedBy { owner } if owner.kind == "Deployment" && owner.name == "web")
    );
    assert!(
        matches!(exclusion(captured, "Pod", Some("web-5d4f-x1")), ExclusionReason::OwnedBy { owner } if owner.kind == "ReplicaSet")
    );
    assert!(
        matches!(exclusion(captured, "Job", Some("nightly-28000000")), ExclusionReason::OwnedBy { owner } if owner.kind == "CronJob")
    );
    assert_eq!(*exclusion(captured, "Event", None), ExclusionReason::Event);
    assert_eq!(
        *exclusion(captured, "Endpoints", None),
        ExclusionReason::Endpoints
    );
    assert_eq!(
        *exclusion(captured, "EndpointSlice", None),
        ExclusionReason::Endpoints
    );
    assert_eq!(
        *exclusion(captured, "StorageClass", Some(&n.class)),
        ExclusionReason::ClusterScoped
    );
    assert_eq!(
        *exclusion(captured, "ClusterRole", Some(&n.cluster_role)),
        ExclusionReason::ClusterScoped
    );

    assert_eq!(
        captured_names(captured, "Secret"),
        ["app-secret", "basic", "regcred", "tls"]
    );
    assert_eq!(captured_names(captured, "ConfigMap"), ["settings"]);
    assert_eq!(
        captured_names(captured, "PersistentVolumeClaim"),
        ["data-db-0", "uploads"]
    );
    assert_eq!(
        captured_names(captured, "Service"),
        ["db", "web", "web-lb", "web-np"]
    );
    assert_eq!(captured_names(captured, "Widget"), ["w1"]);
    for kind in [
        "Deployment",
        "StatefulSet",
        "CronJob",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Role",
        "ResourceQuota",
        "LimitRange",
    ] {
        assert_eq!(captured_names(captured, kind).len(), 1, "{kind}");
    }
    assert!(captured_names(captured, "Pod").is_empty());
    assert!(captured_names(captured, "ReplicaSet").is_empty());
    assert!(captured_names(captured, "Job").is_empty());
    let dep_names: Vec<String> = captured
        .dependencies
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        format!(
            "CustomResourceDefinition widgets.{} (serving {}/v1)",
            n.crd_group, n.crd_group
        ),
        format!("StorageClass {}", n.class),
        format!("PriorityClass {}", n.priority_class),
        format!("IngressClass {}", n.ingress_class),
        format!("ClusterRole {}", n.cluster_role),
    ] {
        assert!(dep_names.contains(&want), "{want} not in {dep_names:?}");
    }
    assert!(captured.facts.zones.contains(&n.zone));
    assert!(captured.facts.storage_classes.contains_key(&n.class));
    let vol = captured
        .volumes
        .iter()
        .find(|v| v.pvc == "uploads")
        .unwrap();
    assert_eq!(vol.zone.as_deref(), Some(n.zone.as_str()));
    assert_eq!(vol.capacity.as_deref(), Some("1Gi"));
}

/// A dry run of `plan` reports a creation for every object and writes nothing to b.
async fn assert_dry_run_writes_nothing(
    dst: &Cluster,
    b: &kube::Client,
    plan: &ferry_kube::Plan,
    dry: &ApplyOptions,
    n: &Names,
) {
    let ns = n.ns.as_str();
    let planned = ferry_kube::apply(dst, plan, dry, |_| {}).await.unwrap();
    assert_no_failures(&planned);
    assert_eq!(planned.len(), plan.objects.len());
    for r in &planned {
        assert!(r.dry_run);
        assert_eq!(r.outcome, Outcome::Created, "{r:#?}");
        let diff = r.diff.as_ref().expect("a dry run has diffs");
        assert!(diff.before.is_none() && diff.after.is_some());
        assert!(!diff.patch.0.is_empty());
    }
    assert!(
        !namespace_exists(b, ns).await,
        "the dry run created the namespace"
    );
    assert!(
        get(
            b,
            "v1",
            "PersistentVolume",
            None,
            &format!("r-{}-db", n.tag)
        )
        .await
        .is_none()
    );
}

/// Every object of [`rich_application`] as the plan put it on b, object by object.
async fn assert_rich_application_on_b(
    a: &kube::Client,
    b: &kube::Client,
    n: &Names,
    plan: &ferry_kube::Plan,
    migration: &str,
) {
    let ns = n.ns.as_str();
    let nsobj = must_get(b, "v1", "Namespace", None, ns).await;
    assert_eq!(nsobj["metadata"]["labels"]["team"], "blue");
    assert_eq!(nsobj["metadata"]["labels"][MIGRATION_LABEL], migration);

    let cm = must_get(b, "v1", "ConfigMap", Some(ns), "settings").await;
    assert_eq!(cm["data"], json!({"greeting": "hello", "db": "db.svc"}));
    assert_eq!(cm["metadata"]["labels"]["app"], "web");
    let root_ca_a = must_get(a, "v1", "ConfigMap", Some(ns), "kube-root-ca.crt").await;
    let root_ca_b = must_get(b, "v1", "ConfigMap", Some(ns), "kube-root-ca.crt").await;
    assert_ne!(
        root_ca_a["data"], root_ca_b["data"],
        "b publishes its own CA"
    );
    assert!(
        root_ca_b["metadata"]["labels"]
            .get(MIGRATION_LABEL)
            .is_none()
    );

    assert_secrets_and_rbac_on_b(a, b, n).await;

    assert_claims_and_services_on_b(a, b, n, plan).await;

    let web = must_get(b, "apps/v1", "Deployment", Some(ns), "web").await;
    assert_eq!(web["spec"]["replicas"], 0);
    assert_eq!(web["metadata"]["annotations"][REPLICAS_ANNOTATION], "2");
    assert_eq!(
        web["spec"]["template"]["spec"]["priorityClassName"],
        n.priority_class.as_str()
    );
    let db = must_get(b, "apps/v1", "StatefulSet", Some(ns), "db").await;
    assert_eq!(db["spec"]["replicas"], 0);
    assert_eq!(db["metadata"]["annotations"][REPLICAS_ANNOTATION], "1");
    assert_eq!(
        db["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        n.class.as_str()
    );
    let cron = must_get(b, "batch/v1", "CronJob", Some(ns), "nightly").await;
    assert_eq!(cron["spec"]["suspend"], true);
    assert_eq!(cron["metadata"]["annotations"][SUSPEND_ANNOTATION], "false");
    assert!(
        get(b, "apps/v1", "ReplicaSet", Some(ns), "web-5d4f")
            .await
            .is_none()
    );
    assert!(get(b, "v1", "Pod", Some(ns), "web-5d4f-x1").await.is_none());
    assert!(
        get(b, "batch/v1", "Job", Some(ns), "nightly-28000000")
            .await
            .is_none()
    );

    let ing = must_get(b, "networking.k8s.io/v1", "Ingress", Some(ns), "web").await;
    assert_eq!(ing["spec"]["ingressClassName"], n.ingress_class.as_str());
    let netpol = must_get(
        b,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        Some(ns),
        "same-namespace",
    )
    .await;
    assert_eq!(
        netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        ns
    );
    must_get(b, "policy/v1", "PodDisruptionBudget", Some(ns), "web").await;
    let hpa = must_get(
        b,
        "autoscaling/v2",
        "HorizontalPodAutoscaler",
        Some(ns),
        "web",
    )
    .await;
    assert_eq!(hpa["spec"]["maxReplicas"], 5);
    let widget = must_get(b, &format!("{}/v1", n.crd_group), "Widget", Some(ns), "w1").await;
    assert_eq!(widget["spec"], json!({"size": 3, "color": "blue"}));
    for obj in [&cm, &web, &widget] {
        assert_eq!(obj["metadata"]["labels"][MIGRATION_LABEL], migration);
        let managers: Vec<&str> = obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["manager"].as_str())
            .collect();
        assert!(managers.contains(&"ferry"), "{managers:?}");
    }
}

/// The Secrets of [`rich_application`] arrived with their data and types (no token,
/// no ServiceAccount), and its Roles, RoleBindings, LimitRange and quota.
async fn assert_secrets_and_rbac_on_b(a: &kube::Client, b: &kube::Client, n: &Names) {
    let ns = n.ns.as_str();
    for (name, ty) in [
        ("app-secret", "Opaque"),
        ("tls", "kubernetes.io/tls"),
        ("regcred", "kubernetes.io/dockerconfigjson"),
        ("basic", "kubernetes.io/basic-auth"),
    ] {
        let sa = must_get(a, "v1", "Secret", Some(ns), name).await;
        let sb = must_get(b, "v1", "Secret", Some(ns), name).await;
        assert_eq!(sb["type"], ty, "{name}");
        assert_eq!(sa["data"], sb["data"], "{name}");
    }
    assert!(
        get(b, "v1", "Secret", Some(ns), "app-sa-token")
            .await
            .is_none(),
        "token moved"
    );
    assert!(
        get(b, "v1", "ServiceAccount", Some(ns), "app-sa")
            .await
            .is_none(),
        "ServiceAccount moved"
    );

    let rb = must_get(b, RBAC, "RoleBinding", Some(ns), "reader").await;
    assert_eq!(rb["subjects"][0]["namespace"], ns);
    assert_eq!(rb["subjects"][1]["name"], "carol");
    must_get(b, RBAC, "Role", Some(ns), "reader").await;
    let viewers = must_get(b, RBAC, "RoleBinding", Some(ns), "viewers").await;
    assert_eq!(viewers["roleRef"]["name"], n.cluster_role.as_str());
    must_get(b, "v1", "LimitRange", Some(ns), "defaults").await;
    let quota = must_get(b, "v1", "ResourceQuota", Some(ns), "quota").await;
    assert_eq!(quota["spec"]["hard"]["pods"], "50");
}

/// The claims of [`rich_application`] bound to their restored volumes in the same
/// zone, and its Services as b gives them their addresses and ports.
async fn assert_claims_and_services_on_b(
    a: &kube::Client,
    b: &kube::Client,
    n: &Names,
    plan: &ferry_kube::Plan,
) {
    let ns = n.ns.as_str();
    for (claim, pv) in [
        ("data-db-0", format!("r-{}-db", n.tag)),
        ("uploads", format!("r-{}-up", n.tag)),
    ] {
        wait_bound(b, ns, claim).await;
        let c = must_get(b, "v1", "PersistentVolumeClaim", Some(ns), claim).await;
        assert_eq!(c["spec"]["volumeName"], pv.as_str());
        assert_eq!(c["spec"]["storageClassName"], n.class.as_str());
        let v = must_get(b, "v1", "PersistentVolume", None, &pv).await;
        assert_eq!(
            v["spec"]["hostPath"]["path"],
            format!("/tmp/ferry-restored/{pv}")
        );
        assert_eq!(v["spec"]["claimRef"]["name"], claim);
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Retain");
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
            json!([n.zone]),
            "same zone: b has workers there"
        );
        assert_eq!(v["metadata"]["labels"][ZONE_LABEL], n.zone.as_str());
    }

    let svc_a = must_get(a, "v1", "Service", Some(ns), "web").await;
    let svc_b = must_get(b, "v1", "Service", Some(ns), "web").await;
    assert!(svc_b["spec"]["clusterIP"].is_string());
    let plan_svc = plan
        .objects
        .iter()
        .find(|o| o.resource.kind == "Service" && o.object.metadata.name.as_deref() == Some("web"))
        .unwrap();
    assert!(
        plan_svc.object.data["spec"].get("clusterIP").is_none(),
        "clusterIP is not carried"
    );
    assert_eq!(svc_a["spec"]["ports"], svc_b["spec"]["ports"]);
    let headless = must_get(b, "v1", "Service", Some(ns), "db").await;
    assert_eq!(headless["spec"]["clusterIP"], "None");
    let np = must_get(b, "v1", "Service", Some(ns), "web-np").await;
    assert_eq!(np["spec"]["type"], "NodePort");
    assert!(
        np["spec"]["ports"][0]["nodePort"].is_u64(),
        "the destination picked a port"
    );
    let lb = must_get(b, "v1", "Service", Some(ns), "web-lb").await;
    assert_eq!(lb["spec"]["type"], "LoadBalancer");
    assert!(lb["spec"].get("loadBalancerIP").is_none());
    assert!(lb["status"]["loadBalancer"].get("ingress").is_none());
    assert!(
        get(b, "v1", "Endpoints", Some(ns), "external")
            .await
            .is_none()
    );
    assert!(get(b, "v1", "Event", Some(ns), "web.1").await.is_none());
}

/// Into another namespace, with storage-class and zone mappings, NodePorts and the
/// load-balancer IP kept, and a JSON patch.
#[tokio::test]
async fn rich_application_moves_to_a_renamed_namespace() {
    let env = env().await;
    let (a, b) = clients(env).await;
    let n = Names::new("rich-rename");
    for c in [&a, &b] {
        cluster_dependencies(c, &n).await;
    }
    storage_class(&a, &n.class).await;
    let dst_class = format!("dst-{}", n.tag);
    storage_class(&b, &dst_class).await;
    // b has no workers in the source zone, only in the mapped one.
    let dst_zone = format!("dst-{}", n.zone);
    node(&b, &format!("node-{}", n.tag), &dst_zone).await;
    rich_application(&a, &n).await;
    let ns = n.ns.as_str();
    let target = format!("{ns}-copy");

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(ns))
        .await
        .unwrap();
    let facts = ClusterFacts::gather(&dst).await.unwrap();
    let spec = renamed_spec(&n, &target, &dst_class, &dst_zone);
    let plan = ferry_kube::plan(&captured, &spec, &facts).unwrap();
    assert!(plan.problems.is_empty(), "{:#?}", plan.problems);
    let problems = ferry_kube::preflight(&dst, &plan).await.unwrap();
    assert!(problems.is_empty(), "{problems:#?}");
    let results = ferry_kube::apply(&dst, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    assert_no_failures(&results);
    assert!(
        !namespace_exists(&b, ns).await,
        "nothing lands in the source's name"
    );

    let t = target.as_str();
    references_follow_the_rename(&b, t).await;
    the_patch_reaches_config_maps_only(&b, t).await;
    claims_follow_the_class_and_zone_mappings(&b, t, &n, &plan, (&dst_class, &dst_zone)).await;
    services_and_workloads_are_kept_as_asked(&b, t, &n).await;

    let again = ferry_kube::apply(&dst, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    let changed: Vec<_> = again
        .iter()
        .filter(|r| r.outcome != Outcome::Unchanged)
        .collect();
    assert!(changed.is_empty(), "{changed:#?}");
}

/// Into `target`, the source's class and zone mapped to `dst_class` and `dst_zone`,
/// NodePorts and the load-balancer IP kept, claim "uploads" restored into a PV of its
/// own, and a JSON patch for ConfigMaps.
fn renamed_spec(n: &Names, target: &str, dst_class: &str, dst_zone: &str) -> TransformSpec {
    TransformSpec {
        migration_id: n.tag.clone(),
        target_namespace: Some(target.to_owned()),
        storage_classes: [(n.class.clone(), dst_class.to_owned())].into(),
        zones: [(n.zone.clone(), dst_zone.to_owned())].into(),
        preserve_node_ports: true,
        keep_load_balancer_ip: true,
        restored_volumes: [("uploads".to_owned(), restored(&format!("r-{}-up", n.tag)))].into(),
        patches: vec![PatchRule {
            resources: vec!["configmaps".into()],
            names: vec![],
            patch: serde_json::from_value(json!([
                {"op": "add", "path": "/metadata/labels/env", "value": "dr"},
                {"op": "add", "path": "/metadata/annotations", "value": {"moved-by": "ferry"}}
            ]))
            .unwrap(),
        }],
        ..Default::default()
    }
}

/// A RoleBinding's subject, a NetworkPolicy's namespace selector and an Ingress's
/// upstream host name namespace `t`; text that only looks alike is left alone.
async fn references_follow_the_rename(b: &kube::Client, t: &str) {
    let rb = must_get(b, RBAC, "RoleBinding", Some(t), "reader").await;
    assert_eq!(
        rb["subjects"][0]["namespace"], t,
        "ServiceAccount subject follows the rename"
    );
    let netpol = must_get(
        b,
        "networking.k8s.io/v1",
        "NetworkPolicy",
        Some(t),
        "same-namespace",
    )
    .await;
    assert_eq!(
        netpol["spec"]["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        t
    );
    let ing = must_get(b, "networking.k8s.io/v1", "Ingress", Some(t), "web").await;
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-vhost"],
        format!("web.{t}.svc.cluster.local")
    );
    assert_eq!(ing["metadata"]["annotations"]["note"], "keep web.other.svc");
}

/// The JSON patch labelled and annotated the ConfigMap, and left the Secret alone.
async fn the_patch_reaches_config_maps_only(b: &kube::Client, t: &str) {
    let cm = must_get(b, "v1", "ConfigMap", Some(t), "settings").await;
    assert_eq!(cm["metadata"]["labels"]["env"], "dr");
    assert_eq!(cm["metadata"]["labels"]["app"], "web");
    assert_eq!(cm["metadata"]["annotations"]["moved-by"], "ferry");
    let secret = must_get(b, "v1", "Secret", Some(t), "app-secret").await;
    assert!(
        secret["metadata"]["labels"].get("env").is_none(),
        "the patch was for ConfigMaps only"
    );
}

/// The restored claim is bound to its PV in the mapped zone, with the mapped class;
/// the other claim asks the destination to provision, and so do the StatefulSet's
/// claim templates.
async fn claims_follow_the_class_and_zone_mappings(
    b: &kube::Client,
    t: &str,
    n: &Names,
    plan: &ferry_kube::Plan,
    (dst_class, dst_zone): (&str, &str),
) {
    let up_pv = format!("r-{}-up", n.tag);
    wait_bound(b, t, "uploads").await;
    let up = must_get(b, "v1", "PersistentVolumeClaim", Some(t), "uploads").await;
    assert_eq!(up["spec"]["storageClassName"], dst_class);
    assert_eq!(up["spec"]["volumeName"], up_pv.as_str());
    let pv = must_get(b, "v1", "PersistentVolume", None, &up_pv).await;
    assert_eq!(pv["spec"]["storageClassName"], dst_class);
    assert_eq!(pv["spec"]["claimRef"]["namespace"], t);
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!([dst_zone])
    );
    let data = must_get(b, "v1", "PersistentVolumeClaim", Some(t), "data-db-0").await;
    assert_eq!(data["spec"]["storageClassName"], dst_class);
    assert!(
        data["spec"].get("volumeName").is_none_or(|v| v == ""),
        "{data:#?}"
    );
    let pv_plan = plan.volumes.iter().find(|v| v.pvc == "uploads").unwrap();
    assert_eq!(pv_plan.zone.as_deref(), Some(dst_zone));
    assert_eq!(pv_plan.source_zone.as_deref(), Some(n.zone.as_str()));
    let db = must_get(b, "apps/v1", "StatefulSet", Some(t), "db").await;
    assert_eq!(
        db["spec"]["volumeClaimTemplates"][0]["spec"]["storageClassName"],
        dst_class
    );
}

/// The NodePort and the load-balancer IP kept as asked, the workloads not scaled down,
/// the custom resource there, and the ServiceAccount not copied.
async fn services_and_workloads_are_kept_as_asked(b: &kube::Client, t: &str, n: &Names) {
    let np = must_get(b, "v1", "Service", Some(t), "web-np").await;
    assert_eq!(
        np["spec"]["ports"][0]["nodePort"], n.node_port,
        "kept as asked"
    );
    let lb = must_get(b, "v1", "Service", Some(t), "web-lb").await;
    assert_eq!(lb["spec"]["loadBalancerIP"], "203.0.113.10");
    let web = must_get(b, "apps/v1", "Deployment", Some(t), "web").await;
    assert_eq!(web["spec"]["replicas"], 2, "not scaled down unless asked");
    let widget = must_get(b, &format!("{}/v1", n.crd_group), "Widget", Some(t), "w1").await;
    assert_eq!(widget["spec"]["size"], 3);
    assert!(
        get(b, "v1", "ServiceAccount", Some(t), "app-sa")
            .await
            .is_none()
    );
}

/// A CRD the destination lacks: pre-flight names it (with every other problem) and
/// nothing is written.
#[tokio::test]
async fn missing_crd_fails_preflight_and_nothing_is_written() {
    let env = env().await;
    let (a, b) = clients(env).await;
    // The rich application, everything it needs on both clusters but a second CRD and
    // one storage class.
    let n = Names::new("missing-crd");
    for c in [&a, &b] {
        cluster_dependencies(c, &n).await;
        storage_class(c, &n.class).await;
    }
    rich_application(&a, &n).await;
    let ns = n.ns.clone();
    let group = format!("extra.{}", n.crd_group);
    crd(&a, &group, "Gadget", "gadgets").await;
    create(&a, json!({"apiVersion": format!("{group}/v1"), "kind": "Gadget", "metadata": {"name": "g1", "namespace": ns}, "spec": {"x": 1}})).await;
    let missing_class = format!("gone-{ns}");
    create(&a, json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "p", "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": missing_class, "resources": {"requests": {"storage": "1Gi"}}}})).await;

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(&ns))
        .await
        .unwrap();
    let facts = ClusterFacts::gather(&dst).await.unwrap();
    let plan = ferry_kube::plan(
        &captured,
        &TransformSpec {
            migration_id: "m".into(),
            ..Default::default()
        },
        &facts,
    )
    .unwrap();
    let problems = ferry_kube::preflight(&dst, &plan).await.unwrap();
    let missing: Vec<(&str, &str)> = problems
        .iter()
        .filter_map(|p| match &p.kind {
            ProblemKind::MissingDependency { kind, name } => Some((kind.as_str(), name.as_str())),
            _ => None,
        })
        .collect();
    let crd_name = format!("gadgets.{group}");
    assert_eq!(
        missing,
        [
            ("CustomResourceDefinition", crd_name.as_str()),
            ("StorageClass", missing_class.as_str())
        ],
        "{problems:#?}"
    );
    let crd_problem = problems
        .iter()
        .find(|p| p.message.contains(&crd_name))
        .unwrap();
    assert!(crd_problem.is_error());
    assert!(
        crd_problem.message.contains("Gadget"),
        "names what needs it: {}",
        crd_problem.message
    );
    assert!(
        crd_problem.message.contains("cluster b"),
        "{}",
        crd_problem.message
    );
    assert!(
        !namespace_exists(&b, &ns).await,
        "pre-flight wrote the namespace"
    );

    // A plan with a problem of its own is refused by apply before it writes anything.
    let broken = TransformSpec {
        migration_id: "m".into(),
        patches: vec![PatchRule {
            resources: vec!["widgets".into()],
            names: vec![],
            patch: serde_json::from_value(json!([{"op": "remove", "path": "/spec/nothing"}]))
                .unwrap(),
        }],
        ..Default::default()
    };
    let plan = ferry_kube::plan(&captured, &broken, &facts).unwrap();
    let transform: Vec<_> = plan
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Transform)
        .collect();
    assert_eq!(transform.len(), 1, "{:#?}", plan.problems);
    assert_eq!(transform[0].object.as_ref().unwrap().name, "w1");
    let err = ferry_kube::apply(&dst, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap_err();
    assert!(err.to_string().contains("problem"), "{err}");
    assert!(
        !namespace_exists(&b, &ns).await,
        "a refused apply wrote the namespace"
    );
}

/// A StatefulSet whose claim template names its class only by the legacy annotation
/// `volume.beta.kubernetes.io/storage-class` (as the public Cassandra example does): a
/// class missing on the destination fails pre-flight by name, and a storage-class map
/// applies to the annotation too, after which pre-flight passes.
#[tokio::test]
async fn class_named_by_the_legacy_annotation_is_checked_and_mapped() {
    let env = env().await;
    let (a, b) = clients(env).await;
    let n = Names::new("legacy-class");
    let ns = n.ns.clone();
    storage_class(&b, &n.class).await;
    namespace(&a, &ns, json!({})).await;
    let missing_class = format!("gone-{ns}");
    create(&a, json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "cassandra", "namespace": ns},
        "spec": {"serviceName": "cassandra", "replicas": 0,
                 "selector": {"matchLabels": {"app": "cassandra"}},
                 "template": {"metadata": {"labels": {"app": "cassandra"}},
                              "spec": {"containers": [{"name": "c", "image": "example.com/cassandra:1"}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data",
                      "annotations": {"volume.beta.kubernetes.io/storage-class": missing_class}},
                      "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})).await;

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(&ns))
        .await
        .unwrap();
    let facts = ClusterFacts::gather(&dst).await.unwrap();
    let missing_classes = |problems: &[ferry_kube::Problem]| -> Vec<String> {
        problems
            .iter()
            .filter_map(|p| match &p.kind {
                ProblemKind::MissingDependency { kind, name } if kind == "StorageClass" => {
                    Some(name.clone())
                }
                _ => None,
            })
            .collect()
    };

    let plan = ferry_kube::plan(
        &captured,
        &TransformSpec {
            migration_id: "m".into(),
            ..Default::default()
        },
        &facts,
    )
    .unwrap();
    let problems = ferry_kube::preflight(&dst, &plan).await.unwrap();
    assert_eq!(
        missing_classes(&problems),
        vec![missing_class.clone()],
        "{problems:#?}"
    );
    let problem = problems
        .iter()
        .find(|p| p.message.contains(&missing_class))
        .unwrap();
    assert!(problem.is_error());
    assert!(
        problem.message.contains("cassandra"),
        "names what needs it: {}",
        problem.message
    );

    let mapped = ferry_kube::plan(
        &captured,
        &TransformSpec {
            migration_id: "m".into(),
            storage_classes: [(missing_class.clone(), n.class.clone())].into(),
            ..Default::default()
        },
        &facts,
    )
    .unwrap();
    let problems = ferry_kube::preflight(&dst, &mapped).await.unwrap();
    assert!(missing_classes(&problems).is_empty(), "{problems:#?}");
    let sts = mapped
        .objects
        .iter()
        .find(|o| o.resource.kind == "StatefulSet")
        .unwrap();
    let sts = serde_json::to_value(&sts.object).unwrap();
    assert_eq!(
        sts.pointer(
            "/spec/volumeClaimTemplates/0/metadata/annotations/volume.beta.kubernetes.io~1storage-class"
        ),
        Some(&json!(n.class))
    );
}

/// A NodePort kept from the source but taken on the destination fails that Service
/// only; the rest arrives and the result is not a success.
#[tokio::test]
async fn taken_node_port_fails_only_its_service() {
    let env = env().await;
    let (a, b) = clients(env).await;
    let ns = ferry_testenv::unique_name("nodeport");
    let port = node_port(&format!("{ns}-np"));
    namespace(&a, &ns, json!({})).await;
    create(&a, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np", "namespace": ns},
        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": port}]}})).await;
    create(&a, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}, "data": {"k": "v"}})).await;
    // Someone else holds the port on b.
    let other = format!("{ns}-other");
    namespace(&b, &other, json!({})).await;
    create(&b, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "holder", "namespace": other},
        "spec": {"type": "NodePort", "selector": {"app": "y"}, "ports": [{"port": 80, "nodePort": port}]}})).await;

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(&ns))
        .await
        .unwrap();
    let facts = ClusterFacts::gather(&dst).await.unwrap();
    let spec = TransformSpec {
        migration_id: "np".into(),
        preserve_node_ports: true,
        ..Default::default()
    };
    let plan = ferry_kube::plan(&captured, &spec, &facts).unwrap();
    let results = ferry_kube::apply(&dst, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    match outcome_of(&results, "Service", "np") {
        Outcome::Failed { reason, code } => {
            assert_eq!(*code, Some(422));
            assert!(reason.contains("already allocated"), "{reason}");
            assert!(reason.contains("without preserving NodePorts"), "{reason}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(*outcome_of(&results, "ConfigMap", "c"), Outcome::Created);
    assert!(!Summary::of(&results).succeeded());
    assert!(get(&b, "v1", "Service", Some(&ns), "np").await.is_none());

    // Without preserving, the destination picks another port and all is well.
    let spec = TransformSpec {
        preserve_node_ports: false,
        ..spec
    };
    let plan = ferry_kube::plan(&captured, &spec, &facts).unwrap();
    let results = ferry_kube::apply(&dst, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    assert_no_failures(&results);
    let np = must_get(&b, "v1", "Service", Some(&ns), "np").await;
    assert_ne!(np["spec"]["ports"][0]["nodePort"], port);
}

/// The existing-object policies, and purge of what left the source.
#[tokio::test]
async fn existing_objects_follow_the_policy_and_purge_removes_what_left() {
    let env = env().await;
    let (a, b) = clients(env).await;
    let ns = ferry_testenv::unique_name("policy");
    namespace(&a, &ns, json!({})).await;
    for name in ["keep", "goes", "clash"] {
        create(&a, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}, "data": {"from": "a"}})).await;
    }
    // b already has the namespace, a ConfigMap of the same name and one of its own.
    namespace(&b, &ns, json!({})).await;
    create(&b, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "clash", "namespace": ns}, "data": {"from": "b"}})).await;
    create(&b, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local", "namespace": ns}, "data": {"from": "b"}})).await;

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let spec = TransformSpec {
        migration_id: "p1".into(),
        ..Default::default()
    };
    let facts = ClusterFacts::gather(&dst).await.unwrap();
    let plan = ferry_kube::plan(
        &ferry_kube::capture(&src, &CaptureSpec::new(&ns))
            .await
            .unwrap(),
        &spec,
        &facts,
    )
    .unwrap();

    the_default_policy_skips_what_b_has(&b, &dst, &plan, &ns).await;
    the_fail_policy_refuses_only_objects_of_others(&dst, &plan).await;
    the_update_policy_takes_the_source_version(&b, &dst, &plan, &ns).await;
    a_purge_removes_only_what_left_the_source((&a, &b), (&src, &dst), &spec, &facts, &ns).await;
}

/// Skip (the default): the namespace and the clashing ConfigMap are left as b has
/// them; what b lacks is created.
async fn the_default_policy_skips_what_b_has(
    b: &kube::Client,
    dst: &Cluster,
    plan: &ferry_kube::Plan,
    ns: &str,
) {
    let skip = ferry_kube::apply(dst, plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    assert!(
        matches!(outcome_of(&skip, "Namespace", ns), Outcome::Skipped { reason } if reason.contains("left as it is"))
    );
    assert!(
        matches!(outcome_of(&skip, "ConfigMap", "clash"), Outcome::Skipped { reason } if reason.contains("policy skip"))
    );
    assert_eq!(*outcome_of(&skip, "ConfigMap", "keep"), Outcome::Created);
    assert_eq!(
        must_get(b, "v1", "ConfigMap", Some(ns), "clash").await["data"]["from"],
        "b"
    );
}

/// Fail: the clash fails the apply, while what this migration made is not refused.
async fn the_fail_policy_refuses_only_objects_of_others(dst: &Cluster, plan: &ferry_kube::Plan) {
    let fail = ApplyOptions {
        existing: ExistingPolicy::Fail,
        ..Default::default()
    };
    let failed = ferry_kube::apply(dst, plan, &fail, |_| {}).await.unwrap();
    assert!(
        matches!(outcome_of(&failed, "ConfigMap", "clash"), Outcome::Failed { reason, .. } if reason.contains("policy fail"))
    );
    // Objects this migration made are its own: updated (here unchanged), never refused.
    assert_eq!(
        *outcome_of(&failed, "ConfigMap", "keep"),
        Outcome::Unchanged
    );
    assert!(!Summary::of(&failed).succeeded());
}

/// Update: the clashing ConfigMap becomes the source's, labelled with the migration.
async fn the_update_policy_takes_the_source_version(
    b: &kube::Client,
    dst: &Cluster,
    plan: &ferry_kube::Plan,
    ns: &str,
) {
    let update = ApplyOptions {
        existing: ExistingPolicy::Update,
        ..Default::default()
    };
    let updated = ferry_kube::apply(dst, plan, &update, |_| {}).await.unwrap();
    assert_eq!(
        *outcome_of(&updated, "ConfigMap", "clash"),
        Outcome::Updated
    );
    let clash = must_get(b, "v1", "ConfigMap", Some(ns), "clash").await;
    assert_eq!(clash["data"]["from"], "a");
    assert_eq!(clash["metadata"]["labels"][MIGRATION_LABEL], "p1");
}

/// "goes" leaves the source; a purge removes it from b, and only it (a dry run only
/// says it would).
async fn a_purge_removes_only_what_left_the_source(
    (a, b): (&kube::Client, &kube::Client),
    (src, dst): (&Cluster, &Cluster),
    spec: &TransformSpec,
    facts: &ClusterFacts,
    ns: &str,
) {
    let goes = api_for(
        a,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns}}),
    )
    .await;
    goes.delete("goes", &Default::default()).await.unwrap();
    let plan = ferry_kube::plan(
        &ferry_kube::capture(src, &CaptureSpec::new(ns))
            .await
            .unwrap(),
        spec,
        facts,
    )
    .unwrap();
    let dry = ApplyOptions {
        purge: true,
        dry_run: true,
        ..Default::default()
    };
    let would = ferry_kube::apply(dst, &plan, &dry, |_| {}).await.unwrap();
    assert_eq!(*outcome_of(&would, "ConfigMap", "goes"), Outcome::Deleted);
    assert!(
        get(b, "v1", "ConfigMap", Some(ns), "goes").await.is_some(),
        "a dry-run purge deleted"
    );
    let purge = ApplyOptions {
        purge: true,
        ..Default::default()
    };
    let purged = ferry_kube::apply(dst, &plan, &purge, |_| {}).await.unwrap();
    assert_eq!(*outcome_of(&purged, "ConfigMap", "goes"), Outcome::Deleted);
    assert_eq!(
        *outcome_of(&purged, "ConfigMap", "keep"),
        Outcome::Unchanged
    );
    assert!(get(b, "v1", "ConfigMap", Some(ns), "goes").await.is_none());
    assert!(
        get(b, "v1", "ConfigMap", Some(ns), "local").await.is_some(),
        "not ours: never purged"
    );
    assert!(get(b, "v1", "ConfigMap", Some(ns), "keep").await.is_some());
}

/// A user with too few rights gets every missing right at once, from their own client
/// (SelfSubjectAccessReview) and from an admin asking about them (SubjectAccessReview).
#[tokio::test]
async fn preflight_lists_every_missing_right() {
    let env = env().await;
    let (a, b) = clients(env).await;
    let ns = ferry_testenv::unique_name("rights");
    namespace(&a, &ns, json!({})).await;
    create(&a, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": ns}, "data": {"k": "v"}})).await;
    create(&a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": ns}, "stringData": {"k": "v"}})).await;
    create(&a, json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": ns},
        "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})).await;
    // On b, alice may do everything with ConfigMaps in the namespace, and nothing else.
    namespace(&b, &ns, json!({})).await;
    create(
        &b,
        json!({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "cm", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]}]}),
    )
    .await;
    create(&b, json!({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "alice-cm", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]})).await;

    let src = Cluster::new("a", a.clone());
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(&ns))
        .await
        .unwrap();
    let spec = TransformSpec {
        migration_id: "r".into(),
        ..Default::default()
    };
    let plan = ferry_kube::plan(&captured, &spec, &ClusterFacts::default()).unwrap();

    let alice = Cluster::new("b", env.client("b", "alice").await.unwrap());
    let forbidden = |problems: &[ferry_kube::Problem]| -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in problems {
            match &p.kind {
                ProblemKind::Forbidden { verb, resource, .. } => {
                    out.entry(resource.clone()).or_default().push(verb.clone())
                }
                ProblemKind::CannotVerify => {}
                other => panic!("unexpected problem {other:?}: {p}"),
            }
        }
        out
    };
    let own = ferry_kube::preflight(&alice, &plan).await.unwrap();
    let want: BTreeMap<String, Vec<String>> = [
        (
            "deployments".to_owned(),
            vec!["create".to_owned(), "get".to_owned(), "patch".to_owned()],
        ),
        (
            "secrets".to_owned(),
            vec!["create".to_owned(), "get".to_owned(), "patch".to_owned()],
        ),
    ]
    .into();
    assert_eq!(forbidden(&own), want, "{own:#?}");
    assert!(own.iter().all(|p| p.message.contains("cluster b")));

    let admin = Cluster::new("b", b.clone());
    let opts = PreflightOptions {
        subject: Some(Subject {
            user: "alice".into(),
            groups: vec!["system:authenticated".into()],
        }),
        purge: true,
    };
    let asked = ferry_kube::preflight_with(&admin, &plan, &opts)
        .await
        .unwrap();
    let got = forbidden(&asked);
    assert_eq!(
        got["deployments"],
        ["create", "delete", "get", "list", "patch"],
        "{asked:#?}"
    );
    assert!(!got.contains_key("configmaps"), "{asked:#?}");

    // An admin may do it all.
    assert!(
        ferry_kube::preflight(&admin, &plan)
            .await
            .unwrap()
            .is_empty()
    );

    // Given the rest of the rights, alice migrates into the namespace she may not read.
    create(&b, json!({"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "rest", "namespace": ns},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "patch"]},
                  {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "create", "patch"]}]})).await;
    create(&b, json!({"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": "alice-rest", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rest"},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "alice"}]})).await;
    eventually(
        "alice's new rights",
        std::time::Duration::from_secs(30),
        || async {
            ferry_kube::preflight(&alice, &plan)
                .await
                .unwrap()
                .iter()
                .all(|p| !p.is_error())
        },
    )
    .await;
    let results = ferry_kube::apply(&alice, &plan, &ApplyOptions::default(), |_| {})
        .await
        .unwrap();
    assert_no_failures(&results);
    assert!(
        matches!(outcome_of(&results, "Namespace", &ns), Outcome::Skipped { reason } if reason.contains("may not read"))
    );
    assert_eq!(*outcome_of(&results, "Deployment", "d"), Outcome::Created);
    assert_eq!(*outcome_of(&results, "Secret", "s"), Outcome::Created);
    must_get(&b, "apps/v1", "Deployment", Some(&ns), "d").await;
}

/// A label selector and include/exclude lists narrow the application; what they leave
/// out is reported.
#[tokio::test]
async fn selectors_and_type_lists_narrow_the_capture() {
    let env = env().await;
    let (a, _) = clients(env).await;
    let ns = ferry_testenv::unique_name("narrow");
    namespace(&a, &ns, json!({})).await;
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db-1", "db")] {
        create(&a, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}})).await;
        create(&a, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": ns, "labels": {"app": app}}})).await;
    }
    let src = Cluster::new("a", a.clone());
    let spec = CaptureSpec {
        label_selector: Some("app=web".into()),
        include_resources: vec![
            "configmaps".into(),
            "Secret".into(),
            "deployments.apps".into(),
        ],
        exclude_resources: vec!["secrets".into()],
        page_size: 1,
        ..CaptureSpec::new(&ns)
    };
    let c = ferry_kube::capture(&src, &spec).await.unwrap();
    let names: Vec<(String, String)> = c
        .objects
        .iter()
        .map(|o| {
            (
                o.resource.kind.clone(),
                o.object.metadata.name.clone().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            ("ConfigMap".to_owned(), "web-1".to_owned()),
            ("ConfigMap".to_owned(), "web-2".to_owned())
        ],
        "paged one by one"
    );
    assert_eq!(*exclusion(&c, "Secret", None), ExclusionReason::FilteredOut);
    assert_eq!(
        *exclusion(&c, "Service", None),
        ExclusionReason::FilteredOut
    );
    let listed: Vec<&str> = c.resources.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(listed, ["ConfigMap", "Deployment"]);

    let typo = CaptureSpec {
        include_resources: vec!["confgmaps".into()],
        ..CaptureSpec::new(&ns)
    };
    let err = ferry_kube::capture(&src, &typo).await.unwrap_err();
    assert!(err.to_string().contains("confgmaps"), "{err}");
    assert!(err.is_permanent());

    let err = ferry_kube::capture(&src, &CaptureSpec::new(format!("{ns}-nope")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ferry_kube::Error::NamespaceNotFound { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("cluster a"), "{err}");

    let system = ferry_kube::capture(&src, &CaptureSpec::new("kube-system"))
        .await
        .unwrap();
    assert!(system.objects.is_empty());
    assert_eq!(
        *exclusion(&system, "Namespace", Some("kube-system")),
        ExclusionReason::SystemNamespace
    );
}

/// A bench, not run by default (`cargo test -p ferry-kube --test migrate -- --ignored
/// thousand --nocapture`): 1,000 objects captured, planned and applied, then applied
/// again, with the time of each step.
#[tokio::test]
#[ignore = "a bench: run on purpose"]
async fn thousand_objects_bench() {
    use futures::StreamExt;
    use std::time::Instant;

    let env = env().await;
    let (a, b) = clients(env).await;
    let ns = ferry_testenv::unique_name("bench");
    namespace(&a, &ns, json!({})).await;
    let api = api_for(
        &a,
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns}}),
    )
    .await;
    let start = Instant::now();
    futures::stream::iter(0..1000)
        .map(|i| {
            let api = api.clone();
            async move {
                let cm: kube::api::DynamicObject = serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("cm-{i:04}")}, "data": {"i": i.to_string(), "pad": "x".repeat(512)}})).unwrap();
                api.create(&Default::default(), &cm).await.unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    println!("setup: 1000 ConfigMaps created in {:?}", start.elapsed());

    let src = Cluster::new("a", a.clone());
    let dst = Cluster::new("b", b.clone());
    let t = Instant::now();
    let captured = ferry_kube::capture(&src, &CaptureSpec::new(&ns))
        .await
        .unwrap();
    println!(
        "capture: {} objects in {:?}",
        captured.objects.len(),
        t.elapsed()
    );
    assert_eq!(captured.objects.len(), 1000);
    let t = Instant::now();
    let spec = TransformSpec {
        migration_id: "bench".into(),
        ..Default::default()
    };
    let plan = ferry_kube::plan(&captured, &spec, &ClusterFacts::default()).unwrap();
    println!("plan: {} objects in {:?}", plan.objects.len(), t.elapsed());
    for (qps, concurrency) in [(0.0, 16), (200.0, 16)] {
        let opts = ApplyOptions {
            qps,
            burst: 50,
            concurrency,
            ..Default::default()
        };
        let t = Instant::now();
        let results = ferry_kube::apply(&dst, &plan, &opts, |_| {}).await.unwrap();
        println!(
            "apply (qps {qps}, concurrency {concurrency}): {} in {:?}",
            Summary::of(&results),
            t.elapsed()
        );
        assert_no_failures(&results);
    }
}
