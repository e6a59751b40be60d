//! `ferry-catalog`: parse flags, open state, serve; SIGTERM/SIGINT drain, a second exits.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_catalog::run(ferry_catalog::Args::parse()).await
}
