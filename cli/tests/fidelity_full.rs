//! A whole application arrives as it left, field for field: one namespace built from the
//! common stateful patterns (a StatefulSet with claim templates, a Deployment with its
//! Services, Ingress, HorizontalPodAutoscaler and PodDisruptionBudget, a CronJob, a
//! NetworkPolicy, RBAC, a quota and limits, Secrets of every common type, ConfigMaps and
//! custom resources) is migrated through the pair `a-to-b`, and then every object on b is
//! compared with its original on a after removing only what must differ between two
//! clusters (see [`normalise`]). The environment is API-only: nothing runs, so objects,
//! not pods, are compared.

// Test code: a failed setup step is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use common::control::{eventually, kubectl, kubectl_ok, migrate, paired};

/// An object as both clusters name it: API group, kind, name (all in one namespace).
type Key = (String, String, String);

/// Objects by [`Key`].
type Objects = BTreeMap<Key, Value>;

/// The application's own type, with a structural schema (and a default), a status
/// subresource and a printer column: what an operator's CRD usually has.
const STOCK_RULE_CRD: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: stockrules.__GROUP__}
spec:
  group: __GROUP__
  scope: Namespaced
  names: {plural: stockrules, singular: stockrule, kind: StockRule}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: SKU, type: string, jsonPath: .spec.sku}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              sku: {type: string}
              minimum: {type: integer, default: 1}
              warehouses: {type: array, items: {type: string}}
              reorder: {type: object, x-kubernetes-preserve-unknown-fields: true}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
"#;

/// What the application needs of each cluster and Ferry never moves: its StorageClass,
/// IngressClass and PriorityClass, present on both.
const CLUSTER_SCOPED: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: __NS__-fast}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: __NS__-nginx}
spec: {controller: example.com/ingress-nginx}
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: __NS__-critical}
value: 100000
description: databases first
"#;

/// The database: a headless Service and a StatefulSet with two claim templates (one
/// with a class, one with the destination's default), and its PodDisruptionBudget.
const DATABASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: __NS__
  labels: {team: shop, environment: test}
  annotations: {example.com/owner: shop-team}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: __NS__, labels: {app: db}}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: db}
  ports: [{name: pg, port: 5432, targetPort: pg}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: __NS__, labels: {app: db}, annotations: {example.com/tier: data}}
spec:
  replicas: 2
  serviceName: db
  podManagementPolicy: Parallel
  updateStrategy: {type: RollingUpdate, rollingUpdate: {partition: 0}}
  persistentVolumeClaimRetentionPolicy: {whenDeleted: Retain, whenScaled: Delete}
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}, annotations: {example.com/scrape: "true"}}
    spec:
      priorityClassName: __NS__-critical
      terminationGracePeriodSeconds: 60
      securityContext: {fsGroup: 999, runAsNonRoot: true, runAsUser: 999}
      containers:
      - name: db
        image: example.com/db:15
        args: [--data, /var/lib/db]
        ports: [{name: pg, containerPort: 5432}]
        env:
        - {name: DB_PASSWORD, valueFrom: {secretKeyRef: {name: db-credentials, key: password}}}
        - {name: DB_MODE, valueFrom: {configMapKeyRef: {name: db-config, key: mode}}}
        resources: {requests: {cpu: 250m, memory: 256Mi}, limits: {cpu: "1", memory: 1Gi}}
        readinessProbe: {tcpSocket: {port: pg}, periodSeconds: 5}
        volumeMounts:
        - {name: data, mountPath: /var/lib/db}
        - {name: wal, mountPath: /var/lib/wal}
        - {name: config, mountPath: /etc/db}
      volumes:
      - name: config
        configMap: {name: db-config, items: [{key: db.conf, path: db.conf}]}
  volumeClaimTemplates:
  - metadata: {name: data, labels: {app: db}}
    spec:
      accessModes: [ReadWriteOnce]
      storageClassName: __NS__-fast
      resources: {requests: {storage: 10Gi}}
  - metadata: {name: wal}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 2Gi}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: db, namespace: __NS__}
spec:
  maxUnavailable: 1
  selector: {matchLabels: {app: db}}
"#;

/// The web tier: a Deployment, a ClusterIP and a NodePort Service, an Ingress, an HPA
/// and a PodDisruptionBudget.
const WEB: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: __NS__, labels: {app: web, tier: frontend}, annotations: {example.com/team: storefront}}
spec:
  replicas: 3
  revisionHistoryLimit: 5
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, tier: frontend}}
    spec:
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app: web}}}
      tolerations: [{key: dedicated, operator: Equal, value: web, effect: NoSchedule}]
      imagePullSecrets: [{name: registry}]
      containers:
      - name: web
        image: example.com/web:2.1
        ports: [{name: http, containerPort: 8080}]
        env: [{name: DB_HOST, value: db-0.db.__NS__.svc.cluster.local}]
        envFrom: [{configMapRef: {name: web-config}}]
        resources: {requests: {cpu: 100m, memory: 128Mi}}
        livenessProbe: {httpGet: {path: /healthz, port: http}, initialDelaySeconds: 10}
        volumeMounts:
        - {name: tls, mountPath: /etc/tls, readOnly: true}
        - {name: cache, mountPath: /cache}
      volumes:
      - {name: tls, secret: {secretName: web-tls, defaultMode: 256}}
      - {name: cache, emptyDir: {sizeLimit: 1Gi}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: __NS__, labels: {app: web}}
spec:
  type: ClusterIP
  sessionAffinity: ClientIP
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: web-nodeport, namespace: __NS__, labels: {app: web}}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}, {name: admin, port: 9090, targetPort: 9090}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: __NS__
  annotations: {nginx.ingress.kubernetes.io/proxy-body-size: 8m}
spec:
  ingressClassName: __NS__-nginx
  tls: [{hosts: [shop.example.com], secretName: web-tls}]
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {name: http}}}}
      - {path: /admin, pathType: Exact, backend: {service: {name: web-nodeport, port: {number: 9090}}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web, namespace: __NS__}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 3
  maxReplicas: 10
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}
  behavior:
    scaleDown:
      stabilizationWindowSeconds: 300
      policies: [{type: Pods, value: 1, periodSeconds: 60}]
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: web, namespace: __NS__}
spec:
  minAvailable: 2
  unhealthyPodEvictionPolicy: AlwaysAllow
  selector: {matchLabels: {app: web}}
"#;

/// A nightly backup CronJob, a NetworkPolicy, RBAC (a Role and bindings of it and of a
/// ClusterRole), a ResourceQuota and a LimitRange. The quota limits only what pods use:
/// with nothing computing its usage here, the API server would refuse every other
/// counted object it names.
const OPERATIONS: &str = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: backup, namespace: __NS__, labels: {app: backup}}
spec:
  schedule: "15 2 * * *"
  timeZone: Etc/UTC
  concurrencyPolicy: Forbid
  startingDeadlineSeconds: 600
  successfulJobsHistoryLimit: 2
  failedJobsHistoryLimit: 5
  jobTemplate:
    metadata: {labels: {app: backup}}
    spec:
      backoffLimit: 2
      activeDeadlineSeconds: 3600
      ttlSecondsAfterFinished: 86400
      template:
        metadata: {labels: {app: backup}}
        spec:
          restartPolicy: OnFailure
          containers:
          - name: backup
            image: example.com/backup:1
            command: [sh, -c, "backup --to s3://backups/shop"]
            envFrom: [{secretRef: {name: backup-credentials}}]
            volumeMounts: [{name: key, mountPath: /root/.ssh, readOnly: true}]
          volumes: [{name: key, secret: {secretName: deploy-key}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: __NS__}
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from:
    - podSelector: {matchLabels: {app: web}}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: __NS__}}
      podSelector: {matchLabels: {app: backup}}
    ports: [{protocol: TCP, port: 5432}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.0.1.0/24]}}]
    ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 443, endPort: 445}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-reader, namespace: __NS__}
rules:
- {apiGroups: [""], resources: [configmaps], resourceNames: [web-config], verbs: [get, watch]}
- {apiGroups: [apps], resources: [statefulsets, statefulsets/scale], verbs: [get, list, patch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: config-reader, namespace: __NS__}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}
subjects:
- {kind: ServiceAccount, name: default, namespace: __NS__}
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: shop-operators}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: __NS__}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: reporter}]
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: compute, namespace: __NS__}
spec:
  hard: {requests.cpu: "8", requests.memory: 16Gi, limits.cpu: "16", limits.memory: 32Gi, pods: "50"}
---
apiVersion: v1
kind: LimitRange
metadata: {name: defaults, namespace: __NS__}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 512Mi}
    defaultRequest: {cpu: 100m, memory: 128Mi}
    max: {cpu: "2", memory: 2Gi}
  - type: PersistentVolumeClaim
    min: {storage: 1Gi}
    max: {storage: 50Gi}
"#;

/// A Secret of each common type (one immutable) and ConfigMaps (one with binary data,
/// one immutable).
const CONFIGURATION: &str = r#"
apiVersion: v1
kind: Secret
metadata: {name: db-credentials, namespace: __NS__, labels: {app: db}}
type: Opaque
data: {binary: AAECAwQF/w==}
stringData: {username: shop, password: s3cr3t-p4ss}
---
apiVersion: v1
kind: Secret
metadata: {name: web-tls, namespace: __NS__}
type: kubernetes.io/tls
stringData:
  tls.crt: |
    -----BEGIN CERTIFICATE-----
    MIIBszCCAVmgAwIBAgIUZmVycnktZmlkZWxpdHktdGVzdDAKBggqhkjOPQQDAjAA
    -----END CERTIFICATE-----
  tls.key: |
    -----BEGIN EC PRIVATE KEY-----
    MHcCAQEEIGZlcnJ5LWZpZGVsaXR5LXRlc3Qta2V5LW5vdC1hLXJlYWwtb25l
    -----END EC PRIVATE KEY-----
---
apiVersion: v1
kind: Secret
metadata: {name: registry, namespace: __NS__}
type: kubernetes.io/dockerconfigjson
stringData:
  .dockerconfigjson: '{"auths":{"registry.example.com":{"username":"shop","password":"pull","auth":"c2hvcDpwdWxs"}}}'
---
apiVersion: v1
kind: Secret
metadata: {name: backup-credentials, namespace: __NS__}
type: kubernetes.io/basic-auth
stringData: {username: backup, password: b4ckup}
---
apiVersion: v1
kind: Secret
metadata: {name: deploy-key, namespace: __NS__, annotations: {example.com/rotated: "2025-01-01"}}
type: kubernetes.io/ssh-auth
immutable: true
stringData:
  ssh-privatekey: |
    -----BEGIN OPENSSH PRIVATE KEY-----
    b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
    -----END OPENSSH PRIVATE KEY-----
---
apiVersion: v1
kind: ConfigMap
metadata: {name: db-config, namespace: __NS__, labels: {app: db}}
data:
  mode: replica
  db.conf: |
    max_connections = 200
    shared_buffers = 128MB
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: __NS__}
data: {GREETING: hello, FEATURES: "search,checkout"}
binaryData: {logo.png: iVBORw0KGgoAAAANSUhEUgAAAAE=}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: release, namespace: __NS__}
immutable: true
data: {version: 2.1.0}
"#;

/// Two StockRules: one with every field, one that relies on the schema's default.
const CUSTOM_RESOURCES: &str = r#"
apiVersion: __GROUP__/v1
kind: StockRule
metadata: {name: beans, namespace: __NS__, labels: {category: coffee}, annotations: {example.com/note: seasonal}}
spec:
  sku: BEAN-1
  minimum: 40
  warehouses: [berlin, lyon]
  reorder: {supplier: acme, leadTimeDays: 5, rules: [{when: low, amount: 100}]}
---
apiVersion: __GROUP__/v1
kind: StockRule
metadata: {name: filters, namespace: __NS__}
spec: {sku: FILTER-2}
"#;

/// A token Secret of the default ServiceAccount, filled by the token controller: Ferry
/// documents never moving it (a token is only valid on its own cluster).
const SERVICE_ACCOUNT_TOKEN: &str = r#"
apiVersion: v1
kind: Secret
metadata:
  name: default-token
  namespace: __NS__
  annotations: {kubernetes.io/service-account.name: default}
type: kubernetes.io/service-account-token
"#;

/// Every (group, kind) the application above has, to know the comparison covers them.
const EXPECTED_KINDS: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("apps", "StatefulSet"),
    ("apps", "Deployment"),
    ("", "Service"),
    ("networking.k8s.io", "Ingress"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("policy", "PodDisruptionBudget"),
    ("batch", "CronJob"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("", "Secret"),
    ("", "ConfigMap"),
];

fn with_names(yaml: &str, ns: &str, group: &str) -> String {
    yaml.replace("__NS__", ns).replace("__GROUP__", group)
}

fn apply_on(kc: &Path, context: &str, yaml: &str) {
    kubectl(kc, context, &["apply", "-f", "-"], Some(yaml));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_object_of_a_stateful_application_arrives_field_for_field() {
    // The application's own type, installed on both clusters before the pair is made.
    let env = ferry_testenv::shared().await.expect("test environment");
    let group = format!("{}.example.com", ferry_testenv::unique_name("stock"));
    for side in ["a", "b"] {
        install_stock_rules(env.kubeconfig(), side, &group);
    }
    let p = paired("full", 35).await;
    let (kc, ns) = (&p.kc, &p.ns);
    for side in ["a", "b"] {
        apply_on(kc, side, &with_names(CLUSTER_SCOPED, ns, &group));
    }
    deploy_on_a(kc, ns, &group);
    let types = namespaced_types(kc);
    // Without --quiesce a migration only reads its source: a must stay as it is now.
    let (before, excluded_before) = split_moved(objects_on(kc, "a", ns, &types));

    let migrated = migrate(kc, ns, "a-to-b", &["-o", "json"]);
    assert_eq!(migrated.code, Some(0), "{migrated:#?}");
    let report = migrated.json();
    // Pre-flight checked every cluster-scoped object the application names on b (the
    // StorageClass, IngressClass, PriorityClass and ClusterRole it refers to): the
    // pair's credential may read each kind, so nothing was left to a warning.
    let warnings: Vec<&str> = report["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w["message"].as_str().unwrap_or_default())
        .collect();
    assert!(warnings.is_empty(), "report warnings: {warnings:#?}");

    let (on_a, excluded_after) = split_moved(objects_on(kc, "a", ns, &types));
    let (on_b, _) = split_moved(objects_on(kc, "b", ns, &types));
    assert_covers_the_application(&on_a, &group);
    // Controllers on a go on recording Events while the migration runs; one recorded
    // after the capture cannot be in the report, so only what was there before counts.
    let excluded_on_a: BTreeMap<Key, &str> = excluded_before
        .into_iter()
        .filter(|(key, _)| excluded_after.contains_key(key))
        .collect();
    // Every problem of every check at once: one run shows all there is to fix.
    let mut problems = report_problems(&report, &on_a, &excluded_on_a);
    problems.extend(untouched_problems(&before, &on_a));
    problems.extend(set_problems(&on_a, &on_b));
    problems.extend(field_problems(&on_a, &on_b));
    assert!(
        problems.is_empty(),
        "the application on b is not the one on a (a= source, b= destination):\n{}",
        problems.join("\n")
    );
}

/// The CustomResourceDefinition of StockRules in `group`, established on `context`.
fn install_stock_rules(kc: &Path, context: &str, group: &str) {
    apply_on(kc, context, &with_names(STOCK_RULE_CRD, "", group));
    let crd = format!("crd/stockrules.{group}");
    let wait = ["wait", "--for=condition=Established", &crd, "--timeout=60s"];
    kubectl(kc, context, &wait, None);
}

/// The whole application in `ns` on a, as `kubectl apply` (what users do) writes it.
fn deploy_on_a(kc: &Path, ns: &str, group: &str) {
    let app = [DATABASE, WEB, OPERATIONS, CONFIGURATION, CUSTOM_RESOURCES].join("---\n");
    apply_on(kc, "a", &with_names(&app, ns, group));
    // The token controller deletes a token Secret whose ServiceAccount does not exist
    // yet, and the default one appears a moment after its namespace.
    eventually("the default ServiceAccount on a", || {
        kubectl_ok(kc, "a", &["-n", ns, "get", "serviceaccount", "default"])
    });
    apply_on(kc, "a", &with_names(SERVICE_ACCOUNT_TOKEN, ns, group));
    eventually("the token controller to fill default-token", || {
        let token = kubectl(
            kc,
            "a",
            &[
                "-n",
                ns,
                "get",
                "secret/default-token",
                "-o",
                "jsonpath={.data.token}",
            ],
            None,
        );
        !token.is_empty()
    });
}

/// Every namespaced type the cluster lists (the same on a and b: one version of
/// Kubernetes, the same CRDs), as kubectl names them.
fn namespaced_types(kc: &Path) -> Vec<String> {
    let args = [
        "api-resources",
        "--namespaced=true",
        "--verbs=list",
        "-o",
        "name",
    ];
    kubectl(kc, "a", &args, None)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every object of `ns` on `context` (of `types`) and the Namespace itself, by key.
fn objects_on(kc: &Path, context: &str, ns: &str, types: &[String]) -> Objects {
    let list = kubectl(
        kc,
        context,
        &["-n", ns, "get", &types.join(","), "-o", "json"],
        None,
    );
    let list: Value = serde_json::from_str(&list).unwrap();
    let namespace = kubectl(kc, context, &["get", "namespace", ns, "-o", "json"], None);
    let namespace: Value = serde_json::from_str(&namespace).unwrap();
    let mut out = Objects::new();
    for item in list["items"].as_array().unwrap().iter().chain([&namespace]) {
        let key = key_of(
            &item["apiVersion"],
            &item["kind"],
            &item["metadata"]["name"],
        );
        // The core and events.k8s.io groups both list Events; the key tells them apart.
        assert!(
            out.insert(key.clone(), item.clone()).is_none(),
            "{} listed twice on {context}",
            shown_key(&key)
        );
    }
    out
}

fn key_of(api_version: &Value, kind: &Value, name: &Value) -> Key {
    let api_version = api_version.as_str().unwrap();
    let group = api_version
        .rsplit_once('/')
        .map_or("", |(group, _)| group)
        .to_owned();
    (
        group,
        kind.as_str().unwrap().to_owned(),
        name.as_str().unwrap().to_owned(),
    )
}

/// Why Ferry never moves an object, as it documents (docs/architecture.md, the report's
/// exclusion reasons); None for what it moves.
fn never_moved(key: &Key, v: &Value) -> Option<&'static str> {
    let (group, kind, name) = (key.0.as_str(), key.1.as_str(), key.2.as_str());
    match (group, kind) {
        ("", "ServiceAccount") => return Some("ServiceAccounts are never moved"),
        ("", "Secret") if v["type"] == "kubernetes.io/service-account-token" => {
            return Some("a ServiceAccount's token is only valid on its cluster");
        }
        ("", "ConfigMap") if name == "kube-root-ca.crt" => {
            return Some("each cluster publishes its own root CA");
        }
        ("", "Event") | ("events.k8s.io", "Event") => return Some("events are history"),
        ("", "Endpoints") | ("discovery.k8s.io", "EndpointSlice") => {
            return Some("endpoints are computed on every cluster");
        }
        ("ferry.dev", _) => return Some("Ferry's own objects"),
        // A claim is moved even when its StatefulSet owns it.
        ("", "PersistentVolumeClaim") => return None,
        _ => {}
    }
    let owned = v["metadata"]["ownerReferences"]
        .as_array()
        .is_some_and(|o| !o.is_empty());
    owned.then_some("owned: its owner's controller remakes it")
}

/// The objects Ferry moves, and the others with the reason it gives for leaving them.
fn split_moved(all: Objects) -> (Objects, BTreeMap<Key, &'static str>) {
    let mut moved = Objects::new();
    let mut excluded = BTreeMap::new();
    for (key, v) in all {
        match never_moved(&key, &v) {
            Some(reason) => {
                excluded.insert(key, reason);
            }
            None => {
                moved.insert(key, v);
            }
        }
    }
    (moved, excluded)
}

/// The comparison is only worth as much as what it compares: every kind of the
/// application, and both custom resources, are among the objects on a.
fn assert_covers_the_application(on_a: &Objects, group: &str) {
    let kinds: BTreeSet<(&str, &str)> = on_a
        .keys()
        .map(|(g, k, _)| (g.as_str(), k.as_str()))
        .collect();
    for kind in EXPECTED_KINDS.iter().copied().chain([(group, "StockRule")]) {
        assert!(kinds.contains(&kind), "no {kind:?} on a among {kinds:?}");
    }
    let secrets = on_a
        .keys()
        .filter(|(g, k, _)| g.is_empty() && k == "Secret");
    assert_eq!(
        secrets.count(),
        5,
        "one Secret of each type: {:?}",
        on_a.keys()
    );
}

/// The report's objects with `action`, by key; a whole type left out unlisted has no
/// name, and no key.
fn reported(report: &Value, action: &str) -> BTreeSet<Key> {
    report["objects"]
        .as_array()
        .unwrap_or_else(|| panic!("no objects in the report: {report:#}"))
        .iter()
        .filter(|o| o["action"] == action && o["object"]["name"].is_string())
        .map(|o| {
            let o = &o["object"];
            key_of(&o["apiVersion"], &o["kind"], &o["name"])
        })
        .collect()
}

/// Where Ferry's report disagrees with what is on a: it must say it created exactly the
/// objects it moves, and left out, naming each, the others.
fn report_problems(report: &Value, on_a: &Objects, excluded: &BTreeMap<Key, &str>) -> Vec<String> {
    let created = reported(report, "OBJECT_ACTION_CREATED");
    let moved: BTreeSet<Key> = on_a.keys().cloned().collect();
    let mut problems: Vec<String> = created
        .difference(&moved)
        .map(|k| format!("reported created, not an object of a: {}", shown_key(k)))
        .chain(
            moved
                .difference(&created)
                .map(|k| format!("an object of a not reported created: {}", shown_key(k))),
        )
        .collect();
    let reported_excluded = reported(report, "OBJECT_ACTION_EXCLUDED");
    for (key, reason) in excluded {
        if !reported_excluded.contains(key) {
            problems.push(format!(
                "{} ({reason}) is not reported as excluded",
                shown_key(key)
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(format!("the report: {report:#}"));
    }
    problems
}

/// Where a migration changed its source: each object Ferry moves is on a as it was
/// before, to the last field (resourceVersion included: nothing may write it).
fn untouched_problems(before: &Objects, after: &Objects) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, was) in before {
        let Some(is) = after.get(key) else {
            problems.push(format!("gone from a: {}", shown_key(key)));
            continue;
        };
        let mut diffs = Vec::new();
        differences(was, is, "", &mut diffs);
        if !diffs.is_empty() {
            problems.push(format!(
                "{} changed on a by the migration (a= before, b= after):\n{}",
                shown_key(key),
                diffs.join("\n")
            ));
        }
    }
    problems
}

/// `Kind.group/name` (`Kind/name` for the core group), as kubectl names an object.
fn shown_key((group, kind, name): &Key) -> String {
    if group.is_empty() {
        format!("{kind}/{name}")
    } else {
        format!("{kind}.{group}/{name}")
    }
}

/// Where b's objects are not those Ferry moved: nothing may be missing or added (b's
/// own default ServiceAccount and root CA are among what is never moved, on both sides).
fn set_problems(on_a: &Objects, on_b: &Objects) -> Vec<String> {
    let missing = on_a
        .keys()
        .filter(|k| !on_b.contains_key(*k))
        .map(|k| format!("missing on b: {}", shown_key(k)));
    let extra = on_b
        .keys()
        .filter(|k| !on_a.contains_key(*k))
        .map(|k| format!("only on b: {}", shown_key(k)));
    missing.chain(extra).collect()
}

/// Where an object on b differs from its original on a once both are [`normalise`]d:
/// every differing field of every object, each as a JSON pointer with both values.
fn field_problems(on_a: &Objects, on_b: &Objects) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, a) in on_a {
        let Some(b) = on_b.get(key) else {
            continue;
        };
        let (mut a, mut b) = (a.clone(), b.clone());
        normalise(key, &mut a);
        normalise(key, &mut b);
        let mut diffs = Vec::new();
        differences(&a, &b, "", &mut diffs);
        if !diffs.is_empty() {
            problems.push(format!("{} differs:\n{}", shown_key(key), diffs.join("\n")));
        }
    }
    problems
}

/// Metadata each API server sets for itself on every write: identity, version, time,
/// the count of spec changes (b's copy is written, then started: another generation)
/// and who wrote which field (kubectl on a, Ferry's server-side apply on b).
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
];

/// Removes from `v` what must differ between the original and its copy, and nothing more.
fn normalise(key: &Key, v: &mut Value) {
    let obj = v.as_object_mut().unwrap();
    // Each cluster's controllers report on their own objects; nobody copies status.
    obj.remove("status");
    let meta = obj
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .unwrap();
    for field in SERVER_METADATA {
        meta.remove(*field);
    }
    // kubectl's record of its last apply on a is a's history (Ferry drops it by design,
    // crates/kube/src/portable.rs), and b's label ferry.dev/migration names the migration
    // that wrote the object (so a re-run can tell its own). Nothing else of Ferry's may
    // stay: ferry.dev/replicas or ferry.dev/suspend left after the start would show.
    remove_keys(meta, "annotations", |k| {
        k == "kubectl.kubernetes.io/last-applied-configuration"
    });
    remove_keys(meta, "labels", |k| k == "ferry.dev/migration");
    if key.0.is_empty() && key.1 == "Service" {
        allocated_addresses(v);
    }
}

/// Removes the keys of `meta[field]` that `drop` picks, and the map once it is empty.
fn remove_keys(meta: &mut Map<String, Value>, field: &str, drop: impl Fn(&str) -> bool) {
    if let Some(m) = meta.get_mut(field).and_then(Value::as_object_mut) {
        m.retain(|k, _| !drop(k));
        if m.is_empty() {
            meta.remove(field);
        }
    }
}

/// A Service's cluster IPs come from each cluster's own service range, and its
/// nodePorts are picked again by b (Ferry resets them unless --preserve-node-ports):
/// each becomes a placeholder, so that both sides must still have one where the other
/// has one. A headless Service's "None" is desired state and stays.
fn allocated_addresses(v: &mut Value) {
    let spec = v["spec"].as_object_mut().unwrap();
    if spec.get("clusterIP").and_then(Value::as_str) != Some("None") {
        for field in ["clusterIP", "clusterIPs"] {
            if let Some(ip) = spec.get_mut(field) {
                *ip = Value::from("<allocated>");
            }
        }
    }
    for port in spec
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        if let Some(node_port) = port.get_mut("nodePort") {
            *node_port = Value::from("<allocated>");
        }
    }
}

/// Appends to `out` one line per leaf where `a` and `b` differ, as a JSON pointer.
fn differences(a: &Value, b: &Value, path: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            for k in keys {
                let p = format!("{path}/{}", k.replace('~', "~0").replace('/', "~1"));
                match (x.get(k), y.get(k)) {
                    (Some(l), Some(r)) => differences(l, r, &p, out),
                    (l, r) => out.push(format!("  {p}: a={} b={}", shown(l), shown(r))),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (l, r)) in x.iter().zip(y).enumerate() {
                differences(l, r, &format!("{path}/{i}"), out);
            }
        }
        _ if a != b => out.push(format!(
            "  {path}: a={} b={}",
            shown(Some(a)),
            shown(Some(b))
        )),
        _ => {}
    }
}

/// A value on one line, shortened: a last-applied annotation can be long.
fn shown(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return "(absent)".into();
    };
    let text = v.to_string();
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}
