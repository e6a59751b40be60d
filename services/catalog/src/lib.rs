//! Ferry's catalog: the service behind `ferry.v1.CatalogService`.
//!
//! It owns profiles (how this cluster reaches a repository: location plus references to
//! the Secrets holding S3 credentials and the repository key), lists the local cluster's
//! applications, and lists restore points read from repositories. The repository is the
//! truth; the catalog's index of it (in `<data-dir>/catalog.db`) is filled as restore
//! points are read and can always be rebuilt with RebuildIndex.
//!
//! Migration tokens ([`ferry_token`]): a destination catalog owns an import key pair
//! (CreateImportKey, GetImportKey); a source catalog issues tokens from export profiles
//! for it (IssueMigrationToken), signed with its own signing key; CreateProfile with a
//! token verifies it, stores the repository key it carries as a Secret and makes an
//! import profile that must read and list but cannot write.
//!
//! Retention: PruneRepository applies keep-last and maximum-age limits to a repository
//! through a profile that may write, and deletes the data nothing needs any more, under
//! the repository's exclusive lock (see `prune.rs`).

mod applications;
pub mod config;
mod db;
pub mod error;
mod internal;
mod key_secret;
mod keys;
mod migration;
mod profile;
mod prune;
mod quantity;
mod restore_points;
pub mod server;
mod service;

pub use config::{Args, CatalogConfig, ConfigError, DEFAULT_NAMESPACE};
pub use error::CatalogError;
pub use ferry_rpc::detail as status_detail;
pub use profile::{
    ACCESS_KEY_ID_KEYS, DEFAULT_REGION, ENCRYPTION_KEY_KEY, SECRET_ACCESS_KEY_KEYS,
    SESSION_TOKEN_KEYS,
};
pub use server::{ServeError, serve};
pub use service::CatalogService;

/// The catalog's body, shared by `ferry-catalog` and `ferry service catalog`: TLS,
/// configuration, state, the listener; serves until SIGTERM or SIGINT.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let probes = args.probes.clone();
    use anyhow::Context;
    let tls = args.tls.load(None).await?;
    tls.server.check(args.listen)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let listener = ferry_rpc::Listener::new(listener, tls.server);
    let config = args.into_config().await?;
    let service = CatalogService::new(config).await?;
    let shutdown = ferry_rpc::shutdown_on_signals().context("installing signal handlers")?;
    probes.spawn(&shutdown).await?;
    serve(service, listener, shutdown).await?;
    Ok(())
}
