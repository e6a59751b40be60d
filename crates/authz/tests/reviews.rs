//! TokenReview and SubjectAccessReview against a real kube-apiserver with RBAC: the
//! test environment's static-token users, one administrator and one with no rights
//! until a Role grants some in one namespace.

#![allow(clippy::unwrap_used)]

use ferry_authz::{Access, Authorizer, AuthzError};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::json;

async fn create<K>(api: &Api<K>, v: serde_json::Value)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    api.create(&PostParams::default(), &serde_json::from_value(v).unwrap())
        .await
        .unwrap();
}

#[tokio::test]
async fn callers_are_who_the_cluster_says_and_may_do_what_rbac_grants() {
    let env = ferry_testenv::shared().await.expect("test environment");
    let a = env.cluster("a").unwrap();
    let admin_client = env.client("a", "admin").await.unwrap();
    let cluster = Authorizer::new(admin_client.clone(), "a");
    let alice_token = &a.users.iter().find(|u| u.name == "alice").unwrap().token;

    // Who: the cluster's answer, not the caller's claim.
    let admin = cluster.authenticate(&a.admin.token).await.unwrap();
    assert_eq!(admin.username, "admin");
    assert!(admin.groups.iter().any(|g| g == "system:masters"));
    assert!(cluster.is_admin(&admin).await.unwrap());
    let alice = cluster.authenticate(alice_token).await.unwrap();
    assert_eq!(alice.username, "alice");
    assert!(!cluster.is_admin(&alice).await.unwrap());
    let forged = cluster.authenticate("not-a-token").await.unwrap_err();
    assert!(
        matches!(forged, AuthzError::Unauthenticated { .. }),
        "{forged}"
    );
    assert_eq!(forged.code(), tonic::Code::Unauthenticated);
    assert!(matches!(
        cluster.authenticate("").await.unwrap_err(),
        AuthzError::NoToken
    ));

    // What: nothing until a Role in her namespace says so, and only there.
    let ns = ferry_testenv::unique_name("authz");
    let other = ferry_testenv::unique_name("authz-other");
    for n in [&ns, &other] {
        create(
            &Api::<Namespace>::all(admin_client.clone()),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}),
        )
        .await;
    }
    let needed = [
        Access::namespaced("create", "apps", "deployments", &ns),
        Access::namespaced("list", "", "configmaps", &ns),
    ];
    let denied = cluster.require(&alice, &needed).await.unwrap_err();
    let text = denied.to_string();
    assert!(
        text.contains("alice may not create deployments.apps in namespace")
            && text.contains(&format!("list configmaps in namespace {ns}"))
            && text.contains("on cluster a"),
        "{text}"
    );
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);

    create(
        &Api::<Role>::namespaced(admin_client.clone(), &ns),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "app-owner", "namespace": ns},
               "rules": [{"apiGroups": ["", "apps"], "resources": ["*"], "verbs": ["*"]}]}),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(admin_client.clone(), &ns),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "alice-owns", "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "app-owner"},
               "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]}),
    )
    .await;
    // RBAC answers from the apiserver's informer cache: wait for the binding to show.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while cluster.require(&alice, &needed).await.is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the Role never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let elsewhere = cluster
        .require(
            &alice,
            &[Access::namespaced("create", "apps", "deployments", &other)],
        )
        .await
        .unwrap_err();
    assert!(
        elsewhere
            .to_string()
            .contains(&format!("namespace {other}")),
        "{elsewhere}"
    );
    assert!(!cluster.is_admin(&alice).await.unwrap());
}
