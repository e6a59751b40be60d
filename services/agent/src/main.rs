//! `ferry-agent`: parse flags, serve (TLS unless on loopback or told otherwise), drain on
//! SIGTERM/SIGINT; a second signal exits.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    let args = ferry_agent::Args::parse();
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let config = args.into_config();

    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;

    ferry_agent::serve(config, listener, shutdown).await?;
    Ok(())
}
