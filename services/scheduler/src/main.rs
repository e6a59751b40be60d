//! `ferry-scheduler`: parse flags, open state, serve; SIGTERM/SIGINT stop the loop and
//! the runs (they resume on the next start), a second signal exits at once.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    let args = ferry_scheduler::Args::parse();
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let client = match &args.internal_token_file {
        Some(path) => tls
            .client
            .clone()
            .with_bearer(&ferry_authz::read_internal_token(path)?)?,
        None => tls.client.clone(),
    };
    let jobs = ferry_scheduler::TransferJobs::lazy_with(&args.transfer_endpoint, &client)
        .with_context(|| format!("transfer endpoint {:?}", args.transfer_endpoint))?
        .with_catalog(&args.catalog_endpoint, &client)
        .with_context(|| format!("catalog endpoint {:?}", args.catalog_endpoint))?;
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    let kube = kube::Client::try_default()
        .await
        .context("a Kubernetes client to review callers with (run in a pod, or set KUBECONFIG)")?;
    let mut config = args.config();
    config.access = Some(ferry_authz::Authorizer::new(kube, &args.cluster_name));
    let scheduler = ferry_scheduler::Scheduler::open(config, Arc::new(jobs)).await?;
    ferry_scheduler::serve(scheduler, listener, shutdown).await?;
    Ok(())
}
