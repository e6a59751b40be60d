//! Errors of this crate.
//!
//! Policy: an [`Error`] stops a whole step (capture, plan, pre-flight, apply, activate)
//! because nothing sensible can follow it: discovery failed, a list was refused, the
//! spec is invalid. Problems with one object never become an [`Error`]: they are
//! [`Problem`](crate::Problem)s of a plan or pre-flight, or a failed
//! [`ObjectResult`](crate::ObjectResult) of an apply, so a partial failure stays visible
//! next to what worked.
//!
//! Every variant names the cluster and the object or resource involved and ends with
//! what the user can do next.

use crate::ObjectRef;

/// An error that stops a capture, plan, pre-flight, apply or activation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server's discovery endpoints failed.
    #[error(
        "discovering the API resources of cluster {cluster}: {source}; check that the API \
         server is reachable, that every aggregated API (APIService) is available, and that \
         the credentials are valid"
    )]
    Discovery {
        cluster: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// Listing one resource type failed (forbidden, expired continue token, ...).
    #[error(
        "listing {resource} in namespace {namespace} on cluster {cluster}: {source}; {next_step}"
    )]
    List {
        cluster: String,
        /// `plural.group` (or just `plural` for the core group).
        resource: String,
        namespace: String,
        next_step: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// Reading or writing one object failed in a way that stops the step.
    #[error("{action} {object} on cluster {cluster}: {source}; {next_step}")]
    Object {
        cluster: String,
        /// What was being done, e.g. "reading", "scaling up".
        action: &'static str,
        object: Box<ObjectRef>,
        next_step: String,
        #[source]
        source: Box<kube::Error>,
    },

    /// The namespace to capture does not exist.
    #[error(
        "namespace {namespace} does not exist on cluster {cluster}; check the application's \
         namespace and the cluster it is read from"
    )]
    NamespaceNotFound { cluster: String, namespace: String },

    /// A spec given by the caller is invalid; nothing was read or written.
    #[error("invalid {field}: {message}")]
    InvalidSpec {
        field: &'static str,
        message: String,
    },

    /// An object could not be converted between its typed and JSON forms.
    #[error("object {object} is not valid JSON for its kind: {source}; report this as a bug")]
    Serde {
        object: Box<ObjectRef>,
        #[source]
        source: serde_json::Error,
    },
}

impl Error {
    /// The Kubernetes API failure behind this error, when one is: what the error
    /// contract classifies (crates/rpc), never this error's text.
    pub fn kube_source(&self) -> Option<&kube::Error> {
        match self {
            Error::Discovery { source, .. }
            | Error::List { source, .. }
            | Error::Object { source, .. } => Some(source),
            Error::NamespaceNotFound { .. } | Error::InvalidSpec { .. } | Error::Serde { .. } => {
                None
            }
        }
    }

    /// Whether retrying the same call unchanged cannot help (a refusal, an invalid spec),
    /// as opposed to a network fault or an overloaded server that may pass.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Discovery { source, .. }
            | Error::List { source, .. }
            | Error::Object { source, .. } => !is_transient(source),
            Error::NamespaceNotFound { .. } | Error::InvalidSpec { .. } | Error::Serde { .. } => {
                true
            }
        }
    }
}

/// Transport faults and server-side throttling or unavailability may pass on retry.
pub(crate) fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(status) => matches!(status.code, 429 | 500 | 502 | 503 | 504),
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The HTTP status code of an API error, if it is one.
pub(crate) fn status_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// The server's message of an API error, or the whole error otherwise.
pub(crate) fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
