//! `ferry-gateway`: parse flags, serve; SIGTERM/SIGINT finish open calls, a second exits.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_gateway::run(ferry_gateway::Args::parse()).await
}
