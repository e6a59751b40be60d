//! `ferry-catalog`: parse flags, open state, serve; SIGTERM/SIGINT drain, a second exits.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    let args = ferry_catalog::Args::parse();
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let config = args.into_config().await?;
    let service = ferry_catalog::CatalogService::new(config).await?;

    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;

    ferry_catalog::serve(service, listener, shutdown).await?;
    Ok(())
}
