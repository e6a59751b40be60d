//! `ferry-agent`: parse flags, serve; SIGTERM/SIGINT drain, a second signal exits.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_agent::run(ferry_agent::Args::parse()).await
}
