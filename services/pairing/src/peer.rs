//! Calls to the other side's Ferry (RedeemPairingToken, ForgetPair, GetPair, CheckPair).
//!
//! The other side's Ferry holds no user token of this cluster, and a destination holds
//! no credential for its source's API at all; what both sides of a pair do hold is the
//! pair's token id, a random secret the pairing token carried. Calls about a pair bear
//! it in [`PAIR_PROOF`], and GetPair and CheckPair admit a call bearing it for that pair
//! only (ForgetPair takes it in its request).

use std::time::Duration;

use ferry_proto::v1::pairing_service_client::PairingServiceClient;
use ferry_rpc::ClientTls;
use ferry_rpc::tls::TlsChannel;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;

use crate::config::PairingConfig;
use crate::db::PairRow;
use crate::error::{PairingError, Result};

/// Metadata in which the other side of a pair proves it: the pair's token id.
pub const PAIR_PROOF: &str = "x-ferry-pair-proof";

/// The other side's Ferry, reached over gRPC; a call it refuses for TLS reasons fails
/// with a status saying what did not match.
pub(crate) struct Peer<I> {
    pub client: PairingServiceClient<InterceptedService<TlsChannel, I>>,
    cluster: String,
    endpoint: String,
    tls: ClientTls,
}

/// Connects to the Ferry at `endpoint` (`host:port`, or a full URL; a bare `host:port`
/// speaks TLS when `tls` is configured). Each call is bounded by `timeout`, carries
/// `traceparent` so the callee's span joins the caller's trace, and `proof` (the pair's
/// token id) when the calls are about a pair both sides hold.
pub(crate) async fn connect(
    tls: &ClientTls,
    cluster: &str,
    endpoint: &str,
    timeout: Duration,
    traceparent: Option<String>,
    proof: Option<&str>,
) -> Result<Peer<impl Interceptor + Clone>> {
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
    let mut propagate = ferry_rpc::propagate(traceparent);
    let proof = match proof {
        Some(p) => Some(tonic::metadata::MetadataValue::try_from(p).map_err(|_| {
            PairingError::Internal {
                detail: "a pair's token id is not a metadata value".into(),
            }
        })?),
        None => None,
    };
    let interceptor = move |request: tonic::Request<()>| -> std::result::Result<_, tonic::Status> {
        let mut request = propagate.call(request)?;
        if let Some(p) = &proof {
            request.metadata_mut().insert(PAIR_PROOF, p.clone());
        }
        Ok(request)
    };
    Ok(Peer {
        client: PairingServiceClient::with_interceptor(channel, interceptor),
        cluster: cluster.into(),
        endpoint: endpoint.into(),
        tls: tls.clone(),
    })
}

/// Connects to the Ferry on the other side of `row` from this cluster, with the TLS
/// settings of `config`, each call bounded by `timeout` and proving the pair.
pub(crate) async fn other_side(
    config: &PairingConfig,
    row: &PairRow,
    timeout: Duration,
    traceparent: Option<String>,
) -> Result<Peer<impl Interceptor + Clone>> {
    let other = row.peer();
    connect(
        &config.peer_tls,
        &other.name,
        &other.ferry_endpoint,
        timeout,
        traceparent,
        Some(&row.token_id),
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
