//! `ferry-agent`: parse flags, serve, drain on SIGTERM/SIGINT; a second signal exits.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    let args = ferry_agent::Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let config = args.into_config();

    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;

    ferry_agent::serve(config, listener, shutdown).await?;
    Ok(())
}
