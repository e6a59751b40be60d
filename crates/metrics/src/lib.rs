//! Ferry's Prometheus metrics.
//!
//! One registry per process ([`metrics`]), so `ferry serve`'s components and a
//! standalone service expose the same names. Every component serves it as text on
//! `/metrics` when given `--metrics-listen` ([`spawn`]); the chart turns that on with
//! `metrics.enabled`.
//!
//! What is here and who moves it:
//!
//! | metric | labels | moved by |
//! |---|---|---|
//! | `grpc_server_handled_total` | `grpc_service`, `grpc_method`, `grpc_code` | every gRPC server, per finished call |
//! | `grpc_server_handling_seconds` | `grpc_service`, `grpc_method` | every gRPC server |
//! | `ferry_jobs_total` | `kind`, `result` | transfer, per finished job |
//! | `ferry_jobs_running` | `kind` | transfer |
//! | `ferry_migrations_total` | `result` | transfer, per finished migration |
//! | `ferry_migration_duration_seconds` | | transfer, per finished migration |
//! | `ferry_bytes_transferred_total` | `direction` (`uploaded`, `restored`) | transfer |
//! | `ferry_objects_applied_total` | `result` (`created`, `updated`, `skipped`, `failed`) | transfer |
//! | `ferry_repository_size_bytes` | `profile` | transfer, after each restore point it writes |
//! | `ferry_schedule_runs_total` | `schedule`, `result` | scheduler |
//! | `ferry_schedule_missed_runs_total` | `schedule` | scheduler |
//! | `ferry_last_success_timestamp_seconds` | `schedule` | scheduler |
//!
//! Label values come from Ferry's own vocabulary (job kinds, results, gRPC method
//! names it serves, schedule names an administrator chose), never from free text a
//! caller sends, so a caller cannot grow the registry without bound.

mod serve;

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub use serve::{MetricsError, spawn};

/// The Content-Type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Every metric Ferry exports, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// gRPC server metrics, named as the go-grpc-prometheus middleware names them so
    /// existing dashboards work.
    pub grpc: GrpcMetrics,
    /// Jobs, bytes and objects (the transfer service).
    pub jobs: JobMetrics,
    /// Schedule runs (the scheduler).
    pub schedules: ScheduleMetrics,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let grpc = GrpcMetrics::register(&mut registry);
        let jobs = JobMetrics::register(&mut registry);
        let schedules = ScheduleMetrics::register(&mut registry);
        Metrics {
            registry,
            grpc,
            jobs,
            schedules,
        }
    }

    /// The OpenMetrics text Prometheus scrapes.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcCallLabels {
    grpc_service: String,
    grpc_method: String,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcMethodLabels {
    grpc_service: String,
    grpc_method: String,
}

/// See [`Metrics::grpc`].
#[derive(Debug)]
pub struct GrpcMetrics {
    handled: Family<GrpcCallLabels, Counter>,
    seconds: Family<GrpcMethodLabels, Histogram>,
}

impl GrpcMetrics {
    fn register(registry: &mut Registry) -> GrpcMetrics {
        let handled = Family::<GrpcCallLabels, Counter>::default();
        registry.register(
            "grpc_server_handled",
            "gRPC calls finished on the server, by method and status code",
            handled.clone(),
        );
        let seconds = Family::<GrpcMethodLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 65 s: unary calls; streams that follow a job for longer
            // land in +Inf.
            Histogram::new(exponential_buckets(0.001, 2.0, 17))
        });
        registry.register_with_unit(
            "grpc_server_handling",
            "Time from a call's arrival to its last message, by method",
            Unit::Seconds,
            seconds.clone(),
        );
        GrpcMetrics { handled, seconds }
    }

    /// Counts a finished call to `path` (`/package.Service/Method`) that ended with
    /// `code` (the canonical name, "OK", "PermissionDenied", ...). A path the server
    /// does not serve (`code` Unimplemented) is counted under `unknown`, so a caller
    /// inventing paths cannot add series.
    pub fn handled(&self, path: &str, code: &'static str, elapsed: Duration) {
        let (service, method) = match path.trim_start_matches('/').split_once('/') {
            Some((s, m)) if code != "Unimplemented" => (s.to_owned(), m.to_owned()),
            _ => ("unknown".to_owned(), "unknown".to_owned()),
        };
        self.seconds
            .get_or_create(&GrpcMethodLabels {
                grpc_service: service.clone(),
                grpc_method: method.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.handled
            .get_or_create(&GrpcCallLabels {
                grpc_service: service,
                grpc_method: method,
                grpc_code: code,
            })
            .inc();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProfileLabel {
    profile: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

/// Which way volume data went, for `ferry_bytes_transferred_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Sent to the object store (the bytes the repository did not have yet).
    Uploaded,
    /// Written into volumes on the destination.
    Restored,
}

impl Direction {
    fn label(self) -> &'static str {
        match self {
            Direction::Uploaded => "uploaded",
            Direction::Restored => "restored",
        }
    }
}

/// See [`Metrics::jobs`]. Kinds and results are the API's names in lower case
/// (`migration`, `export`, `import`, `restore`; `succeeded`, `partially_succeeded`,
/// `failed`, `cancelled`).
#[derive(Debug)]
pub struct JobMetrics {
    jobs: Family<KindResult, Counter>,
    running: Family<KindLabel, Gauge>,
    migrations: Family<ResultLabel, Counter>,
    migration_seconds: Histogram,
    bytes: Family<DirectionLabel, Counter>,
    objects: Family<ResultLabel, Counter>,
    repository_bytes: Family<ProfileLabel, Gauge<f64, AtomicU64>>,
}

impl JobMetrics {
    fn register(registry: &mut Registry) -> JobMetrics {
        let jobs = Family::<KindResult, Counter>::default();
        registry.register(
            "ferry_jobs",
            "Jobs finished, by kind and result",
            jobs.clone(),
        );
        let running = Family::<KindLabel, Gauge>::default();
        registry.register(
            "ferry_jobs_running",
            "Jobs running now, by kind",
            running.clone(),
        );
        let migrations = Family::<ResultLabel, Counter>::default();
        registry.register(
            "ferry_migrations",
            "Migrations finished, by result",
            migrations.clone(),
        );
        // 1 s to about 4.5 h.
        let migration_seconds = Histogram::new(exponential_buckets(1.0, 2.0, 15));
        registry.register_with_unit(
            "ferry_migration_duration",
            "Time from a migration's start to its end, whatever the result",
            Unit::Seconds,
            migration_seconds.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "ferry_bytes_transferred",
            "Volume data moved: uploaded to the object store, or restored into volumes",
            bytes.clone(),
        );
        let objects = Family::<ResultLabel, Counter>::default();
        registry.register(
            "ferry_objects_applied",
            "Kubernetes objects applied on a destination, by result",
            objects.clone(),
        );
        let repository_bytes = Family::<ProfileLabel, Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "ferry_repository_size",
            "Bytes of packs in the repository a profile opens, as of the last restore point \
             this service wrote through it",
            Unit::Bytes,
            repository_bytes.clone(),
        );
        JobMetrics {
            jobs,
            running,
            migrations,
            migration_seconds,
            bytes,
            objects,
            repository_bytes,
        }
    }

    /// A job of `kind` runs until the guard is dropped.
    pub fn running(&self, kind: &'static str) -> RunningJob {
        let gauge = self.running.get_or_create(&KindLabel { kind }).clone();
        gauge.inc();
        RunningJob { gauge }
    }

    /// A job of `kind` ended with `result` after `took` (also one that never ran:
    /// cancelled while queued).
    pub fn finished(&self, kind: &'static str, result: &'static str, took: Duration) {
        self.jobs.get_or_create(&KindResult { kind, result }).inc();
        if kind == "migration" {
            self.migrations.get_or_create(&ResultLabel { result }).inc();
            self.migration_seconds.observe(took.as_secs_f64());
        }
    }

    /// Adds `n` bytes of volume data moved `direction`.
    pub fn bytes(&self, direction: Direction, n: u64) {
        self.bytes
            .get_or_create(&DirectionLabel {
                direction: direction.label(),
            })
            .inc_by(n);
    }

    /// The repository of `profile` (an administrator's name) holds `bytes` of packs.
    pub fn repository_size(&self, profile: &str, bytes: u64) {
        self.repository_bytes
            .get_or_create(&ProfileLabel {
                profile: profile.to_owned(),
            })
            .set(bytes as f64);
    }

    /// Adds `n` objects applied with `result` (`created`, `updated`, `skipped`,
    /// `failed`).
    pub fn objects(&self, result: &'static str, n: u64) {
        self.objects
            .get_or_create(&ResultLabel { result })
            .inc_by(n);
    }
}

/// See [`JobMetrics::running`].
#[derive(Debug)]
pub struct RunningJob {
    gauge: Gauge,
}

impl Drop for RunningJob {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabel {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleResult {
    schedule: String,
    result: &'static str,
}

/// See [`Metrics::schedules`].
#[derive(Debug)]
pub struct ScheduleMetrics {
    runs: Family<ScheduleResult, Counter>,
    missed: Family<ScheduleLabel, Counter>,
    last_success: Family<ScheduleLabel, Gauge<f64, AtomicU64>>,
}

impl ScheduleMetrics {
    fn register(registry: &mut Registry) -> ScheduleMetrics {
        let runs = Family::<ScheduleResult, Counter>::default();
        registry.register(
            "ferry_schedule_runs",
            "Schedule runs finished, by schedule and result",
            runs.clone(),
        );
        let missed = Family::<ScheduleLabel, Counter>::default();
        registry.register(
            "ferry_schedule_missed_runs",
            "Runs that came due while the schedule's previous run was still going, and so \
             did not start",
            missed.clone(),
        );
        let last_success = Family::<ScheduleLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "ferry_last_success_timestamp_seconds",
            "When the schedule's latest successful run finished, in seconds since the epoch",
            last_success.clone(),
        );
        ScheduleMetrics {
            runs,
            missed,
            last_success,
        }
    }

    /// A run of `schedule` finished with `result` (`succeeded`, `nothing_to_do`,
    /// `failed`), at `unix_seconds`. The first two are successes.
    pub fn run_finished(&self, schedule: &str, result: &'static str, unix_seconds: f64) {
        self.runs
            .get_or_create(&ScheduleResult {
                schedule: schedule.to_owned(),
                result,
            })
            .inc();
        if matches!(result, "succeeded" | "nothing_to_do") {
            self.last_succeeded(schedule, unix_seconds);
        }
    }

    /// Sets the time of `schedule`'s latest success, also from the store at start, so
    /// an alert on its age survives a restart.
    pub fn last_succeeded(&self, schedule: &str, unix_seconds: f64) {
        let gauge = self.last_success.get_or_create(&ScheduleLabel {
            schedule: schedule.to_owned(),
        });
        if gauge.get() < unix_seconds {
            gauge.set(unix_seconds);
        }
    }

    /// A run of `schedule` came due and did not start.
    pub fn missed(&self, schedule: &str) {
        self.missed
            .get_or_create(&ScheduleLabel {
                schedule: schedule.to_owned(),
            })
            .inc();
    }

    /// Drops a deleted schedule's series.
    pub fn forget(&self, schedule: &str) {
        let label = ScheduleLabel {
            schedule: schedule.to_owned(),
        };
        self.missed.remove(&label);
        self.last_success.remove(&label);
        for result in ["succeeded", "nothing_to_do", "failed"] {
            self.runs.remove(&ScheduleResult {
                schedule: schedule.to_owned(),
                result,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = prometheus_parse::Scrape::parse(lines).ok()?;
        scrape
            .samples
            .into_iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .and_then(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    #[test]
    fn a_fresh_registry_parses_and_counts_what_it_is_told() {
        let m = Metrics::new();
        let running = m.jobs.running("migration");
        assert_eq!(
            sample(&m.encode(), "ferry_jobs_running", &[("kind", "migration")]),
            Some(1.0)
        );
        drop(running);
        m.jobs
            .finished("migration", "succeeded", Duration::from_secs(3));
        m.jobs.bytes(Direction::Uploaded, 1000);
        m.jobs.bytes(Direction::Uploaded, 24);
        m.jobs.objects("created", 7);
        m.grpc
            .handled("/ferry.v1.TransferService/GetJob", "OK", Duration::ZERO);
        m.grpc
            .handled("/no.Such/Path", "Unimplemented", Duration::ZERO);
        m.schedules
            .run_finished("nightly", "succeeded", 1_700_000_000.0);
        m.schedules.missed("nightly");
        let text = m.encode();

        assert_eq!(
            sample(&text, "ferry_migrations_total", &[("result", "succeeded")]),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, "ferry_jobs_running", &[("kind", "migration")]),
            Some(0.0)
        );
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).expect("parses");
        let histogram = parsed
            .samples
            .iter()
            .find(|s| s.metric == "ferry_migration_duration_seconds")
            .map(|s| s.value.clone());
        match histogram {
            Some(prometheus_parse::Value::Histogram(buckets)) => {
                assert_eq!(buckets.last().map(|b| b.count), Some(1.0));
                // 3 s falls in the 4 s bucket, not the 2 s one.
                let le = |x: f64| buckets.iter().find(|b| b.less_than == x).map(|b| b.count);
                assert_eq!((le(2.0), le(4.0)), (Some(0.0), Some(1.0)));
            }
            other => panic!("ferry_migration_duration_seconds: {other:?}\n{text}"),
        }
        assert_eq!(
            sample(
                &text,
                "ferry_bytes_transferred_total",
                &[("direction", "uploaded")]
            ),
            Some(1024.0)
        );
        assert_eq!(
            sample(
                &text,
                "ferry_objects_applied_total",
                &[("result", "created")]
            ),
            Some(7.0)
        );
        assert_eq!(
            sample(
                &text,
                "grpc_server_handled_total",
                &[
                    ("grpc_service", "ferry.v1.TransferService"),
                    ("grpc_method", "GetJob"),
                    ("grpc_code", "OK")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "grpc_server_handled_total",
                &[("grpc_service", "unknown"), ("grpc_code", "Unimplemented")]
            ),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                "ferry_last_success_timestamp_seconds",
                &[("schedule", "nightly")]
            ),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            sample(
                &text,
                "ferry_schedule_missed_runs_total",
                &[("schedule", "nightly")]
            ),
            Some(1.0)
        );
        m.schedules.forget("nightly");
        assert_eq!(
            sample(
                &m.encode(),
                "ferry_schedule_missed_runs_total",
                &[("schedule", "nightly")]
            ),
            None
        );
    }
}
