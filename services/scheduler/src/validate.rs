//! CreateSchedule's checks: a request becomes a schedule definition, or an error naming
//! the field and the fix. Server defaults (retry policy) are filled in here, so a client
//! reads back exactly what applies to its schedule.

use std::time::Duration;

use ferry_proto::v1::{
    ApplicationSelector, CreateScheduleRequest, ImportPolicySpec, Retention, RetryPolicy, Schedule,
    create_schedule_request, schedule,
};

use crate::config::{RetryDefaults, SchedulerConfig};
use crate::error::{Result, SchedulerError};
use crate::trigger::{self, CRON_HINT, Trigger, proto_duration, std_duration};

/// Most attempts a run may have: more is a loop, not a retry.
const MAX_ATTEMPTS: u32 = 100;
/// Longest name, so it fits wherever a name is shown.
const MAX_NAME: usize = 253;
/// Shortest retention max_age: a shorter one could remove what a run just wrote.
const MIN_MAX_AGE: Duration = Duration::from_secs(60);

/// The schedule a request describes (without id, creation time or state) and its trigger.
pub(crate) fn definition(
    config: &SchedulerConfig,
    req: CreateScheduleRequest,
) -> Result<(Schedule, Trigger)> {
    check_name(&req.name)?;
    let trigger = match req.trigger {
        Some(create_schedule_request::Trigger::Interval(d)) => {
            let every = trigger::interval(&d)?;
            if every < config.min_interval {
                return Err(SchedulerError::invalid(
                    "interval",
                    format!(
                        "{}s is shorter than this scheduler's minimum of {}s",
                        every.as_secs(),
                        config.min_interval.as_secs()
                    ),
                    format!(
                        "use an interval of at least {}s; each run is a whole transfer job",
                        config.min_interval.as_secs()
                    ),
                ));
            }
            Some(schedule::Trigger::Interval(d))
        }
        Some(create_schedule_request::Trigger::Cron(expr)) => Some(schedule::Trigger::Cron(expr)),
        None => None,
    };
    // Also checks the time zone, for interval schedules too: a bad one is a typo.
    trigger::time_zone_of(&req.time_zone)?;
    let parsed = Trigger::of(trigger.as_ref(), &req.time_zone)?;
    if let (Trigger::Cron { .. }, Some(schedule::Trigger::Cron(expr))) = (&parsed, &trigger)
        && parsed.next_after(jiff::Timestamp::now()).is_none()
    {
        return Err(SchedulerError::invalid(
            "cron",
            format!("{expr:?} names no date in the next five years (such as February 30)"),
            CRON_HINT,
        ));
    }
    let spec = match req.spec {
        Some(create_schedule_request::Spec::Migration(m)) => {
            check_job(
                "migration",
                m.dry_run,
                &m.schedule_id,
                m.application.as_ref(),
            )?;
            if !m.request_id.is_empty() {
                // Every run is a new start; one key would answer every run with the first's jobs.
                return Err(SchedulerError::invalid(
                    "migration.request_id",
                    format!(
                        "set to {:?}; each run of a schedule starts new jobs",
                        m.request_id
                    ),
                    "leave request_id empty",
                ));
            }
            schedule::Spec::Migration(m)
        }
        Some(create_schedule_request::Spec::Export(e)) => {
            check_job("export", e.dry_run, &e.schedule_id, e.application.as_ref())?;
            schedule::Spec::Export(e)
        }
        Some(create_schedule_request::Spec::ImportPolicy(p)) => {
            check_import_policy(&p)?;
            schedule::Spec::ImportPolicy(p)
        }
        None => {
            return Err(SchedulerError::invalid(
                "spec",
                "missing; say what each run does",
                "set migration (a StartMigrationRequest), export (a StartExportRequest) or \
                 import_policy (an ImportPolicySpec)",
            ));
        }
    };
    let retention = retention(req.retention, &spec)?;
    let service_account = service_account(&req.service_account, &spec)?;
    let definition = Schedule {
        name: req.name,
        trigger,
        time_zone: req.time_zone,
        spec: Some(spec),
        retention,
        retry: Some(retry_policy(config.retry, req.retry)?),
        suspended: req.suspended,
        service_account,
        ..Default::default()
    };
    Ok((definition, parsed))
}

/// The namespace a schedule's runs work in on this cluster: the application's, or for an
/// import policy the one it restores into. None for an import policy of every namespace.
pub(crate) fn schedule_namespace(spec: &schedule::Spec) -> Option<String> {
    let app = match spec {
        schedule::Spec::Migration(m) => m.application.as_ref(),
        schedule::Spec::Export(e) => e.application.as_ref(),
        schedule::Spec::ImportPolicy(p) => p.application.as_ref(),
    }
    .map(|a| a.namespace.clone())
    .filter(|ns| !ns.is_empty())?;
    Some(match spec {
        schedule::Spec::ImportPolicy(p) => p
            .apply
            .as_ref()
            .and_then(|a| a.namespace_mapping.get(&app).cloned())
            .unwrap_or(app),
        _ => app,
    })
}

/// `service_account` as the schedule records it, "NAMESPACE/NAME"; empty when none
/// (which only a scheduler that checks no callers accepts: see
/// [`crate::Scheduler::create_as`]). "NAME" is a ServiceAccount of the schedule's
/// namespace; "NAMESPACE/NAME" names its namespace, which an import policy of every
/// namespace needs (whether the caller may name one elsewhere is checked with the caller).
fn service_account(asked: &str, spec: &schedule::Spec) -> Result<String> {
    let asked = asked.trim();
    if asked.is_empty() {
        return Ok(String::new());
    }
    let hint = "name a ServiceAccount of the schedule's namespace, such as \"ferry-runs\", or \
                one of another namespace as NAMESPACE/NAME";
    let (namespace, name) = match asked.split_once('/') {
        Some((namespace, name)) => {
            if namespace.is_empty() || !is_namespace(namespace) {
                return Err(SchedulerError::invalid(
                    "service_account",
                    format!("{asked:?}: {namespace:?} is not a namespace name"),
                    hint,
                ));
            }
            (Some(namespace), name)
        }
        None => (None, asked),
    };
    if !ferry_authz::is_dns_subdomain(name) {
        return Err(SchedulerError::invalid(
            "service_account",
            format!("{asked:?}: {name:?} is not a ServiceAccount name (lowercase DNS subdomain)"),
            hint,
        ));
    }
    let namespace = match namespace {
        Some(namespace) => namespace.to_owned(),
        None => schedule_namespace(spec).ok_or_else(|| {
            SchedulerError::invalid(
                "service_account",
                format!(
                    "{asked:?} names no namespace, and the import policy has none for it to be \
                     in (it imports every namespace)"
                ),
                format!(
                    "name the ServiceAccount with its namespace, NAMESPACE/{name} (`ferry \
                     import-policy create --service-account NAMESPACE/{name}`)"
                ),
            )
        })?,
    };
    Ok(format!("{namespace}/{name}"))
}

fn check_name(name: &str) -> Result<()> {
    let hint = "give a name such as \"nightly-shop\": letters, digits and -_. only";
    if name.is_empty() {
        return Err(SchedulerError::invalid("name", "empty", hint));
    }
    if name.len() > MAX_NAME {
        return Err(SchedulerError::invalid(
            "name",
            format!("{} bytes long, at most {MAX_NAME}", name.len()),
            hint,
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(SchedulerError::invalid(
            "name",
            format!("{name:?} contains {c:?}"),
            hint,
        ));
    }
    Ok(())
}

/// The job request a schedule repeats: a real run (dry runs are one-off checks), with
/// the schedule id left to the scheduler, of a named namespace.
fn check_job(
    kind: &'static str,
    dry_run: bool,
    schedule_id: &str,
    application: Option<&ApplicationSelector>,
) -> Result<()> {
    if dry_run {
        return Err(SchedulerError::invalid(
            format!("{kind}.dry_run"),
            "true; a schedule's runs must do the work",
            format!("try the {kind} once with dry_run, then schedule it with dry_run false"),
        ));
    }
    if !schedule_id.is_empty() {
        return Err(SchedulerError::invalid(
            format!("{kind}.schedule_id"),
            format!("set to {schedule_id:?}; the scheduler sets it on each run"),
            "leave schedule_id empty",
        ));
    }
    if application.is_none_or(|a| a.namespace.is_empty()) {
        return Err(SchedulerError::invalid(
            format!("{kind}.application.namespace"),
            "empty",
            format!("name the namespace to {kind}"),
        ));
    }
    Ok(())
}

/// What an import policy's request must say by itself; that its profile is an IMPORT
/// profile of the catalog is checked by [`crate::Scheduler::create`], which asks it.
fn check_import_policy(p: &ImportPolicySpec) -> Result<()> {
    if p.repository.as_ref().is_none_or(|r| r.profile.is_empty()) {
        return Err(SchedulerError::invalid(
            "import_policy.repository.profile",
            "empty",
            "name the import profile made from the migration token (ferry profile create \
             NAME --kind import --migration-token-file TOKEN --expect-signer FINGERPRINT)",
        ));
    }
    let namespace = p
        .application
        .as_ref()
        .map(|a| a.namespace.as_str())
        .unwrap_or_default();
    if !namespace.is_empty() && !is_namespace(namespace) {
        return Err(SchedulerError::invalid(
            "import_policy.application.namespace",
            format!("{namespace:?} is not a namespace name"),
            "give the application's namespace as on the source (lower-case letters, digits \
             and -), or leave it empty to import every namespace's restore points",
        ));
    }
    Ok(())
}

/// The retention a schedule applies after each successful run, or `None` when it keeps
/// everything (keep_last 0 and no max_age; a max_age of 0 is no age limit). Retention
/// prunes the repository the runs write to, so that repository must be named; an import
/// policy's profile only reads, so it has none.
fn retention(asked: Option<Retention>, spec: &schedule::Spec) -> Result<Option<Retention>> {
    let Some(asked) = asked else {
        return Ok(None);
    };
    let max_age = match asked.max_age {
        None => None,
        Some(d) => match std_duration(&d) {
            None => {
                return Err(SchedulerError::invalid(
                    "retention.max_age",
                    format!("{}s {}ns is negative or malformed", d.seconds, d.nanos),
                    "give a duration such as 604800s (a week), or leave it out for no age limit",
                ));
            }
            Some(age) if age.is_zero() => None,
            Some(age) if age < MIN_MAX_AGE => {
                return Err(SchedulerError::invalid(
                    "retention.max_age",
                    format!(
                        "{}s is shorter than {}s",
                        age.as_secs_f64(),
                        MIN_MAX_AGE.as_secs()
                    ),
                    format!(
                        "give at least {}s (such as 604800s, a week), or leave it out for no \
                         age limit",
                        MIN_MAX_AGE.as_secs()
                    ),
                ));
            }
            Some(_) => Some(d),
        },
    };
    if asked.keep_last == 0 && max_age.is_none() {
        return Ok(None);
    }
    let (kind, repository) = match spec {
        schedule::Spec::Migration(m) => ("migration", m.repository.as_ref()),
        schedule::Spec::Export(e) => ("export", e.repository.as_ref()),
        schedule::Spec::ImportPolicy(_) => {
            return Err(SchedulerError::invalid(
                "retention",
                "set on an import policy, whose profile only reads the repository",
                "leave retention out here, and set it on the source cluster's export schedule, \
                 which writes the repository",
            ));
        }
    };
    if repository.is_none_or(|r| r.profile.is_empty()) {
        return Err(SchedulerError::invalid(
            format!("{kind}.repository.profile"),
            "empty, but retention needs to know which repository to prune",
            "name the profile the runs write to (ferry schedules create --profile NAME), or \
             leave retention out",
        ));
    }
    Ok(Some(Retention {
        keep_last: asked.keep_last,
        max_age,
    }))
}

/// A Kubernetes namespace name (an RFC 1123 label).
fn is_namespace(ns: &str) -> bool {
    ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-')
}

/// The request's retry policy with the server's defaults filled in.
fn retry_policy(defaults: RetryDefaults, asked: Option<RetryPolicy>) -> Result<RetryPolicy> {
    let asked = asked.unwrap_or_default();
    let max_attempts = match asked.max_attempts {
        0 => defaults.max_attempts,
        n if n > MAX_ATTEMPTS => {
            return Err(SchedulerError::invalid(
                "retry.max_attempts",
                format!("{n} is more than {MAX_ATTEMPTS}"),
                format!("use at most {MAX_ATTEMPTS}, or 0 for the default"),
            ));
        }
        n => n,
    };
    let positive = |field: &'static str, d: Option<&prost_types::Duration>| match d {
        None => Ok(None),
        Some(d) => match std_duration(d) {
            Some(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(SchedulerError::invalid(
                field,
                format!("{}s {}ns is not a positive duration", d.seconds, d.nanos),
                "give a positive duration such as 30s, or leave it out for the default",
            )),
        },
    };
    let initial = positive("retry.initial_backoff", asked.initial_backoff.as_ref())?
        .unwrap_or(defaults.initial_backoff);
    let max = match positive("retry.max_backoff", asked.max_backoff.as_ref())? {
        Some(max) if max < initial => {
            return Err(SchedulerError::invalid(
                "retry.max_backoff",
                format!("{:?} is shorter than initial_backoff {:?}", max, initial),
                "make max_backoff at least initial_backoff",
            ));
        }
        Some(max) => max,
        None => defaults.max_backoff.max(initial),
    };
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff: Some(proto_duration(initial)),
        max_backoff: Some(proto_duration(max)),
    })
}

/// A stored schedule's retry policy, as the runner applies it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retry {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Retry {
    pub fn of(policy: Option<&RetryPolicy>, defaults: RetryDefaults) -> Retry {
        let d = |p: Option<&prost_types::Duration>, default| {
            p.and_then(std_duration).unwrap_or(default)
        };
        let policy = policy.cloned().unwrap_or_default();
        Retry {
            max_attempts: match policy.max_attempts {
                0 => defaults.max_attempts,
                n => n,
            },
            initial_backoff: d(policy.initial_backoff.as_ref(), defaults.initial_backoff),
            max_backoff: d(policy.max_backoff.as_ref(), defaults.max_backoff),
        }
    }

    /// The wait after `failed` failed attempts (at least one): doubling, capped.
    pub fn backoff(&self, failed: u32) -> Duration {
        let doublings = failed.saturating_sub(1).min(31);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let r = Retry {
            max_attempts: 10,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
        };
        let waits: Vec<u64> = (1..=7).map(|n| r.backoff(n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600]);
        assert_eq!(r.backoff(u32::MAX), Duration::from_secs(600));
    }

    #[test]
    fn retry_defaults_are_filled_in_and_bad_policies_refused() {
        let p = retry_policy(RetryDefaults::default(), None).expect("defaults");
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.initial_backoff.map(|d| d.seconds), Some(30));
        assert_eq!(p.max_backoff.map(|d| d.seconds), Some(600));
        let e = retry_policy(
            RetryDefaults::default(),
            Some(RetryPolicy {
                max_attempts: 2,
                initial_backoff: Some(proto_duration(Duration::from_secs(60))),
                max_backoff: Some(proto_duration(Duration::from_secs(10))),
            }),
        )
        .expect_err("max below initial");
        assert!(e.to_string().contains("retry.max_backoff"), "{e}");
    }

    #[test]
    fn import_policies_need_a_profile_and_a_namespace_name() {
        use ferry_proto::v1::RepositoryRef;
        let policy = |profile: &str, ns: &str| ImportPolicySpec {
            repository: Some(RepositoryRef {
                profile: profile.into(),
                repository_id: String::new(),
            }),
            application: Some(ApplicationSelector {
                namespace: ns.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(check_import_policy(&policy("in", "shop")).is_ok());
        assert!(
            check_import_policy(&policy("in", "")).is_ok(),
            "every namespace"
        );
        let e = check_import_policy(&policy("", "shop")).expect_err("no profile");
        assert!(e.to_string().contains("repository.profile"), "{e}");
        assert!(e.detail().hint.contains("--kind import"), "{e:?}");
        let e = check_import_policy(&policy("in", "Shop")).expect_err("bad namespace");
        assert!(e.to_string().contains("\"Shop\""), "{e}");
    }

    #[test]
    fn retention_needs_a_repository_and_a_sensible_age() {
        use ferry_proto::v1::{RepositoryRef, StartExportRequest};
        let export = |profile: &str| {
            schedule::Spec::Export(StartExportRequest {
                repository: (!profile.is_empty()).then(|| RepositoryRef {
                    profile: profile.into(),
                    repository_id: String::new(),
                }),
                ..Default::default()
            })
        };
        let keep = |keep_last: u32, max_age_s: Option<i64>| {
            Some(Retention {
                keep_last,
                max_age: max_age_s.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
            })
        };
        // Nothing to prune: kept as "keep everything".
        assert_eq!(retention(None, &export("")).expect("none"), None);
        assert_eq!(retention(keep(0, None), &export("")).expect("all"), None);
        assert_eq!(retention(keep(0, Some(0)), &export("")).expect("all"), None);
        assert_eq!(
            retention(keep(2, Some(0)), &export("out")).expect("count only"),
            keep(2, None)
        );
        assert_eq!(
            retention(keep(2, Some(3600)), &export("out")).expect("both"),
            keep(2, Some(3600))
        );
        let e = retention(keep(2, None), &export("")).expect_err("no repository");
        assert!(e.to_string().contains("export.repository.profile"), "{e}");
        assert!(e.detail().hint.contains("--profile"), "{e:?}");
        let e = retention(keep(0, Some(59)), &export("out")).expect_err("too short");
        assert!(e.to_string().contains("retention.max_age"), "{e}");
        assert!(retention(keep(0, Some(-60)), &export("out")).is_err());
        let policy = schedule::Spec::ImportPolicy(ImportPolicySpec::default());
        let e = retention(keep(3, None), &policy).expect_err("import policy");
        assert!(e.detail().hint.contains("export schedule"), "{e:?}");
    }

    #[test]
    fn a_service_account_is_recorded_with_its_namespace() {
        use ferry_proto::v1::{ApplyOptions, StartExportRequest};
        let export = schedule::Spec::Export(StartExportRequest {
            application: Some(ApplicationSelector {
                namespace: "shop".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let policy = |ns: &str| {
            schedule::Spec::ImportPolicy(ImportPolicySpec {
                application: Some(ApplicationSelector {
                    namespace: ns.into(),
                    ..Default::default()
                }),
                apply: Some(ApplyOptions {
                    namespace_mapping: [("shop".to_owned(), "shop-dr".to_owned())].into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let ok = |name: &str, spec: &schedule::Spec| service_account(name, spec).expect(name);
        assert_eq!(ok("mover", &export), "shop/mover");
        assert_eq!(ok(" ops/mover ", &export), "ops/mover");
        assert_eq!(
            ok("", &export),
            "",
            "required only of callers: see create_as"
        );
        // An import policy's runs work in the namespace it restores into.
        assert_eq!(ok("mover", &policy("shop")), "shop-dr/mover");
        assert_eq!(ok("ops/mover", &policy("")), "ops/mover");
        let e = service_account("mover", &policy("")).expect_err("no namespace");
        assert!(e.to_string().contains("service_account"), "{e}");
        assert!(e.detail().hint.contains("NAMESPACE/mover"), "{e:?}");
        for bad in [
            "Mover",
            "ops/",
            "/mover",
            "Ops/mover",
            "a/b/c",
            "ops/mo ver",
        ] {
            let e = service_account(bad, &export).expect_err(bad);
            assert!(e.to_string().contains("service_account"), "{bad}: {e}");
        }
    }

    #[test]
    fn names_must_be_plain() {
        assert!(check_name("nightly-shop_2.b").is_ok());
        let e = check_name("two words").expect_err("space");
        assert!(e.to_string().contains("' '"), "{e}");
        assert!(check_name("").is_err());
    }
}
