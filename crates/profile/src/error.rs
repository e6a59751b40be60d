//! What can go wrong with a profile. Each variant names the profile (and the file or
//! endpoint) and says what to do; callers wrap it in their own error to classify it.

/// Everything reading, writing or using a profile can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// The name cannot be a profile's (it would leave the directory, or is empty).
    #[error(
        "invalid repository.profile: {name:?} is not a profile name: use letters, digits, '-', \
         '_' and '.', not starting with '.'"
    )]
    InvalidName { name: String },

    /// No profile has this name.
    #[error(
        "profile {name:?} not found in {dir}; create {dir}/{name}.yaml (see services/agent/README.md) \
         or use a profile this agent has"
    )]
    NotFound { name: String, dir: String },

    /// A profile exists but cannot be used.
    #[error("profile {name:?} ({path}) is not usable: {detail}")]
    Invalid {
        name: String,
        path: String,
        detail: String,
    },

    /// The profile now points at a different repository than the caller expects.
    #[error(
        "profile {profile:?} opens repository {found}, the request expects {expected}; \
         the profile was changed to another repository: fix the profile or the request"
    )]
    RepositoryMismatch {
        profile: String,
        expected: String,
        found: String,
    },

    /// The S3 endpoint's TLS certificate was refused (unknown issuer, self-signed,
    /// wrong name, expired). Retrying does not help.
    #[error(
        "profile {profile:?}: the TLS certificate of S3 endpoint {endpoint} is not trusted \
         ({detail}); give the endpoint a certificate from a CA this node trusts, or, in a test \
         setup with a self-signed certificate only, set verifyTls: false in the profile"
    )]
    TlsCertificate {
        profile: String,
        endpoint: String,
        detail: String,
    },

    /// The repository engine failed; `context` says at which step and on what.
    #[error("{context}: {source}")]
    Repo {
        context: String,
        #[source]
        source: Box<ferry_repo::Error>,
    },

    /// Writing or removing a profile file failed.
    #[error("{op} profile file {path}: {source}")]
    File {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// Sealing a profile's secrets failed.
    #[error("sealing the secrets of profile {name:?}: {source}")]
    Seal {
        name: String,
        #[source]
        source: Box<ferry_store::StoreError>,
    },

    /// The catalog answering for profiles refused or failed to resolve one.
    #[error("the catalog at {endpoint} did not resolve profile {name:?}: {detail}")]
    Catalog {
        name: String,
        endpoint: String,
        detail: String,
        /// The catalog's own classification of the failure.
        code: ferry_proto::v1::ErrorCode,
    },

    /// A bug or an impossible state (a blocking task that panicked, say).
    #[error("profile {name:?}: {detail}")]
    Internal { name: String, detail: String },
}
