//! `ferry-scheduler`: parse flags, open state, serve; SIGTERM/SIGINT stop the loop and
//! the runs (they resume on the next start), a second signal exits at once.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_scheduler::Args>();
    ferry_scheduler::run(args).await
}
