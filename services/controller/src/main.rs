//! `ferry-controller`: parse flags, then reconcile and serve the webhook until SIGTERM
//! or SIGINT (a second signal exits at once).

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_controller::run(ferry_controller::Args::parse()).await
}
