//! `ferry-scheduler`: parse flags, open state, serve; SIGTERM/SIGINT stop the loop and
//! the runs (they resume on the next start), a second signal exits at once.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _tracing = ferry_rpc::init_tracing();
    ferry_scheduler::run(ferry_scheduler::Args::parse()).await
}
