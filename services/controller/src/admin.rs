//! What the kinds only Ferry's administrators may create (ClusterPair, Profile) share.
//! The services take the controller's internal credential for them as an
//! administrator's, so the controller checks the creator itself before it calls; and
//! both read a token from a Secret the object names.

use ferry_crd::SecretKeyRef;
use ferry_crd::requester::Requester;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;

use crate::Ctx;
use crate::error::{Error, Result};

/// The creator of the cluster-scoped `kind` object `name` (from its signed requester
/// annotations), when they administer Ferry; otherwise the refusal (reason, message)
/// for the object's status. `what` names the act ("pair clusters").
pub(crate) async fn administrator(
    ctx: &Ctx,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    kind: &str,
    name: &str,
    what: &str,
) -> Result<Result<Requester, (&'static str, String)>> {
    let who = match Requester::of(annotations, &ctx.secret, kind, "", name) {
        Ok(who) => who,
        Err(e) => return Ok(Err(("RequesterUnknown", e.to_string()))),
    };
    Ok(match refusal(ctx, &who, what, kind).await? {
        None => Ok(who),
        Some(message) => Err(("Forbidden", message)),
    })
}

/// None when `who` administers Ferry; otherwise the refusal.
async fn refusal(ctx: &Ctx, who: &Requester, what: &str, kind: &str) -> Result<Option<String>> {
    let caller = ferry_authz::Caller {
        username: who.username.clone(),
        uid: who.uid.clone(),
        groups: who.groups.clone(),
    };
    let admin = ctx
        .authorizer
        .is_admin(&caller)
        .await
        .map_err(|e| Error::Service {
            what: format!("checking whether {} administers Ferry", who.username),
            status: e.to_status(),
        })?;
    Ok((!admin).then(|| {
        format!(
            "{} may not {what}: only Ferry administrators (members of an --admin-group, \
             or allowed everything in cluster {}) may create a {kind}",
            who.username, ctx.cluster
        )
    }))
}

/// The value `r` names (key default `token`, trimmed), or why there is none: a message
/// naming the Secret, the key and how to create it.
pub(crate) async fn secret_value(ctx: &Ctx, r: &SecretKeyRef) -> Result<Result<String, String>> {
    let namespace = if r.namespace.is_empty() {
        ctx.namespace.as_str()
    } else {
        r.namespace.as_str()
    };
    let key = r.key.as_deref().unwrap_or("token");
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = secrets.get_opt(&r.name).await.map_err(Error::kube(
        format!("reading Secret {namespace}/{}", r.name),
        &ctx.cluster,
    ))?;
    let value = secret.and_then(|s| s.data).and_then(|d| {
        d.get(key)
            .map(|v| String::from_utf8_lossy(&v.0).trim().to_owned())
    });
    Ok(value.filter(|v| !v.is_empty()).ok_or_else(|| {
        format!(
            "Secret {namespace}/{} has no key {key:?} (kubectl -n {namespace} create secret \
             generic {} --from-literal={key}=TOKEN)",
            r.name, r.name
        )
    }))
}
