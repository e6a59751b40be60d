//! Logging, spans and trace context, the same for every Ferry binary.
//!
//! Logs always go to stderr, filtered by `RUST_LOG`, as text for people or as one JSON
//! object per line for log collectors (`--log-format json` or `FERRY_LOG_FORMAT=json`;
//! see [`LogFormat`]). Export of spans to an
//! OpenTelemetry collector over OTLP/gRPC is optional and off unless an endpoint is
//! set; off, no exporter is built and no exporter thread starts.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `RUST_LOG` | which spans and events exist at all (default `info`); only those are logged and exported |
//! | `FERRY_LOG_FORMAT` | `text` (default) or `json`; a binary's `--log-format` flag wins over it |
//! | `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | the collector's OTLP/gRPC address, e.g. `http://otel-collector:4317`; wins over the next |
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` | the same, shared with other signals; either one turns export on |
//! | `OTEL_SERVICE_NAME` | `service.name` of the exported spans (default: the binary's file name, e.g. `ferry-transfer`) |
//! | `OTEL_SDK_DISABLED` | `true` turns export off even with an endpoint set |
//! | `OTEL_RESOURCE_ATTRIBUTES` | more resource attributes, `k=v,k2=v2` (e.g. `k8s.pod.name=…`) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TRACES_HEADERS` | metadata sent with every export (a collector's API key, say) |
//! | `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` | export timeout in milliseconds (default 10000) |
//! | `OTEL_BSP_SCHEDULE_DELAY`, `OTEL_BSP_MAX_QUEUE_SIZE`, `OTEL_BSP_MAX_EXPORT_BATCH_SIZE` | batching: delay in ms (default 5000), queue and batch sizes |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | sampling (default: follow the caller's decision, sample roots) |
//!
//! The endpoint is plaintext gRPC (`http://`; a bare `host:port` means that too):
//! point it at a collector in the cluster or a sidecar, which forwards over TLS where
//! needed. An `https://` endpoint is refused with a warning and export stays off, as
//! is `OTEL_EXPORTER_OTLP_COMPRESSION`; `OTEL_EXPORTER_OTLP_PROTOCOL` is ignored (always
//! gRPC). Export runs on a thread and runtime of its own (`ferry-otlp`), so it works
//! before and while the binary's runtime shuts down.
//!
//! Trace context travels as W3C `traceparent` (and `tracestate`) metadata. A server
//! built with [`crate::Server`] opens one span per request, recording the caller's
//! `traceparent`; with export on, that span is the child of the caller's span. A client
//! whose channel goes through [`traced_channel`] or [`propagate`] sends the current
//! span's context, so the callee's spans join the same trace. Nothing else from a
//! request (no body, no other header) is put on a span.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{AsciiMetadataValue, MetadataMap};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The W3C trace-context header carried from service to service.
pub const TRACEPARENT: &str = "traceparent";

/// Its companion, vendor-specific trace state; forwarded, never recorded.
const TRACESTATE: &str = "tracestate";

/// Set once spans are exported: request spans then join the caller's trace.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// How log lines on stderr look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, spans with their fields, target,
    /// message and fields.
    #[default]
    Text,
    /// One JSON object per line for log collectors: `timestamp`, `level`, `target`,
    /// `fields` (the message is `fields.message`), `span` (the innermost span, its name
    /// and fields) and `spans` (every open span, outermost first).
    Json,
}

/// `--log-format`, for a binary's command line (`ferry` has it as a global flag; the
/// service binaries get it through [`parse_with_logging`]).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// How log lines on stderr look: text for people, or json (one object per line with
    /// level, target, fields and spans) for log collectors.
    #[arg(
        long,
        value_enum,
        env = "FERRY_LOG_FORMAT",
        global = true,
        value_name = "FORMAT"
    )]
    pub log_format: Option<LogFormat>,
}

/// How [`init_tracing_with`] sets up logging and export. [`TracingConfig::from_env`]
/// reads the variables in the [module documentation](self).
#[derive(Debug, Clone)]
pub struct TracingConfig {
    filter: String,
    format: LogFormat,
    /// A `FERRY_LOG_FORMAT` that names no format: warned about once logging runs.
    bad_format: Option<String>,
    otlp: Option<OtlpConfig>,
}

/// Where spans go, and under which `service.name`.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    endpoint: String,
    service_name: String,
}

impl OtlpConfig {
    /// `endpoint` is a collector's OTLP/gRPC address (`http://host:4317`, or `host:4317`).
    pub fn new(endpoint: impl Into<String>, service_name: impl Into<String>) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            service_name: service_name.into(),
        }
    }

    /// The address the exporter dials: a bare `host:port` is plaintext HTTP/2.
    fn uri(&self) -> String {
        if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("http://{}", self.endpoint)
        }
    }
}

impl TracingConfig {
    /// Logging filtered by `filter` (`RUST_LOG` syntax), no export.
    pub fn new(filter: impl Into<String>) -> TracingConfig {
        TracingConfig {
            filter: filter.into(),
            format: LogFormat::Text,
            bad_format: None,
            otlp: None,
        }
    }

    /// Log lines in `format`.
    pub fn with_format(mut self, format: LogFormat) -> TracingConfig {
        self.format = format;
        self.bad_format = None;
        self
    }

    /// The format a command line asked for, if it asked.
    pub fn with_log_args(self, args: &LogArgs) -> TracingConfig {
        match args.log_format {
            Some(format) => self.with_format(format),
            None => self,
        }
    }

    /// Spans also exported over OTLP/gRPC.
    pub fn with_otlp(mut self, otlp: OtlpConfig) -> TracingConfig {
        self.otlp = Some(otlp);
        self
    }

    /// `RUST_LOG` (when unset or invalid, `default_filter`), `FERRY_LOG_FORMAT` and the
    /// `OTEL_*` variables.
    pub fn from_env(default_filter: &str) -> TracingConfig {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let filter = var(EnvFilter::DEFAULT_ENV)
            .filter(|f| EnvFilter::try_new(f).is_ok())
            .unwrap_or_else(|| default_filter.to_string());
        let mut config = TracingConfig::new(filter);
        if let Some(name) = var(LOG_FORMAT_ENV) {
            match <LogFormat as clap::ValueEnum>::from_str(name.trim(), true) {
                Ok(format) => config.format = format,
                Err(_) => config.bad_format = Some(name),
            }
        }
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true");
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .filter(|_| !disabled);
        match endpoint {
            Some(endpoint) => {
                let service_name = var("OTEL_SERVICE_NAME").unwrap_or_else(binary_name);
                config.with_otlp(OtlpConfig::new(endpoint, service_name))
            }
            None => config,
        }
    }
}

/// The variable that picks the log format when no `--log-format` is given.
const LOG_FORMAT_ENV: &str = "FERRY_LOG_FORMAT";

/// Parses a service binary's flags `A` together with `--log-format`, then sets up
/// logging (default filter `info`) as [`init_tracing`] does, in that format. Usage
/// errors, `--help` and `--version` exit here, as `A::parse()` would.
pub fn parse_with_logging<A: clap::Parser>() -> (A, TracingGuard) {
    let (args, log) =
        try_parse_with_log_args::<A>(std::env::args_os()).unwrap_or_else(|e| e.exit());
    let guard = init_tracing_with(TracingConfig::from_env("info").with_log_args(&log));
    (args, guard)
}

/// `A`'s flags and [`LogArgs`] from `argv` (the program name first), without
/// touching `A`'s own definition.
pub fn try_parse_with_log_args<A: clap::Parser>(
    argv: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<(A, LogArgs), clap::Error> {
    use clap::{Args as _, FromArgMatches as _};
    let mut cmd = LogArgs::augment_args(A::command());
    let matches = cmd.try_get_matches_from_mut(argv)?;
    let args = A::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    let log = LogArgs::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))?;
    Ok((args, log))
}

/// The running binary's file name, `ferry` when unknown.
fn binary_name() -> String {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ferry".to_string())
}

/// Keeps span export running; dropping it exports the spans still queued (waiting up
/// to 5 s) and stops the exporter. Hold it in `main` until the end:
/// `let _tracing = ferry_rpc::init_tracing();` (not `let _ =`, which drops it at once).
#[derive(Debug)]
#[must_use = "dropping the guard stops span export; keep it until the process ends"]
pub struct TracingGuard {
    exporter: Option<Exporter>,
}

/// The span pipeline and the runtime its gRPC connection lives on. A runtime of its
/// own: export works before the binary's runtime starts, whatever its flavour, and
/// while that runtime waits for the last spans to leave.
#[derive(Debug)]
struct Exporter {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TracingGuard {
    /// Whether spans are being exported.
    pub fn exporting(&self) -> bool {
        self.exporter.is_some()
    }

    /// Exports every span ended so far, blocking the calling thread until the
    /// collector answered or the export timed out.
    pub fn flush(&self) {
        if let Some(exporter) = &self.exporter
            && let Err(e) = exporter.provider.force_flush()
        {
            tracing::warn!(error = %e, "exporting spans failed");
        }
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if self.exporter.is_some() {
            EXPORTING.store(false, Ordering::Release);
        }
        drop(self.exporter.take());
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
        // Allowed inside another runtime, unlike dropping it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`), and exports spans over
/// OTLP/gRPC when an endpoint is set (see the [module documentation](self)): every
/// service binary's logging, set up the same way. Keep the guard until `main` returns.
pub fn init_tracing() -> TracingGuard {
    init_tracing_with(TracingConfig::from_env("info"))
}

/// [`init_tracing`] with an explicit configuration instead of the environment. When
/// the exporter cannot be built (an `https://` endpoint, say), a warning is logged and
/// only logging is set up.
pub fn init_tracing_with(config: TracingConfig) -> TracingGuard {
    let (exporter, problem) = match config.otlp.as_ref().map(Exporter::new) {
        Some(Ok(exporter)) => (Some(exporter), None),
        Some(Err(problem)) => (None, Some(problem)),
        None => (None, None),
    };
    let otel = exporter.as_ref().map(|e| {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::Layer as _;
        tracing_opentelemetry::layer()
            .with_tracer(e.provider.tracer("ferry"))
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                !is_transport(meta.target())
            }))
    });
    // One of the two is set; an absent layer is a no-op.
    let (text, json) = match config.format {
        LogFormat::Text => (
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let installed = tracing_subscriber::registry()
        .with(EnvFilter::new(&config.filter))
        .with(text)
        .with(json)
        .with(otel)
        .try_init();
    if let Err(e) = installed {
        tracing::warn!(error = %e, "tracing was already set up; keeping the first setup");
        return TracingGuard { exporter: None };
    }
    if let Some(problem) = problem {
        tracing::warn!(%problem, "not exporting spans");
    }
    if let Some(value) = &config.bad_format {
        tracing::warn!(
            value = %value,
            "{LOG_FORMAT_ENV} names no log format; logging as text (set it to text or json)"
        );
    }
    if let (Some(e), Some(otlp)) = (&exporter, &config.otlp) {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        opentelemetry::global::set_tracer_provider(e.provider.clone());
        EXPORTING.store(true, Ordering::Release);
        tracing::info!(endpoint = %otlp.uri(), service = %otlp.service_name, "exporting spans over OTLP");
    }
    TracingGuard { exporter }
}

impl Exporter {
    /// Spans batched to the collector at `otlp`, tagged with its service name.
    fn new(otlp: &OtlpConfig) -> Result<Exporter, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ferry-otlp")
            .enable_all()
            .build()
            .map_err(|e| format!("starting the exporter's runtime: {e}"))?;
        // The exporter's connection is spawned on the runtime entered here.
        let exporter = {
            let _entered = runtime.enter();
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(otlp.uri())
                .build()
        };
        let exporter = match exporter {
            Ok(exporter) => exporter,
            Err(e) => {
                runtime.shutdown_background();
                return Err(format!("OTLP endpoint {}: {e}", otlp.uri()));
            }
        };
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(otlp.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Exporter {
            provider,
            runtime: Some(runtime),
        })
    }
}

/// Whether `target` is the gRPC stack's own: its spans (at `debug`, say) are not
/// exported, or every export would make spans of its own to export.
fn is_transport(target: &str) -> bool {
    const CRATES: [&str; 7] = [
        "h2",
        "hyper",
        "hyper_util",
        "tonic",
        "tower",
        "opentelemetry_sdk",
        "opentelemetry_otlp",
    ];
    CRATES.iter().any(|c| {
        target
            .strip_prefix(c)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// One span per request: the method, and the caller's `traceparent` so logs of one
/// migration can be followed across services. With export on, the span is named after
/// the method and is the child of the caller's span.
pub(crate) fn request_span(req: &http::Request<()>) -> tracing::Span {
    let parent = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let method = req.uri().path();
    let span = tracing::info_span!("grpc", method = %method, traceparent = %parent,
        otel.name = tracing::field::Empty, otel.kind = tracing::field::Empty);
    if EXPORTING.load(Ordering::Acquire) {
        span.record("otel.name", method.trim_start_matches('/'));
        span.record("otel.kind", "server");
        let cx = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&TraceHeaders(req.headers()))
        });
        // A span filtered out by RUST_LOG has nothing to attach to; that is fine.
        let _ = span.set_parent(cx);
    }
    span
}

/// The trace-context headers of a request, and only those: a propagator never sees
/// `authorization` or any other header.
struct TraceHeaders<'a>(&'a http::HeaderMap);

impl Extractor for TraceHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key != TRACEPARENT && key != TRACESTATE {
            return None;
        }
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|k| self.0.contains_key(*k))
            .collect()
    }
}

/// Collects what a propagator writes, to put it on outgoing metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        let key = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        if let Ok(v) = value.parse::<AsciiMetadataValue>() {
            self.0.insert(key, v);
        }
    }
}

/// Client interceptor: sends the trace context so the callee's request span joins the
/// caller's trace. With export on, that is the current span's context; otherwise (or
/// outside any span) the `traceparent` given to [`propagate`], if any. With neither,
/// the request goes out unchanged.
#[derive(Debug, Clone, Default)]
pub struct Propagate {
    fallback: Option<AsciiMetadataValue>,
}

impl Interceptor for Propagate {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current(req.metadata_mut());
        if !req.metadata().contains_key(TRACEPARENT)
            && let Some(tp) = &self.fallback
        {
            req.metadata_mut().insert(TRACEPARENT, tp.clone());
        }
        Ok(req)
    }
}

/// Writes the current span's trace context into `metadata`; nothing when spans are
/// not exported or no span is current.
fn inject_current(metadata: &mut MetadataMap) {
    if !EXPORTING.load(Ordering::Acquire) {
        return;
    }
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

/// The interceptor for a caller that was handed a `traceparent` (a request's, say) to
/// pass on when its own span has no trace context.
pub fn propagate(traceparent: Option<String>) -> Propagate {
    Propagate {
        fallback: traceparent.and_then(|tp| tp.parse().ok()),
    }
}

/// A channel whose calls carry the current span's trace context (and, made by
/// [`crate::ClientTls::traced`], whose TLS failures say what did not match).
pub type TracedChannel = InterceptedService<crate::tls::TlsChannel, Propagate>;

/// Wraps `channel` so every call made through it sends the current span's trace
/// context: `AgentServiceClient::new(ferry_rpc::traced_channel(channel))`.
pub fn traced_channel(channel: Channel) -> TracedChannel {
    InterceptedService::new(crate::tls::TlsChannel::plain(channel), Propagate::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn without_export_the_given_traceparent_is_sent() {
        let req = propagate(Some(TP.into()))
            .call(tonic::Request::new(()))
            .expect("intercepted");
        assert_eq!(
            req.metadata()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok()),
            Some(TP)
        );
        let req = Propagate::default()
            .call(tonic::Request::new(()))
            .expect("intercepted");
        assert!(req.metadata().is_empty());
    }

    #[test]
    fn only_trace_headers_reach_a_propagator() {
        let mut headers = http::HeaderMap::new();
        headers.insert(TRACEPARENT, TP.parse().expect("header"));
        headers.insert("authorization", "Bearer s3cret".parse().expect("header"));
        let h = TraceHeaders(&headers);
        assert_eq!(h.get(TRACEPARENT), Some(TP));
        assert_eq!(h.get("authorization"), None);
        assert_eq!(h.keys(), vec![TRACEPARENT]);
    }

    #[test]
    fn the_grpc_stack_is_not_exported() {
        assert!(is_transport("h2::proto::connection"));
        assert!(is_transport("hyper"));
        assert!(is_transport("opentelemetry_sdk"));
        assert!(!is_transport("ferry_rpc::trace"));
        assert!(!is_transport("h2o"));
    }

    #[test]
    fn the_exporter_needs_no_ambient_runtime_and_refuses_tls() {
        let exporter = Exporter::new(&OtlpConfig::new("127.0.0.1:1", "t")).expect("exporter");
        drop(exporter);
        let tls = Exporter::new(&OtlpConfig::new("https://collector:4317", "t"));
        assert!(tls.expect_err("no TLS").contains("https://collector:4317"));
    }

    /// A service binary's own flags, as `ferry_agent::Args` say.
    #[derive(Debug, clap::Parser)]
    struct Demo {
        #[arg(long)]
        port: u16,
    }

    #[test]
    fn a_binary_takes_log_format_beside_its_own_flags() {
        let (demo, log) =
            try_parse_with_log_args::<Demo>(["demo", "--log-format", "json", "--port", "7"])
                .expect("parsed");
        assert_eq!(demo.port, 7);
        assert_eq!(log.log_format, Some(LogFormat::Json));
        let bad = try_parse_with_log_args::<Demo>(["demo", "--port", "7", "--log-format", "xml"])
            .expect_err("no such format");
        let text = bad.to_string();
        assert!(text.contains("xml") && text.contains("json"), "{text}");
        let config = TracingConfig::new("info").with_log_args(&LogArgs {
            log_format: Some(LogFormat::Json),
        });
        assert_eq!(config.format, LogFormat::Json);
    }

    #[test]
    fn a_bare_endpoint_is_plaintext() {
        assert_eq!(OtlpConfig::new("otel:4317", "x").uri(), "http://otel:4317");
        assert_eq!(
            OtlpConfig::new("http://otel:4317", "x").uri(),
            "http://otel:4317"
        );
    }
}
