//! `ferry-catalog`: parse flags, open state, serve; SIGTERM/SIGINT drain, a second exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_catalog::Args>();
    ferry_catalog::run(args).await
}
