//! The agent relay: how the other cluster's Ferry reaches this cluster's agents, which
//! are internal (they answer only the internal credential, at pod addresses no other
//! cluster can route to). A pair's source calls AgentService at this cluster's Ferry
//! endpoint (the gateway routes it here) bearing the credential this cluster issued for
//! the pair; the relay asks this cluster who that is and whether they may `use` the
//! `agents` of `ferry.dev` (the pair's ClusterRole `ferry-migrator` grants it, and so
//! does cluster-admin), then passes the call to the agent of the node named by the
//! `x-ferry-node` metadata, streaming its events back.

use std::pin::Pin;

use ferry_authz::{Access, Authorizer, AuthzError, bearer, same_secret};
use ferry_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use ferry_proto::v1::{
    BackupEvent, BackupRequest, CancelRequest, CancelResponse, GetInfoRequest, GetInfoResponse,
    RestoreEvent, RestoreRequest, VerifyEvent, VerifyRequest,
};
use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::deps::AgentClient;
use crate::runtime::Transfer;

/// Metadata naming the node whose agent a relayed call is for; absent: any node.
pub const NODE_METADATA: &str = "x-ferry-node";

/// What a caller needs to reach this cluster's agents through the relay.
pub fn relay_access() -> Access {
    Access::cluster_wide("use", "ferry.dev", "agents")
}

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// AgentService, relayed to this cluster's agents.
#[derive(Debug, Clone)]
pub struct AgentRelay {
    transfer: Transfer,
}

impl Transfer {
    /// The agent relay on this engine's collaborators and access policy.
    pub fn agent_relay(&self) -> AgentServiceServer<AgentRelay> {
        AgentServiceServer::new(AgentRelay {
            transfer: self.clone(),
        })
    }
}

impl AgentRelay {
    /// Admits the caller, then the client of the agent the call (`method`) is for.
    async fn agent<T>(&self, method: &str, request: &Request<T>) -> Result<AgentClient, Status> {
        let caller = self
            .admit(request.metadata())
            .await
            .map_err(|e| e.to_status())?;
        let node = request
            .metadata()
            .get(NODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        tracing::info!(%method, %caller, node = %node, "relaying to this cluster's agent");
        let agents = self.transfer.agents();
        agents.agent("local", &node).await.map_err(Status::from)
    }

    /// Who the caller is, once admitted.
    async fn admit(&self, metadata: &tonic::metadata::MetadataMap) -> Result<String, AuthzError> {
        let Some(policy) = self.transfer.access_policy() else {
            // --insecure-no-access-checks: a service no one else can reach.
            return Ok("(unchecked)".into());
        };
        let token = bearer(metadata).ok_or(AuthzError::NoToken)?;
        if let Some(internal) = &policy.internal_token
            && same_secret(&token, internal)
        {
            return Ok("(this deployment)".into());
        }
        let local =
            self.transfer
                .local_client()
                .await
                .map_err(|e| AuthzError::Unauthenticated {
                    cluster: policy.cluster_name.clone(),
                    reason: e.to_string(),
                })?;
        let authorizer = Authorizer::new(local, &policy.cluster_name)
            .with_admin_groups(policy.admin_groups.clone());
        let caller = authorizer.authenticate(&token).await?;
        authorizer.require(&caller, &[relay_access()]).await?;
        Ok(caller.username)
    }
}

fn forwarded<T: Send + 'static>(
    answer: Result<Response<tonic::Streaming<T>>, Status>,
) -> Result<Response<EventStream<T>>, Status> {
    let stream = answer?.into_inner();
    Ok(Response::new(Box::pin(stream)))
}

#[tonic::async_trait]
impl AgentService for AgentRelay {
    type BackupStream = EventStream<BackupEvent>;
    type RestoreStream = EventStream<RestoreEvent>;
    type VerifyStream = EventStream<VerifyEvent>;

    async fn backup(
        &self,
        request: Request<BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let mut agent = self.agent("Backup", &request).await?;
        let span = tracing::info_span!("relay.backup");
        forwarded(agent.backup(request.into_inner()).instrument(span).await)
    }

    async fn restore(
        &self,
        request: Request<RestoreRequest>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        let mut agent = self.agent("Restore", &request).await?;
        let span = tracing::info_span!("relay.restore");
        forwarded(agent.restore(request.into_inner()).instrument(span).await)
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<Self::VerifyStream>, Status> {
        let mut agent = self.agent("Verify", &request).await?;
        let span = tracing::info_span!("relay.verify");
        forwarded(agent.verify(request.into_inner()).instrument(span).await)
    }

    async fn cancel(
        &self,
        request: Request<CancelRequest>,
    ) -> Result<Response<CancelResponse>, Status> {
        let mut agent = self.agent("Cancel", &request).await?;
        agent.cancel(request.into_inner()).await
    }

    async fn get_info(
        &self,
        request: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let mut agent = self.agent("GetInfo", &request).await?;
        agent.get_info(request.into_inner()).await
    }
}
