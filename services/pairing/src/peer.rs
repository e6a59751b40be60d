//! Calls to the other side's Ferry (RedeemPairingToken, ForgetPair, GetPair, CheckPair,
//! and its catalog's CheckProfile).

use std::time::Duration;

use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::pairing_service_client::PairingServiceClient;
use ferry_rpc::ClientTls;
use ferry_rpc::tls::TlsChannel;
use tonic::service::interceptor::InterceptedService;

use crate::config::PairingConfig;
use crate::db::PairRow;
use crate::error::{PairingError, Result};

/// The other side's Ferry, reached over gRPC; a call it refuses for TLS reasons fails
/// with a status saying what did not match.
pub(crate) struct Peer<I> {
    pub client: PairingServiceClient<InterceptedService<TlsChannel, I>>,
    /// The catalog `ferry serve` hosts on the same port.
    pub catalog: CatalogServiceClient<InterceptedService<TlsChannel, I>>,
    cluster: String,
    endpoint: String,
    tls: ClientTls,
}

/// Connects to the Ferry at `endpoint` (`host:port`, or a full URL; a bare `host:port`
/// speaks TLS when `tls` is configured). Each call is bounded by `timeout`, and carries
/// `traceparent` so the callee's span joins the caller's trace.
pub(crate) async fn connect(
    tls: &ClientTls,
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
    let channel = tls
        .endpoint(endpoint)
        .map_err(|e| unreachable(format!("not an address: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| {
            unreachable(
                tls.explain(endpoint, &e)
                    .unwrap_or_else(|| crate::cluster::error_chain(&e)),
            )
        })?;
    let channel = TlsChannel::new(channel, tls, endpoint);
    let interceptor = ferry_rpc::propagate(traceparent);
    Ok(Peer {
        client: PairingServiceClient::with_interceptor(channel.clone(), interceptor.clone()),
        catalog: CatalogServiceClient::with_interceptor(channel, interceptor),
        cluster: cluster.into(),
        endpoint: endpoint.into(),
        tls: tls.clone(),
    })
}

/// Connects to the Ferry on the other side of `row` from this cluster, with the TLS
/// settings and timeout of `config`.
pub(crate) async fn other_side(
    config: &PairingConfig,
    row: &PairRow,
    traceparent: Option<String>,
) -> Result<Peer<impl tonic::service::Interceptor + Clone>> {
    let other = row.peer();
    connect(
        &config.peer_tls,
        &other.name,
        &other.ferry_endpoint,
        config.peer_timeout,
        traceparent,
    )
    .await
}

impl<I> Peer<I> {
    /// Maps a failed call: the network to [`PairingError::PeerUnreachable`], an answer
    /// to [`PairingError::Peer`] keeping the other side's detail.
    pub fn error(&self, status: tonic::Status) -> PairingError {
        // With mutual TLS the other side refuses this side's certificate only once the
        // connection is up: on the first call.
        if let Some(detail) = self.tls.explain(&self.endpoint, &status) {
            return PairingError::PeerUnreachable {
                cluster: self.cluster.clone(),
                endpoint: self.endpoint.clone(),
                detail,
            };
        }
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
