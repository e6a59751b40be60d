//! `ferry-pairing`: parse flags, open state, serve; SIGTERM/SIGINT finish open calls and
//! exit, a second signal exits at once.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    let args = ferry_pairing::Args::parse();
    let listen = args.listen;
    let (config, security) = args.into_config().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let listener = ferry_rpc::Listener::new(listener, security);
    tracing::info!(cluster = %config.cluster_name, endpoint = %config.ferry_endpoint,
        data_dir = %config.data_dir.display(), "pairing service starting");
    let service = ferry_pairing::PairingService::new(config).await?;

    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;

    ferry_pairing::serve(service, listener, shutdown).await?;
    Ok(())
}
