use super::*;
use serde_json::json;

fn obj(ar: ApiResource, v: Value) -> CapturedObject {
    CapturedObject {
        resource: ar,
        object: serde_json::from_value(v).unwrap(),
    }
}

fn core(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

#[test]
fn exclusions_say_why() {
    let owner_ref = |uid: &str, kind: &str, name: &str| json!([{"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid}]);
    let all = vec![
        obj(
            known::deployment(),
            json!({"metadata": {"name": "web", "namespace": "n", "uid": "d1"}}),
        ),
        obj(
            known::replica_set(),
            json!({"metadata": {"name": "web-1", "namespace": "n", "uid": "r1", "ownerReferences": owner_ref("d1", "Deployment", "web")}}),
        ),
        obj(
            core("Pod", "pods"),
            json!({"metadata": {"name": "web-1-x", "namespace": "n", "uid": "p1", "ownerReferences": owner_ref("r1", "ReplicaSet", "web-1")}}),
        ),
        obj(
            core("Pod", "pods"),
            json!({"metadata": {"name": "orphan", "namespace": "n", "uid": "p2", "ownerReferences": owner_ref("gone", "ReplicaSet", "old")}}),
        ),
        obj(
            core("PersistentVolumeClaim", "persistentvolumeclaims"),
            json!({"metadata": {"name": "data-db-0", "namespace": "n", "uid": "c1", "ownerReferences": owner_ref("d1", "StatefulSet", "db")}}),
        ),
        obj(
            core("ServiceAccount", "serviceaccounts"),
            json!({"metadata": {"name": "app", "namespace": "n", "uid": "s1"}}),
        ),
        obj(
            core("Secret", "secrets"),
            json!({"metadata": {"name": "app-token", "namespace": "n", "uid": "s2", "annotations": {SA_NAME_ANNOTATION: "app"}}, "type": SA_TOKEN_TYPE}),
        ),
        obj(
            core("Secret", "secrets"),
            json!({"metadata": {"name": "tls", "namespace": "n", "uid": "s3"}, "type": "kubernetes.io/tls"}),
        ),
        obj(
            core("ConfigMap", "configmaps"),
            json!({"metadata": {"name": ROOT_CA_CONFIGMAP, "namespace": "n", "uid": "m1"}}),
        ),
        obj(
            core("ConfigMap", "configmaps"),
            json!({"metadata": {"name": "going", "namespace": "n", "uid": "m2", "deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        ),
    ];
    let (kept, excluded) = classify(all);
    let kept: Vec<String> = kept.iter().map(|o| o.object.name_any()).collect();
    assert_eq!(kept, vec!["web", "orphan", "data-db-0", "tls"]);
    let reasons: BTreeMap<String, ExclusionReason> = excluded
        .into_iter()
        .map(|e| (e.name.unwrap(), e.reason))
        .collect();
    assert!(matches!(&reasons["web-1"], ExclusionReason::OwnedBy { owner } if owner.name == "web"));
    assert!(
        matches!(&reasons["web-1-x"], ExclusionReason::OwnedBy { owner } if owner.kind == "ReplicaSet")
    );
    assert_eq!(reasons["app"], ExclusionReason::ServiceAccount);
    assert_eq!(
        reasons["app-token"],
        ExclusionReason::ServiceAccountToken {
            service_account: "app".into()
        }
    );
    assert_eq!(reasons[ROOT_CA_CONFIGMAP], ExclusionReason::RootCaConfigMap);
    assert_eq!(reasons["going"], ExclusionReason::Terminating);
}

#[test]
fn pv_zone_from_affinity_then_labels() {
    let pv: DynamicObject = serde_json::from_value(json!({
        "metadata": {"name": "pv", "labels": {ZONE_LABEL: "from-label"}},
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": ZONE_LABEL, "operator": "In", "values": ["z1"]}]}
        ]}}}
    }))
    .unwrap();
    assert_eq!(pv_zone(&pv).as_deref(), Some("z1"));
    let pv: DynamicObject = serde_json::from_value(json!({
        "metadata": {"name": "pv", "labels": {ZONE_LABEL: "from-label"}}
    }))
    .unwrap();
    assert_eq!(pv_zone(&pv).as_deref(), Some("from-label"));
}
