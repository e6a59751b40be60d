//! Calls to the other side's Ferry (RedeemPairingToken, ForgetPair, GetPair, CheckPair,
//! and its catalog's CheckProfile).

use std::time::Duration;

use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::pairing_service_client::PairingServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::db::PairRow;
use crate::error::{PairingError, Result};

/// The other side's Ferry, reached over gRPC.
pub(crate) struct Peer<I> {
    pub client: PairingServiceClient<InterceptedService<Channel, I>>,
    /// The catalog `ferry serve` hosts on the same port.
    pub catalog: CatalogServiceClient<InterceptedService<Channel, I>>,
    cluster: String,
    endpoint: String,
}

/// Connects to the Ferry at `endpoint` (`host:port`, or a full URL). Each call is bounded
/// by `timeout`, and carries `traceparent` so the callee's span joins the caller's trace.
pub(crate) async fn connect(
    cluster: &str,
    endpoint: &str,
    timeout: Duration,
    traceparent: Option<String>,
) -> Result<Peer<impl tonic::service::Interceptor + Clone>> {
    let unreachable = |detail: String| PairingError::PeerUnreachable {
        cluster: cluster.into(),
        endpoint: endpoint.into(),
        detail,
    };
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = Endpoint::from_shared(uri)
        .map_err(|e| unreachable(format!("not an address: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| unreachable(crate::cluster::error_chain(&e)))?;
    let interceptor = ferry_rpc::propagate(traceparent);
    Ok(Peer {
        client: PairingServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
        catalog: CatalogServiceClient::with_interceptor(channel, interceptor),
        cluster: cluster.into(),
        endpoint: endpoint.into(),
    })
}

/// Connects to the Ferry on the other side of `row` from this cluster.
pub(crate) async fn other_side(
    row: &PairRow,
    timeout: Duration,
    traceparent: Option<String>,
) -> Result<Peer<impl tonic::service::Interceptor + Clone>> {
    let other = row.peer();
    connect(&other.name, &other.ferry_endpoint, timeout, traceparent).await
}

impl<I> Peer<I> {
    /// Maps a failed call: the network to [`PairingError::PeerUnreachable`], an answer
    /// to [`PairingError::Peer`] keeping the other side's detail.
    pub fn error(&self, status: tonic::Status) -> PairingError {
        match status.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
                if ferry_rpc::detail(&status).is_none() =>
            {
                PairingError::PeerUnreachable {
                    cluster: self.cluster.clone(),
                    endpoint: self.endpoint.clone(),
                    detail: status.message().to_string(),
                }
            }
            tonic::Code::Unimplemented => PairingError::PeerUnreachable {
                cluster: self.cluster.clone(),
                endpoint: self.endpoint.clone(),
                detail: format!(
                    "it does not serve the pairing API ({}); is that address Ferry?",
                    status.message()
                ),
            },
            _ => PairingError::Peer {
                cluster: self.cluster.clone(),
                endpoint: self.endpoint.clone(),
                status: Box::new(status),
            },
        }
    }
}
