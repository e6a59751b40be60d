//! Apply: write a plan to the destination with server-side apply, phase by phase, and
//! report every object's fate. Also purge and activate.

use std::collections::{HashMap, HashSet};

use futures::{StreamExt, stream};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{Instrument, debug, info, info_span, instrument, warn};

use crate::error::{Error, Result, api_message, is_transient, status_code};
use crate::plan::{Plan, PlannedObject};
use crate::preflight::serves;
use crate::ratelimit::RateLimiter;
use crate::resource::{Phase, is_scalable, known, qualified_plural};
use crate::{
    Cluster, Diff, FIELD_MANAGER, MIGRATION_LABEL, ObjectRef, ObjectResult, Outcome,
    REPLICAS_ANNOTATION, SUSPEND_ANNOTATION,
};
use backon::Retryable as _;

/// What to do with an object that already exists on the destination and was not
/// written by this migration. Objects this migration wrote before are always updated,
/// so running a migration again converges (and reports "unchanged").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingPolicy {
    /// Leave it as it is and report it skipped.
    #[default]
    Skip,
    /// Take it over: apply the source's version.
    Update,
    /// Report it failed.
    Fail,
}

/// How to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOptions {
    pub existing: ExistingPolicy,
    /// Write nothing; report what would change, with diffs (server-side dry run where
    /// the namespace already exists, else computed here).
    pub dry_run: bool,
    /// Delete objects this migration created earlier that are no longer in the plan.
    pub purge: bool,
    /// Objects applied at once within a phase.
    pub concurrency: usize,
    /// Requests per second to the destination; 0 means no limit.
    pub qps: f32,
    pub burst: u32,
    pub field_manager: String,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            existing: ExistingPolicy::Skip,
            dry_run: false,
            purge: false,
            concurrency: 8,
            // client-go's defaults are 5/10 and kubectl's 50/300. API servers protect
            // themselves with priority and fairness (on by default since 1.20) and
            // answer 429 when a client should slow down, which apply retries with
            // backoff; so the client budget only keeps one migration from hogging a
            // shared server. 200/400 moves 1,000 objects in a few seconds.
            qps: 200.0,
            burst: 400,
            field_manager: FIELD_MANAGER.to_owned(),
        }
    }
}

struct Ctx<'a> {
    cluster: &'a Cluster,
    plan: &'a Plan,
    opts: &'a ApplyOptions,
    limiter: RateLimiter,
}

/// Applies `plan` to `cluster`. Returns one result per planned object (and per purged
/// object), in plan order; `progress` sees each as it is decided. Only an error that
/// stops everything is an `Err`: a failed object is a failed result and the rest go on.
#[instrument(skip_all, fields(cluster = %cluster.name, namespace = %plan.namespace, dry_run = opts.dry_run))]
pub async fn apply<F>(
    cluster: &Cluster,
    plan: &Plan,
    opts: &ApplyOptions,
    progress: F,
) -> Result<Vec<ObjectResult>>
where
    F: Fn(&ObjectResult) + Send + Sync,
{
    if let Some(p) = plan.problems.iter().find(|p| p.is_error()) {
        let count = plan.problems.iter().filter(|p| p.is_error()).count();
        return Err(Error::InvalidSpec {
            field: "plan",
            message: format!(
                "the plan has {count} problem(s), the first: {p}; fix them (pre-flight lists \
                 them all) and plan again"
            ),
        });
    }
    let ctx = Ctx {
        cluster,
        plan,
        opts,
        limiter: RateLimiter::new(opts.qps, opts.burst),
    };
    let mut results: Vec<ObjectResult> = Vec::with_capacity(plan.objects.len());
    // Set when the namespace could not be written: nothing inside it can be.
    let mut blocked: Option<String> = None;
    // In a dry run into a namespace that does not exist yet, the server cannot dry-run
    // anything inside it; the diff is then the object itself.
    let mut namespace_missing = false;

    for phase in Phase::ALL {
        let batch: Vec<(usize, &PlannedObject)> = plan
            .objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.phase == phase)
            .collect();
        if batch.is_empty() {
            continue;
        }
        let span = info_span!("phase", ?phase, objects = batch.len());
        let mut done: Vec<(usize, ObjectResult)> = if let Some(why) = &blocked {
            batch
                .into_iter()
                .map(|(i, o)| {
                    (
                        i,
                        result(
                            o.object_ref(),
                            Outcome::Failed {
                                reason: format!("not attempted: {why}"),
                                code: None,
                            },
                            opts.dry_run,
                            None,
                        ),
                    )
                })
                .collect()
        } else {
            let ctx = &ctx;
            let progress = &progress;
            let prefetched = ctx.prefetch(&batch, namespace_missing).await;
            let prefetched = &prefetched;
            // The futures are made before the stream: a closure over borrowed items
            // mapped on a stream defeats the Send proof of callers that spawn apply
            // (rust-lang/rust#102211).
            let writes: Vec<_> = batch
                .into_iter()
                .map(|(i, o)| async move {
                    let r = ctx
                        .apply_one(o, namespace_missing, prefetched.get(&type_key(o)))
                        .await;
                    progress(&r);
                    (i, r)
                })
                .collect();
            stream::iter(writes)
                .buffer_unordered(opts.concurrency.max(1))
                .collect()
                .instrument(span)
                .await
        };
        done.sort_by_key(|(i, _)| *i);
        if phase == Phase::Namespace {
            for (_, r) in &done {
                match &r.outcome {
                    Outcome::Failed { reason, .. } => {
                        blocked = Some(format!(
                            "namespace {} could not be applied: {reason}",
                            plan.namespace
                        ));
                    }
                    Outcome::Created if opts.dry_run => namespace_missing = true,
                    _ => {}
                }
            }
        }
        results.extend(done.into_iter().map(|(_, r)| r));
    }

    if opts.purge && blocked.is_none() && !namespace_missing {
        let purged = ctx.purge().await?;
        for r in &purged {
            progress(r);
        }
        results.extend(purged);
    }
    let summary = crate::Summary::of(&results);
    if summary.succeeded() {
        info!(%summary, "applied");
    } else {
        warn!(%summary, "applied with failures");
    }
    Ok(results)
}

fn result(object: ObjectRef, outcome: Outcome, dry_run: bool, diff: Option<Diff>) -> ObjectResult {
    ObjectResult {
        object,
        outcome,
        dry_run,
        diff,
    }
}

/// Whether objects of `ar` are written with Ferry's own rights even when the cluster
/// acts as a user: the PersistentVolumes Ferry makes for restored data belong to no
/// user (they point at a host directory or at a volume Ferry provisioned), and a
/// namespace user may not create any.
pub(crate) fn written_as_ferry(ar: &ApiResource) -> bool {
    ar.group.is_empty() && ar.kind == "PersistentVolume"
}

impl Ctx<'_> {
    fn api(&self, o: &PlannedObject) -> Api<DynamicObject> {
        let client = if written_as_ferry(&o.resource) {
            self.cluster.ferry_client().clone()
        } else {
            self.cluster.client.clone()
        };
        if o.namespaced {
            Api::namespaced_with(client, &self.plan.namespace, &o.resource)
        } else {
            Api::all_with(client, &o.resource)
        }
    }

    fn is_ours(&self, obj: &DynamicObject) -> bool {
        obj.labels()
            .get(MIGRATION_LABEL)
            .is_some_and(|id| id == &self.plan.migration_id)
    }

    /// What already exists on the destination, one paged list per namespaced type of the
    /// batch instead of one read per object: that read was half the requests of a
    /// migration. A type that cannot be listed (no list right, say) is left out, and its
    /// objects are read one by one as before.
    async fn prefetch(
        &self,
        batch: &[(usize, &PlannedObject)],
        namespace_missing: bool,
    ) -> HashMap<String, HashMap<String, DynamicObject>> {
        let mut prefetched = HashMap::new();
        if namespace_missing {
            return prefetched;
        }
        for (_, o) in batch {
            let key = type_key(o);
            if !o.namespaced || prefetched.contains_key(&key) {
                continue;
            }
            match self.list_all(&self.api(o), "").await {
                Ok(items) => {
                    // List items come without apiVersion and kind; a read of one object
                    // has them, and the unchanged comparison must see the same shape.
                    let types = kube::api::TypeMeta {
                        api_version: o.resource.api_version.clone(),
                        kind: o.resource.kind.clone(),
                    };
                    let by_name = items
                        .into_iter()
                        .filter_map(|mut obj| {
                            obj.types = Some(types.clone());
                            Some((obj.metadata.name.clone()?, obj))
                        })
                        .collect();
                    prefetched.insert(key, by_name);
                }
                Err(e) => {
                    debug!(resource = %key, error = %e, "cannot list; reading objects one by one")
                }
            }
        }
        prefetched
    }

    async fn apply_one(
        &self,
        o: &PlannedObject,
        namespace_missing: bool,
        prefetched: Option<&HashMap<String, DynamicObject>>,
    ) -> ObjectResult {
        let r = o.object_ref();
        let dry_run = self.opts.dry_run;
        let span = info_span!("object", object = %r);
        async {
            if dry_run && namespace_missing && o.namespaced {
                return match serde_json::to_value(&o.object) {
                    Ok(desired) => {
                        let diff = make_diff(None, Some(desired));
                        result(r, Outcome::Created, true, Some(diff))
                    }
                    Err(e) => result(
                        r,
                        failed(format!("cannot serialize: {e}"), None),
                        true,
                        None,
                    ),
                };
            }
            let api = self.api(o);
            let name = r.name.clone();
            let read = match prefetched {
                Some(objects) => Ok(objects.get(&name).cloned()),
                None => {
                    self.limiter.acquire().await;
                    api.get_opt(&name).await
                }
            };
            let existing = match read {
                Ok(e) => e,
                // Namespace admins often may not read their namespace object: write into
                // it all the same; if it does not exist, every object will say so.
                Err(e) if o.phase == Phase::Namespace && status_code(&e) == Some(403) => {
                    return result(
                        r,
                        Outcome::Skipped {
                            reason: format!(
                                "may not read the namespace ({}); assumed to exist, and left as \
                                 it is",
                                api_message(&e)
                            ),
                        },
                        dry_run,
                        None,
                    );
                }
                Err(e) => {
                    let outcome = self.failure(&r, &o.resource, None, "reading", &e).await;
                    return result(r, outcome, dry_run, None);
                }
            };
            if let Some(existing) = &existing
                && !self.is_ours(existing)
                && let Some(outcome) = self.not_ours(o)
            {
                return result(r, outcome, dry_run, None);
            }

            let mut pp = PatchParams::apply(&self.opts.field_manager).force();
            if dry_run {
                pp = pp.dry_run();
            }
            let patch = Patch::Apply(&o.object);
            let applied = match with_retry(&self.limiter, || api.patch(&name, &pp, &patch)).await {
                Ok(a) => a,
                Err(e) => {
                    let outcome = self
                        .failure(&r, &o.resource, Some(&o.object), "applying", &e)
                        .await;
                    return result(r, outcome, dry_run, None);
                }
            };
            // Compared by content rather than resourceVersion: a write that only moves
            // field ownership (or a controller's status update in between) is not a
            // change the user made.
            let outcome = match &existing {
                None => Outcome::Created,
                Some(e) if comparable(e) == comparable(&applied) => Outcome::Unchanged,
                Some(_) => Outcome::Updated,
            };
            let diff = dry_run.then(|| {
                make_diff(
                    existing.as_ref().map(comparable),
                    Some(comparable(&applied)),
                )
            });
            debug!(?outcome, "applied");
            result(r, outcome, dry_run, diff)
        }
        .instrument(span)
        .await
    }

    /// What becomes of planned object `o` when the destination holds one of that name
    /// another migration (or someone else) made: None to write it all the same.
    fn not_ours(&self, o: &PlannedObject) -> Option<Outcome> {
        let id = &self.plan.migration_id;
        if o.phase == Phase::Namespace {
            return Some(Outcome::Skipped {
                reason: format!(
                    "namespace exists and was not created by migration {id}; objects are \
                     written into it, the namespace itself is left as it is"
                ),
            });
        }
        match self.opts.existing {
            ExistingPolicy::Skip => Some(Outcome::Skipped {
                reason: format!(
                    "exists on the destination and was not created by migration {id}; left as \
                     it is (policy skip; use policy update to take it over)"
                ),
            }),
            ExistingPolicy::Fail => Some(failed(
                format!(
                    "exists on the destination and was not created by migration {id} (policy \
                     fail); delete it there, or use policy skip or update"
                ),
                Some(409),
            )),
            ExistingPolicy::Update => None,
        }
    }

    /// Turns an API error into a failed result that says what to do. `object` is what
    /// was written, if anything.
    async fn failure(
        &self,
        r: &ObjectRef,
        ar: &ApiResource,
        object: Option<&DynamicObject>,
        action: &str,
        e: &kube::Error,
    ) -> Outcome {
        let code = status_code(e);
        let msg = api_message(e);
        let place = r
            .namespace
            .as_deref()
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default();
        let next = match code {
            Some(403) => {
                // RBAC lets a writer without the bind and escalate verbs write a Role or
                // RoleBinding only when it holds every right it grants.
                let rbac = if ar.group == "rbac.authorization.k8s.io" {
                    " (and every right the Role grants, which RBAC requires of a writer of \
                     Roles and RoleBindings without the bind verb)"
                } else {
                    ""
                };
                let right = format!("get, create and patch on {}{place}{rbac}", r.kind);
                let acting = self
                    .cluster
                    .acting_for
                    .as_ref()
                    .filter(|_| !written_as_ferry(ar));
                match (acting, &self.cluster.credential) {
                    (Some(user), _) => format!(
                        "the API server judged the write as user {user}: grant them {right} on \
                         cluster {}",
                        self.cluster.name
                    ),
                    (None, Some(c)) => format!("{} needs {right}: {}", c.who, c.grant),
                    (None, None) => {
                        format!("grant the user {right} on cluster {}", self.cluster.name)
                    }
                }
            }
            Some(404) => self.not_found(ar, object).await,
            Some(422) if msg.contains("already allocated") => {
                "the port is taken on the destination: free it there, or migrate without \
                 preserving NodePorts so the destination picks a free one"
                    .to_owned()
            }
            Some(422) if msg.contains("immutable") => {
                "a field that cannot change differs on the destination: delete the object there \
                 and migrate again"
                    .to_owned()
            }
            Some(422 | 400) => {
                "the destination rejected the object: adjust it with a transform patch".to_owned()
            }
            Some(409) => "someone changed the object meanwhile: migrate again".to_owned(),
            Some(429 | 500..=599) | None => {
                "the destination's API server is unavailable or throttling: migrate again"
                    .to_owned()
            }
            Some(_) => "migrate again; if it persists, check the API server's logs".to_owned(),
        };
        failed(
            format!(
                "{action} on cluster {} failed: {msg}; {next}",
                self.cluster.name
            ),
            code,
        )
    }

    /// What a 404 to a write of an object of `ar` means. Only discovery may say that the
    /// type is not served: the API server answers 404 as well for an object the written
    /// one needs, such as the Role of a RoleBinding, which RBAC looks up for a writer
    /// without the bind verb.
    async fn not_found(&self, ar: &ApiResource, object: Option<&DynamicObject>) -> String {
        let cluster = &self.cluster.name;
        match serves(self.cluster, &ar.group, &ar.version, &ar.plural).await {
            Ok(false) => format!(
                "cluster {cluster} does not serve {} {}: install its CustomResourceDefinition \
                 or API there first",
                ar.api_version, ar.kind
            ),
            Ok(true) => match object.and_then(role_ref) {
                Some((kind, name)) => format!(
                    "{kind} {name}, which it binds, does not exist on cluster {cluster}: RBAC \
                     checks a binding against its role's rules; create {kind} {name} there, \
                     or migrate it with the application, and migrate again"
                ),
                None => format!(
                    "cluster {cluster} serves {} {}, so something the object needs is missing \
                     there (its namespace, or an object it names): create it and migrate again",
                    ar.api_version, ar.kind
                ),
            },
            Err(d) => format!(
                "whether cluster {cluster} serves {} {} could not be checked ({d}): check its \
                 API and what the object refers to, then migrate again",
                ar.api_version, ar.kind
            ),
        }
    }

    /// Deletes objects of the captured types that this migration wrote earlier and that
    /// the plan no longer has (they left the source, or its selector).
    async fn purge(&self) -> Result<Vec<ObjectResult>> {
        let planned: HashSet<(String, String, String)> = self
            .plan
            .objects
            .iter()
            .filter(|o| o.namespaced)
            .map(|o| {
                (
                    o.resource.group.clone(),
                    o.resource.kind.clone(),
                    o.object.name_any(),
                )
            })
            .collect();
        let selector = format!("{MIGRATION_LABEL}={}", self.plan.migration_id);
        let mut out = Vec::new();
        for ar in &self.plan.resources {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.cluster.client.clone(), &self.plan.namespace, ar);
            let items = match self.list_all(&api, &selector).await {
                Ok(items) => items,
                // The type is not served here (its CRD is gone): nothing of it to purge.
                Err(e) if status_code(&e) == Some(404) => continue,
                Err(source) => {
                    return Err(Error::List {
                        cluster: self.cluster.name.clone(),
                        resource: qualified_plural(ar),
                        namespace: self.plan.namespace.clone(),
                        next_step: "grant the user list and delete on it, or migrate without \
                                    purge"
                            .into(),
                        source: Box::new(source),
                    });
                }
            };
            for item in items {
                let name = item.name_any();
                if planned.contains(&(ar.group.clone(), ar.kind.clone(), name.clone())) {
                    continue;
                }
                let r = ObjectRef::new(ar, Some(&self.plan.namespace), &name);
                let mut dp = DeleteParams::background();
                if self.opts.dry_run {
                    dp = dp.dry_run();
                }
                self.limiter.acquire().await;
                let outcome = match api.delete(&name, &dp).await {
                    Ok(_) => Outcome::Deleted,
                    Err(e) if status_code(&e) == Some(404) => continue,
                    Err(e) => self.failure(&r, ar, None, "deleting", &e).await,
                };
                let diff = self
                    .opts
                    .dry_run
                    .then(|| make_diff(Some(comparable(&item)), None));
                out.push(result(r, outcome, self.opts.dry_run, diff));
            }
        }
        Ok(out)
    }

    async fn list_all(
        &self,
        api: &Api<DynamicObject>,
        selector: &str,
    ) -> Result<Vec<DynamicObject>, kube::Error> {
        list_paged(api, selector, Some(&self.limiter)).await
    }
}

/// The kind and name of the role a RoleBinding names.
fn role_ref(obj: &DynamicObject) -> Option<(&str, &str)> {
    let role = obj.data.get("roleRef")?;
    Some((role.get("kind")?.as_str()?, role.get("name")?.as_str()?))
}

/// Names one resource type of a plan, for grouping its objects.
fn type_key(o: &PlannedObject) -> String {
    format!("{}/{}", o.resource.api_version, o.resource.plural)
}

fn failed(reason: String, code: Option<u16>) -> Outcome {
    Outcome::Failed { reason, code }
}

/// An object without the fields the server manages on every write, for comparing and
/// showing what a user's change would be.
fn comparable(obj: &DynamicObject) -> Value {
    let mut v = serde_json::to_value(obj).unwrap_or(Value::Null);
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
        ] {
            meta.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

fn make_diff(before: Option<Value>, after: Option<Value>) -> Diff {
    let empty = json!({});
    let patch = json_patch::diff(
        before.as_ref().unwrap_or(&empty),
        after.as_ref().unwrap_or(&empty),
    );
    Diff {
        before,
        after,
        patch,
    }
}

/// Starts what an apply left scaled to zero or suspended in `namespace`: restores each
/// workload's `spec.replicas` from its `ferry.dev/replicas` annotation and each CronJob's
/// or Job's `spec.suspend` from `ferry.dev/suspend` (Stork's startApplications).
#[instrument(skip_all, fields(cluster = %cluster.name, %namespace))]
pub async fn activate(cluster: &Cluster, namespace: &str) -> Result<Vec<ObjectResult>> {
    let types = [
        known::deployment(),
        known::stateful_set(),
        known::replica_set(),
        known::replication_controller(),
        known::cron_job(),
        known::job(),
    ];
    let mut out = Vec::new();
    for ar in &types {
        // Ferry finds what waits at zero with its own rights; the scaling itself is the
        // user's when the cluster acts for one, judged by the API server as theirs.
        let read: Api<DynamicObject> =
            Api::namespaced_with(cluster.ferry_client().clone(), namespace, ar);
        let api: Api<DynamicObject> = Api::namespaced_with(cluster.client.clone(), namespace, ar);
        let items = list_paged(&read, "", None)
            .await
            .map_err(|source| Error::List {
                cluster: cluster.name.clone(),
                resource: qualified_plural(ar),
                namespace: namespace.to_owned(),
                next_step: "grant the user list and patch on it".into(),
                source: Box::new(source),
            })?;
        for item in items {
            if let Some(r) = activate_one(cluster, &api, ar, &item).await {
                out.push(r);
            }
        }
    }
    info!(activated = out.len(), "activated");
    Ok(out)
}

/// Attempts per write when the server throttles (429), fails (5xx) or the connection drops.
const WRITE_ATTEMPTS: u32 = 5;

/// Runs `call` under the rate limiter, retrying transient failures with jittered
/// exponential backoff (0.1 s doubling to 5 s). Server-side apply is idempotent, so a
/// write whose answer was lost can be sent again.
async fn with_retry<T, F, Fut>(limiter: &RateLimiter, mut call: F) -> kube::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = kube::Result<T>>,
{
    // Jitter spreads the retries of parallel writers so they do not return in step.
    let policy = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(100))
        .with_max_delay(std::time::Duration::from_secs(5))
        .with_max_times(WRITE_ATTEMPTS as usize - 1)
        .with_jitter();
    let attempt = || {
        let write = call();
        async move {
            limiter.acquire().await;
            write.await
        }
    };
    attempt
        .retry(policy)
        .when(is_transient)
        .notify(|e, wait| debug!(error = %e, ?wait, "transient failure, retrying"))
        .await
}

/// Every object of `api` matching `selector`, page by page, each page under `limiter`
/// when given.
async fn list_paged(
    api: &Api<DynamicObject>,
    selector: &str,
    limiter: Option<&RateLimiter>,
) -> Result<Vec<DynamicObject>, kube::Error> {
    let mut lp = ListParams::default().labels(selector).limit(250);
    let mut out = Vec::new();
    loop {
        if let Some(limiter) = limiter {
            limiter.acquire().await;
        }
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => lp = lp.continue_token(&t),
            _ => return Ok(out),
        }
    }
}

async fn activate_one(
    cluster: &Cluster,
    api: &Api<DynamicObject>,
    ar: &ApiResource,
    item: &DynamicObject,
) -> Option<ObjectResult> {
    let name = item.name_any();
    let r = ObjectRef::new(ar, item.namespace().as_deref(), &name);
    let annotations = item.annotations();
    // Workloads were scaled to zero with their replicas kept aside; CronJobs were
    // suspended with their old suspend flag kept aside. Either way: put the field back.
    let (annotation, field, expected) = if is_scalable(&ar.group, &ar.kind) {
        (REPLICAS_ANNOTATION, "replicas", "a replica count")
    } else {
        (SUSPEND_ANNOTATION, "suspend", "true or false")
    };
    let raw = annotations.get(annotation)?;
    let value: Option<Value> = if field == "replicas" {
        raw.parse::<i32>().ok().map(Value::from)
    } else {
        raw.parse::<bool>().ok().map(Value::from)
    };
    let Some(value) = value else {
        return Some(result(
            r,
            failed(
                format!(
                    "annotation {annotation}={raw:?} is not {expected}; set spec.{field} by hand \
                     and remove the annotation"
                ),
                None,
            ),
            false,
            None,
        ));
    };
    let patch = json!({"metadata": {"annotations": {annotation: null}}, "spec": {field: value}});
    // A merge patch, not an apply: an apply by the "ferry" manager would have to repeat
    // the whole object or give up the fields it leaves out.
    let pp = PatchParams {
        field_manager: Some(format!("{FIELD_MANAGER}-activate")),
        ..Default::default()
    };
    let outcome = match api.patch(&name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => Outcome::Updated,
        Err(e) => failed(
            format!(
                "activating on cluster {} failed: {}; grant patch on {} and activate again",
                cluster.name,
                api_message(&e),
                qualified_plural(ar)
            ),
            status_code(&e),
        ),
    };
    Some(result(r, outcome, false, None))
}
