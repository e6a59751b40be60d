//! The SDK's errors: each names the Ferry (or cluster) it concerns and, when the server
//! sent one, its hint for the next step.

use ferry_proto::v1::{ErrorCode, ErrorDetail};

/// Everything the SDK can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    #[error(
        "Ferry endpoint {endpoint:?} is not a valid URL ({problem}); use https://host:port \
         (or http://host:port for a plaintext Ferry)"
    )]
    BadEndpoint { endpoint: String, problem: String },

    #[error(
        "cannot reach Ferry at {endpoint}: {source}; check that `ferry serve` runs there and \
         the address is right (--server or the {}/{} ConfigMap)",
        crate::FERRY_NAMESPACE,
        crate::ENDPOINT_CONFIGMAP
    )]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },

    /// The TLS handshake failed: `message` names the mismatch (an unknown CA, a
    /// certificate for other names, an expired one, a client certificate missing or
    /// refused) and the flag that fixes it. Not transient: retrying will not help.
    #[error("cannot reach Ferry at {endpoint} over TLS: {message}")]
    Tls { endpoint: String, message: String },

    /// The kubeconfig or the cluster's published endpoint could not be read.
    #[error("finding the Ferry of {what}: {problem}")]
    Discovery { what: String, problem: String },

    /// Reaching an in-cluster Ferry through the API server failed: no Ready gateway
    /// pod, a right missing, the port-forward broken.
    #[error(transparent)]
    PortForward(Box<crate::PortForwardError>),

    /// A call was answered with an error.
    #[error("{}", rpc_message(.call, .endpoint, .status, .detail.as_deref()))]
    Rpc {
        call: &'static str,
        endpoint: String,
        status: Box<tonic::Status>,
        detail: Option<Box<ErrorDetail>>,
    },

    #[error(
        "no pair matches {name:?} on the Ferry at {endpoint} (pairs there: {}); pair the \
         clusters first with: ferry pair create --from <source-context> --to <destination-context>",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    )]
    NoPair {
        endpoint: String,
        name: String,
        known: Vec<String>,
    },

    #[error("{name:?} matches several pairs ({}); name one by its pair name or id", pairs.join(", "))]
    AmbiguousPair { name: String, pairs: Vec<String> },

    /// The server answered something this SDK does not understand.
    #[error("unexpected answer from Ferry at {endpoint}: {problem}")]
    Protocol { endpoint: String, problem: String },
}

impl From<crate::PortForwardError> for ClientError {
    fn from(e: crate::PortForwardError) -> ClientError {
        ClientError::PortForward(Box::new(e))
    }
}

/// Result alias for the SDK.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

impl ClientError {
    pub(crate) fn rpc(call: &'static str, endpoint: &str, status: tonic::Status) -> ClientError {
        let detail = ferry_rpc::detail(&status).map(Box::new);
        ClientError::Rpc {
            call,
            endpoint: endpoint.into(),
            status: Box::new(status),
            detail,
        }
    }

    /// The server's error detail, when the error came with one.
    pub fn detail(&self) -> Option<&ErrorDetail> {
        match self {
            ClientError::Rpc { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The gRPC code of a failed call.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// True when the call never reached a Ferry or the Ferry could not be found.
    pub fn is_unreachable(&self) -> bool {
        match self {
            ClientError::Connect { .. }
            | ClientError::Discovery { .. }
            | ClientError::PortForward(_) => true,
            ClientError::Rpc { status, detail, .. } => {
                status.code() == tonic::Code::Unavailable
                    || detail.as_deref().map(|d| d.code()) == Some(ErrorCode::Unreachable)
            }
            _ => false,
        }
    }
}

fn rpc_message(
    call: &str,
    endpoint: &str,
    status: &tonic::Status,
    detail: Option<&ErrorDetail>,
) -> String {
    let mut text = format!("{call} at {endpoint}: ");
    match detail {
        Some(d) => {
            text.push_str(&d.message);
            if !d.cluster.is_empty() {
                text.push_str(&format!(" (cluster {})", d.cluster));
            }
            if !d.hint.is_empty() {
                text.push_str("; ");
                text.push_str(&d.hint);
            }
        }
        None if status.message().is_empty() => text.push_str(&format!("{:?}", status.code())),
        None => text.push_str(status.message()),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_carry_the_hint() {
        let status = ferry_rpc::status(
            tonic::Code::NotFound,
            ErrorDetail {
                code: ErrorCode::NotFound as i32,
                message: "pair x does not exist".into(),
                hint: "list pairs with: ferry pair list".into(),
                ..Default::default()
            },
        );
        let e = ClientError::rpc("GetPair", "http://f:7443", status);
        assert_eq!(
            e.to_string(),
            "GetPair at http://f:7443: pair x does not exist; list pairs with: ferry pair list"
        );
        assert_eq!(e.code(), Some(tonic::Code::NotFound));
        assert!(!e.is_unreachable());
    }
}
