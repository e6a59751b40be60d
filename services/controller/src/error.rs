//! Why a reconcile did not finish. Refusals a user must act on are not errors: they go
//! into the object's status as a condition. These are the failures to retry.

/// A failure the controller retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what} in cluster {cluster}: {source}; the controller tries again")]
    Kube {
        what: String,
        cluster: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {status}; the controller tries again")]
    Service {
        what: String,
        #[source]
        status: tonic::Status,
    },
    /// Not a failure: something is still under way (jobs stopping before the object
    /// may go).
    #[error("{0}")]
    Waiting(String),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    pub(crate) fn kube(
        what: impl Into<String>,
        cluster: &str,
    ) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        let cluster = cluster.to_owned();
        move |source| Error::Kube {
            what,
            cluster,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
