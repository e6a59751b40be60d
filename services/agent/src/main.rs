//! `ferry-agent`: parse flags, serve; SIGTERM/SIGINT drain, a second signal exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_agent::Args>();
    ferry_agent::run(args).await
}
