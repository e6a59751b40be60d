//! The catalog's errors, and the one place that decides their kinds in the error contract
//! (crates/rpc, docs/errors.md): code, the object and cluster concerned, the next step,
//! so a client tells "Secret missing" from "wrong key" from "store unreachable" without
//! parsing text.

use std::borrow::Cow;

use ferry_proto::v1::{ErrorCode, ErrorDetail, ObjectRef};
use ferry_rpc::{Kind, ServiceError};
use tonic::{Code, Status};

/// Everything a catalog request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    /// A request field is missing or malformed.
    #[error("invalid {field}: {detail}")]
    InvalidArgument { field: &'static str, detail: String },

    /// Something the API allows that this build does not do yet.
    #[error("{what} is not supported by this catalog yet; {next_step}")]
    Unsupported { what: String, next_step: String },

    /// No profile has this name.
    #[error(
        "profile {name:?} not found on cluster {cluster}; list profiles (ListProfiles) or create \
         it first"
    )]
    ProfileNotFound { name: String, cluster: String },

    /// A profile with this name exists (or is being created right now).
    #[error(
        "profile {name:?} already exists on cluster {cluster}; pick another name or delete the \
         existing profile first"
    )]
    ProfileExists { name: String, cluster: String },

    /// A Secret the profile names is not there.
    #[error(
        "{purpose} Secret {namespace}/{name} not found on cluster {cluster}; create it \
         (see services/catalog/README.md for its keys) or name another Secret"
    )]
    SecretNotFound {
        purpose: &'static str,
        namespace: String,
        name: String,
        cluster: String,
    },

    /// A Secret exists but lacks a key the profile needs, or the value is unusable.
    #[error("{purpose} Secret {namespace}/{name} on cluster {cluster}: {detail}")]
    SecretInvalid {
        purpose: &'static str,
        namespace: String,
        name: String,
        cluster: String,
        detail: String,
    },

    /// The Kubernetes API refused or failed a call.
    #[error("{action} on cluster {cluster}: {message}; {next_step}")]
    Kube {
        action: String,
        cluster: String,
        message: String,
        next_step: String,
        /// The HTTP status of an API answer; `None` when the server was not reached.
        http_status: Option<u16>,
        /// The Secret or other object the call was about, if one.
        object: Option<Box<ObjectRef>>,
        #[source]
        source: Box<kube::Error>,
    },

    /// Nothing is at the location and the request did not ask to create a repository.
    #[error(
        "no repository at {location} (profile {profile:?}); check the bucket and prefix, or \
         set create_repository to initialise one there"
    )]
    RepositoryMissing { profile: String, location: String },

    /// The S3 bucket does not exist.
    #[error(
        "bucket {bucket:?} does not exist at {location} (profile {profile:?}); create the \
         bucket first or fix the bucket name"
    )]
    BucketMissing {
        profile: String,
        bucket: String,
        location: String,
    },

    /// The key from the Secret does not open the repository; `engine` says which keys
    /// would (their fingerprints and labels, never key material).
    #[error(
        "the key in Secret {key_secret} does not open repository {location} (profile \
         {profile:?}): {engine}"
    )]
    WrongKey {
        profile: String,
        location: String,
        key_secret: String,
        engine: String,
    },

    /// The object store answered but refused the credentials or the operation.
    #[error("{location} refused {operation} (profile {profile:?}): {detail}")]
    AccessDenied {
        profile: String,
        location: String,
        operation: &'static str,
        detail: String,
    },

    /// An import profile's credentials may write: the destination must only read.
    #[error(
        "the credentials of import profile {profile:?} can write to {location}; an import \
         profile must be read-only so the destination can never change the source's data"
    )]
    ImportCanWrite { profile: String, location: String },

    /// A change was asked of a repository through a profile that may only read it.
    #[error(
        "profile {profile:?} on cluster {cluster} is an import profile, which only reads \
         repository {location}; {action} needs a profile that may write: run it on the cluster \
         that writes the repository, through its export or migration profile"
    )]
    ReadOnlyProfile {
        profile: String,
        cluster: String,
        location: String,
        action: &'static str,
    },

    /// The object store could not be reached (after retries).
    #[error("repository {location} (profile {profile:?}) is unreachable: {source}")]
    Unreachable {
        profile: String,
        location: String,
        #[source]
        source: Box<ferry_repo::Error>,
    },

    /// The profile now opens a different repository than it was created for, or than
    /// the request expects.
    #[error(
        "profile {profile:?} now opens repository {found}, expected {expected}; the location was \
         reinitialised or the profile repointed: check the location, or delete and recreate the \
         profile"
    )]
    RepositoryMismatch {
        profile: String,
        expected: String,
        found: String,
    },

    /// No restore point with this id in the repository.
    #[error(
        "restore point {id} not found in repository {location} (profile {profile:?}); list them \
         with ListRestorePoints"
    )]
    RestorePointNotFound {
        id: String,
        profile: String,
        location: String,
    },

    /// The repository engine failed; `context` says at which step and on what.
    #[error("{context}: {source}")]
    Repo {
        context: String,
        #[source]
        source: Box<ferry_repo::Error>,
    },

    /// Writing or removing the agent's profile file failed.
    #[error(
        "{op} agent profile file {path}: {source}; check that the agent profiles directory is \
         writable by the catalog"
    )]
    AgentProfileFile {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A migration token was refused (altered, expired, made for another destination
    /// key, untrusted signer) or could not be issued.
    #[error(transparent)]
    Token(#[from] ferry_token::TokenError),

    /// This cluster has no import key to open migration tokens with.
    #[error(
        "cluster {cluster} has no import key yet; create it with CreateImportKey, give its \
         public key to the source cluster's IssueMigrationToken, and use the token it returns"
    )]
    ImportKeyMissing { cluster: String },

    /// Ferry would have to overwrite a Secret to store a key.
    #[error(
        "Secret {namespace}/{name} already exists on cluster {cluster}; Ferry never overwrites a \
         Secret when {purpose}: delete it, or name another Secret in encryption_key_secret"
    )]
    SecretExists {
        purpose: &'static str,
        namespace: String,
        name: String,
        cluster: String,
    },

    /// A restore point outside what an import profile's migration token named.
    #[error(
        "{what} is outside what profile {profile:?} may read: {scope}, as its migration token \
         named"
    )]
    OutsideProfileScope {
        what: String,
        profile: String,
        scope: String,
    },

    /// A migration token's key opens its profile's whole repository: tokens are issued
    /// only for an export profile bound to the token's namespace and holding it alone.
    #[error(
        "profile {profile:?} {why}; a migration token's key opens the profile's whole \
         repository, so tokens are issued only for an export profile bound to the token's \
         namespace ({namespace}) whose repository holds that namespace alone"
    )]
    TokenNeedsBoundProfile {
        profile: String,
        namespace: String,
        why: String,
    },

    /// A profile bound to one namespace over a repository that holds others.
    #[error(
        "{location} holds restore points of {others} besides namespace {namespace}; an \
         export profile bound to {namespace} must be its repository's only namespace"
    )]
    BoundRepositoryHoldsOthers {
        location: String,
        namespace: String,
        others: String,
    },

    /// The migration token was accepted before: each token makes one profile.
    #[error(
        "this migration token was already used on cluster {cluster}: it made profile \
         {profile:?} at {used_at}; a token makes one profile, once. Use that profile, or ask \
         the source cluster for a new token"
    )]
    TokenUsed {
        cluster: String,
        profile: String,
        used_at: String,
    },

    /// The location a migration token names holds another repository than the token's.
    #[error(
        "the migration token names repository {expected}, but {location} holds repository \
         {found}; the location was reinitialised since: ask the source cluster for a new token"
    )]
    TokenRepositoryMismatch {
        location: String,
        expected: String,
        found: String,
    },

    /// The caller is unknown, or may not see what the request names.
    #[error(transparent)]
    Access(#[from] ferry_authz::AuthzError),

    /// The catalog's own state database failed.
    #[error(transparent)]
    Store(#[from] ferry_store::StoreError),

    /// A bug or an unexpected state in the catalog itself.
    #[error("internal error in the catalog: {0}")]
    Internal(String),
}

/// A Kubernetes API failure of the catalog's own calls, in the catalog's words: the
/// message already names the access needed.
fn kube_class(source: &kube::Error) -> (Kind, &'static str) {
    let (kind, _) = ferry_rpc::kube_kind(source);
    let hint = match kind.code {
        ErrorCode::PermissionDenied => {
            "grant the catalog's service account the access named in the message"
        }
        ErrorCode::NotFound => "check the name and namespace",
        ErrorCode::Unreachable => "check that the cluster's API server is reachable, then retry",
        _ => "see the message; the API server refused the request",
    };
    (kind, hint)
}

impl CatalogError {
    pub(crate) fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        CatalogError::InvalidArgument {
            field,
            detail: detail.into(),
        }
    }

    /// True when the same call may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            CatalogError::Unreachable { .. } => true,
            CatalogError::Kube { http_status, .. } => {
                http_status.is_none_or(|s| s >= 500 || s == 429)
            }
            CatalogError::Repo { source, .. } => source.is_transient(),
            _ => false,
        }
    }

    /// The kind of failure and the next step for the user.
    fn class(&self) -> (Kind, &'static str) {
        use ferry_repo::Error as R;
        match self {
            CatalogError::InvalidArgument { .. } => {
                (Kind::new(ErrorCode::InvalidArgument), "fix the request")
            }
            CatalogError::Unsupported { .. } => (
                Kind::unsupported(ErrorCode::InvalidArgument),
                "leave that field out",
            ),
            CatalogError::ProfileNotFound { .. } => (
                Kind::new(ErrorCode::NotFound),
                "list profiles with ListProfiles, or create the profile",
            ),
            CatalogError::ProfileExists { .. } => (
                Kind::new(ErrorCode::AlreadyExists),
                "pick another name, or delete the existing profile first",
            ),
            CatalogError::SecretNotFound { .. } => (
                Kind::precondition(ErrorCode::NotFound),
                "create the Secret in that namespace (keys: see services/catalog/README.md), \
                 or name an existing one",
            ),
            CatalogError::SecretInvalid { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "add the missing key to the Secret (see services/catalog/README.md)",
            ),
            CatalogError::Kube { source, .. } => kube_class(source),
            CatalogError::RepositoryMissing { .. } => (
                Kind::precondition(ErrorCode::NotFound),
                "check bucket and prefix, or set create_repository to initialise a repository",
            ),
            CatalogError::BucketMissing { .. } => (
                Kind::precondition(ErrorCode::NotFound),
                "create the bucket in the object store, or fix the bucket name",
            ),
            CatalogError::WrongKey { .. } => (
                Kind::new(ErrorCode::WrongKey),
                "put one of the keys the message lists into the encryption key Secret, or add \
                 this Secret's key to the repository with `ferry repo key add`",
            ),
            CatalogError::AccessDenied { .. } => (
                Kind::new(ErrorCode::PermissionDenied),
                "check the access key in the credentials Secret and its policy on the bucket",
            ),
            CatalogError::ImportCanWrite { .. } => (
                Kind::precondition(ErrorCode::PermissionDenied),
                "give the import profile credentials with a read-and-list-only policy on the bucket",
            ),
            CatalogError::ReadOnlyProfile { .. } => (
                Kind::precondition(ErrorCode::PermissionDenied),
                "prune through the export or migration profile of the cluster that writes the \
                 repository",
            ),
            CatalogError::Unreachable { .. } => (
                Kind::new(ErrorCode::Unreachable),
                "check the endpoint URL and that the object store is up, then retry",
            ),
            CatalogError::RepositoryMismatch { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "point the profile back at the expected repository, or recreate the profile",
            ),
            CatalogError::RestorePointNotFound { .. } => (
                Kind::new(ErrorCode::NotFound),
                "list restore points with ListRestorePoints; it may have been pruned",
            ),
            CatalogError::AgentProfileFile { .. } => (
                Kind::new(ErrorCode::Internal),
                "make the agent profiles directory writable for the catalog",
            ),
            CatalogError::Token(e) => token_kind(e),
            CatalogError::ImportKeyMissing { .. } => (
                Kind::new(ErrorCode::NotFound),
                "create this cluster's import key with CreateImportKey",
            ),
            CatalogError::SecretExists { .. } => (
                Kind::new(ErrorCode::AlreadyExists),
                "delete the Secret, or name another one in encryption_key_secret",
            ),
            CatalogError::OutsideProfileScope { .. } => (
                Kind::new(ErrorCode::PermissionDenied),
                "ask for what the token named, or ask the source cluster for a migration token \
                 that names this and make a profile from it",
            ),
            CatalogError::TokenNeedsBoundProfile { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "export the namespace through a profile of its own (ferry profile create NAME \
                 --kind export --namespace NS --s3 URL/PREFIX-OF-ITS-OWN ...) and issue the \
                 token for that profile",
            ),
            CatalogError::BoundRepositoryHoldsOthers { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "give the profile a prefix of its own for this namespace, or leave namespace \
                 out",
            ),
            CatalogError::TokenUsed { .. } => (
                Kind::new(ErrorCode::Conflict),
                "ask the source cluster for a new migration token",
            ),
            CatalogError::TokenRepositoryMismatch { .. } => (
                Kind::precondition(ErrorCode::InvalidArgument),
                "ask the source cluster for a new migration token",
            ),
            CatalogError::Store(_) => (
                Kind::new(ErrorCode::Internal),
                "check the catalog's data directory (disk space, permissions)",
            ),
            CatalogError::Internal(_) => (Kind::new(ErrorCode::Internal), "report this as a bug"),
            CatalogError::Access(e) => (e.kind(), e.hint()),
            CatalogError::Repo { source, .. } => match source.as_ref() {
                R::WrongKey { .. } => (
                    Kind::new(ErrorCode::WrongKey),
                    "put the key the repository was initialised with into the encryption key Secret",
                ),
                e => ferry_profile::repo_kind(e),
            },
        }
    }

    /// The detail a status carries for this error.
    pub fn detail(&self) -> ErrorDetail {
        ServiceError::detail(self)
    }

    /// The gRPC code this error maps to.
    pub fn code(&self) -> Code {
        self.class().0.grpc()
    }
}

impl ServiceError for CatalogError {
    fn kind(&self) -> Kind {
        self.class().0
    }

    fn hint(&self) -> Cow<'_, str> {
        self.class().1.into()
    }

    fn cluster(&self) -> &str {
        match self {
            CatalogError::ProfileNotFound { cluster, .. }
            | CatalogError::ProfileExists { cluster, .. }
            | CatalogError::ImportKeyMissing { cluster }
            | CatalogError::ReadOnlyProfile { cluster, .. }
            | CatalogError::SecretNotFound { cluster, .. }
            | CatalogError::SecretExists { cluster, .. }
            | CatalogError::SecretInvalid { cluster, .. }
            | CatalogError::Kube { cluster, .. } => cluster,
            CatalogError::Access(e) => e.cluster().unwrap_or_default(),
            _ => "",
        }
    }

    fn object(&self) -> Option<ObjectRef> {
        let secret = |namespace: &str, name: &str| ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        match self {
            CatalogError::SecretNotFound {
                namespace, name, ..
            }
            | CatalogError::SecretExists {
                namespace, name, ..
            }
            | CatalogError::SecretInvalid {
                namespace, name, ..
            } => Some(secret(namespace, name)),
            CatalogError::Kube { object, .. } => object.as_deref().cloned(),
            _ => None,
        }
    }

    fn field(&self) -> Option<&str> {
        match self {
            CatalogError::InvalidArgument { field, .. } => Some(field),
            _ => None,
        }
    }
}

impl From<CatalogError> for Status {
    fn from(e: CatalogError) -> Status {
        e.to_status()
    }
}

/// How a refused migration token maps: altered is INTEGRITY, expired TIMEOUT, made for
/// another destination key WRONG_KEY, so a client tells them apart without the text.
fn token_kind(e: &ferry_token::TokenError) -> (Kind, &'static str) {
    use ferry_token::TokenError as T;
    match e {
        // The caller's input is what is damaged, not stored data.
        T::BadSignature { .. } => (
            Kind::in_request(ErrorCode::Integrity),
            "ask the source cluster for a new migration token and copy it unchanged",
        ),
        T::Malformed { .. } | T::UnsupportedVersion { .. } | T::Invalid { .. } => (
            Kind::new(ErrorCode::InvalidArgument),
            "copy the whole migration token block again, or ask the source cluster for a new one",
        ),
        T::Expired { .. } => (
            Kind::precondition(ErrorCode::Timeout),
            "issue a new token on the source cluster (IssueMigrationToken) and use it before it \
             expires",
        ),
        T::NotYetValid { .. } => (
            Kind::precondition(ErrorCode::InvalidArgument),
            "check the clocks of both clusters, then retry",
        ),
        T::WrongRecipient { .. } | T::Unwrap { .. } => (
            Kind::new(ErrorCode::WrongKey),
            "issue the token on the source cluster for this cluster's import key (GetImportKey)",
        ),
        T::UntrustedSigner { .. } => (
            Kind::new(ErrorCode::PermissionDenied),
            "use a token from the trusted source cluster",
        ),
        _ => (Kind::new(ErrorCode::Internal), "report this as a bug"),
    }
}

/// The HTTP status of an API server answer, if the server answered.
pub(crate) fn kube_status(e: &kube::Error) -> Option<u16> {
    ferry_rpc::kube_http_status(e)
}

/// The API server's own words, or the client error.
pub(crate) fn kube_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => s.message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_errors_name_the_secret_and_cluster() {
        let e = CatalogError::SecretNotFound {
            purpose: "credentials",
            namespace: "ferry-system".into(),
            name: "s3".into(),
            cluster: "prod".into(),
        };
        let d = e.detail();
        assert_eq!(d.code, ErrorCode::NotFound as i32);
        assert_eq!(d.cluster, "prod");
        assert_eq!(d.object.as_ref().map(|o| o.name.as_str()), Some("s3"));
        assert!(d.message.contains("ferry-system/s3"), "{}", d.message);
        assert!(!d.hint.is_empty());
        let s = Status::from(e);
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(ferry_rpc::detail(&s).map(|d| d.code), Some(d.code));
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;
    use ferry_repo::Error as R;

    /// One error of each kind the catalog produces reaches a gRPC client with the code
    /// of the one table (crates/rpc) and the same detail types as from every service.
    #[tokio::test]
    async fn every_kind_reaches_a_client_by_the_one_table() {
        let repo = |source| CatalogError::Repo {
            context: "listing restore points of profile \"main\"".into(),
            source: Box::new(source),
        };
        let errors = [
            CatalogError::invalid("name", "empty"),
            CatalogError::ProfileNotFound {
                name: "main".into(),
                cluster: "a".into(),
            },
            CatalogError::SecretExists {
                purpose: "storing the generated key",
                namespace: "ferry-system".into(),
                name: "main-key".into(),
                cluster: "a".into(),
            },
            CatalogError::AccessDenied {
                profile: "main".into(),
                location: "s3:http://127.0.0.1:9000/ferry".into(),
                operation: "opening",
                detail: "AccessDenied".into(),
            },
            CatalogError::Unreachable {
                profile: "main".into(),
                location: "s3:http://127.0.0.1:9000/ferry".into(),
                source: Box::new(R::Internal("connection refused".into())),
            },
            CatalogError::WrongKey {
                profile: "main".into(),
                location: "s3:http://127.0.0.1:9000/ferry".into(),
                key_secret: "ferry-system/main-key".into(),
                engine: "no key slot opens".into(),
            },
            repo(R::Locked {
                repo: "r".into(),
                key: "locks/l1".into(),
                holder: None,
            }),
            repo(R::Corrupt {
                what: "index i1".into(),
                detail: "bad MAC".into(),
            }),
            repo(R::Cancelled),
            CatalogError::Access(ferry_authz::AuthzError::Denied {
                user: "alice".into(),
                cluster: "a".into(),
                missing: vec![ferry_authz::Access::see_namespace("bob-shop")],
            }),
            CatalogError::Access(ferry_authz::AuthzError::NoToken),
            CatalogError::Internal("impossible".into()),
        ];
        let errors: Vec<&dyn ServiceError> = errors.iter().map(|e| e as _).collect();
        ferry_rpc::contract::assert_round_trip(&errors).await;
    }
}
