//! `ferry-pairing`: parse flags, open state, serve; SIGTERM/SIGINT finish open calls and
//! exit, a second signal exits at once.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_pairing::run(ferry_pairing::Args::parse()).await
}
