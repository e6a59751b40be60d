//! `ferry-gateway`: parse flags, serve; SIGTERM/SIGINT finish open calls, a second exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_gateway::Args>();
    ferry_gateway::run(args).await
}
