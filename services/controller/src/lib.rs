//! Ferry's Kubernetes controller.
//!
//! - [`migration`], [`restore`]: Migration and Restore objects onto the transfer
//!   service, through [`jobs`], which follows their jobs, woken by the jobs' own event
//!   streams ([`watch`]).
//! - [`pair`]: ClusterPair objects onto the pairing service.
//! - [`profile`]: Profile objects onto the catalog.
//! - [`schedule`]: MigrationSchedule and ImportPolicy objects onto the scheduler
//!   service.
//! - [`webhook`]: the admission webhook that records who created each object.
//! - [`lease`]: one replica acts at a time.
//!
//! It is a client of the same gRPC services the `ferry` command calls, with the
//! deployment's internal credential, acting for each object's creator: the services
//! judge that user's rights, never the controller's.

mod admin;
pub mod config;
pub mod error;
mod jobs;
pub mod lease;
pub mod migration;
pub mod pair;
pub mod profile;
pub mod restore;
pub mod schedule;
mod status;
mod watch;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use ferry_crd::{ClusterPair, ImportPolicy, Migration, MigrationSchedule, Profile, Restore};
use ferry_proto::v1::catalog_service_client::CatalogServiceClient;
use ferry_proto::v1::pairing_service_client::PairingServiceClient;
use ferry_proto::v1::scheduler_service_client::SchedulerServiceClient;
use ferry_proto::v1::transfer_service_client::TransferServiceClient;
use futures::StreamExt as _;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use tokio_util::sync::CancellationToken;

pub use config::Args;
pub use error::Error;

/// What every reconcile shares.
pub struct Ctx {
    pub client: kube::Client,
    /// This cluster's name, as messages name it.
    pub cluster: String,
    /// The internal credential: the webhook's signing key.
    pub secret: Arc<str>,
    /// Namespace of ClusterPairs' token Secrets by default.
    pub namespace: String,
    pub transfer: TransferServiceClient<ferry_rpc::TracedChannel>,
    pub pairing: PairingServiceClient<ferry_rpc::TracedChannel>,
    pub scheduler: SchedulerServiceClient<ferry_rpc::TracedChannel>,
    pub catalog: CatalogServiceClient<ferry_rpc::TracedChannel>,
    pub authorizer: ferry_authz::Authorizer,
    /// Jobs whose event streams wake their objects' reconciles.
    watched: watch::Watched,
    migration_wakes: watch::Wakes<Migration>,
    restore_wakes: watch::Wakes<Restore>,
}

impl std::fmt::Debug for Ctx {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("cluster", &self.cluster)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn error_policy<K>(_object: Arc<K>, error: &Error, _ctx: Arc<Ctx>) -> Action {
    match error {
        Error::Waiting(what) => {
            tracing::debug!(%what, "waiting");
            Action::requeue(Duration::from_secs(2))
        }
        Error::Finalizer(e)
            if matches!(
                **e,
                kube::runtime::finalizer::Error::CleanupFailed(Error::Waiting(_))
            ) =>
        {
            tracing::debug!(error = %e, "waiting");
            Action::requeue(Duration::from_secs(2))
        }
        e => {
            tracing::warn!(error = %e, "reconcile failed; trying again");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

/// Runs the reconcilers until `stop`.
pub async fn reconcile_until(ctx: Arc<Ctx>, stop: CancellationToken) {
    let migrations = Controller::new(
        Api::<Migration>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_on(ctx.migration_wakes.stream())
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(migration::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let pairs = Controller::new(
        Api::<ClusterPair>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(pair::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let profiles = Controller::new(
        Api::<Profile>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(profile::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let restores = Controller::new(
        Api::<Restore>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .reconcile_on(ctx.restore_wakes.stream())
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(restore::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let schedules = Controller::new(
        Api::<MigrationSchedule>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stop.clone().cancelled_owned())
    .run(schedule::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let imports = Controller::new(
        Api::<ImportPolicy>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stop.cancelled_owned())
    .run(schedule::reconcile, error_policy, ctx)
    .for_each(|_| async {});
    tokio::join!(migrations, pairs, profiles, restores, schedules, imports);
}

/// The controller's body, shared by `ferry-controller` and `ferry service controller`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    if args.access.insecure_no_access_checks {
        anyhow::bail!(
            "--insecure-no-access-checks: the controller always acts for each object's \
             creator and cannot run without checks; leave the flag out"
        );
    }
    let secret: Arc<str> = args
        .access
        .internal_token()?
        .context(
            "--internal-token-file is required: the controller's calls bear the internal \
             credential and its webhook signs with it",
        )?
        .into();
    let tls = args.tls.load(None).await?;
    let client_tls = tls.client.clone().with_bearer(&secret)?;
    let channel = |endpoint: &str| -> anyhow::Result<ferry_rpc::TracedChannel> {
        let channel = client_tls
            .endpoint(endpoint)
            .with_context(|| format!("endpoint {endpoint:?}"))?
            .connect_lazy();
        Ok(client_tls.traced(endpoint, channel))
    };
    let config = ferry_kube::kube_config(args.kubeconfig.as_deref(), args.context.as_deref())
        .await
        .context("a Kubernetes client (run in a pod, or set KUBECONFIG)")?;
    let client = kube::Client::try_from(config).context("a Kubernetes client")?;
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cluster: args.cluster_name.clone(),
        secret: secret.clone(),
        namespace: args.namespace.clone(),
        transfer: TransferServiceClient::new(channel(&args.transfer_endpoint)?),
        pairing: PairingServiceClient::new(channel(&args.pairing_endpoint)?),
        scheduler: SchedulerServiceClient::new(channel(&args.scheduler_endpoint)?),
        catalog: CatalogServiceClient::new(channel(&args.catalog_endpoint)?),
        authorizer: ferry_authz::Authorizer::new(client.clone(), &args.cluster_name)
            .with_admin_groups(args.access.admin_groups.clone()),
        watched: Default::default(),
        migration_wakes: Default::default(),
        restore_wakes: Default::default(),
    });

    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    args.probes.spawn(&shutdown).await?;
    let cert = ferry_rpc::Pem::read("--webhook-cert", &args.webhook_cert)?;
    let key = ferry_rpc::Pem::read("--webhook-key", &args.webhook_key)?;
    let webhook_tls = ferry_rpc::ServerTls::new(&cert, &key, None)?.with_http1();
    let listener = tokio::net::TcpListener::bind(args.webhook_listen)
        .await
        .with_context(|| format!("binding the webhook's address {}", args.webhook_listen))?;
    let bound = listener.local_addr()?;
    webhook::spawn(listener, &webhook_tls, secret, shutdown.clone());
    tracing::info!(webhook = %webhook::describe(bound), "serving the admission webhook");

    let lease = lease::LeaderLease::new(
        client,
        &args.namespace,
        &args.lease_name,
        &args.identity(),
        args.lease_duration(),
    );
    lease
        .run(shutdown, move |stop| reconcile_until(ctx.clone(), stop))
        .await;
    Ok(())
}
