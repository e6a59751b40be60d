//! Spans of one call chain, caller -> server 1 -> server 2, reach a real OTLP/gRPC
//! receiver as one trace. Its own test binary: the tracing subscriber is per process.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use ferry_proto::v1::agent_service_client::AgentServiceClient;
use ferry_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use ferry_proto::v1::{
    BackupEvent, BackupRequest, CancelRequest, CancelResponse, GetInfoRequest, GetInfoResponse,
    RestoreEvent, RestoreRequest, VerifyEvent, VerifyRequest,
};
use ferry_rpc::{OtlpConfig, TracingConfig};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument as _;

/// A metadata value that must never reach a collector.
const SECRET: &str = "Bearer not-for-traces";

/// The OTLP receiver: hands every export to the test.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let _ = self.0.send(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Server 1: `GetInfo` asks server 2 for its health inside a span of its own.
struct Relay {
    next: SocketAddr,
}

type Never<T> = tokio_stream::Empty<Result<T, Status>>;

#[tonic::async_trait]
impl AgentService for Relay {
    type BackupStream = Never<BackupEvent>;
    type RestoreStream = Never<RestoreEvent>;
    type VerifyStream = Never<VerifyEvent>;

    async fn backup(
        &self,
        _: Request<BackupRequest>,
    ) -> Result<Response<Never<BackupEvent>>, Status> {
        Err(Status::unimplemented("relay"))
    }
    async fn restore(
        &self,
        _: Request<RestoreRequest>,
    ) -> Result<Response<Never<RestoreEvent>>, Status> {
        Err(Status::unimplemented("relay"))
    }
    async fn verify(
        &self,
        _: Request<VerifyRequest>,
    ) -> Result<Response<Never<VerifyEvent>>, Status> {
        Err(Status::unimplemented("relay"))
    }
    async fn cancel(&self, _: Request<CancelRequest>) -> Result<Response<CancelResponse>, Status> {
        Err(Status::unimplemented("relay"))
    }

    async fn get_info(
        &self,
        _: Request<GetInfoRequest>,
    ) -> Result<Response<GetInfoResponse>, Status> {
        let next = channel(self.next).await;
        async {
            HealthClient::new(ferry_rpc::traced_channel(next))
                .check(HealthCheckRequest::default())
                .await
        }
        .instrument(tracing::info_span!("relay"))
        .await?;
        Ok(Response::new(GetInfoResponse::default()))
    }
}

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Seen {
    service: String,
    name: String,
    kind: i32,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
}

fn text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn flatten(exports: &[ExportTraceServiceRequest]) -> Vec<Seen> {
    let mut out = Vec::new();
    for rs in exports.iter().flat_map(|e| &e.resource_spans) {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
            out.push(Seen {
                service: service.clone(),
                name: span.name.clone(),
                kind: span.kind,
                trace_id: span.trace_id.clone(),
                span_id: span.span_id.clone(),
                parent: span.parent_span_id.clone(),
                attributes: attributes(&span.attributes),
            });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_trace_across_two_servers_reaches_the_collector() {
    let stop = CancellationToken::new();
    let (mut rx, collector) = start_collector(&stop).await;

    let guard = ferry_rpc::init_tracing_with(TracingConfig::new("info").with_otlp(
        OtlpConfig::new(format!("http://{collector}"), "ferry-otlp-test"),
    ));
    assert!(guard.exporting());

    let addr1 = start_relay_and_health_servers(&stop).await;
    call_through_the_relay_with_a_credential(addr1).await;

    let (exports, spans) = flush_until_all_four_spans_arrive(&guard, &mut rx).await;
    one_trace_with_each_hop_the_child_of_the_one_before(&spans);
    no_credential_reaches_the_collector(&spans, &exports);

    stop.cancel();
    drop(guard);
}

/// The collector: an OTLP/gRPC receiver until `stop`. What it receives, and its address.
async fn start_collector(
    stop: &CancellationToken,
) -> (
    mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
    SocketAddr,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (l, collector) = listener().await;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(l),
                stop.clone().cancelled_owned(),
            ),
    );
    (rx, collector)
}

/// Server 2 serves health only; server 1 relays GetInfo to it. Server 1's address.
async fn start_relay_and_health_servers(stop: &CancellationToken) -> SocketAddr {
    let (l2, addr2) = listener().await;
    let server2 = ferry_rpc::Server::new().expect("server 2");
    tokio::spawn(server2.serve(l2, stop.clone().cancelled_owned()));
    let (l1, addr1) = listener().await;
    let server1 = ferry_rpc::Server::new()
        .expect("server 1")
        .with_service(AgentServiceServer::new(Relay { next: addr2 }));
    tokio::spawn(server1.serve(l1, stop.clone().cancelled_owned()));
    addr1
}

/// The caller, in a span of its own, with a credential in its metadata.
async fn call_through_the_relay_with_a_credential(addr1: SocketAddr) {
    let mut client = AgentServiceClient::new(ferry_rpc::traced_channel(channel(addr1).await));
    let mut request = Request::new(GetInfoRequest::default());
    request
        .metadata_mut()
        .insert("authorization", SECRET.parse().expect("metadata"));
    client
        .get_info(request)
        .instrument(tracing::info_span!("caller"))
        .await
        .expect("GetInfo through the relay");
}

/// Batches leave every 5 s; flush until all four spans arrived. Every export received,
/// and their spans.
async fn flush_until_all_four_spans_arrive(
    guard: &ferry_rpc::TracingGuard,
    rx: &mut mpsc::UnboundedReceiver<ExportTraceServiceRequest>,
) -> (Vec<ExportTraceServiceRequest>, Vec<Seen>) {
    let mut exports = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        guard.flush();
        while let Ok(e) = rx.try_recv() {
            exports.push(e);
        }
        let spans = flatten(&exports);
        let names = [
            "caller",
            "relay",
            "ferry.v1.AgentService/GetInfo",
            "grpc.health.v1.Health/Check",
        ];
        if names.iter().all(|n| spans.iter().any(|s| s.name == *n)) {
            break spans;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "spans missing at the collector; got {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (exports, spans)
}

/// One trace, and each hop the child of the one before it; the request span still
/// records the caller's traceparent and the method.
fn one_trace_with_each_hop_the_child_of_the_one_before(spans: &[Seen]) {
    let one = |name: &str| {
        let found: Vec<&Seen> = spans.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one span {name}: {spans:#?}");
        found[0].clone()
    };
    let caller = one("caller");
    let server1 = one("ferry.v1.AgentService/GetInfo");
    let relay = one("relay");
    let server2 = one("grpc.health.v1.Health/Check");

    assert_eq!(caller.trace_id.len(), 16);
    assert!(caller.parent.is_empty(), "the caller's span is the root");
    for s in [&server1, &relay, &server2] {
        assert_eq!(
            s.trace_id, caller.trace_id,
            "{} in the caller's trace",
            s.name
        );
    }
    assert_eq!(
        server1.parent, caller.span_id,
        "server 1 is the caller's child"
    );
    assert_eq!(
        relay.parent, server1.span_id,
        "the relay span is server 1's"
    );
    assert_eq!(
        server2.parent, relay.span_id,
        "server 2 is the child of server 1's span"
    );
    assert_eq!(server1.kind, SpanKind::Server as i32);
    assert_eq!(server2.kind, SpanKind::Server as i32);

    // The request span still records the caller's traceparent and the method.
    assert_eq!(
        server2.attributes.get("traceparent").map(String::as_str),
        Some(format!("00-{}-{}-01", hex(&relay.trace_id), hex(&relay.span_id)).as_str())
    );
    assert_eq!(
        server1.attributes.get("method").map(String::as_str),
        Some("/ferry.v1.AgentService/GetInfo")
    );
}

/// Every span names the service; no metadata but traceparent went anywhere.
fn no_credential_reaches_the_collector(spans: &[Seen], exports: &[ExportTraceServiceRequest]) {
    for s in spans {
        assert_eq!(s.service, "ferry-otlp-test", "service.name of {}", s.name);
        assert!(
            !s.attributes.contains_key("authorization"),
            "{} has an authorization attribute",
            s.name
        );
    }
    let everything = format!("{exports:?}");
    assert!(
        !everything.contains("not-for-traces"),
        "a credential reached the collector"
    );
}
