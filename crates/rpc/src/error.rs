//! The error contract every Ferry service speaks (docs/errors.md has the policy).
//!
//! - Each service error says what kind of failure it is ([`Kind`]: an [`ErrorCode`],
//!   and a [`Remedy`] when what the caller must do sets the code) and the next step;
//!   [`grpc_code`] is the one table from kind to gRPC code.
//! - A status carries a `google.rpc.Status` whose details are `ferry.v1.ErrorDetail`
//!   (code, message, object, cluster, hint) and the standard messages any gRPC client
//!   reads: `google.rpc.ErrorInfo` always, `google.rpc.ResourceInfo` when an object is
//!   concerned, `google.rpc.BadRequest` when a request field is at fault.
//! - [`kube_kind`] classifies a Kubernetes API failure the same way for every service.

use std::borrow::Cow;
use std::collections::HashMap;

use ferry_proto::v1::{ErrorCode, ErrorDetail, ObjectRef};
use prost::Message;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

/// `ErrorInfo.domain` of every Ferry error.
pub const ERROR_DOMAIN: &str = "ferry.dev";

const ERROR_DETAIL_TYPE: &str = "type.googleapis.com/ferry.v1.ErrorDetail";

/// The gRPC code an [`ErrorCode`] travels under: the one table every service uses.
pub const fn grpc_code(code: ErrorCode) -> Code {
    match code {
        ErrorCode::InvalidArgument => Code::InvalidArgument,
        ErrorCode::NotFound => Code::NotFound,
        ErrorCode::AlreadyExists => Code::AlreadyExists,
        ErrorCode::PermissionDenied => Code::PermissionDenied,
        ErrorCode::Unauthenticated => Code::Unauthenticated,
        ErrorCode::Unreachable => Code::Unavailable,
        // The state must change first (something created, a run finished, a key
        // replaced); retrying the same call as it is does not help.
        ErrorCode::MissingPrerequisite
        | ErrorCode::Conflict
        | ErrorCode::WrongKey
        | ErrorCode::Volume => Code::FailedPrecondition,
        // Another writer holds the lock: retry the whole operation later.
        ErrorCode::RepositoryLocked => Code::Aborted,
        ErrorCode::Integrity => Code::DataLoss,
        ErrorCode::Cancelled => Code::Cancelled,
        ErrorCode::Timeout => Code::DeadlineExceeded,
        ErrorCode::Internal | ErrorCode::Unspecified => Code::Internal,
    }
}

/// What the caller must do about a failure, when that, not its kind, sets the gRPC
/// code (as gRPC's own guidance chooses codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remedy {
    /// Nothing beyond what the kind says: [`grpc_code`] decides.
    ByKind,
    /// Change the request: INVALID_ARGUMENT (an altered token is INTEGRITY of the
    /// caller's input, not lost data).
    FixRequest,
    /// Fix some state the call depends on, not its own target (a Secret a profile
    /// names, a bucket, an expired token, a peer's profile): FAILED_PRECONDITION, where
    /// NOT_FOUND would wrongly say the call's own target is missing.
    FixState,
    /// Leave the feature out, or use a server that has it: UNIMPLEMENTED.
    Unsupported,
    /// Call again later, unchanged (a dependency did not answer): UNAVAILABLE.
    RetryLater,
}

/// What kind of failure an error is: its detail code, and what the caller must do
/// when that sets the gRPC code instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kind {
    pub code: ErrorCode,
    pub remedy: Remedy,
}

impl Kind {
    /// A failure whose gRPC code is its kind's ([`grpc_code`]).
    pub const fn new(code: ErrorCode) -> Kind {
        Kind {
            code,
            remedy: Remedy::ByKind,
        }
    }

    /// A failure of some state the call depends on ([`Remedy::FixState`]).
    pub const fn precondition(code: ErrorCode) -> Kind {
        Kind::canonical(code, Remedy::FixState)
    }

    /// A failure in the request's own content ([`Remedy::FixRequest`]).
    pub const fn in_request(code: ErrorCode) -> Kind {
        Kind::canonical(code, Remedy::FixRequest)
    }

    /// Something this server does not do ([`Remedy::Unsupported`]).
    pub const fn unsupported(code: ErrorCode) -> Kind {
        Kind::canonical(code, Remedy::Unsupported)
    }

    /// A failure that may pass if the same call is made later ([`Remedy::RetryLater`]).
    pub const fn retry_later(code: ErrorCode) -> Kind {
        Kind::canonical(code, Remedy::RetryLater)
    }

    /// A remedy that gives the code the kind has anyway is no remedy: one kind, one
    /// value, whoever made it.
    const fn canonical(code: ErrorCode, remedy: Remedy) -> Kind {
        let kind = Kind { code, remedy };
        let by_kind = Kind::new(code);
        if kind.grpc() as i32 == by_kind.grpc() as i32 {
            by_kind
        } else {
            kind
        }
    }

    /// The gRPC code. Cancellation stays CANCELLED whatever the remedy.
    pub const fn grpc(self) -> Code {
        match (self.remedy, self.code) {
            (_, ErrorCode::Cancelled) => Code::Cancelled,
            (Remedy::ByKind, code) => grpc_code(code),
            (Remedy::FixRequest, _) => Code::InvalidArgument,
            (Remedy::FixState, _) => Code::FailedPrecondition,
            (Remedy::Unsupported, _) => Code::Unimplemented,
            (Remedy::RetryLater, _) => Code::Unavailable,
        }
    }

    /// The kind a status from another Ferry (or an older one without details) had,
    /// to pass it on unchanged.
    pub fn of_status(status: &Status) -> Kind {
        let code = match detail(status) {
            Some(d) => ErrorCode::try_from(d.code).unwrap_or(ErrorCode::Internal),
            None => match status.code() {
                Code::Unavailable => ErrorCode::Unreachable,
                Code::DeadlineExceeded => ErrorCode::Timeout,
                Code::Unimplemented => ErrorCode::MissingPrerequisite,
                Code::Cancelled => ErrorCode::Cancelled,
                Code::InvalidArgument => ErrorCode::InvalidArgument,
                Code::NotFound => ErrorCode::NotFound,
                Code::AlreadyExists => ErrorCode::AlreadyExists,
                Code::PermissionDenied => ErrorCode::PermissionDenied,
                Code::Unauthenticated => ErrorCode::Unauthenticated,
                _ => ErrorCode::Internal,
            },
        };
        let remedy = match status.code() {
            Code::InvalidArgument => Remedy::FixRequest,
            Code::FailedPrecondition => Remedy::FixState,
            Code::Unimplemented => Remedy::Unsupported,
            Code::Unavailable => Remedy::RetryLater,
            _ => Remedy::ByKind,
        };
        Kind::canonical(code, remedy)
    }

    /// Whether the same call may succeed later without anyone changing anything.
    pub const fn is_retryable(self) -> bool {
        matches!(self.remedy, Remedy::RetryLater)
            || matches!(self.remedy, Remedy::ByKind)
                && matches!(
                    self.code,
                    ErrorCode::Unreachable | ErrorCode::Timeout | ErrorCode::RepositoryLocked
                )
    }
}

/// A service's error, as the contract needs it. Each service implements this for its
/// error enum, and `From<ServiceErr> for Status` is then [`ServiceError::to_status`].
pub trait ServiceError: std::error::Error {
    /// What kind of failure this is.
    fn kind(&self) -> Kind;

    /// The next step for the user; empty only for a cancellation.
    fn hint(&self) -> Cow<'_, str>;

    /// The cluster the failure concerns, if any.
    fn cluster(&self) -> &str {
        ""
    }

    /// The Kubernetes object the failure concerns, if any.
    fn object(&self) -> Option<ObjectRef> {
        None
    }

    /// The request field at fault, for `google.rpc.BadRequest`.
    fn field(&self) -> Option<&str> {
        None
    }

    /// The error as a job report or a status carries it.
    fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.kind().code as i32,
            message: self.to_string(),
            object: self.object(),
            cluster: self.cluster().to_string(),
            hint: self.hint().into_owned(),
        }
    }

    /// The error as an RPC answer.
    fn to_status(&self) -> Status {
        status_with(self.kind().grpc(), self.detail(), self.field())
    }
}

/// A status whose details carry `detail` (inside a `google.rpc.Status`, with the
/// standard ErrorInfo and, for an object, ResourceInfo); its message is the detail's
/// message. Services go through [`ServiceError`]; this is for codes decided elsewhere
/// (a peer's status passed on, the caller checks of crates/authz).
pub fn status(code: Code, detail: ErrorDetail) -> Status {
    status_with(code, detail, None)
}

/// [`status`], naming the request field at fault (`google.rpc.BadRequest`).
pub fn status_with(code: Code, detail: ErrorDetail, field: Option<&str>) -> Status {
    let error_code = ErrorCode::try_from(detail.code).unwrap_or(ErrorCode::Unspecified);
    let mut metadata = HashMap::new();
    if !detail.cluster.is_empty() {
        metadata.insert("cluster".to_string(), detail.cluster.clone());
    }
    if !detail.hint.is_empty() {
        metadata.insert("hint".to_string(), detail.hint.clone());
    }
    let mut details = ErrorDetails::with_error_info(reason(error_code), ERROR_DOMAIN, metadata);
    if let Some(o) = &detail.object {
        let name = if o.namespace.is_empty() {
            o.name.clone()
        } else {
            format!("{}/{}", o.namespace, o.name)
        };
        details.set_resource_info(
            format!("{}/{}", o.api_version, o.kind),
            name,
            detail.cluster.clone(),
            detail.message.clone(),
        );
    }
    if let Some(field) = field {
        details.set_bad_request(vec![FieldViolation::new(field, detail.message.clone())]);
    }
    let standard = Status::with_error_details(code, detail.message.clone(), details);
    // Ferry's own detail goes next to the standard ones, in the same google.rpc.Status.
    let mut rpc = tonic_types::Status::decode(standard.details()).unwrap_or_default();
    rpc.details.push(prost_types::Any {
        type_url: ERROR_DETAIL_TYPE.to_string(),
        value: detail.encode_to_vec(),
    });
    Status::with_details(code, detail.message, rpc.encode_to_vec().into())
}

/// `ErrorInfo.reason`: the ErrorCode's name without its prefix ("NOT_FOUND").
pub fn reason(code: ErrorCode) -> String {
    code.as_str_name()
        .trim_start_matches("ERROR_CODE_")
        .to_string()
}

/// Shorthand for a detail without an object or cluster.
pub fn error_detail(
    code: ErrorCode,
    message: impl Into<String>,
    hint: impl Into<String>,
) -> ErrorDetail {
    ErrorDetail {
        code: code as i32,
        message: message.into(),
        object: None,
        cluster: String::new(),
        hint: hint.into(),
    }
}

/// The `ErrorDetail` a status from a Ferry service carries, if any.
pub fn detail(status: &Status) -> Option<ErrorDetail> {
    detail_in(status.details())
}

/// The `ErrorDetail` in the bytes of a `google.rpc.Status` (`grpc-status-details-bin`).
pub fn detail_in(details: &[u8]) -> Option<ErrorDetail> {
    if details.is_empty() {
        return None;
    }
    let rpc = tonic_types::Status::decode(details).ok()?;
    rpc.details
        .iter()
        .find(|a| a.type_url == ERROR_DETAIL_TYPE)
        .and_then(|a| ErrorDetail::decode(a.value.as_slice()).ok())
}

/// A Kubernetes API failure, classified once for every service: what kind of failure it
/// is and a next step that fits any caller (a service may word its own, naming the
/// rights it needs).
pub fn kube_kind(e: &kube::Error) -> (Kind, &'static str) {
    match e {
        kube::Error::Api(s) => match s.code {
            // Ferry's own credential, not the caller's: the caller cannot log in again
            // to fix it, so it is not UNAUTHENTICATED.
            401 => (
                Kind::new(ErrorCode::PermissionDenied),
                "the cluster does not accept Ferry's credential; check the kubeconfig or \
                 in-cluster ServiceAccount Ferry runs with",
            ),
            403 => (
                Kind::new(ErrorCode::PermissionDenied),
                "grant Ferry's service account the access named in the message",
            ),
            404 => (
                Kind::new(ErrorCode::NotFound),
                "check the name and namespace; the object may have been removed",
            ),
            409 => (
                Kind::new(ErrorCode::Conflict),
                "another writer changed the object at the same time; retry",
            ),
            429 | 500..=599 => (
                Kind::new(ErrorCode::Unreachable),
                "the Kubernetes API is unavailable or overloaded; retry, and check the API \
                 server's health",
            ),
            _ => (
                Kind::precondition(ErrorCode::Internal),
                "see the message; the API server refused the request",
            ),
        },
        e if kube_is_network(e) => (
            Kind::new(ErrorCode::Unreachable),
            "check that the Kubernetes API server is up and reachable from Ferry, then retry",
        ),
        _ => (Kind::new(ErrorCode::Internal), "report this as a bug"),
    }
}

/// Network-level failures, as opposed to the API answering with an error.
pub fn kube_is_network(e: &kube::Error) -> bool {
    matches!(e, kube::Error::HyperError(_) | kube::Error::Service(_))
}

/// The HTTP status of an API server answer, if the server answered.
pub fn kube_http_status(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_survive_the_status() {
        let s = status(
            Code::NotFound,
            error_detail(
                ErrorCode::NotFound,
                "pair p1 not found",
                "list pairs with `ferry pair list`",
            ),
        );
        assert_eq!(s.message(), "pair p1 not found");
        let d = detail(&s).expect("detail");
        assert_eq!(d.code, ErrorCode::NotFound as i32);
        assert_eq!(d.hint, "list pairs with `ferry pair list`");
        assert!(detail(&Status::internal("plain")).is_none());
    }

    #[test]
    fn standard_details_come_along() {
        let mut d = error_detail(ErrorCode::NotFound, "Secret s3 missing", "create it");
        d.cluster = "a".into();
        d.object = Some(ObjectRef {
            api_version: "v1".into(),
            kind: "Secret".into(),
            namespace: "ferry-system".into(),
            name: "s3".into(),
        });
        let s = status_with(Code::FailedPrecondition, d, Some("credentials_secret"));
        let std = s.get_error_details();
        let info = std.error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "NOT_FOUND");
        assert_eq!(info.domain, ERROR_DOMAIN);
        assert_eq!(info.metadata.get("cluster").map(String::as_str), Some("a"));
        let resource = std.resource_info().expect("ResourceInfo");
        assert_eq!(resource.resource_type, "v1/Secret");
        assert_eq!(resource.resource_name, "ferry-system/s3");
        let bad = std.bad_request().expect("BadRequest");
        assert_eq!(bad.field_violations[0].field, "credentials_secret");
        assert_eq!(detail(&s).map(|d| d.cluster), Some("a".into()));
    }

    #[test]
    fn preconditions_and_cancellation() {
        assert_eq!(Kind::new(ErrorCode::NotFound).grpc(), Code::NotFound);
        assert_eq!(
            Kind::precondition(ErrorCode::NotFound).grpc(),
            Code::FailedPrecondition
        );
        assert_eq!(
            Kind::precondition(ErrorCode::Cancelled).grpc(),
            Code::Cancelled
        );
        assert_eq!(
            Kind::in_request(ErrorCode::Integrity).grpc(),
            Code::InvalidArgument
        );
        assert_eq!(
            Kind::unsupported(ErrorCode::InvalidArgument).grpc(),
            Code::Unimplemented
        );
        let passed = status(
            Code::FailedPrecondition,
            error_detail(ErrorCode::NotFound, "m", "h"),
        );
        assert_eq!(
            Kind::of_status(&passed),
            Kind::precondition(ErrorCode::NotFound)
        );
        assert_eq!(
            Kind::of_status(&Status::unavailable("down")),
            Kind::new(ErrorCode::Unreachable)
        );
        // A remedy that changes nothing is no remedy.
        assert_eq!(
            Kind::precondition(ErrorCode::WrongKey),
            Kind::new(ErrorCode::WrongKey)
        );
        assert_eq!(
            Kind::retry_later(ErrorCode::Unreachable),
            Kind::new(ErrorCode::Unreachable)
        );
    }
}
