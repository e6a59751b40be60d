//! Ferry's pairing service: trust from a source cluster to a destination cluster, behind
//! `ferry.v1.PairingService`.
//!
//! On the destination, CreatePairingToken issues a ServiceAccount bound to ClusterRole
//! `ferry-migrator` and hands out its token inside a one-time pairing token ([`token`]).
//! On the source, AcceptPairingToken checks the destination API with that credential,
//! redeems the token at the destination's Ferry (which refuses altered, expired and used
//! tokens) and stores the pair with the credential sealed ([`ferry_store::SecretBox`]).
//! Other services of the same process reach a pair's destination through [`Pairs`].
//! See README.md for the flow and the rules the credential gets.

mod check;
mod cluster;
pub mod config;
mod db;
pub mod error;
mod internal;
mod peer;
pub mod probe;
pub mod server;
mod service;
pub mod token;

pub use cluster::{CLUSTER_ROLE, KEY_ACCESS, PAIR_LABEL, migrator_rules};
pub use config::{Args, ConfigError, CredentialKind, PairingConfig};
pub use error::PairingError;
/// The `ErrorDetail` a status carries (re-exported from ferry-rpc).
pub use ferry_rpc::detail as status_detail;
pub use probe::{CatalogProbe, ProbeResult, ProfileProbe, RemoteCatalogProbe};
pub use server::{ServeError, serve};
pub use service::{MAX_TOKEN_TTL, PairingService, Pairs};

/// The pairing service's body, shared by `ferry-pairing` and `ferry service pairing`:
/// configuration, state, the listener; serves until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let probes = args.probes.clone();
    use anyhow::Context;
    let listen = args.listen;
    let (config, security) = args.into_config().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let listener = ferry_rpc::Listener::new(listener, security);
    tracing::info!(cluster = %config.cluster_name, endpoint = %config.ferry_endpoint,
        data_dir = %config.data_dir.display(), "pairing service starting");
    let service = PairingService::new(config).await?;
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    probes.spawn(&shutdown).await?;
    serve(service, listener, shutdown).await?;
    Ok(())
}
