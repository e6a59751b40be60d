//! `ferry-pairing`: parse flags, open state, serve; SIGTERM/SIGINT finish open calls and
//! exit, a second signal exits at once.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_pairing::Args>();
    ferry_pairing::run(args).await
}
