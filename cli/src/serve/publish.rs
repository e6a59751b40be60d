//! Publishing this Ferry's endpoint in its cluster, so the `ferry` command and the SDK
//! find it from a kubeconfig context alone (`ferry --context a ...`).

use std::collections::BTreeMap;

use ferry_client::{ENDPOINT_CONFIGMAP, ENDPOINT_KEY, FERRY_NAMESPACE};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// Writes `endpoint` (and the cluster's name) into the ConfigMap clients read, creating
/// its namespace when missing. Failing here is not fatal: clients can still pass
/// `--server`, so it is a warning naming that way out.
pub(crate) async fn publish_endpoint(kube: &kube::Client, endpoint: &str, cluster: &str) {
    if let Err(e) = try_publish(kube, endpoint, cluster).await {
        tracing::warn!(
            error = %e,
            "cannot publish this Ferry's endpoint in ConfigMap {FERRY_NAMESPACE}/{ENDPOINT_CONFIGMAP}; \
             clients must pass --server {endpoint}"
        );
    }
}

async fn try_publish(kube: &kube::Client, endpoint: &str, cluster: &str) -> kube::Result<()> {
    let namespaces: Api<Namespace> = Api::all(kube.clone());
    if namespaces.get_opt(FERRY_NAMESPACE).await?.is_none() {
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(FERRY_NAMESPACE.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &ns).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(ENDPOINT_CONFIGMAP.into()),
            namespace: Some(FERRY_NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (ENDPOINT_KEY.to_string(), endpoint.to_string()),
            ("cluster".to_string(), cluster.to_string()),
        ])),
        ..Default::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(kube.clone(), FERRY_NAMESPACE);
    api.patch(
        ENDPOINT_CONFIGMAP,
        &PatchParams::apply("ferry-serve").force(),
        &Patch::Apply(&cm),
    )
    .await?;
    let readable = readable_by_everyone(kube).await;
    if let Err(e) = readable {
        // Administrators can still read it; others must pass --server.
        tracing::warn!(
            error = %e,
            "cannot let every user read ConfigMap {FERRY_NAMESPACE}/{ENDPOINT_CONFIGMAP}; \
             users other than administrators must pass --server"
        );
    }
    Ok(())
}

/// Lets every signed-in user read the endpoint ConfigMap (and nothing else there): a
/// namespace user finds the Ferry through their own context, and every call they make
/// is then checked on its own.
async fn readable_by_everyone(kube: &kube::Client) -> kube::Result<()> {
    let name = "ferry-endpoint-reader";
    let role = Role {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(FERRY_NAMESPACE.into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![ENDPOINT_CONFIGMAP.into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(FERRY_NAMESPACE.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: name.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Group".into(),
            name: "system:authenticated".into(),
            ..Default::default()
        }]),
    };
    let params = PatchParams::apply("ferry-serve").force();
    Api::<Role>::namespaced(kube.clone(), FERRY_NAMESPACE)
        .patch(name, &params, &Patch::Apply(&role))
        .await?;
    Api::<RoleBinding>::namespaced(kube.clone(), FERRY_NAMESPACE)
        .patch(name, &params, &Patch::Apply(&binding))
        .await?;
    Ok(())
}
