//! `ferry-transfer`: parse flags, serve, drain on SIGTERM/SIGINT; a second signal exits.

use anyhow::Context;
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    let args = ferry_transfer::Args::parse();
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let (config, deps) = args
        .build(&tls.client)
        .await
        .context("configuring the transfer service")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);

    // A second signal exits at once; unfinished jobs resume on the next start.
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;

    ferry_transfer::serve(config, deps, listener, shutdown, args.grace()).await?;
    Ok(())
}
