//! The error contract, checked end to end. Each service's tests hand over one
//! representative error of each kind it produces; [`assert_round_trip`] serves them
//! through a real [`crate::Server`] (so through the logging layer too), reads them back
//! with a plain gRPC client, and checks every one against the one table: the gRPC code
//! is [`crate::grpc_code`] of its kind, and the same detail types come along (Ferry's
//! `ErrorDetail` and `google.rpc.ErrorInfo` always, `ResourceInfo` for an object,
//! `BadRequest` for a request field).

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::Arc;

use ferry_proto::v1::ErrorCode;
use tonic::server::NamedService;
use tonic::{Code, Request, Response, Status};
use tonic_types::StatusExt;

use crate::{ERROR_DOMAIN, Remedy, ServiceError};

const SERVICE: &str = "ferry.contract.v1.Errors";
const PATH: &str = "/ferry.contract.v1.Errors/Get";

/// What one representative error must look like to a client.
#[derive(Debug)]
struct Expected {
    label: String,
    code: ErrorCode,
    grpc: Code,
    cluster: String,
    object: bool,
    field: Option<String>,
}

/// Serves `errors` and checks each as a client receives it; panics naming the first
/// that breaks the contract. Every representative must take its gRPC code from its kind
/// (no [`Remedy`] other than `ByKind`), so that one kind reads the same from every
/// service. Returns the kinds covered.
pub async fn assert_round_trip(errors: &[&dyn ServiceError]) -> Vec<ErrorCode> {
    let mut expected = Vec::new();
    let mut statuses = Vec::new();
    for e in errors {
        let kind = e.kind();
        let label = e.to_string();
        assert_eq!(
            kind.remedy,
            Remedy::ByKind,
            "{label}: a representative error takes its gRPC code from its kind"
        );
        if kind.code != ErrorCode::Cancelled {
            assert!(!e.hint().is_empty(), "{label}: no next step");
        }
        expected.push(Expected {
            label,
            code: kind.code,
            grpc: crate::grpc_code(kind.code),
            cluster: e.cluster().to_string(),
            object: e.object().is_some(),
            field: e.field().map(str::to_string),
        });
        statuses.push(e.to_status());
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    let stop = tokio_util::sync::CancellationToken::new();
    let server = crate::Server::new()
        .expect("server")
        .with_service(Errors(Arc::new(statuses)));
    let serving = tokio::spawn(server.serve(listener, stop.clone().cancelled_owned()));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the contract server");
    for (index, want) in expected.iter().enumerate() {
        let mut client = tonic::client::Grpc::new(channel.clone());
        client.ready().await.expect("client ready");
        let codec = tonic_prost::ProstCodec::<u32, ()>::default();
        let index = u32::try_from(index).expect("fewer than 2^32 errors");
        let got = client
            .unary(
                Request::new(index),
                http::uri::PathAndQuery::from_static(PATH),
                codec,
            )
            .await
            .expect_err("every call fails");
        check(want, &got);
    }
    stop.cancel();
    let _ = serving.await;
    expected.iter().map(|e| e.code).collect()
}

fn check(want: &Expected, got: &Status) {
    let label = &want.label;
    assert_eq!(got.code(), want.grpc, "{label}: gRPC code");
    let detail = crate::detail(got).unwrap_or_else(|| panic!("{label}: no ferry.v1.ErrorDetail"));
    assert_eq!(detail.code, want.code as i32, "{label}: detail code");
    assert_eq!(detail.message, got.message(), "{label}: message");
    assert_eq!(detail.cluster, want.cluster, "{label}: cluster");
    let standard = got.get_error_details();
    let info = standard
        .error_info()
        .unwrap_or_else(|| panic!("{label}: no google.rpc.ErrorInfo"));
    assert_eq!(info.reason, crate::reason(want.code), "{label}: reason");
    assert_eq!(info.domain, ERROR_DOMAIN, "{label}: domain");
    assert_eq!(
        standard.resource_info().is_some(),
        want.object,
        "{label}: google.rpc.ResourceInfo exactly when an object is concerned"
    );
    let field = standard
        .bad_request()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()));
    assert_eq!(field, want.field, "{label}: google.rpc.BadRequest field");
}

/// A service whose one method fails with the status at the index it is sent.
#[derive(Clone, Debug)]
struct Errors(Arc<Vec<Status>>);

impl NamedService for Errors {
    const NAME: &'static str = SERVICE;
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = Result<T, Infallible>> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Errors {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let statuses = self.0.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<(), u32>::default();
            let mut grpc = tonic::server::Grpc::new(codec);
            Ok(grpc.unary(Fail(statuses), req).await)
        })
    }
}

struct Fail(Arc<Vec<Status>>);

impl tonic::server::UnaryService<u32> for Fail {
    type Response = ();
    type Future = Ready<Result<Response<()>, Status>>;

    fn call(&mut self, request: Request<u32>) -> Self::Future {
        let index = usize::try_from(request.into_inner()).unwrap_or(usize::MAX);
        ready(Err(self
            .0
            .get(index)
            .cloned()
            .unwrap_or_else(|| Status::out_of_range("no such error"))))
    }
}
