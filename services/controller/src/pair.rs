//! ClusterPair objects onto the pairing service: the token in the named Secret is
//! accepted (AcceptPairingToken) when the object's creator is a Ferry administrator,
//! and the pair is deleted on both sides when the object is.

use std::sync::Arc;
use std::time::Duration;

use ferry_crd::{ClusterPair, ClusterPairStatus, Condition, set_condition};
use ferry_proto::v1::{AcceptPairingTokenRequest, DeletePairRequest};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event, finalizer};
use tonic::Code;

use crate::Ctx;
use crate::error::{Error, Result};

/// How often a ClusterPair waiting for its Secret looks again.
const SECRET_RETRY: Duration = Duration::from_secs(15);

/// The controller's entry for one ClusterPair.
pub async fn reconcile(p: Arc<ClusterPair>, ctx: Arc<Ctx>) -> Result<Action> {
    let api: Api<ClusterPair> = Api::all(ctx.client.clone());
    finalizer(&api, ferry_crd::FINALIZER, p, |event| async {
        match event {
            Event::Apply(p) => apply(&api, &p, &ctx).await,
            Event::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply(api: &Api<ClusterPair>, p: &ClusterPair, ctx: &Ctx) -> Result<Action> {
    let mut status = p.status.clone().unwrap_or_default();
    if !status.pair_id.is_empty() {
        return Ok(Action::await_change());
    }
    let name = p.name_any();
    let requester = match crate::admin::administrator(
        ctx,
        p.metadata.annotations.as_ref(),
        "ClusterPair",
        &name,
        "pair clusters",
    )
    .await?
    {
        Ok(who) => who,
        Err((reason, message)) => return not_ready(api, p, ctx, status, reason, &message).await,
    };
    let token = match crate::admin::secret_value(ctx, &p.spec.token_secret_ref).await? {
        Ok(token) => token,
        Err(missing) => {
            let message = format!(
                "{missing}; create it with the destination's `ferry pair token create` output"
            );
            not_ready(api, p, ctx, status, "SecretNotFound", &message).await?;
            return Ok(Action::requeue(SECRET_RETRY));
        }
    };
    let accepted = ctx
        .pairing
        .clone()
        .accept_pairing_token(AcceptPairingTokenRequest {
            token,
            pair_name: name.clone(),
        })
        .await;
    let pair = match accepted {
        Ok(r) => r.into_inner().pair.unwrap_or_default(),
        Err(s) if s.code() == Code::Unavailable || s.code() == Code::DeadlineExceeded => {
            return Err(Error::Service {
                what: format!("accepting the pairing token of ClusterPair {name}"),
                status: s,
            });
        }
        Err(s) => {
            return not_ready(api, p, ctx, status, "TokenRefused", s.message()).await;
        }
    };
    tracing::info!(pair = %name, id = %pair.id, user = %requester.username, "paired");
    status.pair_id = pair.id.clone();
    status.destination = pair.destination.map(|d| d.name).unwrap_or_default();
    status.observed_generation = p.metadata.generation;
    set_condition(
        &mut status.conditions,
        condition(
            "True",
            "Paired",
            &format!("paired with cluster {}", status.destination),
            p,
        ),
    );
    write_status(api, p, ctx, &status).await?;
    Ok(Action::await_change())
}

async fn cleanup(p: &ClusterPair, ctx: &Ctx) -> Result<Action> {
    let Some(id) = p
        .status
        .as_ref()
        .map(|s| s.pair_id.clone())
        .filter(|id| !id.is_empty())
    else {
        return Ok(Action::await_change());
    };
    match ctx
        .pairing
        .clone()
        .delete_pair(DeletePairRequest { pair: id.clone() })
        .await
    {
        Ok(r) => {
            tracing::info!(pair = %p.name_any(), id = %id, remote_deleted = r.into_inner().remote_deleted,
                "ClusterPair deleted: pair removed");
            Ok(Action::await_change())
        }
        Err(s) if s.code() == Code::NotFound => Ok(Action::await_change()),
        Err(status) => Err(Error::Service {
            what: format!("deleting pair {id} of ClusterPair {}", p.name_any()),
            status,
        }),
    }
}

fn condition(status: &str, reason: &str, message: &str, p: &ClusterPair) -> Condition {
    crate::status::condition("Ready", status, reason, message, p.metadata.generation)
}

async fn not_ready(
    api: &Api<ClusterPair>,
    p: &ClusterPair,
    ctx: &Ctx,
    mut status: ClusterPairStatus,
    reason: &str,
    message: &str,
) -> Result<Action> {
    status.observed_generation = p.metadata.generation;
    set_condition(
        &mut status.conditions,
        condition("False", reason, message, p),
    );
    write_status(api, p, ctx, &status).await?;
    Ok(Action::await_change())
}

async fn write_status(
    api: &Api<ClusterPair>,
    p: &ClusterPair,
    ctx: &Ctx,
    status: &ClusterPairStatus,
) -> Result<()> {
    crate::status::write(api, p, p.status.as_ref(), status, &ctx.cluster).await
}
