use super::*;
use crate::capture::{CapturedObject, NamespaceMetadata};
use crate::{ClusterFacts, Severity};

fn facts(zones: &[&str]) -> ClusterFacts {
    ClusterFacts {
        zones: zones.iter().map(|z| (*z).to_owned()).collect(),
        ..Default::default()
    }
}

#[test]
fn zones_same_then_mapped_then_any() {
    let map: BTreeMap<String, String> = [("src-a".into(), "dst-b".into())].into();
    let f = facts(&["dst-b", "dst-c", "src-a"]);
    assert_eq!(
        choose_zone(Some("src-a"), &map, &f).unwrap(),
        (Some("src-a".into()), None)
    );
    let f = facts(&["dst-b", "dst-c"]);
    assert_eq!(
        choose_zone(Some("src-a"), &map, &f).unwrap(),
        (Some("dst-b".into()), None)
    );
    let f = facts(&["dst-c", "dst-d"]);
    let (z, note) = choose_zone(Some("src-a"), &map, &f).unwrap();
    assert_eq!(z.as_deref(), Some("dst-c"));
    assert!(note.unwrap().contains("no workers there"));
    let (z, note) = choose_zone(Some("src-x"), &map, &f).unwrap();
    assert_eq!(z.as_deref(), Some("dst-c"));
    assert!(note.unwrap().contains("add a zone mapping"));
    assert_eq!(choose_zone(None, &map, &f).unwrap(), (None, None));
    let (z, note) = choose_zone(Some("src-a"), &map, &facts(&[])).unwrap();
    assert_eq!(z, None);
    assert!(note.is_some());
}

fn captured(objects: Vec<(ApiResource, Value)>, volumes: Vec<CapturedVolume>) -> Captured {
    Captured {
        cluster: "a".into(),
        namespace: "shop".into(),
        label_selector: None,
        namespace_metadata: NamespaceMetadata {
            labels: [("team".into(), "blue".into())].into(),
            annotations: BTreeMap::new(),
        },
        objects: objects
            .into_iter()
            .map(|(resource, v)| CapturedObject {
                resource,
                object: serde_json::from_value(v).unwrap(),
            })
            .collect(),
        resources: Vec::new(),
        excluded: Vec::new(),
        dependencies: Vec::new(),
        volumes,
        facts: ClusterFacts::default(),
    }
}

/// A Deployment of three replicas, a CronJob, and a claim bound to a static volume in
/// zone src-z: what the renaming test plans.
fn renamed_application() -> Captured {
    captured(
        vec![
            (
                known::deployment(),
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": "web", "namespace": "shop", "uid": "u"},
                       "spec": {"replicas": 3, "template": {"spec": {"containers": []}}}}),
            ),
            (
                known::persistent_volume_claim(),
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": "data", "namespace": "shop",
                                    "annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
                       "spec": {"storageClassName": "slow", "volumeName": "pvc-123",
                                "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                       "status": {"phase": "Bound"}}),
            ),
            (
                known::cron_job(),
                json!({"apiVersion": "batch/v1", "kind": "CronJob",
                       "metadata": {"name": "nightly", "namespace": "shop"},
                       "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {"spec": {}}}}}}),
            ),
        ],
        vec![CapturedVolume {
            pvc: "data".into(),
            pv: Some("pvc-123".into()),
            storage_class: Some("slow".into()),
            capacity: Some("2Gi".into()),
            access_modes: vec!["ReadWriteOnce".into()],
            volume_mode: Some("Filesystem".into()),
            zone: Some("src-z".into()),
        }],
    )
}

/// Into shop-copy, class slow to fast, zone src-z to dst-z, scaled to zero, with the
/// volume restored as a host path and a patch on Deployments.
fn rename_spec() -> TransformSpec {
    TransformSpec {
        migration_id: "m1".into(),
        target_namespace: Some("shop-copy".into()),
        storage_classes: [("slow".into(), "fast".into())].into(),
        zones: [("src-z".into(), "dst-z".into())].into(),
        scale_to_zero: true,
        restored_volumes: [(
            "data".into(),
            RestoredVolume {
                pv_name: "restored-data".into(),
                source: json!({"hostPath": {"path": "/tmp/x"}})
                    .as_object()
                    .unwrap()
                    .clone(),
                reclaim_policy: None,
            },
        )]
        .into(),
        patches: vec![PatchRule {
            resources: vec!["deployments".into()],
            names: vec![],
            patch: serde_json::from_value(json!([
                {"op": "add", "path": "/metadata/labels", "value": {"env": "dr"}}
            ]))
            .unwrap(),
        }],
        ..Default::default()
    }
}

#[test]
fn plans_a_renamed_scaled_down_application_with_a_static_volume() {
    let c = renamed_application();
    let spec = rename_spec();
    let p = plan(&c, &spec, &facts(&["dst-z"])).unwrap();
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(p.namespace, "shop-copy");
    let kinds: Vec<&str> = p.objects.iter().map(|o| o.resource.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Namespace",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "Deployment",
            "CronJob"
        ]
    );
    let get = |kind: &str| {
        let o = p.objects.iter().find(|o| o.resource.kind == kind).unwrap();
        serde_json::to_value(&o.object).unwrap()
    };
    let ns = get("Namespace");
    assert_eq!(ns["metadata"]["name"], "shop-copy");
    assert_eq!(ns["metadata"]["labels"]["team"], "blue");
    assert_eq!(ns["metadata"]["labels"][MIGRATION_LABEL], "m1");

    let d = get("Deployment");
    assert_eq!(d["metadata"]["namespace"], "shop-copy");
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["metadata"]["annotations"][REPLICAS_ANNOTATION], "3");
    // The patch replaced the labels; the migration label is put back after it.
    assert_eq!(
        d["metadata"]["labels"],
        json!({"env": "dr", MIGRATION_LABEL: "m1"})
    );
    assert!(d["metadata"].get("uid").is_none());

    let cj = get("CronJob");
    assert_eq!(cj["spec"]["suspend"], true);
    assert_eq!(cj["metadata"]["annotations"][SUSPEND_ANNOTATION], "false");

    let pvc = get("PersistentVolumeClaim");
    assert_eq!(pvc["spec"]["volumeName"], "restored-data");
    assert_eq!(pvc["spec"]["storageClassName"], "fast");
    assert!(pvc.get("status").is_none());
    assert!(pvc["metadata"].get("annotations").is_none());

    let pv = get("PersistentVolume");
    assert_eq!(pv["spec"]["hostPath"]["path"], "/tmp/x");
    assert_eq!(pv["spec"]["capacity"]["storage"], "2Gi");
    assert_eq!(pv["spec"]["storageClassName"], "fast");
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["claimRef"]["namespace"], "shop-copy");
    assert_eq!(
        pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"],
        json!(["dst-z"])
    );
    assert_eq!(p.volumes[0].zone.as_deref(), Some("dst-z"));
    assert_eq!(p.dependencies.len(), 1);
    assert_eq!(p.dependencies[0].name, "fast");
}

#[test]
fn keep_suspend_leaves_cron_jobs_as_on_the_source_and_still_scales_workloads() {
    let cron = |name: &str, suspend: bool| {
        (
            known::cron_job(),
            json!({"apiVersion": "batch/v1", "kind": "CronJob",
                   "metadata": {"name": name, "namespace": "shop"},
                   "spec": {"schedule": "0 0 * * *", "suspend": suspend}}),
        )
    };
    let web = (
        known::deployment(),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "shop"}, "spec": {"replicas": 2}}),
    );
    let c = captured(
        vec![web, cron("nightly", false), cron("paused", true)],
        vec![],
    );
    let spec = TransformSpec {
        migration_id: "m1".into(),
        scale_to_zero: true,
        keep_suspend: true,
        ..Default::default()
    };
    let p = plan(&c, &spec, &facts(&[])).unwrap();
    let get = |name: &str| {
        let o = p.objects.iter().find(|o| o.object_ref().name == name);
        serde_json::to_value(&o.unwrap().object).unwrap()
    };
    for (name, suspend) in [("nightly", false), ("paused", true)] {
        let cj = get(name);
        assert_eq!(cj["spec"]["suspend"], suspend, "{cj}");
        assert!(cj["metadata"].get("annotations").is_none(), "{cj}");
    }
    assert_eq!(get("web")["spec"]["replicas"], 0);
}

#[test]
fn a_failing_patch_is_a_problem_of_that_object() {
    let c = captured(
        vec![(
            known::deployment(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "shop"}, "spec": {}}),
        )],
        vec![],
    );
    let spec = TransformSpec {
        migration_id: "m1".into(),
        patches: vec![PatchRule {
            resources: vec![],
            names: vec!["web".into()],
            patch: serde_json::from_value(json!([
                {"op": "test", "path": "/metadata/name", "value": "other"}
            ]))
            .unwrap(),
        }],
        ..Default::default()
    };
    let p = plan(&c, &spec, &facts(&[])).unwrap();
    assert_eq!(p.problems.len(), 1);
    assert_eq!(p.problems[0].severity, Severity::Error);
    assert_eq!(p.problems[0].object.as_ref().unwrap().name, "web");
    assert_eq!(p.objects.len(), 1, "only the namespace is left");
}

#[test]
fn invalid_ids_and_namespaces_are_refused() {
    let c = captured(vec![], vec![]);
    for (id, ns) in [
        ("", None),
        ("-x", None),
        ("ok", Some("Bad_NS")),
        ("ok", Some("")),
    ] {
        let spec = TransformSpec {
            migration_id: id.into(),
            target_namespace: ns.map(str::to_owned),
            ..Default::default()
        };
        assert!(matches!(
            plan(&c, &spec, &facts(&[])),
            Err(Error::InvalidSpec { .. })
        ));
    }
}
