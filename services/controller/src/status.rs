//! Writing an object's status, the same way for every kind the controller reconciles.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use tonic::Code;

use crate::error::{Error, Result};

/// The time a condition changed or a job ended, as the status shows it (RFC 3339).
pub(crate) fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// Writes `status` of `object` with server-side apply, so fields it no longer sets go
/// away; nothing is written when `old` (what the object shows) is the same.
pub(crate) async fn write<K, S>(
    api: &Api<K>,
    object: &K,
    old: Option<&S>,
    status: &S,
    cluster: &str,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if old == Some(status) {
        return Ok(());
    }
    let name = object.name_any();
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    let what = match object.namespace() {
        Some(ns) => format!("writing the status of {} {ns}/{name}", K::kind(&())),
        None => format!("writing the status of {} {name}", K::kind(&())),
    };
    api.patch_status(
        &name,
        &PatchParams::apply("ferry-controller").force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::kube(what, cluster))?;
    Ok(())
}

/// A condition set now.
pub(crate) fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> ferry_crd::Condition {
    ferry_crd::Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: now(),
        observed_generation: generation,
    }
}

/// Refusals the user must act on (not retried).
pub(crate) fn refused(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::OutOfRange
    )
}

pub(crate) fn reason_of(code: Code) -> &'static str {
    match code {
        Code::PermissionDenied | Code::Unauthenticated => "Forbidden",
        Code::InvalidArgument | Code::OutOfRange => "Invalid",
        Code::NotFound => "NotFound",
        Code::FailedPrecondition => "PreflightFailed",
        Code::AlreadyExists => "AlreadyExists",
        _ => "Failed",
    }
}
