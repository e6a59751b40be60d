//! Ferry's agent: the per-node data mover behind `ferry.v1.AgentService`.
//!
//! It backs a directory up into a repository, restores a snapshot into a directory and
//! verifies snapshots, streaming progress; it never decides what to move, only how.
//! Repositories are reached through profiles (see [`ferry_profile`]); requests may touch
//! only paths under the allowed roots.

pub mod config;
pub mod error;
pub mod ops;
pub mod server;
pub mod service;

pub use config::{AgentAccess, AgentConfig, Args, ConfigError, KubeletRoots};
pub use error::AgentError;
pub use ferry_profile::{Profile, ProfileSource, S3Credentials};
/// The `ErrorDetail` a status carries (re-exported from ferry-rpc).
pub use ferry_rpc::detail as status_detail;
pub use server::{ServeError, serve};
pub use service::Agent;

/// The agent's body, shared by `ferry-agent` and `ferry service agent`: TLS, callers'
/// check, the listener; serves until SIGTERM or SIGINT, then drains.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let probes = args.probes.clone();
    use anyhow::Context;
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let listen = args.listen;
    let config = args.into_checked_config(&tls.client)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    probes.spawn(&shutdown).await?;
    serve(config, listener, shutdown).await?;
    Ok(())
}
