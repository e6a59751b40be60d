//! Without an OTLP endpoint nothing is exported and no exporter thread runs. Its own
//! test binary: the tracing subscriber is per process.

use tonic::service::Interceptor as _;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_no_exporter_starts() {
    let guard = ferry_rpc::init_tracing_with(ferry_rpc::TracingConfig::new("info"));
    assert!(!guard.exporting());
    let req = tracing::info_span!("caller")
        .in_scope(|| ferry_rpc::propagate(None).call(tonic::Request::new(())))
        .expect("intercepted");
    assert!(req.metadata().is_empty(), "no trace context without export");

    // The batch exporter's thread is "OpenTelemetry.Traces.BatchProcessor" (the kernel
    // keeps 15 bytes of a name).
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    assert!(!threads.is_empty());
    assert!(
        threads.iter().all(|t| !t.starts_with("OpenTelemetry")),
        "exporter thread running: {threads:?}"
    );
    drop(guard);
}
