//! `ferry-controller`: parse flags, then reconcile and serve the webhook until SIGTERM
//! or SIGINT (a second signal exits at once).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (args, _tracing) = ferry_rpc::parse_with_logging::<ferry_controller::Args>();
    ferry_controller::run(args).await
}
