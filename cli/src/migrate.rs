//! `ferry migrate`: move an application (a namespace, optionally narrowed) with its
//! volume data to a paired cluster, and follow the job to its report.

use clap::Args;
use ferry_client::{ClientError, Ferry, pair_ref};
use ferry_proto::v1::{
    ApplicationSelector, ApplyOptions, ExistingObjectPolicy, RepositoryRef, StartMigrationRequest,
    VolumeOptions,
};
use tokio_util::sync::CancellationToken;

use crate::connect::ConnectArgs;
use crate::error::{Error, Result};
use crate::format::mappings;
use crate::output::Format;
use crate::watch::{OnInterrupt, detached, finish, follow};

/// Which objects make up the application.
#[derive(Debug, Clone, Args)]
pub struct SelectorArgs {
    /// The application's namespace (`ferry migrate` takes several: repeat -n).
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    pub namespace: Vec<String>,
    /// Only objects with these labels, e.g. "app=shop,tier!=cache".
    #[arg(short = 'l', long)]
    pub selector: Option<String>,
    /// Only these resource types ("deployments.apps", "configmaps"); repeat for more.
    #[arg(long = "include", value_name = "RESOURCE")]
    pub include: Vec<String>,
    /// Never these resource types; repeat for more.
    #[arg(long = "exclude", value_name = "RESOURCE")]
    pub exclude: Vec<String>,
}

impl SelectorArgs {
    /// The selector of the one namespace given.
    pub(crate) fn selector(&self) -> Result<ApplicationSelector> {
        match self.namespace.as_slice() {
            [one] => Ok(self.selector_of(one)),
            [] => Err(Error::Usage(
                "name the application's namespace with -n NAMESPACE".into(),
            )),
            _ => Err(Error::Usage(
                "this command takes one namespace; give -n once".into(),
            )),
        }
    }

    fn selector_of(&self, namespace: &str) -> ApplicationSelector {
        ApplicationSelector {
            namespace: namespace.to_owned(),
            label_selector: self.selector.clone().unwrap_or_default(),
            include_resources: self.include.clone(),
            exclude_resources: self.exclude.clone(),
        }
    }
}

/// How objects land on the destination.
#[derive(Debug, Clone, Args)]
pub struct ApplyArgs {
    /// Put a namespace under another name on the destination (SRC=DST); repeat for more.
    #[arg(long = "namespace-map", value_name = "SRC=DST")]
    pub namespace_map: Vec<String>,
    /// Use another storage class on the destination (SRC=DST); repeat for more.
    #[arg(long = "storage-class-map", value_name = "SRC=DST")]
    pub storage_class_map: Vec<String>,
    /// Map topology zones (SRC=DST); repeat for more.
    #[arg(long = "zone-map", value_name = "SRC=DST")]
    pub zone_map: Vec<String>,
    /// Leave workloads scaled to zero on the destination; start them later with
    /// `ferry activate`.
    #[arg(long)]
    pub no_start: bool,
    /// What to do with objects that already exist on the destination.
    #[arg(long, value_enum, default_value_t = Existing::Skip)]
    pub existing: Existing,
    /// Keep Services' nodePort values.
    #[arg(long)]
    pub preserve_node_ports: bool,
}

/// `--existing`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Existing {
    /// Leave it alone and report it as skipped.
    Skip,
    /// Update it to the captured object.
    Update,
    /// Fail before anything is applied.
    Fail,
}

impl ApplyArgs {
    pub(crate) fn options(&self) -> Result<ApplyOptions> {
        Ok(ApplyOptions {
            namespace_mapping: mappings("--namespace-map", &self.namespace_map)?,
            storage_class_mapping: mappings("--storage-class-map", &self.storage_class_map)?,
            zone_mapping: mappings("--zone-map", &self.zone_map)?,
            start_applications: !self.no_start,
            existing_object_policy: match self.existing {
                Existing::Skip => ExistingObjectPolicy::Skip,
                Existing::Update => ExistingObjectPolicy::Update,
                Existing::Fail => ExistingObjectPolicy::Fail,
            } as i32,
            preserve_node_ports: self.preserve_node_ports,
        })
    }
}

/// How volume data is reached: CSI snapshots and mover pods (each flag defaults to the
/// transfer service's setting).
#[derive(Debug, Clone, Default, Args)]
pub struct VolumeArgs {
    /// VolumeSnapshotClass for CSI volumes of its driver (others use their driver's
    /// default class); default: the class marked default for each driver, or its only one.
    #[arg(long, value_name = "CLASS", conflicts_with = "no_csi_snapshots")]
    pub snapshot_class: Option<String>,
    /// Read CSI volumes live (through a running pod, else a mover pod) instead of from a
    /// VolumeSnapshot.
    #[arg(long)]
    pub no_csi_snapshots: bool,
    /// CPU request of mover pods (a Kubernetes quantity, e.g. 50m), for namespaces whose
    /// ResourceQuota or LimitRange asks for one.
    #[arg(long, value_name = "QUANTITY")]
    pub mover_cpu: Option<String>,
    /// Memory request and limit of mover pods (e.g. 32Mi).
    #[arg(long, value_name = "QUANTITY")]
    pub mover_memory: Option<String>,
    /// How long a mover pod may take to start (claim provisioned, volume attached).
    #[arg(long, value_name = "SECONDS")]
    pub mover_start_timeout_seconds: Option<u32>,
    /// Run again over a destination volume whose files changed there since its last
    /// restore, replacing those changes (without it such a job stops, naming them).
    #[arg(long)]
    pub overwrite_destination_changes: bool,
}

impl VolumeArgs {
    /// The request's options; None when no flag was given.
    pub(crate) fn options(&self) -> Option<VolumeOptions> {
        let o = VolumeOptions {
            snapshot_class: self.snapshot_class.clone().unwrap_or_default(),
            no_csi_snapshots: self.no_csi_snapshots,
            mover_cpu: self.mover_cpu.clone().unwrap_or_default(),
            mover_memory: self.mover_memory.clone().unwrap_or_default(),
            mover_start_timeout_seconds: self.mover_start_timeout_seconds.unwrap_or_default(),
            overwrite_destination_changes: self.overwrite_destination_changes,
        };
        (o != VolumeOptions::default()).then_some(o)
    }
}

/// What a migration moves and how; shared with `ferry schedules create`.
#[derive(Debug, Clone, Args)]
pub struct MigrationArgs {
    /// The destination: a kubeconfig context, a pair name or id, or the destination
    /// cluster's name.
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub app: SelectorArgs,
    #[command(flatten)]
    pub apply: ApplyArgs,
    /// Profile of the repository volume data passes through; default: the server's.
    #[arg(long)]
    pub profile: Option<String>,
    /// Move objects only; claims arrive empty.
    #[arg(long)]
    pub skip_volume_data: bool,
    /// Scale the source's workloads to zero while their volumes are copied, for a
    /// consistent final copy; they scale back afterwards, also on failure.
    #[arg(long)]
    pub quiesce: bool,
    #[command(flatten)]
    pub volumes: VolumeArgs,
    /// Every namespace but the cluster's own (kube-system, kube-public,
    /// kube-node-lease) and Ferry's, one job each. Administrators only.
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
}

impl MigrationArgs {
    /// The request, with the destination resolved to a pair of `source`.
    pub(crate) async fn request(
        &self,
        connect: &ConnectArgs,
        source: &Ferry,
    ) -> Result<StartMigrationRequest> {
        let (application, namespaces) = match self.app.namespace.split_first() {
            _ if self.all_namespaces => (self.app.selector_of(""), Vec::new()),
            Some((first, rest)) => (self.app.selector_of(first), rest.to_vec()),
            None => {
                return Err(Error::Usage(
                    "name the namespace to migrate with -n NAMESPACE (repeat for more), or \
                     --all-namespaces"
                        .into(),
                ));
            }
        };
        let pair = resolve_pair(connect, source, &self.to).await?;
        Ok(StartMigrationRequest {
            source: None,
            destination: Some(pair_ref(&pair)),
            application: Some(application),
            namespaces,
            all_namespaces: self.all_namespaces,
            apply: Some(self.apply.options()?),
            dry_run: false,
            repository: self.profile.clone().map(|profile| RepositoryRef {
                profile,
                repository_id: String::new(),
            }),
            skip_volume_data: self.skip_volume_data,
            schedule_id: String::new(),
            quiesce_source: self.quiesce,
            request_id: String::new(),
            volumes: self.volumes.options(),
            warm: None,
        })
    }
}

/// The id of the pair `to` names: a pair name or id, a cluster name, or a kubeconfig
/// context whose API server is the pair's other side.
pub(crate) async fn resolve_pair(
    connect: &ConnectArgs,
    source: &Ferry,
    to: &str,
) -> Result<String> {
    let not_found = match source.find_pair(to).await {
        Ok(pair) => return Ok(pair.id),
        Err(e @ ClientError::NoPair { .. }) => e,
        Err(e) => return Err(e.into()),
    };
    // Maybe a kubeconfig context: match the API server it points at.
    let Ok(url) = ferry_client::context_api_server(connect.kubeconfig.as_deref(), Some(to)).await
    else {
        return Err(not_found.into());
    };
    match source.find_pair(&url).await {
        Ok(pair) => Ok(pair.id),
        Err(ClientError::NoPair { .. }) => Err(not_found.into()),
        Err(e) => Err(e.into()),
    }
}

/// `ferry migrate`.
#[derive(Debug, Args)]
#[command(after_long_help = "Examples:
  ferry --context a migrate -n shop --to b
  ferry --context a migrate -n shop --to b --namespace-map shop=shop-copy \\
      --storage-class-map fast=standard --no-start
  ferry --context a migrate -n shop --to b --dry-run
  ferry --context b activate -n shop-copy
  ferry --context a migrate -n shop --to b --warm --sync-interval 2m --detach
  ferry --context a cutover JOB_ID

--warm copies the volumes again and again while the application runs on the source,
each sync writing only what changed, until `ferry cutover JOB_ID` (or --cutover-after)
stops it on the source, copies the last change and starts it on the destination; the
report says how long it was down. `ferry jobs cancel JOB_ID` before the cutover leaves
the source running and removes what the syncs created on the destination.

Ctrl-C stops following and leaves the job running: ferry prints how to follow it
(ferry jobs watch JOB_ID) or cancel it (ferry jobs cancel JOB_ID) and exits with
status 14. With --cancel-on-interrupt, Ctrl-C cancels the job instead, waits for it to
stop (nothing is left half-applied) and exits with status 13. A second Ctrl-C ends
ferry at once (status 130). --detach returns at once.")]
pub struct MigrateArgs {
    #[command(flatten)]
    pub migration: MigrationArgs,
    #[command(flatten)]
    pub destination: DestinationCredentialArgs,
    /// Report what would happen, changing nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub warm: WarmArgs,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// A warm migration: syncs while the application runs, then a short cutover.
#[derive(Debug, Clone, Args)]
pub struct WarmArgs {
    /// Sync the volumes again and again while the application runs on the source, until
    /// `ferry cutover JOB_ID` (or --cutover-after) moves it with a short downtime.
    #[arg(long, conflicts_with_all = ["dry_run", "quiesce", "skip_volume_data"])]
    pub warm: bool,
    /// Time from the end of one sync to the start of the next (90s, 5m, 1h); default 60s.
    #[arg(long, value_name = "DURATION", requires = "warm", value_parser = crate::format::duration_arg)]
    pub sync_interval: Option<std::time::Duration>,
    /// Cut over by itself this long after the first sync (30m, 2h); default: only when
    /// `ferry cutover` asks.
    #[arg(long, value_name = "DURATION", requires = "warm", value_parser = crate::format::duration_arg)]
    pub cutover_after: Option<std::time::Duration>,
}

impl WarmArgs {
    /// The request's warm options; None without --warm.
    fn options(&self) -> Result<Option<ferry_proto::v1::WarmOptions>> {
        if !self.warm {
            return Ok(None);
        }
        let seconds = |flag: &str, d: Option<std::time::Duration>| {
            u32::try_from(d.map_or(0, |d| d.as_secs()))
                .map_err(|_| Error::Usage(format!("{flag} is too long")))
        };
        Ok(Some(ferry_proto::v1::WarmOptions {
            sync_interval_seconds: seconds("--sync-interval", self.sync_interval)?,
            cutover_after_seconds: seconds("--cutover-after", self.cutover_after)?,
        }))
    }
}

/// The caller's own credential for the destination cluster: the destination verifies
/// it, and the job writes the application there with it, so the destination's RBAC
/// judges every write as the caller's. Without one, the destination must trust the
/// user names this cluster gives (its Ferry's `--trust-source-identities`).
#[derive(Debug, Clone, Args)]
pub struct DestinationCredentialArgs {
    /// A kubeconfig context of the destination cluster: its user's bearer token goes
    /// with the job.
    #[arg(long, value_name = "CONTEXT", conflicts_with = "to_token_file")]
    pub to_context: Option<String>,
    /// Read your bearer token for the destination cluster from this file ("-": stdin).
    #[arg(long, value_name = "FILE")]
    pub to_token_file: Option<std::path::PathBuf>,
}

impl DestinationCredentialArgs {
    /// `ferry`, its migrations carrying the destination token these flags give.
    pub(crate) async fn apply(&self, connect: &ConnectArgs, ferry: Ferry) -> Result<Ferry> {
        let token = match (&self.to_context, &self.to_token_file) {
            (_, Some(path)) => crate::connect::read_token("--to-token-file", path)?,
            (Some(context), None) => {
                ferry_client::context_token(connect.kubeconfig.as_deref(), Some(context))
                    .await?
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "--to-context {context}: its user signs in without a bearer token \
                             (a client certificate or an exec plugin), which cannot be passed \
                             on; give a token of yours for that cluster with --to-token-file \
                             (kubectl --context {context} create token ... for a \
                             ServiceAccount)"
                        ))
                    })?
            }
            (None, None) => return Ok(ferry),
        };
        Ok(ferry.with_destination_token(&token)?)
    }
}

/// How a command that starts a job follows it; shared with `ferry export` and
/// `ferry restore`.
#[derive(Debug, Clone, Args)]
pub struct FollowArgs {
    /// Print the job id and return; follow it with `ferry jobs watch`.
    #[arg(long)]
    pub detach: bool,
    /// List every object in the report, not only counts.
    #[arg(long)]
    pub show_objects: bool,
    /// Ctrl-C cancels the job and waits for it to stop (exit status 13). Without it,
    /// Ctrl-C only stops following: the job goes on and ferry exits with status 14.
    #[arg(long, conflicts_with = "detach")]
    pub cancel_on_interrupt: bool,
}

impl FollowArgs {
    /// What the first Ctrl-C does while this command follows its job.
    pub(crate) fn on_interrupt(&self) -> OnInterrupt {
        if self.cancel_on_interrupt {
            OnInterrupt::CancelJob
        } else {
            OnInterrupt::Detach
        }
    }
}

pub async fn run(
    connect: &ConnectArgs,
    args: MigrateArgs,
    cancel: CancellationToken,
    format: Format,
) -> Result<()> {
    let source = connect.ferry().await?;
    let source = args.destination.apply(connect, source).await?;
    let mut req = args.migration.request(connect, &source).await?;
    req.dry_run = args.dry_run;
    req.warm = args.warm.options()?;
    let jobs = source.migrate_all(req).await?;
    if let [job] = jobs.as_slice() {
        if args.follow.detach {
            return detached(job, format);
        }
        let report = follow(job, &cancel, args.follow.on_interrupt()).await?;
        return finish(&report, args.follow.show_objects || args.dry_run, format);
    }
    // Several namespaces: the jobs run side by side on the server; follow each in turn.
    let mut first_failure = None;
    for (i, job) in jobs.iter().enumerate() {
        if args.follow.detach {
            detached(job, format)?;
            continue;
        }
        eprintln!("job {}:", job.id());
        let report = match follow(job, &cancel, args.follow.on_interrupt()).await {
            Ok(report) => report,
            // The jobs not followed yet go on too: name them all.
            Err(Error::Detached { .. }) => {
                return Err(Error::Detached {
                    ids: jobs[i..].iter().map(|j| j.id().to_owned()).collect(),
                });
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = finish(&report, args.follow.show_objects || args.dry_run, format) {
            first_failure.get_or_insert(e);
        }
        if cancel.is_cancelled() {
            break;
        }
    }
    first_failure.map_or(Ok(()), Err)
}
