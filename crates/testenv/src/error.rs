use std::path::PathBuf;

/// Why the test environment could not be built or started.
///
/// Every variant names the component and says what to do next, because the person
/// reading it is usually looking at a failed CI log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the environment needs is not in the cache.
    #[error(
        "{component} binary not found at {path}; build it with `make testenv` \
         (or set FERRY_TESTENV_BIN to a directory that holds it)"
    )]
    MissingBinary {
        component: &'static str,
        path: PathBuf,
    },

    /// A program a real node needs is not installed.
    #[error(
        "{component} not found at {path}; real nodes need Debian's packages: \
         apt-get install {packages} (`make testenv` installs them when run as root)"
    )]
    MissingPackage {
        component: &'static str,
        path: PathBuf,
        packages: &'static str,
    },

    /// An image the nodes import is not in the cache.
    #[error(
        "image {image} not found at {path}; build it with `make testenv` (scripts/build-images.sh)"
    )]
    MissingImage { image: &'static str, path: PathBuf },

    /// A file `make testenv` puts into the cache (other than a binary) is missing.
    #[error("{what} not found at {path}; build it with `make testenv`")]
    MissingFile { what: &'static str, path: PathBuf },

    /// A setup command (ip, iptables, ctr, ...) failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// A Kubernetes call made while preparing a cluster failed.
    #[error("cluster {cluster}: {action}: {message}")]
    Kube {
        cluster: String,
        action: String,
        message: String,
    },

    /// A process could not be started at all.
    #[error("could not start {component} ({program}): {source}")]
    Spawn {
        component: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A process exited while the environment was waiting for it to become ready.
    #[error("{component} exited before it was ready ({status}); last lines of {log}:\n{tail}")]
    Exited {
        component: String,
        status: String,
        log: PathBuf,
        tail: String,
    },

    /// A process did not become ready in time.
    #[error("{component} was not ready after {seconds}s; last lines of {log}:\n{tail}")]
    NotReady {
        component: String,
        seconds: u64,
        log: PathBuf,
        tail: String,
    },

    /// Creating certificates or keys failed.
    #[error("generating {what}: {source}")]
    Certs {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },

    /// The self-signed TLS proxy of [`crate::tls`] could not start.
    #[error("self-signed TLS proxy: {what}: {message}")]
    Tls { what: &'static str, message: String },

    /// Reading or writing a file of the environment failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Building a Kubernetes client for one of the clusters failed.
    #[error("kube client for cluster {cluster} (context {context}): {message}")]
    KubeClient {
        cluster: String,
        context: String,
        message: String,
    },

    /// An S3 call made while preparing the S3 server failed.
    #[error("S3 server at {endpoint}: {action}: {message}")]
    S3 {
        endpoint: String,
        action: &'static str,
        message: String,
    },

    /// An unknown cluster or user name was asked for.
    #[error("the test environment has no {what} named {name:?}; it has {known}")]
    Unknown {
        what: &'static str,
        name: String,
        known: String,
    },

    /// The environment's state file (written by `ferry-testenv up`) is missing or unreadable.
    #[error("environment state {path}: {message}; start one with `make dev-up`")]
    State { path: PathBuf, message: String },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
