//! `ferry-transfer`: parse flags, serve, drain on SIGTERM/SIGINT; a second signal exits.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_transfer::Args>();
    ferry_transfer::run(args).await
}
