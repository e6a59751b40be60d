//! Access reviews: the rights a migration needs (`KEY_ACCESS`), checked for a pair's
//! credential and for the callers it names.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SubjectAccessReview,
    SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};

use crate::error::{PairingError, Result};
use crate::token::Secret;

/// One permission a migration needs, as checked by an access review.
#[derive(Clone, Copy, Debug)]
pub struct Access {
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
}

impl Access {
    pub fn describe(&self) -> String {
        if self.group.is_empty() {
            format!("{} {}", self.verb, self.resource)
        } else {
            format!("{} {}.{}", self.verb, self.resource, self.group)
        }
    }

    pub(super) fn attributes(&self) -> ResourceAttributes {
        ResourceAttributes {
            verb: Some(self.verb.into()),
            group: Some(self.group.into()),
            resource: Some(self.resource.into()),
            ..Default::default()
        }
    }
}

/// The permissions checked when pairing and by CheckPair: one per kind of step a
/// migration takes on the destination.
pub const KEY_ACCESS: &[Access] = &[
    Access {
        verb: "create",
        group: "",
        resource: "namespaces",
    },
    Access {
        verb: "use",
        group: "ferry.dev",
        resource: "agents",
    },
    Access {
        verb: "create",
        group: "",
        resource: "persistentvolumes",
    },
    Access {
        verb: "create",
        group: "",
        resource: "persistentvolumeclaims",
    },
    Access {
        verb: "create",
        group: "apps",
        resource: "statefulsets",
    },
    Access {
        verb: "patch",
        group: "apps",
        resource: "deployments",
    },
    Access {
        verb: "delete",
        group: "",
        resource: "configmaps",
    },
    Access {
        verb: "list",
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
    },
    Access {
        verb: "list",
        group: "storage.k8s.io",
        resource: "storageclasses",
    },
    Access {
        verb: "list",
        group: "",
        resource: "nodes",
    },
];

/// Whether the client's own identity may do `access` (SelfSubjectAccessReview).
async fn may(client: &kube::Client, cluster: &str, access: &Access) -> Result<bool> {
    let review = SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(access.attributes()),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(PairingError::kube(
            cluster,
            format!("reviewing access to {}", access.describe()),
            None,
        ))?;
    Ok(got.status.is_some_and(|s| s.allowed))
}

/// The permissions in [`KEY_ACCESS`] the client's own identity lacks.
pub async fn missing_permissions(client: &kube::Client, cluster: &str) -> Result<Vec<String>> {
    let reviews = KEY_ACCESS.iter().map(|access| async move {
        Ok::<_, PairingError>((access, may(client, cluster, access).await?))
    });
    let mut missing = Vec::new();
    for result in futures::future::join_all(reviews).await {
        let (access, allowed) = result?;
        if !allowed {
            missing.push(access.describe());
        }
    }
    Ok(missing)
}

/// Whether the pair's credential (`client`) may impersonate users on the destination:
/// whether the destination trusts the identities its sources name
/// (`--trust-source-identities`), which jobs without their caller's own token for it
/// (schedules, Migration objects) need.
pub async fn may_impersonate(client: &kube::Client, cluster: &str) -> Result<bool> {
    let impersonate = Access {
        verb: "impersonate",
        group: "",
        resource: "users",
    };
    may(client, cluster, &impersonate).await
}

/// On the destination, with its own client: does the token it issued still authenticate,
/// and as whom? Returns the user name, or `None` if the token is no longer valid.
pub async fn review_token(
    client: &kube::Client,
    cluster: &str,
    bearer: &Secret,
) -> Result<Option<(String, Vec<String>)>> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(bearer.expose().to_string()),
            ..Default::default()
        },
        ..Default::default()
    };
    let got = Api::<TokenReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(PairingError::kube(
            cluster,
            "reviewing the pair's token",
            None,
        ))?;
    let Some(status) = got.status.filter(|s| s.authenticated == Some(true)) else {
        return Ok(None);
    };
    let user = status.user.unwrap_or_default();
    Ok(Some((
        user.username.unwrap_or_default(),
        user.groups.unwrap_or_default(),
    )))
}

/// The permissions in [`KEY_ACCESS`] that `user` lacks, asked by this cluster's Ferry.
pub async fn missing_permissions_of(
    client: &kube::Client,
    cluster: &str,
    user: &str,
    groups: &[String],
) -> Result<Vec<String>> {
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let mut missing = Vec::new();
    for access in KEY_ACCESS {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                groups: Some(groups.to_vec()),
                resource_attributes: Some(access.attributes()),
                ..Default::default()
            },
            ..Default::default()
        };
        let got = api
            .create(&PostParams::default(), &review)
            .await
            .map_err(PairingError::kube(
                cluster,
                format!("reviewing access of {user} to {}", access.describe()),
                None,
            ))?;
        if !got.status.is_some_and(|s| s.allowed) {
            missing.push(access.describe());
        }
    }
    Ok(missing)
}
