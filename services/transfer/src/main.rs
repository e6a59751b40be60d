//! `ferry-transfer`: parse flags, serve, drain on SIGTERM/SIGINT; a second signal exits.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_transfer::run(ferry_transfer::Args::parse()).await
}
